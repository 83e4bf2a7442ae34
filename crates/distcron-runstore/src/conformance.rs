//! The behavioural suite every [`RunStore`] implementation must pass. Each test gets a store of
//! its own (e.g. its own database on a shared server).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use crate::{
    append_events, OutputCap, PageCursor, RunEvent, RunEventKind, RunFinish, RunQuery, RunStart,
    RunStatus, RunStore, StoredRun,
};

/// A store under test.
pub type Store = Arc<dyn RunStore>;

/// Generates the suite for one implementation: `run_store_conformance_tests!(async_factory)`
/// where the factory returns a fresh, initialised [`Store`].
#[macro_export]
macro_rules! run_store_conformance_tests {
    ($factory:path) => {
        $crate::run_store_conformance_tests!(@tests $factory;
            insert_many_and_versioned_update_many, get_many_returns_what_exists,
            list_is_newest_first_with_filters_and_both_pagings, list_can_leave_output_out,
            redelivered_batches_change_nothing, concurrent_writers_lose_no_chunk,
            stats_count_by_status_in_the_window, large_and_small_integers_round_trip);
    };
    (@tests $factory:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $factory().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn run(id: &str, job: &str, start: i64, status: RunStatus) -> StoredRun {
    StoredRun {
        run_id: id.into(),
        job_name: job.into(),
        command: "echo".into(),
        output: format!("out-{id}"),
        plan_time: start,
        start_time: start,
        end_time: if status.is_terminal() { start + 10 } else { 0 },
        duration_ms: if status.is_terminal() { 10 } else { 0 },
        status,
        version: 1,
        ..StoredRun::default()
    }
}

pub async fn insert_many_and_versioned_update_many(store: Store) {
    let r1 = run("r1", "j", 1_000, RunStatus::Running);
    assert!(store
        .insert_many(std::slice::from_ref(&r1))
        .await
        .unwrap()
        .is_empty());
    let mut r1_again = r1.clone();
    r1_again.status = RunStatus::Failed;
    let (r2, r3) = (
        run("r2", "j", 2_000, RunStatus::Running),
        run("r3", "j", 3_000, RunStatus::Running),
    );
    let existing = store
        .insert_many(&[r2.clone(), r1_again, r3.clone()])
        .await
        .unwrap();
    assert_eq!(existing, ["r1"], "an existing run is named, not replaced");
    assert_eq!(store.get("r1").await.unwrap().as_ref(), Some(&r1));
    assert_eq!(store.get("r2").await.unwrap(), Some(r2.clone()));
    assert_eq!(store.get("r3").await.unwrap(), Some(r3.clone()));

    let next = |r: &StoredRun, version: i64| {
        let mut n = r.clone();
        n.status = RunStatus::Succeeded;
        n.version = version;
        n
    };
    let (r1_v2, r2_v2, r3_stale) = (next(&r1, 2), next(&r2, 2), next(&r3, 3));
    let stale = store
        .update_many(&[r1_v2.clone(), r3_stale, r2_v2.clone()])
        .await
        .unwrap();
    assert_eq!(stale, ["r3"], "an update from a stale version is refused");
    assert_eq!(store.get("r1").await.unwrap(), Some(r1_v2));
    assert_eq!(store.get("r2").await.unwrap(), Some(r2_v2));
    assert_eq!(store.get("r3").await.unwrap(), Some(r3));
    assert_eq!(store.get("nope").await.unwrap(), None);
    assert!(store.insert_many(&[]).await.unwrap().is_empty());
    assert!(store.update_many(&[]).await.unwrap().is_empty());
}

pub async fn get_many_returns_what_exists(store: Store) {
    let runs = ["a", "b", "c"].map(|id| run(id, "j", 1, RunStatus::Running));
    assert!(store.insert_many(&runs).await.unwrap().is_empty());
    let mut got: Vec<String> = store
        .get_many(&["a".into(), "c".into(), "zz".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    got.sort();
    assert_eq!(got, ["a", "c"]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
}

pub async fn list_is_newest_first_with_filters_and_both_pagings(store: Store) {
    // Job "a": 6 runs, two pairs with tied start times. Job "b": 2 runs.
    let a = [
        ("a1", 100, RunStatus::Succeeded),
        ("a2", 200, RunStatus::Failed),
        ("a3", 200, RunStatus::Succeeded),
        ("a4", 300, RunStatus::Skipped),
        ("a5", 400, RunStatus::Succeeded),
        ("a6", 400, RunStatus::Running),
    ];
    let mut runs: Vec<StoredRun> = a.iter().map(|&(id, t, s)| run(id, "a", t, s)).collect();
    runs.push(run("b1", "b", 150, RunStatus::Lost));
    runs.push(run("b2", "b", 250, RunStatus::Succeeded));
    assert!(store.insert_many(&runs).await.unwrap().is_empty());
    let ids = |p: &crate::RunPage| p.runs.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>();
    let job_a = RunQuery {
        job_name: Some("a".into()),
        limit: 100,
        ..Default::default()
    };
    let all = store.list(&job_a).await.unwrap();
    assert_eq!(
        ids(&all),
        ["a6", "a5", "a4", "a3", "a2", "a1"],
        "start time desc, then id desc"
    );
    assert_eq!(all.total, 6);
    // Skip paging (the seed's).
    let skipped = store
        .list(&RunQuery {
            skip: 2,
            limit: 2,
            ..job_a.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&skipped), ["a4", "a3"]);
    assert_eq!(skipped.total, 6);
    // Cursor paging, stable through ties.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&RunQuery {
                limit: 4,
                after: after.clone(),
                ..job_a.clone()
            })
            .await
            .unwrap();
        if page.runs.is_empty() {
            break;
        }
        let last = page.runs.last().unwrap();
        after = Some(PageCursor {
            start_time: last.start_time,
            run_id: last.run_id.clone(),
        });
        seen.extend(ids(&page));
    }
    assert_eq!(seen, ["a6", "a5", "a4", "a3", "a2", "a1"]);
    // Filters.
    let ok = store
        .list(&RunQuery {
            statuses: vec![RunStatus::Succeeded],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&ok), ["a5", "b2", "a3", "a1"]);
    let window = store
        .list(&RunQuery {
            start_from: Some(150),
            start_before: Some(300),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&window), ["b2", "a3", "a2", "b1"]);
    assert_eq!(window.total, 4);
    let bad = store
        .list(&RunQuery {
            job_name: Some("b".into()),
            statuses: vec![RunStatus::Lost, RunStatus::Failed],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&bad), ["b1"]);
}

pub async fn list_can_leave_output_out(store: Store) {
    store
        .insert_many(&[run("o1", "j", 1, RunStatus::Succeeded)])
        .await
        .unwrap();
    let q = RunQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list(&q).await.unwrap().runs[0].output, "");
    let with = store
        .list(&RunQuery {
            with_output: true,
            ..q
        })
        .await
        .unwrap();
    assert_eq!(with.runs[0].output, "out-o1");
}

fn events(run_id: &str) -> Vec<RunEvent> {
    let ev = |kind| RunEvent {
        run_id: run_id.into(),
        trace_id: String::new(),
        kind,
    };
    vec![
        ev(RunEventKind::Started(RunStart {
            job_name: "j".into(),
            command: "echo".into(),
            plan_time: 5,
            start_time: 6,
            worker_id: "w".into(),
            ..Default::default()
        })),
        ev(RunEventKind::Output {
            seq: 0,
            data: b"hello ".to_vec(),
        }),
        ev(RunEventKind::Output {
            seq: 1,
            data: b"world".to_vec(),
        }),
        ev(RunEventKind::Finished(RunFinish {
            status: RunStatus::Succeeded,
            end_time: 9,
            exit_code: Some(0),
            ..Default::default()
        })),
    ]
}

pub async fn redelivered_batches_change_nothing(store: Store) {
    let batch = events("rd");
    append_events(store.as_ref(), &batch, OutputCap::default())
        .await
        .unwrap();
    let first = store.get("rd").await.unwrap().unwrap();
    assert_eq!(first.output, "hello world");
    assert_eq!(first.status, RunStatus::Succeeded);
    assert_eq!(first.duration_ms, 3);
    append_events(store.as_ref(), &batch, OutputCap::default())
        .await
        .unwrap();
    // The same events split differently, again.
    append_events(store.as_ref(), &batch[1..3], OutputCap::default())
        .await
        .unwrap();
    let again = store.get("rd").await.unwrap().unwrap();
    assert_eq!(again, first, "nothing changed, not even the version");
    let page = store
        .list(&RunQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
}

pub async fn concurrent_writers_lose_no_chunk(store: Store) {
    let start = events("cc");
    append_events(store.as_ref(), &start[..1], OutputCap::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for seq in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let e = RunEvent {
                run_id: "cc".into(),
                trace_id: String::new(),
                kind: RunEventKind::Output {
                    seq,
                    data: vec![b'x'],
                },
            };
            append_events(store.as_ref(), &[e], OutputCap::default()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = store.get("cc").await.unwrap().unwrap();
    // Chunks raced; each was applied exactly once or skipped as older than one already applied.
    assert!(got.output.len() <= 8 && !got.output.is_empty());
    assert_eq!(got.output_bytes, i64::try_from(got.output.len()).unwrap());
    assert_eq!(got.version, 1 + i64::try_from(got.output.len()).unwrap());
}

pub async fn stats_count_by_status_in_the_window(store: Store) {
    let runs = [
        run("s1", "st", 100, RunStatus::Succeeded),
        run("s2", "st", 200, RunStatus::Succeeded),
        run("s3", "st", 300, RunStatus::Failed),
        run("s4", "st", 400, RunStatus::Lost),
        run("s5", "st", 50, RunStatus::Failed),
        run("other", "zz", 1_000, RunStatus::Succeeded),
    ];
    assert!(store.insert_many(&runs).await.unwrap().is_empty());
    let stats = store.stats("st", 100).await.unwrap();
    assert_eq!(stats.last_run.unwrap().run_id, "s4");
    let count = |s| {
        stats
            .totals
            .iter()
            .find(|t| t.status == s)
            .map_or(0, |t| t.count)
    };
    assert_eq!(count(RunStatus::Succeeded), 2);
    assert_eq!(count(RunStatus::Failed), 1, "s5 is before the window");
    assert_eq!(count(RunStatus::Lost), 1);
    let dur = stats
        .totals
        .iter()
        .find(|t| t.status == RunStatus::Succeeded)
        .unwrap()
        .duration_ms;
    assert_eq!(dur, 20);
    assert_eq!(stats.last_success_ms, 200);
    assert_eq!(stats.last_failure_ms, 400);
    let empty = store.stats("nothing", 0).await.unwrap();
    assert!(empty.last_run.is_none() && empty.totals.is_empty());
}

pub async fn large_and_small_integers_round_trip(store: Store) {
    let mut r = run("ints", "j", 1_764_000_000_123, RunStatus::Failed);
    r.exit_code = Some(-1);
    r.signal = Some(9);
    r.output_bytes = 5;
    r.next_seq = 3;
    assert!(store
        .insert_many(std::slice::from_ref(&r))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get("ints").await.unwrap().unwrap(), r);
}
