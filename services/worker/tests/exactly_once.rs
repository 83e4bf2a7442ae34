//! Every slot runs exactly once across several real worker processes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_exactly_once, disable, exclusive, job, settle, Cluster};

#[tokio::test]
async fn three_workers_run_twenty_every_second_jobs_exactly_once() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared().await;
    for i in 1..=3 {
        cluster.start_worker(&format!("w{i}"), &[]);
    }
    cluster.wait_for_workers(3).await;
    let names: Vec<String> = (0..20).map(|i| format!("every-second-{i:02}")).collect();
    for name in &names {
        cluster.save(job(name, "true", "* * * * * *")).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    let mut workers_used = std::collections::HashSet::new();
    for name in &names {
        let n = assert_exactly_once(&mut cluster, name).await;
        assert!(n >= 18, "{name}: only {n} slots ran in 20 s");
        for r in cluster.runs(name).await {
            workers_used.insert(r.worker_id);
        }
    }
    assert_eq!(
        workers_used.len(),
        3,
        "the load spreads over every worker: {workers_used:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn clock_skew_within_the_bound_is_harmless_and_beyond_it_stops_claims() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared().await;
    cluster.start_worker("fair-1", &[]);
    cluster.start_worker("fair-2", &[]);
    cluster.start_worker("ahead-300", &["--test-clock-offset-ms", "300"]);
    cluster.wait_for_workers(3).await;
    let names: Vec<String> = (0..8).map(|i| format!("skew-{i}")).collect();
    for name in &names {
        cluster.save(job(name, "true", "* * * * * *")).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A worker whose clock is 2 s ahead joins: it must refuse to claim, and say why.
    cluster.start_worker("ahead-2000", &["--test-clock-offset-ms", "2000"]);
    let mut refused = None;
    for _ in 0..100 {
        let ws = cluster.list_workers().await;
        if let Some(w) = ws.iter().find(|w| w.worker_id == "ahead-2000") {
            if !w.claiming && w.status_reason.contains("exceeds the bound") {
                refused = Some(w.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("the skewed worker reports that it refuses to claim");
    assert!(refused.clock_offset_ms > 1500, "{refused:?}");
    // It says so in its log too, though it never claimed (issue 19: only a change was logged).
    let log = cluster.worker_log("ahead-2000");
    assert!(
        log.contains("refusing to claim slots") && log.contains("exceeds the bound"),
        "{log}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    disable(&mut cluster, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&mut cluster, &names).await;
    for name in &names {
        assert!(assert_exactly_once(&mut cluster, name).await >= 14);
        let runs = cluster.runs(name).await;
        assert!(
            runs.iter().all(|r| r.worker_id != "ahead-2000"),
            "{name}: the skewed worker ran something"
        );
    }
    cluster.shutdown().await;
}

/// Whether jobsvc says `name` is done.
async fn is_done(cluster: &mut Cluster, name: &str) -> bool {
    let request = distcron_proto::jobs::v1::GetJobRequest { name: name.into() };
    cluster
        .jobs
        .get_job(request)
        .await
        .unwrap()
        .into_inner()
        .done
}

#[tokio::test]
async fn an_at_job_runs_once_and_a_job_past_its_end_stops_firing() {
    let _guard = exclusive().await;
    let mut cluster = Cluster::shared_with_workers(&["bound-1", "bound-2"]).await;
    // A whole second 4 to 5 s ahead: the @at instant; the bounded job ends 3 s after it.
    let at_ms = (distcron_core::now_ms() / 1000 + 5) * 1000;
    let end_ms = at_ms + 3000;
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap()
        .to_rfc3339();
    cluster
        .save(job("once", "true", &format!("@at {at}")))
        .await;
    let mut bounded = job("bounded", "true", "* * * * * *");
    bounded.end_at_ms = Some(end_ms);
    let saved = cluster.save(bounded).await;
    assert_eq!(saved.end_at_ms, Some(end_ms));
    assert!(!is_done(&mut cluster, "once").await);
    assert!(!is_done(&mut cluster, "bounded").await);

    // Well past both: then a worker that joins reads the finished jobs afresh (its catch-up
    // included) and must neither run them again nor record them as invalid.
    let past_end = end_ms + 3000 - distcron_core::now_ms();
    tokio::time::sleep(Duration::from_millis(u64::try_from(past_end).unwrap())).await;
    cluster.start_worker("bound-3", &[]);
    cluster.wait_for_workers(3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names = ["once".to_owned(), "bounded".to_owned()];
    settle(&mut cluster, &names).await;

    let once = cluster.runs("once").await;
    assert_eq!(once.len(), 1, "{:#?}", common::summary(&once));
    assert_eq!(once[0].plan_time_ms, at_ms);
    assert_exactly_once(&mut cluster, "once").await;

    let slots = assert_exactly_once(&mut cluster, "bounded").await;
    let runs = cluster.runs("bounded").await;
    assert_eq!(runs.len(), slots, "one record per slot, nothing else");
    let last = runs.iter().map(|r| r.plan_time_ms).max().unwrap();
    assert_eq!(
        last, end_ms,
        "the last slot is the end itself, none after it"
    );
    assert!(slots >= 6, "only {slots} slots before the end");

    assert!(is_done(&mut cluster, "once").await);
    assert!(is_done(&mut cluster, "bounded").await);
    cluster.shutdown().await;
}
