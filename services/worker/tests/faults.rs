//! Crashes, kills, timeouts, output limits and outages, with real worker processes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    assert_each_slot_once, assert_exactly_once, disable, exclusive, job, per_slot, process_running,
    settle, status, summary, with_status, Cluster,
};
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::logs::v1 as logs;
use distcron_runstore::{MongoConfig, MongoRunStore, RunStore};
use distcron_testkit::{shared_mongo, Etcd};

/// A schedule whose next slot is far away: such jobs run only when triggered.
const YEARLY: &str = "0 0 0 1 1 *";

/// Triggers `name` and waits until its run has the status `want`; returns the run.
async fn trigger_and_wait(cluster: &mut Cluster, name: &str, want: logs::RunStatus) -> logs::Run {
    cluster
        .trigger_until(name, Duration::from_secs(15), |r| status(r) == want)
        .await
}

/// How many writes stored the run: the version of its document in the run store.
async fn writes_of(cluster: &Cluster, run_id: &str) -> i64 {
    let mut config = MongoConfig::new(&cluster.mongo_uri);
    config.database = cluster.database.clone();
    let store = MongoRunStore::connect(&config).await.unwrap();
    store.get(run_id).await.unwrap().unwrap().version
}

/// Waits until no process whose command line contains `marker` is left.
async fn wait_gone(marker: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if !process_running(marker) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until a process whose command line contains `marker` runs.
async fn wait_running(marker: &str) {
    for _ in 0..100 {
        if process_running(marker) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no process {marker:?} started");
}

#[tokio::test]
async fn a_crashed_workers_run_becomes_lost_its_processes_die_and_slots_move_on() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["crash-1", "crash-2"]).await;
    let ticking = vec!["ticking".to_owned()];
    cluster.save(job("ticking", "true", "* * * * * *")).await;
    cluster
        .save(job("long", "sleep 3011 & sleep 3012 & wait", YEARLY))
        .await;
    let run = trigger_and_wait(&mut cluster, "long", logs::RunStatus::Running).await;
    wait_running("sleep 3011").await;
    let victim = cluster
        .workers
        .iter()
        .position(|w| w.id == run.worker_id)
        .unwrap();
    let crashed_at = distcron_core::now_ms();
    cluster.workers[victim].crash();
    // The group leader takes the whole process group down with the worker, grandchildren too.
    assert!(
        wait_gone("sleep 3011", Duration::from_secs(3)).await,
        "a background process of the crashed worker's run survived it"
    );
    assert!(!process_running("sleep 3012"));
    // Session TTL 2 s: the run is recorded lost within the TTL plus a few seconds.
    let runs = cluster
        .wait_runs("long", Duration::from_secs(2 + 6), |runs| {
            runs.iter().any(|r| status(r) == logs::RunStatus::Lost)
        })
        .await;
    let lost = runs.iter().find(|r| r.run_id == run.run_id).unwrap();
    assert_eq!(status(lost), logs::RunStatus::Lost, "{:#?}", summary(&runs));
    assert!(lost.err.contains("crash-"), "{}", lost.err);
    assert!(lost.end_time_ms - crashed_at < 8_000, "{lost:?}");
    // The other worker carries the ticking job's slots: once the crash is a few seconds old,
    // every recorded run is its own (the gap-free check comes at the end).
    let survivor = cluster.workers[1 - victim].id.clone();
    let after_crash = |runs: &[logs::Run]| -> Vec<logs::Run> {
        runs.iter()
            .filter(|r| r.plan_time_ms > crashed_at + 3_000)
            .cloned()
            .collect()
    };
    let runs = cluster
        .wait_runs("ticking", Duration::from_secs(15), |runs| {
            after_crash(runs).len() >= 3
        })
        .await;
    let after = after_crash(&runs);
    assert!(
        after.iter().all(|r| r.worker_id == survivor),
        "{:#?}",
        summary(&after)
    );
    // The crashed worker comes back with its spool and records, and joins again.
    cluster.workers[victim].restart();
    cluster.wait_for_workers(2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    disable(&mut cluster, &ticking).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &ticking).await;
    // A ticking run of the victim that had not been delivered (or released) when it crashed is
    // recorded lost, and the slots after it are skipped (overlap policy forbid) until its
    // session expired; every other slot ran.
    let runs = assert_each_slot_once(&mut cluster, "ticking").await;
    let victim_id = &cluster.workers[victim].id;
    // As long as recording the lost run may take (asserted above).
    let unsettled_until = crashed_at + 8_000;
    let not_succeeded: Vec<&logs::Run> = runs
        .iter()
        .filter(|r| status(r) != logs::RunStatus::Succeeded)
        .collect();
    assert!(
        not_succeeded.iter().all(|r| {
            let near_crash = (crashed_at - 1_000..unsettled_until).contains(&r.plan_time_ms);
            match status(r) {
                logs::RunStatus::Lost => near_crash && &r.worker_id == victim_id,
                logs::RunStatus::Skipped => near_crash && r.err.contains("still running"),
                _ => false,
            }
        }),
        "{:#?}",
        summary(&runs)
    );
    assert!(runs.len() - not_succeeded.len() >= 5);
    cluster.shutdown().await;
}

