//! The harness brings up real servers and a round trip works on each.
#![allow(clippy::expect_used)]

use std::time::Duration;

use distcron_testkit::{shared_etcd, shared_mongo, unique_name, Etcd, MongoServer};
use etcd_client::Client;
use futures::TryStreamExt;
use mongodb::bson::doc;

#[tokio::test]
async fn etcd_round_trip() {
    let etcd = shared_etcd();
    let mut client = Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    let key = format!("/{}/k", unique_name("etcd_round_trip"));
    client.put(key.as_str(), "v1", None).await.expect("put");
    let got = client.get(key.as_str(), None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v1");
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Doc {
    name: String,
    n: i64,
}

#[tokio::test]
async fn mongo_round_trip() {
    let mongo = shared_mongo();
    let client = mongodb::Client::with_uri_str(mongo.uri())
        .await
        .expect("client");
    let coll = client
        .database(&unique_name("mongo_round_trip"))
        .collection::<Doc>("c");
    coll.insert_one(Doc {
        name: "a".into(),
        n: 5,
    })
    .await
    .expect("insert");
    coll.insert_one(Doc {
        name: "b".into(),
        n: 1 << 40,
    })
    .await
    .expect("insert");
    let docs: Vec<Doc> = coll
        .find(doc! {})
        .sort(doc! { "n": -1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    assert_eq!(
        docs,
        vec![
            Doc {
                name: "b".into(),
                n: 1 << 40
            },
            Doc {
                name: "a".into(),
                n: 5
            }
        ]
    );
}

#[tokio::test]
async fn mongo_keeps_data_across_restart() {
    let mut mongo = tokio::task::spawn_blocking(MongoServer::start)
        .await
        .expect("join")
        .expect("start");
    let db = unique_name("restart");
    {
        let client = mongodb::Client::with_uri_str(mongo.uri())
            .await
            .expect("client");
        let coll = client.database(&db).collection::<Doc>("c");
        coll.insert_one(Doc {
            name: "kept".into(),
            n: 1,
        })
        .await
        .expect("insert");
        client.shutdown().await;
    }
    let mut mongo = tokio::task::spawn_blocking(move || {
        mongo.stop();
        mongo.restart().map(|()| mongo)
    })
    .await
    .expect("join")
    .expect("restart");
    let client = mongodb::Client::with_uri_str(mongo.uri())
        .await
        .expect("client");
    let n = client
        .database(&db)
        .collection::<Doc>("c")
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(n, 1);
    tokio::task::spawn_blocking(move || mongo.stop())
        .await
        .expect("join");
}

#[tokio::test]
async fn etcd_cluster_survives_a_stopped_member() {
    let mut cluster = tokio::task::spawn_blocking(|| Etcd::cluster(3))
        .await
        .expect("join")
        .expect("cluster");
    assert_eq!(cluster.size(), 3);
    let endpoints = cluster.endpoints();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_member(0);
        cluster
    })
    .await
    .expect("join");
    // Talk only to the survivors: the cluster still has a quorum.
    let mut client = Client::connect(&endpoints[1..], None)
        .await
        .expect("connect");
    client
        .put("/k", "during-outage", None)
        .await
        .expect("put with one member down");
    let mut cluster =
        tokio::task::spawn_blocking(move || cluster.start_member(0).map(|()| cluster))
            .await
            .expect("join")
            .expect("restart member");
    // The restarted member catches up.
    let mut first = Client::connect(&endpoints[..1], None)
        .await
        .expect("connect");
    let mut seen = Vec::new();
    for _ in 0..50 {
        let got = first.get("/k", None).await.expect("get");
        seen = got.kvs().iter().map(|kv| kv.value().to_vec()).collect();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, vec![b"during-outage".to_vec()]);
    tokio::task::spawn_blocking(move || cluster.kill_member(2))
        .await
        .expect("join");
}
