//! The RunStore suite and MongoDB-specific behaviour against a real MongoDB-protocol server.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use distcron_runstore::conformance::Store;
use distcron_runstore::{MongoConfig, MongoRunStore, RunStore};
use distcron_testkit::{shared_mongo, unique_name};
use futures::TryStreamExt;

fn config(db: &str) -> MongoConfig {
    let mut c = MongoConfig::new(shared_mongo().uri());
    c.database = db.to_owned();
    c
}

async fn fresh_store() -> Store {
    let store = MongoRunStore::connect(&config(&unique_name("runs")))
        .await
        .expect("connect");
    store.init(7).await.expect("init");
    Arc::new(store)
}

distcron_runstore::run_store_conformance_tests!(fresh_store);

#[tokio::test]
async fn indexes_are_created_idempotently_with_retention() {
    let db = unique_name("idx");
    let store = MongoRunStore::connect(&config(&db)).await.unwrap();
    store.init(7).await.unwrap();
    store.init(7).await.unwrap();
    let client = mongodb::Client::with_uri_str(shared_mongo().uri())
        .await
        .unwrap();
    let coll = client.database(&db).collection::<bson::Document>("log");
    let ttl = |indexes: &[mongodb::IndexModel]| {
        indexes
            .iter()
            .find(|m| m.keys.contains_key("storedAt"))
            .and_then(|m| m.options.as_ref())
            .and_then(|o| o.expire_after)
    };
    let indexes: Vec<mongodb::IndexModel> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        ttl(&indexes),
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert!(indexes
        .iter()
        .any(|m| m
            .keys
            .keys()
            .map(String::as_str)
            .eq(["jobName", "startTime", "runId"])));
    // Changing the retention replaces the TTL index; 0 removes it.
    store.init(30).await.unwrap();
    let indexes: Vec<mongodb::IndexModel> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        ttl(&indexes),
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    store.init(0).await.unwrap();
    let indexes: Vec<mongodb::IndexModel> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ttl(&indexes), None);
}

#[tokio::test]
async fn seed_era_documents_are_readable() {
    let db = unique_name("seed");
    let client = mongodb::Client::with_uri_str(shared_mongo().uri())
        .await
        .unwrap();
    let coll = client.database(&db).collection::<bson::Document>("log");
    coll.insert_one(bson::doc! {
        "jobName": "legacy", "command": "echo hi", "err": "", "output": "hi\n",
        "planTime": 1_700_000_000_000_i64, "scheduleTime": 1_700_000_000_001_i64,
        "startTime": 1_700_000_000_002_i64, "endTime": 1_700_000_000_010_i64,
    })
    .await
    .unwrap();
    coll.insert_one(
        bson::doc! { "jobName": "legacy", "command": "false", "err": "exit status 1", "output": "",
        "planTime": 5_i64, "scheduleTime": 5_i64, "startTime": 5_i64, "endTime": 6_i64 },
    )
    .await
    .unwrap();
    let store = MongoRunStore::connect(&config(&db)).await.unwrap();
    let page = store
        .list(&distcron_runstore::RunQuery {
            job_name: Some("legacy".into()),
            limit: 10,
            with_output: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 2);
    assert_eq!(page.runs[0].output, "hi\n");
    assert_eq!(page.runs[0].status, distcron_runstore::RunStatus::Succeeded);
    assert_eq!(page.runs[1].status, distcron_runstore::RunStatus::Failed);
    assert_eq!(page.runs[0].run_id.len(), 24, "ObjectId hex as run id");
    let by_id = store.get(&page.runs[0].run_id).await.unwrap();
    assert_eq!(by_id.map(|r| r.command), Some("echo hi".to_owned()));
}
