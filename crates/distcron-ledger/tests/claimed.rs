//! The claim evidence logsvc reads, against a real etcd and against the embedded store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::on_both_stores;
use distcron_core::records::RunTrigger;
use distcron_core::Keys;
use distcron_kv::KvStore;
use distcron_ledger::{
    claim_slot, release, ClaimEvidence, LedgerExpect, MarkerChanges, ReportedRun, SlotClaim,
    SlotOutcome, UndeliveredMarker, MAX_TXN_OPS,
};
use distcron_testkit::unique_name;

on_both_stores!(
    a_run_is_claimed_by_its_running_records_worker_then_by_its_marker,
    reads_span_transactions
);

async fn claimed_run(
    store: &dyn KvStore,
    keys: &Keys,
    slot: i64,
) -> distcron_core::records::RunningRecord {
    let rev = store
        .get(&keys.job("j"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let claim = SlotClaim {
        job: "j".into(),
        job_revision: rev,
        slot_ms: slot,
        run_id: format!("w1-{slot}"),
        worker_id: "w1".into(),
        session,
        now_ms: slot,
        trigger: RunTrigger::Schedule,
        forbid_overlap: false,
        expect: LedgerExpect::Before,
        action: distcron_ledger::SlotAction::Run,
    };
    match claim_slot(store, keys, &claim, slot > 1_000).await.unwrap() {
        SlotOutcome::Won(record) => record,
        other => panic!("{other:?}"),
    }
}

fn reported<'a>(run_id: &'a str, job: &'a str, worker_id: &'a str) -> ReportedRun<'a> {
    ReportedRun {
        run_id,
        job,
        worker_id,
    }
}

async fn a_run_is_claimed_by_its_running_records_worker_then_by_its_marker(
    store: Arc<dyn KvStore>,
) {
    let keys = Keys::new(&format!("/{}/", unique_name("claimed")));
    store
        .put(&keys.job("j"), b"{}".to_vec(), None)
        .await
        .unwrap();
    let record = claimed_run(store.as_ref(), &keys, 1_000).await;
    let run = record.run_id.clone();
    let asked = [reported(&run, "j", "w1"), reported("forged", "j", "w1")];
    let evidence = ClaimEvidence::read(store.as_ref(), &keys, &asked)
        .await
        .unwrap();
    assert!(evidence.claimed_by(&run, "w1"));
    assert!(!evidence.claimed_by(&run, "w2"), "another worker's claim");
    assert!(!evidence.claimed_by("forged", "w1"), "a run nobody claimed");
    assert_eq!(evidence.running_on(&run), Some("w1"));

    // Released with a marker: the marker is the evidence now.
    let marker = UndeliveredMarker {
        key: keys.undelivered("w1", "1-0000000001"),
        runs: vec![record.clone()],
    };
    release(
        store.as_ref(),
        &keys,
        &[("j".into(), run.clone())],
        MarkerChanges {
            put: Some(&marker),
            delete: &[],
        },
    )
    .await
    .unwrap();
    let evidence = ClaimEvidence::read(store.as_ref(), &keys, &asked)
        .await
        .unwrap();
    assert!(evidence.claimed_by(&run, "w1"));
    assert!(!evidence.claimed_by(&run, "w2"));
    assert_eq!(evidence.running_on(&run), None);

    // Released without one (its end stored): nothing names it any more.
    release(
        store.as_ref(),
        &keys,
        &[],
        MarkerChanges {
            put: None,
            delete: std::slice::from_ref(&marker.key),
        },
    )
    .await
    .unwrap();
    let evidence = ClaimEvidence::read(store.as_ref(), &keys, &asked)
        .await
        .unwrap();
    assert!(!evidence.claimed_by(&run, "w1"));
}

async fn reads_span_transactions(store: Arc<dyn KvStore>) {
    let keys = Keys::new(&format!("/{}/", unique_name("claimed")));
    store
        .put(&keys.job("j"), b"{}".to_vec(), None)
        .await
        .unwrap();
    // More runs than one transaction reads, the claimed one last.
    let claimed = claimed_run(store.as_ref(), &keys, 1_000).await;
    let ids: Vec<String> = (0..MAX_TXN_OPS + 10).map(|i| format!("r{i}")).collect();
    let mut asked: Vec<ReportedRun<'_>> = ids.iter().map(|id| reported(id, "j", "w1")).collect();
    asked.push(reported(&claimed.run_id, "j", "w1"));
    let evidence = ClaimEvidence::read(store.as_ref(), &keys, &asked)
        .await
        .unwrap();
    assert!(evidence.claimed_by(&claimed.run_id, "w1"));
    assert!(ids.iter().all(|id| !evidence.claimed_by(id, "w1")));
}
