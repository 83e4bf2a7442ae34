//! The conformance suite and restart behaviour of the embedded store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distcron_kv::conformance::Store;
use distcron_kv::{EmbeddedKv, KvStore};

async fn fresh_store() -> (Store, String) {
    // SQLite's in-memory database: the write-through path runs, nothing is left behind.
    let kv = EmbeddedKv::open(Path::new(":memory:")).expect("open");
    (Arc::new(kv), "/kv".to_owned())
}

distcron_kv::kv_conformance_tests!(fresh_store);

#[tokio::test]
async fn keys_and_revisions_survive_a_restart_and_leased_keys_live_one_more_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let (revision, kept, lease) = {
        let kv = EmbeddedKv::open(&path).unwrap();
        kv.put("/jobs/a", b"job".to_vec(), None).await.unwrap();
        let lease = kv.grant_lease(Duration::from_secs(2)).await.unwrap();
        kv.put("/workers/w", b"me".to_vec(), Some(lease))
            .await
            .unwrap();
        let kept = kv.get("/jobs/a").await.unwrap().unwrap();
        let revision = kv.get("/workers/w").await.unwrap().unwrap().mod_revision;
        (revision, kept, lease)
    };
    let kv = EmbeddedKv::open(&path).unwrap();
    assert_eq!(kv.get("/jobs/a").await.unwrap(), Some(kept));
    // The lease outlives the process by one TTL, as etcd's would: its key is still there, and
    // goes (in a revision watchers see) once that TTL has passed without a keep-alive.
    let leased = kv
        .get("/workers/w")
        .await
        .unwrap()
        .expect("kept until its TTL");
    assert_eq!(leased.lease, lease);
    let mut watch = kv
        .watch("/workers/", leased.mod_revision + 1)
        .await
        .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut watch))
        .await
        .expect("the lease expired within its TTL")
        .expect("a batch")
        .expect("no watch error");
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kind, distcron_kv::WatchEventKind::Delete);
    assert!(kv.get("/workers/w").await.unwrap().is_none());
    let next = kv.put("/jobs/b", b"x".to_vec(), None).await.unwrap();
    assert!(next.is_none());
    let b = kv.get("/jobs/b").await.unwrap().unwrap();
    assert!(
        b.mod_revision > revision,
        "revisions keep growing across restarts"
    );
    // A lease kept alive after the restart keeps its keys; new lease ids never reuse old ones.
    let renewed = kv.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(renewed > lease);
}

#[tokio::test]
async fn a_lease_kept_alive_after_a_restart_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let lease = {
        let kv = EmbeddedKv::open(&path).unwrap();
        let lease = kv.grant_lease(Duration::from_secs(1)).await.unwrap();
        kv.put("/running/j/r", b"run".to_vec(), Some(lease))
            .await
            .unwrap();
        lease
    };
    let kv = EmbeddedKv::open(&path).unwrap();
    for _ in 0..6 {
        kv.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(kv.get("/running/j/r").await.unwrap().is_some());
    kv.revoke_lease(lease).await.unwrap();
    assert!(kv.get("/running/j/r").await.unwrap().is_none());
    drop(kv);
    // A revoked lease is gone from the file too.
    let kv = EmbeddedKv::open(&path).unwrap();
    assert!(matches!(
        kv.keep_alive(lease).await,
        Err(distcron_kv::KvError::LeaseNotFound(_))
    ));
}

#[tokio::test]
async fn compaction_rounds_take_turns_and_drop_old_revisions() {
    let (store, prefix) = fresh_store().await;
    distcron_kv::conformance::compaction_rounds_take_turns_and_drop_old_revisions(store, prefix)
        .await;
}
