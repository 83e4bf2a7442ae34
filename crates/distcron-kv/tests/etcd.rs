//! The conformance suite and etcd-specific behaviour against a real etcd.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use distcron_kv::conformance::Store;
use distcron_kv::{resilient_watch, EtcdConfig, EtcdKv, ResilientWatchEvent};
use distcron_testkit::{shared_etcd, unique_name, Etcd};
use futures::StreamExt;

async fn shared_store() -> (Store, String) {
    let kv = EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
        .await
        .expect("connect");
    (Arc::new(kv), format!("/{}", unique_name("kv")))
}

distcron_kv::kv_conformance_tests!(shared_store);

/// A store on an etcd of its own, for tests that compact its history (store-wide).
async fn own_store() -> (Store, Etcd) {
    let etcd = tokio::task::spawn_blocking(Etcd::single)
        .await
        .unwrap()
        .expect("etcd");
    let kv = EtcdKv::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("connect");
    (Arc::new(kv), etcd)
}

#[tokio::test]
async fn compaction_rounds_take_turns_and_drop_old_revisions() {
    let (store, _etcd) = own_store().await;
    distcron_kv::conformance::compaction_rounds_take_turns_and_drop_old_revisions(
        store,
        "/compaction".to_owned(),
    )
    .await;
}

#[tokio::test]
async fn resilient_watch_resyncs_after_compaction() {
    let (store, _etcd) = own_store().await;
    let p = "/resync".to_owned();
    let prefix = format!("{p}/c/");
    store
        .put(&format!("{prefix}a"), b"1".to_vec(), None)
        .await
        .unwrap();
    let start = store
        .get(&format!("{prefix}a"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    store
        .put(&format!("{prefix}a"), b"2".to_vec(), None)
        .await
        .unwrap();
    let last = store.put(&format!("{prefix}b"), b"3".to_vec(), None).await;
    assert!(last.is_ok());
    let head = store
        .get(&format!("{prefix}b"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    store.compact(head).await.unwrap();
    // Watching from before the compaction point yields the whole prefix instead of an error.
    let mut w = resilient_watch(store.clone(), prefix.clone(), start);
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
    {
        ResilientWatchEvent::Snapshot { kvs, revision } => {
            assert_eq!(kvs.len(), 2);
            assert!(revision >= head);
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    store
        .put(&format!("{prefix}c"), b"4".to_vec(), None)
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
    {
        ResilientWatchEvent::Batch(b) => assert_eq!(b.events[0].kv.key, format!("{prefix}c")),
        other => panic!("expected a batch, got {other:?}"),
    }
}

#[tokio::test]
async fn survives_a_stopped_member_and_resumes_watches() {
    let mut cluster = tokio::task::spawn_blocking(|| Etcd::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let kv: Store = Arc::new(
        EtcdKv::connect(EtcdConfig::new(cluster.endpoints()))
            .await
            .unwrap(),
    );
    let start = kv.put("/x/before", b"0".to_vec(), None).await;
    assert!(start.is_ok());
    let rev = kv.get("/x/before").await.unwrap().unwrap().mod_revision;
    let mut w = resilient_watch(kv.clone(), "/x/".into(), rev + 1);
    cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_member(0);
        cluster
    })
    .await
    .unwrap();
    // Every call succeeds while one member of three is down (retries and the endpoint probe).
    for i in 0..30 {
        kv.put(&format!("/x/k{i:02}"), vec![b'v'], None)
            .await
            .expect("put during outage");
        assert!(kv
            .get(&format!("/x/k{i:02}"))
            .await
            .expect("get during outage")
            .is_some());
    }
    // The watch resumed without gaps or repeats.
    let mut seen = Vec::new();
    while seen.len() < 30 {
        match tokio::time::timeout(Duration::from_secs(15), w.next())
            .await
            .unwrap()
            .unwrap()
        {
            ResilientWatchEvent::Batch(b) => seen.extend(b.events.into_iter().map(|e| e.kv.key)),
            ResilientWatchEvent::Snapshot { .. } => panic!("no compaction happened"),
        }
    }
    let want: Vec<String> = (0..30).map(|i| format!("/x/k{i:02}")).collect();
    assert_eq!(seen, want);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