#[tokio::test]
async fn kill_through_jobsvc_ends_the_whole_process_group() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["kill-1"]).await;
    cluster
        .save(job(
            "tree",
            "sleep 3021 & sh -c 'sleep 3022 & wait' & wait",
            YEARLY,
        ))
        .await;
    let run = trigger_and_wait(&mut cluster, "tree", logs::RunStatus::Running).await;
    wait_running("sleep 3022").await;
    assert!(
        process_running("distcron-group-leader __group-leader [0-9]+ /bin/sh sleep 3021"),
        "the run is led by the small leader program installed next to the worker"
    );
    let killed = cluster.kill_all("tree").await;
    assert!(killed.was_running);
    assert_eq!(killed.run_ids, vec![run.run_id.clone()]);
    let runs = cluster
        .wait_runs("tree", Duration::from_secs(10), |runs| {
            runs.iter().all(|r| status(r) != logs::RunStatus::Running)
        })
        .await;
    assert_eq!(
        status(&runs[0]),
        logs::RunStatus::Killed,
        "{:#?}",
        summary(&runs)
    );
    assert_eq!(runs[0].signal, Some(15), "{:?}", runs[0]);
    assert!(wait_gone("sleep 3021", Duration::from_secs(1)).await);
    assert!(!process_running("sleep 3022"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_timeout_ends_the_group_and_output_over_the_cap_keeps_head_and_tail() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["limits-1"]).await;
    // Ignores SIGTERM, so only the SIGKILL after the 2 s grace ends it.
    let mut slow = job(
        "slow",
        "trap '' TERM; echo begun; sleep 3031 & sleep 3032; wait",
        YEARLY,
    );
    slow.timeout_seconds = 1;
    cluster.save(slow).await;
    cluster.save(job("chatty", "seq 1 20000", YEARLY)).await;

    trigger_and_wait(&mut cluster, "slow", logs::RunStatus::Running).await;
    let runs = cluster
        .wait_runs("slow", Duration::from_secs(10), |runs| {
            runs.iter().all(|r| status(r) != logs::RunStatus::Running)
        })
        .await;
    let timed_out = &runs[0];
    assert_eq!(
        status(timed_out),
        logs::RunStatus::TimedOut,
        "{timed_out:?}"
    );
    assert_eq!(timed_out.signal, Some(9), "{timed_out:?}");
    let took = timed_out.end_time_ms - timed_out.start_time_ms;
    assert!(
        (2_900..8_000).contains(&took),
        "timeout 1 s + grace 2 s, took {took} ms"
    );
    assert_eq!(String::from_utf8_lossy(&timed_out.output), "begun\n");
    assert!(wait_gone("sleep 3031", Duration::from_secs(1)).await);

    cluster
        .jobs
        .trigger_job(jobs::TriggerJobRequest {
            name: "chatty".into(),
        })
        .await
        .unwrap();
    let runs = cluster
        .wait_runs("chatty", Duration::from_secs(15), |runs| {
            runs.len() == 1 && status(&runs[0]) == logs::RunStatus::Succeeded
        })
        .await;
    let run = &runs[0];
    let output = String::from_utf8_lossy(&run.output);
    assert!(run.output_truncated);
    assert_eq!(run.output_bytes, 108_894, "every byte is counted");
    assert!(output.len() <= 4096 + 64, "{} bytes kept", output.len());
    assert!(output.starts_with("1\n2\n3\n"), "{output}");
    assert!(output.ends_with("19999\n20000\n"), "{output}");
    assert!(output.contains(distcron_runstore::TRUNCATION_MARKER));
    cluster.shutdown().await;
}

