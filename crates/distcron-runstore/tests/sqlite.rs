//! The RunStore suite against the embedded SQLite store, and its retention and restart behaviour.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use distcron_runstore::conformance::Store;
use distcron_runstore::{RunStatus, RunStore, SqliteRunStore, StoredRun};

async fn fresh_store() -> Store {
    // SQLite's in-memory database: a fresh one per connection, nothing left behind.
    let store = SqliteRunStore::open(std::path::Path::new(":memory:")).expect("open");
    store.init(7).await.expect("init");
    Arc::new(store)
}

distcron_runstore::run_store_conformance_tests!(fresh_store);

#[tokio::test]
async fn runs_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.sqlite");
    let run = StoredRun {
        run_id: "r1".into(),
        job_name: "j".into(),
        start_time: 5,
        status: RunStatus::Succeeded,
        version: 1,
        ..StoredRun::default()
    };
    {
        let store = SqliteRunStore::open(&path).unwrap();
        store.init(0).await.unwrap();
        assert!(store
            .insert_many(std::slice::from_ref(&run))
            .await
            .unwrap()
            .is_empty());
    }
    let store = SqliteRunStore::open(&path).unwrap();
    store.init(0).await.unwrap();
    assert_eq!(store.get("r1").await.unwrap(), Some(run));
}
