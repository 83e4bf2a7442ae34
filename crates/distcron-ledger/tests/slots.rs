//! Slot claims, against a real etcd and against the embedded store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunTrigger;
use distcron_core::Keys;
use distcron_kv::{EmbeddedKv, EtcdConfig, EtcdKv, KvStore};
use distcron_ledger::{claim_slot, record_skip, release, SlotClaim, SlotOutcome};
use distcron_testkit::{shared_etcd, unique_name};

async fn etcd_store() -> Arc<dyn KvStore> {
    Arc::new(
        EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
            .await
            .unwrap(),
    )
}

fn embedded_store() -> Arc<dyn KvStore> {
    Arc::new(EmbeddedKv::open(std::path::Path::new(":memory:")).unwrap())
}

/// Each test runs once per store implementation.
macro_rules! on_both_stores {
    ($($name:ident),*) => {
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name(super::etcd_store().await).await })*
        }
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name(super::embedded_store()).await })*
        }
    };
}

on_both_stores!(
    one_winner_per_slot_and_slots_only_move_forward,
    forbid_reports_overlap_and_the_skip_is_recorded_once,
    a_changed_job_is_not_claimed_from_its_old_revision
);

async fn setup(store: Arc<dyn KvStore>) -> (Arc<dyn KvStore>, Keys, i64) {
    let keys = Keys::new(&format!("/{}/", unique_name("slots")));
    store
        .put(&keys.job("j"), b"{}".to_vec(), None)
        .await
        .unwrap();
    let rev = store
        .get(&keys.job("j"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    (store, keys, rev)
}

fn claim(rev: i64, slot: i64, worker: &str, session: i64, forbid: bool) -> SlotClaim {
    SlotClaim {
        job: "j".into(),
        job_revision: rev,
        slot_ms: slot,
        run_id: format!("{worker}-{slot}"),
        worker_id: worker.into(),
        session,
        now_ms: slot,
        trigger: RunTrigger::Schedule,
        forbid_overlap: forbid,
    }
}

async fn one_winner_per_slot_and_slots_only_move_forward(store: Arc<dyn KvStore>) {
    let (store, keys, rev) = setup(store).await;
    let mut tasks = Vec::new();
    for w in 0..5 {
        let (store, keys) = (store.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
            // Half of them guess wrongly that the ledger exists.
            claim_slot(
                store.as_ref(),
                &keys,
                &claim(rev, 1_000, &format!("w{w}"), session, false),
                w % 2 == 0,
            )
            .await
            .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            SlotOutcome::Won(_) => won += 1,
            SlotOutcome::AlreadyClaimed { ledger_ms } => assert_eq!(ledger_ms, 1_000),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let older = claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 999, "late", session, false),
        true,
    )
    .await
    .unwrap();
    assert_eq!(older, SlotOutcome::AlreadyClaimed { ledger_ms: 1_000 });
    let newer = claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 2_000, "next", session, false),
        true,
    )
    .await
    .unwrap();
    assert!(matches!(newer, SlotOutcome::Won(_)));
    // The running record lives on the session lease.
    assert_eq!(
        store
            .get(&keys.running("j", "next-2000"))
            .await
            .unwrap()
            .unwrap()
            .lease,
        session
    );
}

async fn forbid_reports_overlap_and_the_skip_is_recorded_once(store: Arc<dyn KvStore>) {
    let (store, keys, rev) = setup(store).await;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(matches!(
        claim_slot(
            store.as_ref(),
            &keys,
            &claim(rev, 1_000, "a", session, true),
            false
        )
        .await
        .unwrap(),
        SlotOutcome::Won(_)
    ));
    match claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 2_000, "b", session, true),
        true,
    )
    .await
    .unwrap()
    {
        SlotOutcome::Overlap { running } => assert_eq!(running[0].run_id, "a-1000"),
        other => panic!("unexpected {other:?}"),
    }
    let first = record_skip(store.as_ref(), &keys, "j", rev, 2_000)
        .await
        .unwrap();
    let second = record_skip(store.as_ref(), &keys, "j", rev, 2_000)
        .await
        .unwrap();
    assert!(first && !second, "exactly one skip record");
    // `allow` runs next to the running one.
    assert!(matches!(
        claim_slot(
            store.as_ref(),
            &keys,
            &claim(rev, 3_000, "c", session, false),
            true
        )
        .await
        .unwrap(),
        SlotOutcome::Won(_)
    ));
    // Released runs no longer block `forbid`.
    release(
        store.as_ref(),
        &keys,
        &[("j".into(), "a-1000".into()), ("j".into(), "c-3000".into())],
    )
    .await
    .unwrap();
    assert!(matches!(
        claim_slot(
            store.as_ref(),
            &keys,
            &claim(rev, 4_000, "d", session, true),
            true
        )
        .await
        .unwrap(),
        SlotOutcome::Won(_)
    ));
}

async fn a_changed_job_is_not_claimed_from_its_old_revision(store: Arc<dyn KvStore>) {
    let (store, keys, rev) = setup(store).await;
    store
        .put(&keys.job("j"), b"{\"changed\":1}".to_vec(), None)
        .await
        .unwrap();
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let outcome = claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 1_000, "a", session, false),
        false,
    )
    .await
    .unwrap();
    assert_eq!(outcome, SlotOutcome::JobChanged);
    store.delete(&keys.job("j")).await.unwrap();
    let outcome = claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 1_000, "a", session, false),
        false,
    )
    .await
    .unwrap();
    assert_eq!(outcome, SlotOutcome::JobChanged);
}
