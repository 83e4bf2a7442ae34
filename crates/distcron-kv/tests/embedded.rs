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
async fn keys_and_revisions_survive_a_restart_and_leased_keys_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let (revision, kept) = {
        let kv = EmbeddedKv::open(&path).unwrap();
        kv.put("/jobs/a", b"job".to_vec(), None).await.unwrap();
        let lease = kv.grant_lease(Duration::from_secs(60)).await.unwrap();
        kv.put("/workers/w", b"me".to_vec(), Some(lease))
            .await
            .unwrap();
        let kept = kv.get("/jobs/a").await.unwrap().unwrap();
        let revision = kv.get("/workers/w").await.unwrap().unwrap().mod_revision;
        (revision, kept)
    };
    let kv = EmbeddedKv::open(&path).unwrap();
    assert_eq!(kv.get("/jobs/a").await.unwrap(), Some(kept));
    assert!(
        kv.get("/workers/w").await.unwrap().is_none(),
        "its lease ended with the process"
    );
    let next = kv.put("/jobs/b", b"x".to_vec(), None).await.unwrap();
    assert!(next.is_none());
    let b = kv.get("/jobs/b").await.unwrap().unwrap();
    assert!(
        b.mod_revision > revision,
        "revisions keep growing across restarts"
    );
}

#[tokio::test]
async fn compaction_rounds_take_turns_and_drop_old_revisions() {
    let (store, prefix) = fresh_store().await;
    distcron_kv::conformance::compaction_rounds_take_turns_and_drop_old_revisions(store, prefix)
        .await;
}
