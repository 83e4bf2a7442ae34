//! Manual triggers are claimed exactly once, against a real etcd.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::TriggerRequest;
use distcron_core::Keys;
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_ledger::{claim_trigger, Claim};
use distcron_testkit::{shared_etcd, unique_name};

#[tokio::test]
async fn eight_workers_racing_for_one_trigger_yield_one_winner() {
    let store: Arc<dyn KvStore> = Arc::new(
        EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
            .await
            .expect("connect"),
    );
    let keys = Keys::new(&format!("/{}/", unique_name("trigger")));
    let request = TriggerRequest {
        run_id: "r1".into(),
        slot_ms: 1_000,
        job_revision: 1,
        trace_parent: String::new(),
    };
    store
        .put(
            &keys.trigger("j", "r1"),
            serde_json::to_vec(&request).expect("json"),
            None,
        )
        .await
        .expect("put trigger");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, keys, request) = (store.clone(), keys.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let lease = store
                .grant_lease(Duration::from_secs(30))
                .await
                .expect("lease");
            claim_trigger(
                store.as_ref(),
                &keys,
                "j",
                &request,
                &format!("w{w}"),
                lease,
                2_000,
            )
            .await
            .expect("claim")
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.expect("join"), Claim::Won(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert!(
        store
            .get(&keys.trigger("j", "r1"))
            .await
            .expect("get")
            .is_none(),
        "trigger consumed"
    );
    assert!(
        store
            .get(&keys.running("j", "r1"))
            .await
            .expect("get")
            .is_some(),
        "run recorded"
    );
}
