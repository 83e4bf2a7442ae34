//! Overlap and missed-slot policies, with real worker processes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    assert_each_slot_once, disable, exclusive, job, per_slot, settle, status, summary, with_status,
    Cluster,
};
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::logs::v1 as logs;

/// The shared cluster with workers `ids`, each with room for one run at a time.
async fn workers_with_one_place(ids: &[&str]) -> Cluster {
    let mut cluster = Cluster::shared().await;
    for id in ids {
        cluster.start_worker(id, &["--capacity", "1"]);
    }
    cluster.wait_for_workers(ids.len()).await;
    cluster
}

/// Saves `def` with the overlap policy `overlap`, waits up to `within` until `n` of its runs have
/// `status`, then disables it, kills what still runs of it when `kill` is set, and waits until
/// nothing of it runs.
async fn run_until(
    cluster: &mut Cluster,
    mut def: jobs::Job,
    overlap: jobs::OverlapPolicy,
    (status, n): (logs::RunStatus, usize),
    within: Duration,
    kill: bool,
) {
    def.overlap_policy = overlap as i32;
    let names = vec![def.name.clone()];
    cluster.save(def).await;
    cluster
        .wait_runs(&names[0], within, |runs| {
            with_status(runs, status).len() >= n
        })
        .await;
    disable(cluster, &names).await;
    if kill {
        cluster.kill_all(&names[0]).await;
    }
    settle(cluster, &names).await;
}