#[tokio::test]
async fn runs_during_a_logsvc_outage_are_delivered_once_when_it_returns() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["spool-1", "spool-2"]).await;
    let names = vec!["spooled".to_owned()];
    cluster
        .save(job("spooled", "echo tick", "* * * * * *"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop_logsvc().await;
    let down_from = distcron_core::now_ms();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let down_to = distcron_core::now_ms();
    cluster.start_logsvc(None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    let slots = assert_exactly_once(&mut cluster, "spooled").await;
    assert!(slots >= 15, "{slots} slots");
    let during = cluster
        .runs("spooled")
        .await
        .into_iter()
        .filter(|r| r.plan_time_ms > down_from && r.plan_time_ms < down_to)
        .inspect(|r| assert_eq!(String::from_utf8_lossy(&r.output), "tick\n"))
        .count();
    assert!(
        during >= 9,
        "only {during} runs of the outage were delivered"
    );
    cluster.shutdown().await;
}

/// The workers of `cluster` that have undelivered-run markers in etcd.
async fn workers_with_markers(cluster: &Cluster) -> std::collections::BTreeSet<String> {
    distcron_ledger::workers_with_undelivered(cluster.store.as_ref(), &cluster.keys)
        .await
        .unwrap()
}

#[tokio::test]
async fn ended_runs_a_worker_gone_for_good_never_delivered_are_recorded_lost() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["gone-1", "gone-2"]).await;
    let names: Vec<String> = (0..4).map(|i| format!("undelivered-{i}")).collect();
    for name in &names {
        cluster.save(job(name, "true", "* * * * * *")).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.stop_logsvc().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The runs ended during the outage wait in their workers' spools, each listed in a marker.
    let marked = workers_with_markers(&cluster).await;
    let victim = cluster
        .workers
        .iter()
        .position(|w| marked.contains(&w.id))
        .unwrap_or_else(|| panic!("no worker marked its undelivered runs: {marked:?}"));
    let victim_id = cluster.workers[victim].id.clone();
    // Gone for good: killed, its spool never delivered.
    let crashed_at = distcron_core::now_ms();
    cluster.workers[victim].crash();
    cluster.start_logsvc(None).await;
    // Session TTL 2 s, then the survivor records the victim's marked runs.
    tokio::time::sleep(Duration::from_secs(6)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    let mut recorded_lost = 0;
    for name in &names {
        // Every slot has its record, those that ran on the victim during the outage too.
        let runs = assert_each_slot_once(&mut cluster, name).await;
        for run in with_status(&runs, logs::RunStatus::Lost) {
            // Lost in progress (a slot may be claimed up to the claim lead ahead), or ended
            // before the crash and never delivered.
            assert_eq!(run.worker_id, victim_id, "{:#?}", summary(&runs));
            assert!(
                run.plan_time_ms < crashed_at + 1_000,
                "{:#?}",
                summary(&runs)
            );
            if run.err.contains("before logsvc stored") {
                assert!(run.plan_time_ms < crashed_at, "{:#?}", summary(&runs));
                recorded_lost += 1;
            }
        }
    }
    assert!(recorded_lost > 0, "no undelivered run was recorded lost");
    // The survivor deletes the victim's markers once logsvc has stored those records.
    let mut left = workers_with_markers(&cluster).await;
    for _ in 0..50 {
        if !left.contains(&victim_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = workers_with_markers(&cluster).await;
    }
    assert!(!left.contains(&victim_id), "{left:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn slots_run_exactly_once_while_an_etcd_member_is_down() {
    let _guard = exclusive().await;
    let mut etcd = Etcd::cluster(3).unwrap();
    let mut cluster = Cluster::on(etcd.endpoints(), shared_mongo().uri()).await;
    // Losing the leader stalls etcd writes for an election (a few seconds on this machine): a
    // session TTL like production's outlives it.
    cluster.start_worker("quorum-1", &["--session-ttl", "6s"]);
    cluster.start_worker("quorum-2", &["--session-ttl", "6s"]);
    cluster.wait_for_workers(2).await;
    let names: Vec<String> = (0..3).map(|i| format!("quorum-{i}")).collect();
    for name in &names {
        // Slots delayed by the failover may bunch up; `allow` keeps `forbid` from (rightly)
        // skipping one whose predecessor is still being released, so every slot must run.
        let mut j = job(name, "true", "* * * * * *");
        j.overlap_policy = jobs::OverlapPolicy::Allow as i32;
        cluster.save(j).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.kill_member(0);
    tokio::time::sleep(Duration::from_secs(8)).await;
    etcd.start_member(0).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    for name in &names {
        let slots = assert_exactly_once(&mut cluster, name).await;
        assert!(slots >= 14, "{name}: {slots} slots");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stored_job_that_no_longer_validates_is_reported_and_the_rest_keep_running() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["invalid-1"]).await;
    cluster.save(job("healthy", "true", "* * * * * *")).await;
    // Written behind jobsvc's back, as an older version or a hand edit might have.
    let broken = br#"{"name":"broken","command":"true","cronExpr":"61 * * * * *"}"#;
    cluster
        .store
        .put(&cluster.keys.job("broken"), broken.to_vec(), None)
        .await
        .unwrap();
    let runs = cluster
        .wait_runs("broken", Duration::from_secs(10), |runs| !runs.is_empty())
        .await;
    assert_eq!(status(&runs[0]), logs::RunStatus::Skipped, "{runs:?}");
    assert!(runs[0].err.contains("invalid"), "{}", runs[0].err);
    assert!(runs[0].err.contains("cronExpr"), "{}", runs[0].err);
    let before = cluster.runs("healthy").await.len();
    cluster
        .wait_runs("healthy", Duration::from_secs(10), |runs| {
            runs.len() >= before + 2
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_run_ending_within_the_start_hold_is_stored_with_one_write() {
    let _guard = exclusive().await;
    // The default start hold is 1 s.
    let mut cluster = Cluster::shared_with_workers(&["hold-1"]).await;
    cluster
        .save(job("short", "sleep 0.5; echo short", YEARLY))
        .await;
    cluster
        .save(job("long", "sleep 2.5; echo long", YEARLY))
        .await;
    let short = trigger_and_wait(&mut cluster, "short", logs::RunStatus::Succeeded).await;
    assert_eq!(writes_of(&cluster, &short.run_id).await, 1);
    // A run longer than the hold shows as running while it runs.
    let long = trigger_and_wait(&mut cluster, "long", logs::RunStatus::Running).await;
    let runs = cluster
        .wait_runs("long", Duration::from_secs(15), |runs| {
            runs.iter().all(|r| status(r) == logs::RunStatus::Succeeded)
        })
        .await;
    assert_eq!(runs[0].output, b"long\n");
    assert!(writes_of(&cluster, &long.run_id).await >= 2);
    // Without a hold the start is stored at once, the end with a second write.
    cluster.workers[0].stop().await;
    cluster.start_worker("hold-0", &["--log-start-hold", "0s"]);
    cluster.wait_for_workers(1).await;
    let short = trigger_and_wait(&mut cluster, "short", logs::RunStatus::Succeeded).await;
    assert_eq!(writes_of(&cluster, &short.run_id).await, 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_ten_second_etcd_stall_leaves_every_slot_with_exactly_one_record() {
    let _guard = exclusive().await;
    let etcd = Etcd::single().unwrap();
    let mut cluster = Cluster::on(etcd.endpoints(), shared_mongo().uri()).await;
    // Sessions outlive the stall, as production's would outlive a leader election; the clock
    // bound is the default one (heartbeats held back by the stall must not look like skew).
    for id in ["stall-1", "stall-2", "stall-3"] {
        cluster.start_worker(id, &["--session-ttl", "20s"]);
    }
    cluster.wait_for_workers(3).await;
    let names: Vec<String> = (0..20).map(|i| format!("stall-{i}")).collect();
    for name in &names {
        cluster.save(job(name, "true", "* * * * * *")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled_from = distcron_core::now_ms();
    etcd.pause_member(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    etcd.resume_member(0);
    let stalled_to = distcron_core::now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    let (mut passed_over, mut in_stall) = (0, 0);
    for name in &names {
        // One record per slot, none missing between the first and the last: run, or skipped
        // with its reason.
        let runs = assert_each_slot_once(&mut cluster, name).await;
        in_stall += runs
            .iter()
            .filter(|r| r.plan_time_ms > stalled_from && r.plan_time_ms < stalled_to)
            .count();
        for run in with_status(&runs, logs::RunStatus::Skipped) {
            assert!(run.err.starts_with("skipped: "), "{:#?}", summary(&runs));
            passed_over += usize::from(run.err.contains("not claimed in time"));
        }
        let first = runs.iter().map(|r| r.plan_time_ms).min().unwrap_or(0);
        assert!(first < stalled_from, "{name}: ran before the stall");
        assert!(
            runs.iter().any(|r| r.plan_time_ms > stalled_to),
            "{name}: ran after the stall: {:#?}",
            summary(&runs)
        );
    }
    // Every job had 9 or 10 slots during the stall, each with its record.
    assert!(
        in_stall >= 20 * 9,
        "{in_stall} records of slots in the stall"
    );
    eprintln!("{in_stall} slots in the stall, {passed_over} of them passed over and recorded");
    cluster.shutdown().await;
}

#[tokio::test]
async fn runs_that_ended_just_before_a_crash_keep_their_real_status() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared().await;
    // Events wait up to a second for their batch; a run's end must not.
    cluster.start_worker("durable-1", &["--log-batch-delay", "1s"]);
    cluster.wait_for_workers(1).await;
    let names: Vec<String> = (0..8).map(|i| format!("durable-{i}")).collect();
    for name in &names {
        cluster
            .save(job(name, "sleep 1; true # ends-before-crash", YEARLY))
            .await;
    }
    // Their ends can only wait in the worker's spool.
    cluster.stop_logsvc().await;
    let mut run_ids = Vec::new();
    for name in &names {
        let run = cluster
            .jobs
            .trigger_job(jobs::TriggerJobRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner()
            .run_id;
        run_ids.push(run);
    }
    wait_running("ends-before-crash").await;
    // The moment the worker has logged the last end (it logs an end once it is spooled), well
    // within the shipper's batch delay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while cluster
        .worker_log("durable-1")
        .matches("run finished")
        .count()
        < names.len()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs never ended: {}",
            cluster.worker_log("durable-1")
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.workers[0].crash();
    // Restarted on its data dir, with logsvc back: it delivers what its spool holds.
    cluster.workers[0].restart();
    cluster.start_logsvc(None).await;
    cluster.wait_for_workers(1).await;
    for name in &names {
        cluster
            .wait_runs(name, Duration::from_secs(20), |runs| {
                runs.iter().any(|r| status(r) != logs::RunStatus::Running)
            })
            .await;
    }
    // Past the old incarnation's session (2 s): whatever records it lost has done so.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut checked = 0;
    for name in &names {
        let runs = cluster.runs(name).await;
        for run in runs.iter().filter(|r| run_ids.contains(&r.run_id)) {
            assert_eq!(
                status(run),
                logs::RunStatus::Succeeded,
                "{name}: {:#?}",
                summary(&runs)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, names.len(), "every triggered run has its record");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_worker_restarted_after_its_session_expired_delivers_what_its_spool_held() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared().await;
    cluster.start_worker("respool-1", &[]);
    cluster.wait_for_workers(1).await;
    cluster
        .save(job(
            "cut-off",
            "echo before-crash; sleep 3021 # respool",
            YEARLY,
        ))
        .await;
    cluster
        .save(job("ended-here", "echo done # respool-ended", YEARLY))
        .await;
    // logsvc is down for the whole life of the first incarnation: its records wait in the spool.
    cluster.stop_logsvc().await;
    let mut trigger = async |name: &str| {
        cluster
            .jobs
            .trigger_job(jobs::TriggerJobRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
            .run_id
    };
    let ended = trigger("ended-here").await;
    let cut_off = trigger("cut-off").await;
    wait_running("sleep 3021").await;
    // Its start and first output spooled (the batch delay is 50 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.workers[0].crash();
    // Past the session (2 s): its running records are gone, nothing in etcd names the run but
    // the marker of the run that ended.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let running = cluster
        .store
        .get(&cluster.keys.running("cut-off", &cut_off))
        .await
        .unwrap();
    assert!(running.is_none(), "the crashed session's record is gone");
    cluster.start_logsvc(None).await;
    cluster.workers[0].restart();
    let runs = cluster
        .wait_runs("cut-off", Duration::from_secs(20), |runs| {
            runs.iter().any(|r| status(r) != logs::RunStatus::Running)
        })
        .await;
    // The spooled start and output were accepted (logsvc found the restarted worker's marker),
    // and the run cut off by the crash ended `lost`.
    let run = runs.iter().find(|r| r.run_id == cut_off).unwrap();
    assert_eq!(status(run), logs::RunStatus::Lost, "{:#?}", summary(&runs));
    assert!(run.err.contains("restarted"), "{}", run.err);
    assert_eq!(String::from_utf8_lossy(&run.output), "before-crash\n");
    assert_eq!(run.worker_id, "respool-1");
    let ended_runs = cluster
        .wait_runs("ended-here", Duration::from_secs(20), |runs| {
            runs.iter()
                .any(|r| r.run_id == ended && status(r) == logs::RunStatus::Succeeded)
        })
        .await;
    let done = ended_runs.iter().find(|r| r.run_id == ended).unwrap();
    assert_eq!(String::from_utf8_lossy(&done.output), "done\n");
    assert!(
        !cluster.worker_log("respool-1").contains("logsvc rejected"),
        "{}",
        cluster.worker_log("respool-1")
    );
    // The markers go once logsvc has stored those runs' ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while workers_with_markers(&cluster).await.contains("respool-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "markers left: {:?}",
            distcron_ledger::undelivered_of(cluster.store.as_ref(), &cluster.keys, "respool-1")
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
}

/// Debian's libfaketime (package `faketime`; scripts/test.sh installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test]
async fn a_worker_whose_wall_clock_steps_starts_nothing_early_and_every_slot_has_one_record() {
    let _guard = exclusive().await;
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} (apt faketime; scripts/test.sh installs it)"
    );
    let mut cluster = Cluster::shared().await;
    cluster.start_worker("steady-1", &[]);
    cluster.start_worker("steady-2", &[]);
    // The third worker's wall clock follows a time file (its monotonic clock stays true).
    let offset_file = cluster.dirs.path().join("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    let offset = offset_file.display().to_string();
    cluster.start_worker_with_env(
        "stepped",
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    cluster.wait_for_workers(3).await;
    let names: Vec<String> = (0..10).map(|i| format!("step-{i}")).collect();
    for name in &names {
        // Prints the real time it started (outside libfaketime), ms.
        cluster
            .save(job(name, "env -u LD_PRELOAD date +%s%3N", "* * * * * *"))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    std::fs::write(&offset_file, "+2\n").unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    std::fs::write(&offset_file, "+0\n").unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    let (mut checked, mut on_stepped) = (0, 0);
    for name in &names {
        let runs = assert_each_slot_once(&mut cluster, name).await;
        for run in with_status(&runs, logs::RunStatus::Succeeded) {
            let output = String::from_utf8_lossy(&run.output);
            let started: i64 = output
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: output {output:?} is no time"));
            assert!(
                started >= run.plan_time_ms,
                "{name}: run {} started {} ms before its slot on {}",
                run.run_id,
                run.plan_time_ms - started,
                run.worker_id
            );
            checked += 1;
            on_stepped += usize::from(run.worker_id == "stepped");
        }
    }
    assert!(checked >= 10 * 20, "{checked} runs checked");
    let log = cluster.worker_log("stepped");
    assert!(
        log.contains("wall clock stepped"),
        "the step was detected: {log}"
    );
    eprintln!("{checked} runs started at or after their slot, {on_stepped} on the stepped worker");
    cluster.shutdown().await;
}

/// Whether `runs` hold exactly one record per slot from their first to `last_due`.
fn one_record_per_slot_up_to(runs: &[logs::Run], last_due: i64) -> bool {
    let slots = per_slot(runs);
    let mut times: Vec<i64> = slots.keys().copied().collect();
    times.sort_unstable();
    slots.values().all(|n| *n == 1)
        && times.windows(2).all(|w| w[1] - w[0] == 1000)
        && times.last().is_some_and(|last| *last >= last_due)
}

#[tokio::test]
async fn slots_still_unclaimed_when_their_job_is_changed_are_recorded_once() {
    let _guard = exclusive().await;
    let etcd = Etcd::single().unwrap();
    let mut cluster = Cluster::on(etcd.endpoints(), shared_mongo().uri()).await;
    for id in ["gone-job-1", "gone-job-2"] {
        cluster.start_worker(id, &["--session-ttl", "20s"]);
    }
    cluster.wait_for_workers(2).await;
    let names: Vec<String> = (0..10).map(|i| format!("superseded-{i}")).collect();
    for name in &names {
        cluster.save(job(name, "true", "* * * * * *")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A stall leaves every job with slots whose claims are still being retried...
    etcd.pause_member(0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    etcd.resume_member(0);
    // ...when half the jobs are deleted and the others disabled.
    let changed_at = distcron_core::now_ms();
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            cluster
                .jobs
                .delete_job(jobs::DeleteJobRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        } else {
            disable(&mut cluster, std::slice::from_ref(name)).await;
        }
    }
    // Every slot before the change has its record, once: run, or skipped because the job was
    // changed or deleted first. Claims retried through the stall may settle late (after their
    // backoff, or through the orphan sweep's 35 s): records are waited for, not assumed.
    let last_due = (changed_at / 1000) * 1000 - 1000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let mut complete = true;
        for name in &names {
            let runs = cluster.runs(name).await;
            if !one_record_per_slot_up_to(&runs, last_due) {
                complete = false;
                break;
            }
        }
        if complete || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut superseded = 0;
    for name in &names {
        let runs = assert_each_slot_once(&mut cluster, name).await;
        let last = runs.iter().map(|r| r.plan_time_ms).max().unwrap_or(0);
        assert!(
            last >= last_due,
            "{name}: slots up to {last_due} have no record (last {last}): {:#?}",
            summary(&runs)
        );
        superseded += with_status(&runs, logs::RunStatus::Skipped)
            .iter()
            .filter(|r| r.err.contains("before the slot was claimed"))
            .count();
    }
    eprintln!("{superseded} slots recorded skipped because their job went first");
    cluster.shutdown().await;
}
