//! LogService behaviour against a real MongoDB-protocol server.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{batch, chunk, finished, started, Harness};
use distcron_proto::logs::v1 as pb;
use distcron_testkit::MongoServer;
use futures::StreamExt;
use tonic::Code;

const MARKER: &str = "\n[... output truncated ...]\n";

#[tokio::test]
async fn redelivered_batches_store_each_run_and_chunk_once() {
    let mut h = Harness::shared(1 << 20).await;
    let events = vec![
        started("r1", "j", 1_000),
        chunk("r1", 0, b"one "),
        chunk("r1", 1, b"two "),
        started("r2", "j", 2_000),
        chunk("r1", 2, b"three"),
        finished("r1", pb::RunStatus::Succeeded, 1_500),
    ];
    for _ in 0..3 {
        let resp = h
            .client
            .append_run_events(batch(events.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.accepted, 6);
        assert!(resp.rejected.is_empty());
    }
    let runs = h
        .client
        .list_runs(pb::ListRunsRequest {
            job_name: "j".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.total, 2);
    let r1 = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r1.output, b"one two three");
    assert_eq!(r1.status, pb::RunStatus::Succeeded as i32);
    assert_eq!(r1.output_bytes, 13);
    assert_eq!(r1.exit_code, Some(0));
    let r2 = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "r2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.status, pb::RunStatus::Running as i32);
    let missing = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.shutdown().await;
}

#[tokio::test]
async fn output_over_the_cap_keeps_head_and_tail() {
    let mut h = Harness::shared(1024).await;
    let mut events = vec![started("big", "j", 1)];
    for i in 0..200u64 {
        events.push(chunk("big", i, format!("line {i:04}\n").as_bytes()));
    }
    events.push(finished("big", pb::RunStatus::Succeeded, 2));
    h.client.append_run_events(batch(events)).await.unwrap();
    let run = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "big".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(run.output).unwrap();
    assert!(run.output_truncated);
    assert_eq!(run.output_bytes, 2000);
    assert!(text.starts_with("line 0000\n"), "head kept");
    assert!(text.ends_with("line 0199\n"), "tail kept");
    assert!(text.contains(MARKER));
    assert!(text.len() <= 1024 + MARKER.len());
    h.shutdown().await;
}

#[tokio::test]
async fn paging_by_skip_and_cursor_with_filters_and_bounds() {
    let mut h = Harness::shared(1 << 20).await;
    let mut events = Vec::new();
    // 25 runs of job "p"; start times tie in pairs.
    for i in 0..25i64 {
        let id = format!("p{i:02}");
        events.push(started(&id, "p", 10_000 + (i / 2) * 100));
        let status = if i % 5 == 0 {
            pb::RunStatus::Failed
        } else {
            pb::RunStatus::Succeeded
        };
        events.push(finished(&id, status, 20_000));
    }
    events.push(started("other", "q", 50_000));
    h.client.append_run_events(batch(events)).await.unwrap();
    let base = pb::ListRunsRequest {
        job_name: "p".into(),
        limit: 10,
        without_output: true,
        ..Default::default()
    };
    // Cursor paging visits every run once, newest first, stable through ties.
    let mut by_cursor = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_runs(pb::ListRunsRequest {
                page_token: token.clone(),
                ..base.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, 25);
        by_cursor.extend(page.runs.iter().map(|r| r.run_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    expected.reverse();
    assert_eq!(by_cursor, expected);
    // Skip paging gives the same order.
    let mut by_skip = Vec::new();
    for skip in [0, 10, 20] {
        let page = h
            .client
            .list_runs(pb::ListRunsRequest {
                skip,
                ..base.clone()
            })
            .await
            .unwrap()
            .into_inner();
        by_skip.extend(page.runs.into_iter().map(|r| r.run_id));
    }
    assert_eq!(by_skip, expected);
    // Filters.
    let failed = h
        .client
        .list_runs(pb::ListRunsRequest {
            statuses: vec![pb::RunStatus::Failed as i32],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.total, 5);
    let window = h
        .client
        .list_runs(pb::ListRunsRequest {
            start_from_ms: 10_100,
            start_before_ms: 10_300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        window
            .runs
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>(),
        ["p05", "p04", "p03", "p02"]
    );
    assert_eq!(
        h.client
            .list_runs(pb::ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs
            .len(),
        20,
        "default limit"
    );
    // Bounds and bad input.
    for (req, field) in [
        (
            pb::ListRunsRequest {
                limit: 1001,
                ..Default::default()
            },
            "limit:",
        ),
        (
            pb::ListRunsRequest {
                skip: 5,
                page_token: "10000_p01".into(),
                ..Default::default()
            },
            "pageToken:",
        ),
        (
            pb::ListRunsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "pageToken:",
        ),
        (
            pb::ListRunsRequest {
                statuses: vec![0],
                ..Default::default()
            },
            "statuses:",
        ),
        (
            pb::ListRunsRequest {
                job_name: "a/b".into(),
                ..Default::default()
            },
            "jobName:",
        ),
        (
            pb::ListRunsRequest {
                start_from_ms: 5,
                start_before_ms: 5,
                ..Default::default()
            },
            "startBeforeMs:",
        ),
    ] {
        let err = h.client.list_runs(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with(field),
            "{field} vs {}",
            err.message()
        );
        assert_eq!(
            named_field(&err),
            field.strip_suffix(':'),
            "{}",
            err.message()
        );
    }
    h.shutdown().await;
}

/// The field an `InvalidArgument` status names in its `distcron-field` metadata.
fn named_field(err: &tonic::Status) -> Option<&str> {
    err.metadata().get("distcron-field")?.to_str().ok()
}

#[tokio::test]
async fn bad_lookups_name_their_field_in_the_metadata() {
    let mut h = Harness::shared(1 << 20).await;
    let err = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "has space".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(named_field(&err), Some("runId"), "{}", err.message());
    let err = h
        .client
        .tail_run(pb::TailRunRequest {
            run_id: String::new(),
            from_offset: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(named_field(&err), Some("runId"), "{}", err.message());
    for (req, field) in [
        (
            pb::JobStatsRequest {
                job_name: "a/b".into(),
                window_seconds: 0,
            },
            "jobName",
        ),
        (
            pb::JobStatsRequest {
                job_name: "j".into(),
                window_seconds: u32::MAX,
            },
            "windowSeconds",
        ),
    ] {
        let err = h.client.job_stats(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{}",
            err.message()
        );
        assert_eq!(named_field(&err), Some(field), "{}", err.message());
    }
    h.shutdown().await;
}

#[tokio::test]
async fn one_bad_event_is_rejected_and_the_rest_stored() {
    let mut h = Harness::shared(1 << 20).await;
    let mut bad_status = finished("b1", pb::RunStatus::Running, 5);
    bad_status.run_id = "b1".into();
    let events = vec![
        started("b1", "j", 1),
        pb::RunEvent {
            run_id: "has space".into(),
            trace_id: String::new(),
            span_id: String::new(),
            kind: started("x", "j", 1).kind,
        },
        bad_status,
        pb::RunEvent {
            run_id: "b2".into(),
            trace_id: String::new(),
            span_id: String::new(),
            kind: None,
        },
        chunk("b1", 0, b"ok"),
        started("b3", "bad/name", 1),
    ];
    let resp = h
        .client
        .append_run_events(batch(events))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.accepted, 2);
    let reasons: Vec<(u32, &str)> = resp
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons[0].0 == 1 && reasons[0].1.starts_with("runId:"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 2 && reasons[1].1.starts_with("finished.status:"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0 == 3 && reasons[2].1.starts_with("kind:"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].0 == 5 && reasons[3].1.starts_with("started.jobName:"),
        "{reasons:?}"
    );
    let b1 = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "b1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b1.output, b"ok");
    h.shutdown().await;
}

#[tokio::test]
async fn impossible_events_are_rejected_and_a_skip_never_ends_a_running_run() {
    let mut h = Harness::shared(1 << 20).await;
    let mut skip = started("f1", "j", 2_000);
    let Some(pb::run_event::Kind::Started(s)) = &mut skip.kind else {
        panic!("a start event: {skip:?}");
    };
    s.status = pb::RunStatus::Skipped as i32;
    s.err = "skipped: forged".into();
    let events = vec![
        started("f1", "j", 1_000),
        started("f2", "j", -5),
        finished("f1", pb::RunStatus::Succeeded, -1),
        chunk("f1", u64::MAX - 1, b"forged"),
        skip,
        chunk("f1", 0, b"real"),
    ];
    let resp = h
        .client
        .append_run_events(batch(events))
        .await
        .unwrap()
        .into_inner();
    let reasons: Vec<(u32, &str)> = resp
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0 == 1 && reasons[0].1.starts_with("started.planTimeMs:"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 2 && reasons[1].1.starts_with("finished.endTimeMs:"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0 == 3 && reasons[2].1.starts_with("output.seq:"),
        "{reasons:?}"
    );
    // The skip did not end the running run, and its real output and end still apply.
    h.client
        .append_run_events(batch(vec![
            chunk("f1", 1, b" output"),
            finished("f1", pb::RunStatus::Failed, 1_500),
        ]))
        .await
        .unwrap();
    let f1 = h
        .client
        .get_run(pb::GetRunRequest {
            run_id: "f1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f1.status, pb::RunStatus::Failed as i32);
    assert_eq!(f1.output, b"real output");
    h.shutdown().await;
}

#[tokio::test]
async fn pages_of_runs_at_the_output_cap_stay_under_the_message_limit() {
    let mut h = Harness::shared(1 << 20).await;
    let job = "big-out";
    let ids: Vec<String> = (0..6).map(|i| format!("big-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // One run a batch: a batch of six 1 MiB chunks would itself pass 4 MiB.
        h.client
            .append_run_events(batch(vec![
                started(id, job, 1_000 + i as i64),
                chunk(id, 0, &vec![b'x'; 1 << 20]),
                finished(id, pb::RunStatus::Succeeded, 2_000 + i as i64),
            ]))
            .await
            .unwrap();
    }
    // Six runs of 1 MiB each in one reply would pass gRPC's default 4 MiB: the page ends early
    // and the token brings the rest, with this client's default limits.
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = h
            .client
            .list_runs(pb::ListRunsRequest {
                job_name: job.into(),
                limit: 20,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("page {pages}: {e}"))
            .into_inner();
        pages += 1;
        assert!(
            !page.runs.is_empty() && page.runs.len() < 6,
            "{} runs",
            page.runs.len()
        );
        assert!(page.runs.iter().all(|r| r.output.len() >= 1 << 19));
        seen.extend(page.runs.into_iter().map(|r| r.run_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen, ids, "every run once, over {pages} pages");
    h.shutdown().await;
}

async fn next(s: &mut tonic::Streaming<pb::TailRunResponse>) -> pb::TailRunResponse {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("tail message in 5 s")
        .expect("open")
        .expect("ok")
}

#[tokio::test]
async fn tail_streams_a_live_run_and_ends_with_it() {
    let mut h = Harness::shared(1 << 20).await;
    h.client
        .append_run_events(batch(vec![
            started("live", "j", 1),
            chunk("live", 0, b"first\n"),
        ]))
        .await
        .unwrap();
    let mut stream = h
        .client
        .tail_run(pb::TailRunRequest {
            run_id: "live".into(),
            from_offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await.data, b"first\n");
    let mut writer = h.client.clone();
    writer
        .append_run_events(batch(vec![chunk("live", 1, b"second\n")]))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.data, b"second\n");
    writer
        .append_run_events(batch(vec![
            chunk("live", 2, b"third\n"),
            finished("live", pb::RunStatus::Succeeded, 9),
        ]))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let end = loop {
        let msg = next(&mut stream).await;
        rest.extend(msg.data);
        if let Some(run) = msg.finished {
            break run;
        }
    };
    assert_eq!(rest, b"third\n");
    assert_eq!(end.status, pb::RunStatus::Succeeded as i32);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .is_none(),
        "stream ends"
    );
    // Tailing a finished run from an offset sends the rest and the end at once.
    let mut again = h
        .client
        .tail_run(pb::TailRunRequest {
            run_id: "live".into(),
            from_offset: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut again).await.data, b"second\nthird\n");
    assert!(next(&mut again).await.finished.is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn job_stats_summarise_a_window() {
    let mut h = Harness::shared(1 << 20).await;
    let now = distcron_core::now_ms();
    let mut events = Vec::new();
    for (i, status) in [
        pb::RunStatus::Succeeded,
        pb::RunStatus::Succeeded,
        pb::RunStatus::Failed,
    ]
    .iter()
    .enumerate()
    {
        let id = format!("s{i}");
        let start = now - 10_000 + i as i64 * 1000;
        events.push(started(&id, "stats", start));
        events.push(finished(&id, *status, start + 100));
    }
    h.client.append_run_events(batch(events)).await.unwrap();
    let stats = h
        .client
        .job_stats(pb::JobStatsRequest {
            job_name: "stats".into(),
            window_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.last_run.unwrap().run_id, "s2");
    let count = |s: pb::RunStatus| {
        stats
            .counts
            .iter()
            .find(|c| c.status == s as i32)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count(pb::RunStatus::Succeeded), 2);
    assert_eq!(count(pb::RunStatus::Failed), 1);
    assert_eq!(stats.avg_duration_ms, 100);
    assert_eq!(stats.last_failure_ms, now - 8_000);
    assert_eq!(stats.last_success_ms, now - 9_000);
    h.shutdown().await;
}

#[tokio::test]
async fn mongo_outage_fails_fast_and_loses_no_acknowledged_write() {
    let mut mongo = tokio::task::spawn_blocking(MongoServer::start)
        .await
        .unwrap()
        .unwrap();
    let mut h = Harness::on(&mongo.uri(), 1 << 20).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let id = format!("before{i}");
        h.client
            .append_run_events(batch(vec![started(&id, "o", i)]))
            .await
            .unwrap();
        acknowledged.push(id);
    }
    mongo = tokio::task::spawn_blocking(move || {
        mongo.stop();
        mongo
    })
    .await
    .unwrap();
    let mongo_errors = || {
        distcron_metrics::sample_sum(
            &distcron_metrics::render(),
            "distcron_store_errors_total",
            &[("store", "mongodb")],
        )
        .unwrap_or(0.0)
    };
    let errors = mongo_errors();
    let t = Instant::now();
    let err = h
        .client
        .append_run_events(batch(vec![started("during", "o", 9)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(mongo_errors() > errors, "MongoDB errors are counted");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        t.elapsed()
    );
    let err = h
        .client
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    mongo = tokio::task::spawn_blocking(move || mongo.restart().map(|()| mongo))
        .await
        .unwrap()
        .unwrap();
    // The caller retries (as the worker's spool does) until the service has reconnected.
    let mut delivered = false;
    for _ in 0..60 {
        if h.client
            .append_run_events(batch(vec![started("during", "o", 9)]))
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(delivered, "logsvc reconnects by itself");
    acknowledged.push("during".into());
    let page = h
        .client
        .list_runs(pb::ListRunsRequest {
            job_name: "o".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = page.runs.into_iter().map(|r| r.run_id).collect();
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    h.shutdown().await;
    tokio::task::spawn_blocking(move || drop(mongo))
        .await
        .unwrap();
}

#[tokio::test]
async fn indexes_with_retention_exist_after_start() {
    let h = Harness::shared(1 << 20).await;
    let client = mongodb::Client::with_uri_str(distcron_testkit::shared_mongo().uri())
        .await
        .unwrap();
    let coll = client
        .database(&h.database)
        .collection::<bson::Document>("log");
    let mut ttl = None;
    for _ in 0..50 {
        let mut cursor = coll.list_indexes().await.unwrap();
        while let Some(m) = cursor.next().await {
            let m = m.unwrap();
            if m.keys.contains_key("storedAt") {
                ttl = m.options.and_then(|o| o.expire_after);
            }
        }
        if ttl.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ttl, Some(Duration::from_secs(7 * 86_400)));
    h.shutdown().await;
}