#[tokio::test]
async fn forbid_records_skipped_slots_and_never_overlaps() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["forbid-1", "forbid-2"]).await;
    let names = vec!["forbidden".to_owned()];
    // Forbid is the default: a 2.5 s run every second skips the slots in between.
    cluster
        .save(job("forbidden", "sleep 2.5", "* * * * * *"))
        .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    disable(&mut cluster, &names).await;
    settle(&mut cluster, &names).await;
    let runs = cluster.runs("forbidden").await;
    let slots = per_slot(&runs);
    assert!(slots.values().all(|n| *n == 1), "{:#?}", summary(&runs));
    let ran = with_status(&runs, logs::RunStatus::Succeeded);
    let skipped = with_status(&runs, logs::RunStatus::Skipped);
    assert!(ran.len() >= 2, "{:#?}", summary(&runs));
    let forbidden = skipped
        .iter()
        .filter(|r| r.err.contains("overlap policy forbid"))
        .count();
    assert!(forbidden >= 4, "{:#?}", summary(&runs));
    // The others: slots still pending when the test disabled the job, recorded as such.
    assert!(skipped
        .iter()
        .all(|r| r.err.contains("overlap policy forbid") || r.err.contains("the job was changed")));
    let mut spans: Vec<(i64, i64)> = ran
        .iter()
        .map(|r| (r.start_time_ms, r.end_time_ms))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {spans:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn replace_kills_the_running_run_then_starts_the_new_one() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["replace-1", "replace-2"]).await;
    run_until(
        &mut cluster,
        job("replaced", "sleep 3041", "*/3 * * * * *"),
        jobs::OverlapPolicy::Replace,
        (logs::RunStatus::Killed, 2),
        Duration::from_secs(20),
        true,
    )
    .await;
    // A replaced run's successor may be shipped after the replaced run's end, and may have
    // started after the kill above: wait for each successor's record, kill what still runs, and
    // wait until it has ended before checking the pairs.
    cluster
        .wait_runs("replaced", Duration::from_secs(20), |runs| {
            runs.iter()
                .filter(|r| r.err.contains("replace"))
                .all(|old| {
                    runs.iter()
                        .any(|new| new.plan_time_ms == old.plan_time_ms + 3000)
                })
        })
        .await;
    cluster.kill_all("replaced").await;
    settle(&mut cluster, &["replaced".to_owned()]).await;
    let mut runs = cluster.runs("replaced").await;
    runs.sort_by_key(|r| r.plan_time_ms);
    // Each run but the last was replaced by the next slot's run, which started only after it
    // had ended.
    let mut replaced = 0;
    for pair in runs.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if new.plan_time_ms - old.plan_time_ms != 3000 {
            continue;
        }
        replaced += 1;
        assert_eq!(
            status(old),
            logs::RunStatus::Killed,
            "{:#?}",
            summary(&runs)
        );
        assert!(old.err.contains("replace"), "{}", old.err);
        // A successor the disable superseded never started; one that ran started after.
        assert!(
            status(new) == logs::RunStatus::Skipped || new.start_time_ms >= old.end_time_ms,
            "the new run started before the replaced one ended: {:#?}",
            summary(&runs)
        );
    }
    // The two runs waited for were killed by a replacement, so at least two pairs were checked.
    assert!(
        replaced >= 2,
        "{replaced} replaced runs checked: {:#?}",
        summary(&runs)
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn latest_catch_up_runs_one_missed_slot_after_every_worker_was_down() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["catchup-1", "catchup-2"]).await;
    let names = vec!["caught-up".to_owned(), "not-caught-up".to_owned()];
    let mut latest = job("caught-up", "true", "* * * * * *");
    latest.missed_policy = jobs::MissedPolicy::Latest as i32;
    cluster.save(latest).await;
    // The default missed-slot policy (skip) runs nothing for the outage.
    cluster
        .save(job("not-caught-up", "true", "* * * * * *"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for w in &mut cluster.workers {
        w.stop().await;
    }
    let down_from = distcron_core::now_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let down_to = distcron_core::now_ms();
    for w in &mut cluster.workers {
        w.restart();
    }
    cluster.wait_for_workers(2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    disable(&mut cluster, &names).await;
    settle(&mut cluster, &names).await;

    let runs = cluster.runs("caught-up").await;
    let catch_ups: Vec<&logs::Run> = runs
        .iter()
        .filter(|r| r.trigger == logs::RunTrigger::CatchUp as i32)
        .collect();
    assert_eq!(catch_ups.len(), 1, "{:#?}", summary(&runs));
    let caught = catch_ups[0];
    assert_eq!(status(caught), logs::RunStatus::Succeeded);
    assert!(
        caught.plan_time_ms > down_from + 4_000 && caught.plan_time_ms < down_to + 2_000,
        "the catch-up runs the latest missed slot: {:#?}",
        summary(&runs)
    );
    let in_outage = |r: &&logs::Run| {
        r.trigger == logs::RunTrigger::Schedule as i32
            && r.plan_time_ms > down_from + 1_000
            && r.plan_time_ms < caught.plan_time_ms
    };
    // The earlier missed slots did not run: each is recorded skipped (passed over by the
    // catch-up), none ran.
    let (skipped, ran): (Vec<&logs::Run>, Vec<&logs::Run>) = runs
        .iter()
        .filter(in_outage)
        .partition(|r| status(r) == logs::RunStatus::Skipped);
    assert_eq!(ran.len(), 0, "{:#?}", summary(&runs));
    assert!(skipped.len() >= 3, "{:#?}", summary(&runs));
    let skipped_job = cluster.runs("not-caught-up").await;
    assert!(!skipped_job.is_empty(), "the job without catch-up ran");
    assert!(skipped_job
        .iter()
        .all(|r| r.trigger == logs::RunTrigger::Schedule as i32));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_slot_waits_for_a_place_until_the_jobs_next_slot() {
    let _guard = exclusive().await;
    let mut cluster = workers_with_one_place(&["one-place"]).await;
    let names = vec!["queued-a".to_owned(), "queued-b".to_owned()];
    // Both due every 2 s for 0.5 s, one place: one of them waits for the other every time.
    for name in &names {
        cluster.save(job(name, "sleep 0.5", "*/2 * * * * *")).await;
    }
    cluster
        .wait_runs("queued-b", Duration::from_secs(30), |runs| {
            with_status(runs, logs::RunStatus::Succeeded).len() >= 4
        })
        .await;
    disable(&mut cluster, &names).await;
    settle(&mut cluster, &names).await;
    let a = cluster.runs("queued-a").await;
    let b = cluster.runs("queued-b").await;
    for runs in [&a, &b] {
        assert!(
            runs.iter().all(|r| status(r) == logs::RunStatus::Succeeded),
            "no slot is skipped while a place frees up before the next one\n{:#?}",
            summary(runs)
        );
        let slots = per_slot(runs);
        assert!(slots.values().all(|n| *n == 1), "{:#?}", summary(runs));
        let mut times: Vec<i64> = slots.keys().copied().collect();
        times.sort_unstable();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == 2000),
            "no slot missing\n{:#?}",
            summary(runs)
        );
    }
    // One place: the runs of a slot never overlap, although both are claimed ahead of it.
    let mut shared = 0;
    for ra in &a {
        let Some(rb) = b.iter().find(|r| r.plan_time_ms == ra.plan_time_ms) else {
            continue;
        };
        shared += 1;
        let (first, second) = if ra.start_time_ms <= rb.start_time_ms {
            (ra, rb)
        } else {
            (rb, ra)
        };
        assert!(
            second.start_time_ms >= first.end_time_ms,
            "{:#?}\n{:#?}",
            summary(&a),
            summary(&b)
        );
    }
    assert!(shared >= 3, "{:#?}\n{:#?}", summary(&a), summary(&b));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_slot_no_worker_has_room_for_is_recorded_skipped() {
    let _guard = exclusive().await;
    let mut cluster = workers_with_one_place(&["full-1", "full-2"]).await;
    // Runs of 2.5 s every second need three places; the two workers have one each.
    // Each slot waits for a place until the next one; the backlog grows by a quarter second a
    // slot, so within a few slots one waits in vain. Meanwhile the other worker claims the next
    // slots: a slot given up on must still be recorded, not passed over.
    run_until(
        &mut cluster,
        job("crowded", "sleep 2.5", "* * * * * *"),
        jobs::OverlapPolicy::Allow,
        (logs::RunStatus::Skipped, 3),
        Duration::from_secs(45),
        false,
    )
    .await;
    // Every slot has its record: a run, or a skip saying why.
    let runs = assert_each_slot_once(&mut cluster, "crowded").await;
    let skipped = with_status(&runs, logs::RunStatus::Skipped);
    assert!(
        skipped
            .iter()
            .any(|r| r.err.contains("every worker was at capacity")),
        "{:#?}",
        summary(&runs)
    );
    // The others: slots still pending when the test disabled the job, recorded as such.
    assert!(
        skipped
            .iter()
            .all(|r| r.err.contains("every worker was at capacity")
                || r.err.contains("the job was changed")),
        "{:#?}",
        summary(&runs)
    );
    assert!(runs.iter().all(|r| matches!(
        status(r),
        logs::RunStatus::Succeeded | logs::RunStatus::Skipped
    )));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_run_waiting_for_a_place_is_ended_by_a_kill_request() {
    let _guard = exclusive().await;
    let mut cluster = workers_with_one_place(&["queue-1"]).await;
    let names = vec!["queued".to_owned()];
    let mut queued = job("queued", "sleep 3051", "*/4 * * * * *");
    queued.overlap_policy = jobs::OverlapPolicy::Allow as i32;
    cluster.save(queued).await;
    let runs = cluster
        .wait_runs("queued", Duration::from_secs(15), |runs| {
            !with_status(runs, logs::RunStatus::Running).is_empty()
        })
        .await;
    let first = with_status(&runs, logs::RunStatus::Running)[0].clone();
    // The next slot is claimed by the only worker, the last in line, which has no place: the run
    // waits for one (until the slot after) while the first one runs.
    let next_slot = first.plan_time_ms + 4000;
    let now = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(next_slot + 500 - now).unwrap_or(0),
    ))
    .await;
    let killed = cluster.kill_all("queued").await;
    assert_eq!(killed.run_ids.len(), 2, "{killed:?}");
    disable(&mut cluster, &names).await;
    settle(&mut cluster, &names).await;
    let runs = cluster.runs("queued").await;
    let ended: Vec<_> = runs
        .iter()
        .filter(|r| killed.run_ids.contains(&r.run_id))
        .collect();
    assert_eq!(ended.len(), 2, "{:#?}", summary(&runs));
    assert!(
        ended.iter().all(|r| status(r) == logs::RunStatus::Killed),
        "{:#?}",
        summary(&runs)
    );
    let waiting = ended
        .iter()
        .find(|r| r.plan_time_ms == next_slot)
        .expect("the waiting run has its record");
    assert!(
        waiting.err.starts_with("killed on request") && waiting.err.contains("it never started"),
        "{waiting:?}"
    );
    assert_eq!(waiting.exit_code, None, "{waiting:?}");
    assert_eq!(waiting.signal, None, "{waiting:?}");
    assert!(!common::process_running("sleep 3051"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_slot_whose_last_worker_in_line_is_gone_is_still_recorded() {
    let _guard = exclusive().await;
    let mut cluster = workers_with_one_place(&["backup-1"]).await;
    // A worker that is registered and claiming but gone (killed; its session not expired yet):
    // it is the last in line for about half the slots.
    let ghost = distcron_core::records::WorkerRegistration {
        worker_id: "ghost".into(),
        host: "gone".into(),
        started_at_ms: distcron_core::now_ms(),
        heartbeat_at_ms: distcron_core::now_ms(),
        capacity: 64,
        claiming: true,
        ..Default::default()
    };
    let ghost_key = cluster.keys.worker("ghost");
    cluster
        .store
        .put(&ghost_key, serde_json::to_vec(&ghost).unwrap(), None)
        .await
        .unwrap();
    // The first run keeps the live worker's only place; every later slot finds no place.
    run_until(
        &mut cluster,
        job("ghosted", "sleep 3052", "* * * * * *"),
        jobs::OverlapPolicy::Allow,
        (logs::RunStatus::Skipped, 6),
        Duration::from_secs(40),
        true,
    )
    .await;
    cluster.store.delete(&ghost_key).await.unwrap();
    // The slots the ghost was last in line for were claimed by the live worker as a backup, and
    // recorded: none is missing.
    let runs = assert_each_slot_once(&mut cluster, "ghosted").await;
    let skipped = with_status(&runs, logs::RunStatus::Skipped);
    let at_capacity = skipped
        .iter()
        .filter(|r| r.err.contains("every worker was at capacity"))
        .count();
    assert!(at_capacity >= 6, "{:#?}", summary(&runs));
    // The others: slots still pending when the test disabled the job, recorded as such.
    assert!(
        skipped
            .iter()
            .all(|r| r.err.contains("every worker was at capacity")
                || r.err.contains("the job was changed")),
        "{:#?}",
        summary(&runs)
    );
    assert!(!common::process_running("sleep 3052"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_job_runs_as_another_user_only_where_the_worker_allows_it() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared().await;
    cluster.start_worker("users-default", &[]);
    cluster.wait_for_workers(1).await;
    let mut def = job("as-nobody", "id -un", "0 0 0 1 1 *");
    def.user = "nobody".into();
    cluster.save(def).await;
    // The default allows only the worker's own user: refused, with the reason on the run.
    let refused = cluster
        .trigger_until("as-nobody", Duration::from_secs(20), |r| {
            status(r) != logs::RunStatus::Running
        })
        .await;
    assert_ne!(status(&refused), logs::RunStatus::Succeeded, "{refused:?}");
    assert!(
        refused.err.contains("--allowed-users") && refused.err.contains("nobody"),
        "{:?}",
        refused.err
    );
    assert!(
        refused.output.is_empty(),
        "nothing ran: {:?}",
        refused.output
    );
    cluster.workers[0].stop().await;
    // A worker whose operator allows it runs the job as that user (when it can: it is root).
    cluster.start_worker("users-allowed", &["--allowed-users", "nobody"]);
    cluster.wait_for_workers(1).await;
    let allowed = cluster
        .trigger_until("as-nobody", Duration::from_secs(20), |r| {
            status(r) != logs::RunStatus::Running
        })
        .await;
    assert!(
        !allowed.err.contains("--allowed-users"),
        "{:?}",
        allowed.err
    );
    if nix::unistd::geteuid().is_root() {
        assert_eq!(status(&allowed), logs::RunStatus::Succeeded, "{allowed:?}");
        assert_eq!(allowed.output, b"nobody\n");
    } else {
        eprintln!("not root: the run as nobody itself is not checked");
        assert!(allowed.err.contains("not root"), "{:?}", allowed.err);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn slots_of_a_job_deleted_before_they_were_claimed_are_recorded_skipped_once() {
    let _guard = exclusive().await;
    // No worker yet: nobody claims the job's slots before it is deleted.
    let mut cluster = Cluster::shared().await;
    let name = "deleted-unclaimed";
    let saved = cluster.save(job(name, "true", "* * * * * *")).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    cluster
        .jobs
        .delete_job(jobs::DeleteJobRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deleted_at = distcron_core::now_ms();
    // A job of the same name again (yearly, nothing due): the old one's slots are still recorded.
    cluster.save(job(name, "true", "0 0 0 1 1 *")).await;
    cluster.start_worker("tombstones-1", &[]);
    cluster.start_worker("tombstones-2", &[]);
    cluster.wait_for_workers(2).await;
    cluster
        .wait_runs(name, Duration::from_secs(20), |runs| runs.len() >= 3)
        .await;
    // Recorded once each, by one of the workers, with the reason.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = assert_each_slot_once(&mut cluster, name).await;
    assert!(runs.len() >= 3, "{:#?}", summary(&runs));
    for run in &runs {
        assert_eq!(
            status(run),
            logs::RunStatus::Skipped,
            "{:#?}",
            summary(&runs)
        );
        assert_eq!(
            run.err,
            "skipped: the job was deleted before the slot was claimed",
            "{:#?}",
            summary(&runs)
        );
        assert!(
            run.plan_time_ms >= saved.created_at_ms && run.plan_time_ms <= deleted_at,
            "{:#?}",
            summary(&runs)
        );
    }
    // The tombstone is gone.
    let tombstone = cluster
        .store
        .get(&cluster.keys.deleted(name))
        .await
        .unwrap();
    assert!(tombstone.is_none(), "the tombstone stays: {tombstone:?}");
    cluster.shutdown().await;
}
