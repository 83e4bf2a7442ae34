//! JobService behaviour against a real etcd.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{job, save, Harness};
use distcron_core::records::{
    KillRequest, RunTrigger, RunningRecord, TriggerRequest, WorkerRegistration,
};
use distcron_kv::WatchEventKind;
use distcron_ledger::{claim_trigger, Claim};
use distcron_proto::jobs::v1 as pb;
use futures::StreamExt;
use tonic::Code;

#[tokio::test]
async fn crud_and_paging() {
    let mut h = Harness::shared().await;
    for i in 0..25 {
        let resp = h
            .client
            .save_job(save(job(&format!("job-{i:02}"))))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.previous.is_none(), "new job has no previous");
        let stored = resp.job.unwrap();
        assert!(stored.revision > 0);
        assert_eq!(stored.enabled, Some(true));
        assert!(stored.created_at_ms > 0 && stored.updated_at_ms >= stored.created_at_ms);
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .client
            .list_jobs(pb::ListJobsRequest {
                page_size: 10,
                page_token: token.clone(),
                name_prefix: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.jobs.into_iter().map(|j| j.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("job-{i:02}")).collect();
    assert_eq!(names, want, "all jobs, ordered by name, each once");
    let prefixed = h
        .client
        .list_jobs(pb::ListJobsRequest {
            page_size: 0,
            page_token: String::new(),
            name_prefix: "job-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prefixed.jobs.len(), 10);

    // Update returns the previous definition (the seed's contract).
    let mut changed = job("job-03");
    changed.command = "echo changed".into();
    let resp = h.client.save_job(save(changed)).await.unwrap().into_inner();
    assert_eq!(resp.previous.unwrap().command, "echo hello");
    let got = h
        .client
        .get_job(pb::GetJobRequest {
            name: "job-03".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.command, "echo changed");
    assert_eq!(got.revision, resp.job.unwrap().revision);

    let deleted = h
        .client
        .delete_job(pb::DeleteJobRequest {
            name: "job-03".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.job.unwrap().command, "echo changed");
    let missing = h
        .client
        .get_job(pb::GetJobRequest {
            name: "job-03".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let again = h
        .client
        .delete_job(pb::DeleteJobRequest {
            name: "job-03".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let too_big = h
        .client
        .list_jobs(pb::ListJobsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(
        too_big.message().starts_with("pageSize:"),
        "{}",
        too_big.message()
    );
    h.shutdown().await;
}

/// A change that makes a job invalid.
type Mutation = Box<dyn Fn(&mut pb::Job)>;

#[tokio::test]
async fn each_invalid_field_is_rejected_by_name_and_nothing_is_written() {
    let mut h = Harness::shared().await;
    let original = h
        .client
        .save_job(save(job("keep")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|j| j.command = String::new()), "command"),
        (
            Box::new(|j| j.command = "x".repeat(64 * 1024 + 1)),
            "command",
        ),
        (Box::new(|j| j.cron_expr = "* * * *".into()), "cronExpr"),
        (
            Box::new(|j| j.cron_expr = "0 61 * * * *".into()),
            "cronExpr.minute",
        ),
        (
            Box::new(|j| j.cron_expr = "0 0 0 1 1 * 2001".into()),
            "cronExpr",
        ),
        (
            Box::new(|j| j.time_zone = "Europe/Atlantis".into()),
            "timeZone",
        ),
        (
            Box::new(|j| j.timeout_seconds = 8 * 24 * 3600),
            "timeoutSeconds",
        ),
        (Box::new(|j| j.overlap_policy = 9), "overlapPolicy"),
        (Box::new(|j| j.missed_policy = -1), "missedPolicy"),
        (Box::new(|j| j.working_dir = "tmp".into()), "workingDir"),
        (
            Box::new(|j| {
                j.env.insert("BAD-NAME".into(), "x".into());
            }),
            "env.BAD-NAME",
        ),
    ];
    for (mutate, field) in &cases {
        let mut bad = job("keep");
        mutate(&mut bad);
        let err = h.client.save_job(save(bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            err.message()
        );
        assert_eq!(
            err.metadata()
                .get("distcron-field")
                .unwrap()
                .to_str()
                .unwrap(),
            *field
        );
    }
    for (bad_name, _) in [("a/b", ()), ("has space", ()), ("", ()), ("ü", ())] {
        let err = h.client.save_job(save(job(bad_name))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("name:"), "{}", err.message());
    }
    let err = h
        .client
        .save_job(pb::SaveJobRequest {
            job: None,
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("job:"));
    // The stored job is untouched and nothing else was written.
    let now = h
        .client
        .get_job(pb::GetJobRequest {
            name: "keep".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now, original);
    let all = h
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.jobs.len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn compare_and_swap_conflicts_leave_the_job_untouched() {
    let mut h = Harness::shared().await;
    let created = h
        .client
        .save_job(pb::SaveJobRequest {
            job: Some(job("cas")),
            expected_revision: Some(0),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let dup = h
        .client
        .save_job(pb::SaveJobRequest {
            job: Some(job("cas")),
            expected_revision: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::Aborted, "create-only on an existing job");
    // Two writers with the same expected revision: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..2 {
        let mut client = h.client.clone();
        let mut j = job("cas");
        j.command = format!("echo writer-{i}");
        tasks.push(tokio::spawn(async move {
            client
                .save_job(pb::SaveJobRequest {
                    job: Some(j),
                    expected_revision: Some(created.revision),
                })
                .await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => won.push(r.into_inner().job.unwrap()),
            Err(e) => assert_eq!(e.code(), Code::Aborted),
        }
    }
    assert_eq!(won.len(), 1);
    let stored = h
        .client
        .get_job(pb::GetJobRequest { name: "cas".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, won[0]);
    // A stale delete is refused too.
    let stale = h
        .client
        .delete_job(pb::DeleteJobRequest {
            name: "cas".into(),
            kill_running: false,
            expected_revision: Some(created.revision),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    h.shutdown().await;
}

#[tokio::test]
async fn seed_era_values_load_with_defaults() {
    let mut h = Harness::shared().await;
    let seed = br#"{"name":"legacy","command":"echo hello","cronExpr":"*/5 * * * * *"}"#;
    h.store
        .put(&h.keys.job("legacy"), seed.to_vec(), None)
        .await
        .unwrap();
    let got = h
        .client
        .get_job(pb::GetJobRequest {
            name: "legacy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.command, "echo hello");
    // Six fields in a seed-era value mean what the seed meant (every 5 minutes), shown in the
    // stored seven-field form.
    assert_eq!(got.cron_expr, "0 */5 * * * * *");
    assert_eq!(got.enabled, Some(true));
    assert_eq!(got.overlap_policy, pb::OverlapPolicy::Forbid as i32);
    assert_eq!(got.time_zone, "");
    let listed = h
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs[0].name, "legacy");
    // Saving over it returns it as the previous definition and stamps times.
    let resp = h
        .client
        .save_job(save(job("legacy")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.previous.unwrap().cron_expr, "0 */5 * * * * *");
    assert!(resp.job.unwrap().created_at_ms > 0);
    h.shutdown().await;
}

#[tokio::test]
async fn kill_is_published_on_a_lease_and_reports_running_runs() {
    let mut h = Harness::shared().await;
    h.client.save_job(save(job("k"))).await.unwrap();
    let idle = h
        .client
        .kill_job(pb::KillJobRequest {
            name: "k".into(),
            run_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!idle.was_running);
    // A worker has a run in progress under its session lease.
    let session = h.store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let record = RunningRecord {
        run_id: "run-1".into(),
        job_name: "k".into(),
        worker_id: "w1".into(),
        slot_ms: 1,
        claimed_at_ms: 1,
        trigger: RunTrigger::Schedule,
        passed_over: None,
    };
    h.store
        .put(
            &h.keys.running("k", "run-1"),
            serde_json::to_vec(&record).unwrap(),
            Some(session),
        )
        .await
        .unwrap();
    let mut watch = h.store.watch(&h.keys.killers(), 0).await.unwrap();
    let resp = h
        .client
        .kill_job(pb::KillJobRequest {
            name: "k".into(),
            run_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.was_running);
    assert_eq!(resp.run_ids, ["run-1"]);
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event = &batch.events[0];
    assert_eq!(event.kind, WatchEventKind::Put);
    assert_eq!(event.kv.key, h.keys.killer("k"));
    assert_ne!(event.kv.lease, 0, "kill requests expire by themselves");
    assert!(KillRequest::from_value(&event.kv.value).targets("run-1", 0));
    // Naming another run: nothing of that id is running.
    let other = h
        .client
        .kill_job(pb::KillJobRequest {
            name: "k".into(),
            run_id: "run-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other.was_running);
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let targeted = KillRequest::from_value(&batch.events[0].kv.value);
    assert!(targeted.targets("run-2", 0) && !targeted.targets("run-1", 0));
    // When the worker's session ends its runs stop counting as running.
    h.store.revoke_lease(session).await.unwrap();
    let after = h
        .client
        .kill_job(pb::KillJobRequest {
            name: "k".into(),
            run_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!after.was_running);
    h.shutdown().await;
}

#[tokio::test]
async fn trigger_creates_exactly_one_claimable_run() {
    let mut h = Harness::shared().await;
    let missing = h
        .client
        .trigger_job(pb::TriggerJobRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let stored = h
        .client
        .save_job(save(job("t")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let resp = h
        .client
        .trigger_job(pb::TriggerJobRequest { name: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.run_id.is_empty());
    let kv = h
        .store
        .get(&h.keys.trigger("t", &resp.run_id))
        .await
        .unwrap()
        .expect("trigger stored");
    let request: TriggerRequest = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(request.job_revision, stored.revision);
    assert_eq!(request.slot_ms, resp.slot_ms);
    let mut tasks = Vec::new();
    for w in 0..5 {
        let (store, keys, request) = (h.store.clone(), h.keys.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
            claim_trigger(
                store.as_ref(),
                &keys,
                "t",
                &request,
                &format!("w{w}"),
                lease,
                0,
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(matches!(t.await.unwrap(), Claim::Won(_)));
    }
    assert_eq!(winners, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn disabling_keeps_the_definition() {
    let mut h = Harness::shared().await;
    let mut j = job("pausable");
    j.env.insert("A".into(), "1".into());
    j.timeout_seconds = 30;
    h.client.save_job(save(j)).await.unwrap();
    let off = h
        .client
        .set_job_enabled(pb::SetJobEnabledRequest {
            name: "pausable".into(),
            enabled: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(off.enabled, Some(false));
    assert_eq!(off.timeout_seconds, 30);
    assert_eq!(off.env.get("A").map(String::as_str), Some("1"));
    // A save that does not say `enabled` (the seed's /job/save) keeps it paused.
    let mut edit = job("pausable");
    edit.command = "echo edited".into();
    let saved = h
        .client
        .save_job(save(edit))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(saved.enabled, Some(false));
    let on = h
        .client
        .set_job_enabled(pb::SetJobEnabledRequest {
            name: "pausable".into(),
            enabled: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on.enabled, Some(true));
    assert_eq!(on.command, "echo edited");
    let missing = h
        .client
        .set_job_enabled(pb::SetJobEnabledRequest {
            name: "nope".into(),
            enabled: true,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.shutdown().await;
}

#[tokio::test]
async fn preview_returns_fire_times_or_the_field_error() {
    let mut h = Harness::shared().await;
    let after = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let ok = h
        .client
        .preview_schedule(pb::PreviewScheduleRequest {
            cron_expr: "0 9 * * MON-FRI".into(),
            time_zone: "Europe/Berlin".into(),
            count: 3,
            after_ms: after,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.fire_times,
        [
            "2026-01-01T09:00:00+01:00",
            "2026-01-02T09:00:00+01:00",
            "2026-01-05T09:00:00+01:00"
        ]
    );
    assert_eq!(ok.fire_times_ms[0], after + 8 * 3600 * 1000);
    assert!(!ok.description.is_empty());
    let default_count = h
        .client
        .preview_schedule(pb::PreviewScheduleRequest {
            cron_expr: "@hourly".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default_count.fire_times.len(), 5);
    let bad = h
        .client
        .preview_schedule(pb::PreviewScheduleRequest {
            cron_expr: "0 0 25 * * *".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("cronExpr.hour:"),
        "{}",
        bad.message()
    );
    let too_many = h
        .client
        .preview_schedule(pb::PreviewScheduleRequest {
            cron_expr: "@hourly".into(),
            count: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(too_many.message().starts_with("count:"));
    h.shutdown().await;
}

#[tokio::test]
async fn list_workers_returns_live_registrations() {
    let mut h = Harness::shared().await;
    let lease = h.store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let reg = WorkerRegistration {
        worker_id: "w-1".into(),
        host: "host-a".into(),
        addresses: vec!["10.0.0.1".into()],
        version: "0.1.0".into(),
        capacity: 8,
        running: 2,
        clock_offset_ms: -3,
        claiming: true,
        ..Default::default()
    };
    h.store
        .put(
            &h.keys.worker("w-1"),
            serde_json::to_vec(&reg).unwrap(),
            Some(lease),
        )
        .await
        .unwrap();
    let workers = h
        .client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].host, "host-a");
    assert_eq!(workers[0].capacity, 8);
    assert_eq!(workers[0].clock_offset_ms, -3);
    h.store.revoke_lease(lease).await.unwrap();
    let workers = h
        .client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(workers.is_empty());
    h.shutdown().await;
}

/// The `distcron_grpc_server_requests_total` count of `method` with `code` in this process.
fn requests(method: &str, code: &str) -> f64 {
    distcron_metrics::sample_sum(
        &distcron_metrics::render(),
        "distcron_grpc_server_requests_total",
        &[("method", method), ("code", code)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn requests_are_counted_by_method_and_status_code() {
    let mut h = Harness::shared().await;
    let (missing, invalid, ok) = (
        requests("GetJob", "NotFound"),
        requests("SaveJob", "InvalidArgument"),
        requests("SaveJob", "OK"),
    );
    let err = h
        .client
        .get_job(pb::GetJobRequest {
            name: "no-such-job".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut bad = job("counted");
    bad.cron_expr = "not cron".into();
    assert_eq!(
        h.client.save_job(save(bad)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    h.client.save_job(save(job("counted"))).await.unwrap();
    // The server records a call when its response ends, just after the client has it.
    for _ in 0..50 {
        if requests("GetJob", "NotFound") > missing
            && requests("SaveJob", "InvalidArgument") > invalid
            && requests("SaveJob", "OK") > ok
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{}", distcron_metrics::render());
}

/// An instant given in ms since the epoch, as RFC 3339 (UTC).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

#[tokio::test]
async fn one_off_and_bounded_jobs_refuse_the_past_and_show_when_they_are_done() {
    let mut h = Harness::shared().await;
    let now = distcron_core::now_ms();
    let hour = 3_600_000;
    let refused = |field: &'static str, needle: &'static str, job: pb::Job| {
        let mut client = h.client.clone();
        async move {
            let err = client.save_job(save(job)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{field}");
            assert!(
                err.message().starts_with(&format!("{field}:")) && err.message().contains(needle),
                "{field}: {}",
                err.message()
            );
        }
    };
    let mut past_at = job("once");
    past_at.cron_expr = format!("@at {}", rfc3339(now - hour));
    refused("cronExpr", "is in the past", past_at).await;
    let mut ended = job("bounded");
    ended.end_at_ms = Some(now - hour);
    refused("endAt", "is in the past", ended).await;
    let mut reversed = job("bounded");
    reversed.start_at_ms = Some(now + 2 * hour);
    reversed.end_at_ms = Some(now + hour);
    refused("endAt", "must be after startAt", reversed).await;
    // Nothing was written.
    let listed = h
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "{listed:?}");

    // In the future it is saved, bounds kept, and not done.
    let mut once = job("once");
    once.cron_expr = format!("@at {}", rfc3339(now + hour));
    once.end_at_ms = Some(now + 2 * hour);
    let saved = h.client.save_job(save(once)).await.unwrap().into_inner();
    let saved = saved.job.unwrap();
    assert_eq!(saved.end_at_ms, Some(now + 2 * hour));
    assert!(!saved.done);

    // A stored @at job whose instant has passed is done once its ledger reached the instant.
    let at = now - hour;
    let mut stored = distcron_core::JobDefinition::new("past", "true", "");
    stored.cron_expr = format!("@at {}", rfc3339(at));
    h.store
        .put(&h.keys.job("past"), stored.to_json(), None)
        .await
        .unwrap();
    let get = |name: &'static str| {
        let mut client = h.client.clone();
        async move {
            let request = pb::GetJobRequest { name: name.into() };
            client.get_job(request).await.unwrap().into_inner()
        }
    };
    assert!(!get("past").await.done, "never claimed: not done");
    h.store
        .put(
            &h.keys.ledger("past"),
            distcron_core::records::ledger::encode(at),
            None,
        )
        .await
        .unwrap();
    assert!(get("past").await.done);
    assert!(!get("once").await.done);
    let listed = h
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let done: Vec<(&str, bool)> = listed
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.done))
        .collect();
    assert_eq!(done, [("once", false), ("past", true)]);

    // The preview keeps to the bounds too.
    let bounded = h
        .client
        .preview_schedule(pb::PreviewScheduleRequest {
            cron_expr: "@hourly".into(),
            count: 10,
            after_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            end_at_ms: Some(1_767_225_600_000 + 3 * hour),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bounded.fire_times.len(), 3, "{:?}", bounded.fire_times);
    h.shutdown().await;
}
