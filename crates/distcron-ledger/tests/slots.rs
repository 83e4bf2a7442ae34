//! Slot claims, against a real etcd and against the embedded store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::on_both_stores;
use distcron_core::records::RunTrigger;
use distcron_core::Keys;
use distcron_kv::{KvStore, RangeRequest};
use distcron_ledger::{
    claim_slot, claim_slots, record_skip, release, undelivered_of, workers_with_undelivered,
    LedgerExpect, MarkerChanges, SlotAction, SlotClaim, SlotOutcome, UndeliveredMarker,
    MAX_CLAIMS_PER_TXN, MAX_TXN_OPS,
};
use distcron_testkit::unique_name;

on_both_stores!(
    one_winner_per_slot_and_slots_only_move_forward,
    forbid_reports_overlap_and_the_skip_is_recorded_once,
    a_changed_job_is_not_claimed_from_its_old_revision,
    a_full_batch_settles_each_claim_by_its_own_conditions,
    concurrent_batches_give_each_slot_one_winner,
    a_release_keeps_a_marker_of_its_runs_until_it_is_deleted,
    a_claim_never_passes_over_an_unclaimed_slot_unless_it_takes_it_over,
    a_skip_claim_moves_the_ledger_once_and_shares_a_batch_with_run_claims,
    a_full_batch_of_the_largest_claims_fits_one_transaction
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
        expect: LedgerExpect::Before,
        action: distcron_ledger::SlotAction::Run,
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
    let first = record_skip(
        store.as_ref(),
        &keys,
        "j",
        rev,
        2_000,
        &LedgerExpect::Before,
    )
    .await
    .unwrap();
    let second = record_skip(
        store.as_ref(),
        &keys,
        "j",
        rev,
        2_000,
        &LedgerExpect::Before,
    )
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
        MarkerChanges::default(),
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
        .put(&keys.job("j"), b"{\"updatedAt\":900}".to_vec(), None)
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
    // Changed, and when: the claimant can tell whether the new revision plans this slot.
    let current = store
        .get(&keys.job("j"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    assert_eq!(
        outcome,
        SlotOutcome::JobChanged {
            revision: Some(current),
            updated_at_ms: 900,
            ledger_ms: None
        }
    );
    store.delete(&keys.job("j")).await.unwrap();
    let outcome = claim_slot(
        store.as_ref(),
        &keys,
        &claim(rev, 1_000, "a", session, false),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        SlotOutcome::JobChanged {
            revision: None,
            updated_at_ms: 0,
            ledger_ms: None
        }
    );
}

/// Saves jobs `j0..jn` and returns their revisions.
async fn jobs(store: &dyn KvStore, keys: &Keys, n: usize) -> Vec<i64> {
    let mut revs = Vec::new();
    for i in 0..n {
        let key = keys.job(&format!("j{i}"));
        store.put(&key, b"{}".to_vec(), None).await.unwrap();
        revs.push(store.get(&key).await.unwrap().unwrap().mod_revision);
    }
    revs
}

fn claim_of(job: usize, rev: i64, slot: i64, worker: &str, session: i64) -> SlotClaim {
    SlotClaim {
        job: format!("j{job}"),
        run_id: format!("{worker}-j{job}-{slot}"),
        ..claim(rev, slot, worker, session, true)
    }
}

async fn a_full_batch_settles_each_claim_by_its_own_conditions(store: Arc<dyn KvStore>) {
    let keys = Keys::new(&format!("/{}/", unique_name("batch")));
    let revs = jobs(store.as_ref(), &keys, MAX_CLAIMS_PER_TXN).await;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    // j0: another worker already has this slot.
    let taken = claim_of(0, revs[0], 5_000, "other", session);
    assert!(matches!(
        claim_slot(store.as_ref(), &keys, &taken, false)
            .await
            .unwrap(),
        SlotOutcome::Won(_)
    ));
    // j1: changed since the slot was computed.
    store
        .put(&keys.job("j1"), b"{\"changed\":1}".to_vec(), None)
        .await
        .unwrap();
    // j2: a run of it is in progress (forbid).
    let earlier = claim_of(2, revs[2], 1_000, "other", session);
    assert!(matches!(
        claim_slot(store.as_ref(), &keys, &earlier, false)
            .await
            .unwrap(),
        SlotOutcome::Won(_)
    ));
    // j3: its ledger exists but the claim guesses it does not; released so forbid passes.
    let old = claim_of(3, revs[3], 1_000, "other", session);
    claim_slot(store.as_ref(), &keys, &old, false)
        .await
        .unwrap();
    release(
        store.as_ref(),
        &keys,
        &[("j3".into(), old.run_id.clone())],
        MarkerChanges::default(),
    )
    .await
    .unwrap();
    // j4: this very claim was applied by an earlier attempt whose answer was lost.
    let retried = claim_of(4, revs[4], 5_000, "me", session);
    claim_slot(store.as_ref(), &keys, &retried, false)
        .await
        .unwrap();

    let batch: Vec<(SlotClaim, bool)> = (0..MAX_CLAIMS_PER_TXN)
        .map(|i| (claim_of(i, revs[i], 5_000, "me", session), false))
        .collect();
    let outcomes = claim_slots(store.as_ref(), &keys, &batch).await.unwrap();
    assert_eq!(outcomes.len(), MAX_CLAIMS_PER_TXN);
    assert_eq!(
        outcomes[0],
        SlotOutcome::AlreadyClaimed { ledger_ms: 5_000 }
    );
    assert!(
        matches!(
            outcomes[1],
            SlotOutcome::JobChanged {
                revision: Some(_),
                ..
            }
        ),
        "{:?}",
        outcomes[1]
    );
    match &outcomes[2] {
        SlotOutcome::Overlap { running } => assert_eq!(running[0].run_id, earlier.run_id),
        other => panic!("unexpected {other:?}"),
    }
    for (i, outcome) in outcomes.iter().enumerate().skip(3) {
        match outcome {
            SlotOutcome::Won(r) => {
                assert_eq!(r.run_id, format!("me-j{i}-5000"));
                assert!(store
                    .get(&keys.running(&format!("j{i}"), &r.run_id))
                    .await
                    .unwrap()
                    .is_some());
            }
            other => panic!("j{i}: unexpected {other:?}"),
        }
    }
    // Nothing was written for the claims that did not win.
    assert!(store
        .get(&keys.running("j1", "me-j1-5000"))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get(&keys.running("j2", "me-j2-5000"))
        .await
        .unwrap()
        .is_none());

    // Malformed batches are refused before anything is sent.
    let too_many: Vec<(SlotClaim, bool)> = (0..=MAX_CLAIMS_PER_TXN)
        .map(|i| (claim_of(i, 1, 9_000, "me", session), true))
        .collect();
    assert!(claim_slots(store.as_ref(), &keys, &too_many).await.is_err());
    let twice = vec![
        (claim_of(5, revs[5], 9_000, "me", session), true),
        (claim_of(5, revs[5], 10_000, "me", session), true),
    ];
    assert!(claim_slots(store.as_ref(), &keys, &twice).await.is_err());
    assert_eq!(
        claim_slot(
            store.as_ref(),
            &keys,
            &claim_of(5, revs[5], 5_000, "late", session),
            true
        )
        .await
        .unwrap(),
        SlotOutcome::AlreadyClaimed { ledger_ms: 5_000 },
        "the refused batches changed nothing"
    );
}

async fn concurrent_batches_give_each_slot_one_winner(store: Arc<dyn KvStore>) {
    let keys = Keys::new(&format!("/{}/", unique_name("batches")));
    let n = 30;
    let revs = jobs(store.as_ref(), &keys, n).await;
    // Each worker claims an overlapping window of the jobs, in its own order.
    let window = move |w: usize| (0..20).map(move |k| (k * 7 + w * 5) % n);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (store, keys, revs) = (store.clone(), keys.clone(), revs.clone());
        tasks.push(tokio::spawn(async move {
            let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
            let batch: Vec<(SlotClaim, bool)> = window(w)
                .map(|i| {
                    let mut c = claim_of(i, revs[i], 1_000, &format!("w{w}"), session);
                    c.forbid_overlap = false;
                    (c, w % 2 == 0)
                })
                .collect();
            let outcomes = claim_slots(store.as_ref(), &keys, &batch).await.unwrap();
            batch
                .into_iter()
                .zip(outcomes)
                .map(|((c, _), o)| (c.job, o))
                .collect::<Vec<_>>()
        }));
    }
    let mut winners = std::collections::HashMap::new();
    for t in tasks {
        for (job, outcome) in t.await.unwrap() {
            match outcome {
                SlotOutcome::Won(r) => {
                    assert!(
                        winners.insert(job.clone(), r.worker_id).is_none(),
                        "{job} won twice"
                    );
                }
                SlotOutcome::AlreadyClaimed { ledger_ms } => assert_eq!(ledger_ms, 1_000),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // Every job some worker claimed has its winner.
    let claimed: std::collections::BTreeSet<String> =
        (0..4).flat_map(window).map(|i| format!("j{i}")).collect();
    let won: std::collections::BTreeSet<String> = winners.keys().cloned().collect();
    assert_eq!(won, claimed, "one winner for each claimed slot");
    for (job, worker) in &winners {
        let (running, _) = distcron_kv::list_prefix(store.as_ref(), &keys.running_of(job))
            .await
            .unwrap();
        assert_eq!(running.len(), 1, "{job}: one running record");
        assert!(String::from_utf8_lossy(&running[0].value).contains(worker.as_str()));
    }
}

async fn a_release_keeps_a_marker_of_its_runs_until_it_is_deleted(store: Arc<dyn KvStore>) {
    let (store, keys, rev) = setup(store).await;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    // More runs than one transaction holds: the marker goes with the first one.
    let mut records = Vec::new();
    for slot in (1..=MAX_TXN_OPS as i64 + 5).map(|i| i * 1_000) {
        match claim_slot(
            store.as_ref(),
            &keys,
            &claim(rev, slot, "w1", session, false),
            true,
        )
        .await
        .unwrap()
        {
            SlotOutcome::Won(record) => records.push(record),
            other => panic!("{other:?}"),
        }
    }
    let runs: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.job_name.clone(), r.run_id.clone()))
        .collect();
    let marker = UndeliveredMarker {
        key: keys.undelivered("w1", "1-0000000001"),
        runs: records[..3].to_vec(),
    };
    let earlier = keys.undelivered("w1", "0-0000000001");
    store.put(&earlier, b"[]".to_vec(), None).await.unwrap();
    release(
        store.as_ref(),
        &keys,
        &runs,
        MarkerChanges {
            put: Some(&marker),
            delete: std::slice::from_ref(&earlier),
        },
    )
    .await
    .unwrap();
    let running = store
        .range(RangeRequest {
            prefix: keys.running_all(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(running.kvs.is_empty(), "{} left", running.kvs.len());
    assert_eq!(
        undelivered_of(store.as_ref(), &keys, "w1").await.unwrap(),
        vec![marker.clone()]
    );
    assert_eq!(
        workers_with_undelivered(store.as_ref(), &keys)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["w1"]
    );
    // A release of nothing but a marker deletion.
    let delete = [marker.key.clone()];
    release(
        store.as_ref(),
        &keys,
        &[],
        MarkerChanges {
            put: None,
            delete: &delete,
        },
    )
    .await
    .unwrap();
    assert!(workers_with_undelivered(store.as_ref(), &keys)
        .await
        .unwrap()
        .is_empty());
}

async fn a_claim_never_passes_over_an_unclaimed_slot_unless_it_takes_it_over(
    store: Arc<dyn KvStore>,
) {
    let (store, keys, rev) = setup(store).await;
    let s = store.as_ref();
    let with = |slot: i64, expect: LedgerExpect| SlotClaim {
        expect,
        ..claim(rev, slot, "a", 0, false)
    };
    let won = |o: SlotOutcome| matches!(o, SlotOutcome::Won(_));
    assert!(won(claim_slot(
        s,
        &keys,
        &with(1_000, LedgerExpect::Before),
        false
    )
    .await
    .unwrap()));
    // Slot 3000 needs slot 2000 claimed first: neither its claim nor a skip passes over it.
    let behind = SlotOutcome::Behind {
        ledger_ms: Some(1_000),
    };
    assert_eq!(
        claim_slot(s, &keys, &with(3_000, LedgerExpect::Reached(2_000)), true)
            .await
            .unwrap(),
        behind
    );
    assert!(
        !record_skip(s, &keys, "j", rev, 3_000, &LedgerExpect::Reached(2_000))
            .await
            .unwrap()
    );
    assert!(won(claim_slot(
        s,
        &keys,
        &with(2_000, LedgerExpect::Reached(1_000)),
        true
    )
    .await
    .unwrap()));
    assert!(won(claim_slot(
        s,
        &keys,
        &with(3_000, LedgerExpect::Reached(2_000)),
        true
    )
    .await
    .unwrap()));
    // Taking slot 4000 over needs the ledger exactly where it was read.
    let pass_over = |ledger_ms: Option<i64>| LedgerExpect::PassOver {
        ledger_ms,
        passed: distcron_core::records::PassedOver {
            slots: vec![4_000],
            reason: "not claimed in time".into(),
            ..Default::default()
        },
    };
    assert_eq!(
        claim_slot(s, &keys, &with(5_000, pass_over(Some(2_000))), true)
            .await
            .unwrap(),
        SlotOutcome::Behind {
            ledger_ms: Some(3_000)
        }
    );
    let SlotOutcome::Won(record) = claim_slot(s, &keys, &with(5_000, pass_over(Some(3_000))), true)
        .await
        .unwrap()
    else {
        panic!("the pass-over claim wins");
    };
    let passed = record
        .passed_over
        .expect("the record lists what it passed over");
    assert_eq!(passed.slots, [4_000]);
    let stored = s
        .range(RangeRequest {
            prefix: keys.running_of("j"),
            ..Default::default()
        })
        .await
        .unwrap();
    let stored: Vec<distcron_core::records::RunningRecord> = stored
        .kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect();
    assert!(
        stored
            .iter()
            .any(|r| r.slot_ms == 5_000 && r.passed_over.as_ref() == Some(&passed)),
        "the running record carries the passed-over slots: {stored:?}"
    );
    // The passed-over slot's own late claim finds the ledger past it.
    assert_eq!(
        claim_slot(s, &keys, &with(4_000, LedgerExpect::Reached(3_000)), true)
            .await
            .unwrap(),
        SlotOutcome::AlreadyClaimed { ledger_ms: 5_000 }
    );
    // A job never claimed: a pass-over expects its ledger absent.
    let fresh = SlotClaim {
        job: "j-never".into(),
        ..with(9_000, pass_over(None))
    };
    s.put(&keys.job("j-never"), b"{}".to_vec(), None)
        .await
        .unwrap();
    let fresh_rev = s
        .get(&keys.job("j-never"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    assert!(won(claim_slot(
        s,
        &keys,
        &SlotClaim {
            job_revision: fresh_rev,
            ..fresh
        },
        false
    )
    .await
    .unwrap()));
}

async fn a_skip_claim_moves_the_ledger_once_and_shares_a_batch_with_run_claims(
    store: Arc<dyn KvStore>,
) {
    let (store, keys, rev) = setup(store).await;
    let s = store.as_ref();
    store
        .put(&keys.job("k"), b"{}".to_vec(), None)
        .await
        .unwrap();
    let rev_k = store
        .get(&keys.job("k"))
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(matches!(
        claim_slot(s, &keys, &claim(rev, 1_000, "a", session, true), false)
            .await
            .unwrap(),
        SlotOutcome::Won(_)
    ));
    let skip = |slot: i64, worker: &str| SlotClaim {
        action: SlotAction::Skip,
        ..claim(rev, slot, worker, session, true)
    };
    let run_k = SlotClaim {
        job: "k".into(),
        job_revision: rev_k,
        ..claim(rev_k, 2_000, "b", session, false)
    };
    // The skip of j's slot 2000 (its run of 1000 still running) and a run claim of k's slot, in
    // one transaction; the skip's guess that j's ledger is absent is corrected on the way.
    let outcomes = claim_slots(s, &keys, &[(skip(2_000, "b"), false), (run_k, false)])
        .await
        .unwrap();
    assert_eq!(outcomes[0], SlotOutcome::Skipped);
    assert!(matches!(outcomes[1], SlotOutcome::Won(_)));
    let ledger = store.get(&keys.ledger("j")).await.unwrap().unwrap();
    assert_eq!(
        distcron_core::records::ledger::decode(&ledger.value),
        Some(2_000)
    );
    // No running record for the skipped slot; the running run is untouched.
    let (running, _) = distcron_kv::list_prefix(s, &keys.running_of("j"))
        .await
        .unwrap();
    let ids: Vec<String> = running
        .iter()
        .map(|kv| {
            serde_json::from_slice::<distcron_core::records::RunningRecord>(&kv.value)
                .unwrap()
                .run_id
        })
        .collect();
    assert_eq!(ids, ["a-1000"]);
    // A second worker's skip of the same slot moves nothing.
    assert_eq!(
        claim_slot(s, &keys, &skip(2_000, "c"), true).await.unwrap(),
        SlotOutcome::AlreadyClaimed { ledger_ms: 2_000 }
    );
    // A skip needs its predecessors claimed, as a run claim does.
    let behind = SlotClaim {
        expect: LedgerExpect::Reached(3_000),
        ..skip(4_000, "c")
    };
    assert_eq!(
        claim_slot(s, &keys, &behind, true).await.unwrap(),
        SlotOutcome::Behind {
            ledger_ms: Some(2_000)
        }
    );
    // A skip from an old revision of the job moves nothing either.
    store
        .put(&keys.job("j"), b"{}".to_vec(), None)
        .await
        .unwrap();
    assert!(matches!(
        claim_slot(s, &keys, &skip(3_000, "c"), true).await.unwrap(),
        SlotOutcome::JobChanged { .. }
    ));
}

/// Claims with the most compares a claim has (a ledger range under `forbid`): as many as
/// `MAX_TXN_OPS` compares allow fit one transaction, and one more is refused before it reaches the
/// store (etcd refuses a transaction with more than `MAX_TXN_OPS` compares).
async fn a_full_batch_of_the_largest_claims_fits_one_transaction(store: Arc<dyn KvStore>) {
    let keys = Keys::new(&format!("/{}/", unique_name("largest")));
    let revs = jobs(store.as_ref(), &keys, MAX_CLAIMS_PER_TXN).await;
    let session = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let first: Vec<(SlotClaim, bool)> = (0..MAX_CLAIMS_PER_TXN)
        .map(|i| (claim_of(i, revs[i], 1_000, "a", session), false))
        .collect();
    let won = claim_slots(store.as_ref(), &keys, &first).await.unwrap();
    assert!(won.iter().all(|o| matches!(o, SlotOutcome::Won(_))));
    let runs: Vec<(String, String)> = first
        .iter()
        .map(|(c, _)| (c.job.clone(), c.run_id.clone()))
        .collect();
    release(store.as_ref(), &keys, &runs, MarkerChanges::default())
        .await
        .unwrap();
    let largest = |n: usize| -> Vec<(SlotClaim, bool)> {
        (0..n)
            .map(|i| {
                let claim = SlotClaim {
                    expect: LedgerExpect::Reached(1_000),
                    ..claim_of(i, revs[i], 3_000, "b", session)
                };
                (claim, true)
            })
            .collect()
    };
    let fits = MAX_TXN_OPS / largest(1)[0].0.compares();
    assert!(
        fits < MAX_CLAIMS_PER_TXN,
        "the test needs a batch the compares bound"
    );
    let err = claim_slots(store.as_ref(), &keys, &largest(fits + 1))
        .await
        .expect_err("one claim too many");
    assert!(err.to_string().contains("compares"), "{err}");
    let outcomes = claim_slots(store.as_ref(), &keys, &largest(fits))
        .await
        .unwrap();
    assert!(
        outcomes.iter().all(|o| matches!(o, SlotOutcome::Won(_))),
        "{outcomes:?}"
    );
}
