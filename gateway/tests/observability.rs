//! Observability end to end: the four binaries (gateway, jobsvc, logsvc, worker) as real processes
//! on the shared etcd and Mongo-wire server, exporting their spans over OTLP to a receiver in this
//! test. One HTTP save and the scheduled runs that follow must give connected traces across all
//! four; every service's `/metrics` must show its named series moving; the worker's JSON log must
//! tell a run's story under its run id.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distcron_testkit::{free_port, shared_etcd, shared_mongo, unique_name, workspace_binary};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::{json, Value};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Collected {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver that keeps every span.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Collected>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(AnyValue::StringValue(s)) => s.clone(),
            Some(AnyValue::IntValue(i)) => i.to_string(),
            Some(AnyValue::BoolValue(b)) => b.to_string(),
            other => format!("{other:?}"),
        };
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Collected {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    fn trace(&self, trace_id: &str) -> Vec<Collected> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Collected> {
        self.spans.lock().unwrap().clone()
    }
}

/// The processes, killed when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(bin: &Path, args: &[String], otlp: &str, log: &Path) -> Child {
    Command::new(bin)
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("DISTCRON_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    distcron_metrics::sample_sum(text, name, labels)
}

/// What a sample must be.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Exactly(f64),
    AtLeast(f64),
    AtMost(f64),
}

/// A metric, the labels its samples must have, and what their sum must be.
type Expectation<'a> = (&'a str, &'a [(&'a str, &'a str)], Expect);

/// Checks every expectation against `exposition`, reporting all misses.
fn check(service: &str, exposition: &str, expectations: &[Expectation<'_>]) {
    let misses: Vec<String> = expectations
        .iter()
        .filter_map(|(name, labels, expect)| {
            let got = sample(exposition, name, labels);
            let ok = match (*expect, got) {
                (Expect::Exactly(want), Some(v)) => v == want,
                (Expect::AtLeast(want), Some(v)) => v >= want,
                (Expect::AtMost(want), Some(v)) => v <= want,
                (_, None) => false,
            };
            (!ok).then(|| format!("{name}{labels:?}: {got:?}, expected {expect:?}"))
        })
        .collect();
    assert!(
        misses.is_empty(),
        "{service} /metrics: {misses:#?}\n{exposition}"
    );
}

async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..150 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn one_save_and_its_runs_are_traced_across_every_service_and_counted() {
    let receiver = Receiver::default();
    let otlp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", otlp_listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                otlp_listener,
            )),
    );

    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("/{}/", unique_name("obs"));
    let etcd = shared_etcd().endpoints().join(",");
    let ports: Vec<u16> = (0..7).map(|_| free_port().unwrap()).collect();
    let (http, jobs, logs, jobs_m, logs_m, worker_m) =
        (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    let common = |v: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
        a.extend([
            "--etcd-endpoints".into(),
            etcd.clone(),
            "--key-prefix".into(),
            prefix.clone(),
        ]);
        a
    };
    let logs_url = format!("http://127.0.0.1:{logs}");
    let jobs_url = format!("http://127.0.0.1:{jobs}");
    let worker_log = dir.path().join("worker.log");
    let _processes = Processes(vec![
        spawn(
            &workspace_binary("distcron-jobsvc", "jobsvc"),
            &common(&[
                "--listen",
                &format!("127.0.0.1:{jobs}"),
                "--metrics-listen",
                &format!("127.0.0.1:{jobs_m}"),
            ]),
            &otlp,
            &dir.path().join("jobsvc.log"),
        ),
        spawn(
            &workspace_binary("distcron-logsvc", "logsvc"),
            &common(&[
                "--listen",
                &format!("127.0.0.1:{logs}"),
                "--metrics-listen",
                &format!("127.0.0.1:{logs_m}"),
                "--mongo-uri",
                &shared_mongo().uri(),
                "--mongo-database",
                &unique_name("obsruns"),
            ]),
            &otlp,
            &dir.path().join("logsvc.log"),
        ),
        spawn(
            &workspace_binary("distcron-worker", "worker"),
            &common(&[
                "--worker-id",
                "obs-worker",
                "--metrics-listen",
                &format!("127.0.0.1:{worker_m}"),
                "--data-dir",
                &dir.path().join("worker").display().to_string(),
                "--logsvc-endpoints",
                &logs_url,
                "--log-batch-delay",
                "50ms",
                "--log-format",
                "json",
            ]),
            &otlp,
            &worker_log,
        ),
        spawn(
            Path::new(env!("CARGO_BIN_EXE_gateway")),
            &common(&[
                "--listen",
                &format!("127.0.0.1:{http}"),
                "--jobsvc-endpoints",
                &jobs_url,
                "--logsvc-endpoints",
                &logs_url,
            ]),
            &otlp,
            &dir.path().join("gateway.log"),
        ),
    ]);
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    wait_for("the worker to register and claim", async || {
        let r = client
            .get(format!("{base}/api/v1/workers"))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        body["workers"]
            .as_array()?
            .iter()
            .any(|w| w["claiming"] == json!(true))
            .then_some(())
    })
    .await;

    // The save carries a trace context of its own, as a traced caller's request would.
    let save_trace = format!("{:032x}", rand_u128());
    let response = client
        .put(format!("{base}/api/v1/jobs/obs-job"))
        .header(
            "traceparent",
            format!("00-{save_trace}-00f067aa0ba902b7-01"),
        )
        .json(&json!({"command": "echo traced", "cronExpr": "* * * * * *"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // The save: gateway → jobsvc → etcd, one trace.
    let save = wait_for("the save's spans", async || {
        let spans = receiver.trace(&save_trace);
        let services = |s: &str| spans.iter().any(|x| x.service == s);
        (services("gateway") && services("jobsvc")).then_some(spans)
    })
    .await;
    let http_span = save
        .iter()
        .find(|s| s.service == "gateway" && s.name == "PUT /api/v1/jobs/{name}")
        .unwrap_or_else(|| panic!("gateway span in {save:#?}"));
    assert_eq!(
        http_span.parent_span_id, "00f067aa0ba902b7",
        "joins the caller's trace"
    );
    let rpc = save
        .iter()
        .find(|s| {
            s.service == "jobsvc"
                && s.attributes
                    .get("rpc.method")
                    .is_some_and(|m| m.ends_with("/SaveJob"))
        })
        .unwrap_or_else(|| panic!("jobsvc SaveJob span in {save:#?}"));
    assert!(
        save.iter()
            .any(|s| s.service == "gateway" && s.span_id == rpc.parent_span_id),
        "jobsvc's span is a child of a gateway span"
    );
    assert!(
        save.iter().any(|s| s.service == "jobsvc"
            && s.attributes.get("db.system").map(String::as_str) == Some("etcd")
            && s.attributes.get("db.operation").map(String::as_str) == Some("txn")),
        "jobsvc's etcd transaction is in the trace: {save:#?}"
    );

    // The runs: each its own trace (worker → logsvc → MongoDB), linked to the save.
    let runs = wait_for("three finished runs", async || {
        let r = client
            .get(format!("{base}/api/v1/jobs/obs-job/runs"))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        let done: Vec<Value> = body["runs"]
            .as_array()?
            .iter()
            .filter(|r| r["status"] == json!("succeeded"))
            .cloned()
            .collect();
        (done.len() >= 3).then_some(done)
    })
    .await;
    for run in &runs {
        let trace = run["traceId"].as_str().unwrap();
        assert!(
            trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()),
            "run {} has trace id {trace:?}",
            run["runId"]
        );
    }
    // A run whose events travelled in a batch of their own has logsvc's handling in its trace;
    // with one job firing every second, that is nearly every run.
    let (run_span, spans) = wait_for("a run traced through logsvc and MongoDB", async || {
        runs.iter().find_map(|run| {
            let spans = receiver.trace(run["traceId"].as_str()?);
            let run_span = spans
                .iter()
                .find(|s| s.service == "worker" && s.name == "run")?
                .clone();
            let deliver = spans.iter().find(|s| s.name == "deliver")?;
            let append = spans
                .iter()
                .find(|s| s.service == "logsvc" && s.parent_span_id == deliver.span_id)?;
            spans
                .iter()
                .any(|s| {
                    s.service == "logsvc"
                        && s.attributes.get("db.system").map(String::as_str) == Some("mongodb")
                })
                .then_some(())?;
            assert!(append.attributes["rpc.method"].ends_with("/AppendRunEvents"));
            Some((run_span, spans))
        })
    })
    .await;
    for child in ["claim", "exec", "deliver"] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == child && s.parent_span_id == run_span.span_id),
            "the run span has a {child} child: {spans:#?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.service == "worker"
            && s.attributes.get("db.system").map(String::as_str) == Some("etcd")),
        "the claim's etcd transaction is in the run's trace"
    );
    assert_eq!(run_span.attributes["job"], "obs-job");
    assert_eq!(run_span.attributes["outcome"], "Claimed");
    assert!(
        run_span
            .links
            .iter()
            .any(|(trace, span)| *trace == save_trace && *span == rpc.span_id),
        "the run links to the save that wrote its job: {:?} vs {save_trace}/{}",
        run_span.links,
        rpc.span_id
    );
    let services: std::collections::BTreeSet<String> =
        receiver.all().into_iter().map(|s| s.service).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["gateway", "jobsvc", "logsvc", "worker"]
    );

    // Metrics: every service, its named series moving.
    use Expect::{AtLeast, AtMost, Exactly};
    let gateway = scrape(http).await;
    check(
        "gateway",
        &gateway,
        &[
            (
                "distcron_http_requests_total",
                &[
                    ("method", "PUT"),
                    ("route", "/api/v1/jobs/{name}"),
                    ("status", "201"),
                ],
                Exactly(1.0),
            ),
            (
                "distcron_http_request_duration_seconds_count",
                &[("route", "/api/v1/jobs/{name}/runs"), ("status", "200")],
                AtLeast(1.0),
            ),
        ],
    );
    let save_rpc: &[(&str, &str)] = &[
        ("service", "distcron.jobs.v1.JobService"),
        ("method", "SaveJob"),
        ("code", "OK"),
    ];
    check(
        "jobsvc",
        &scrape(jobs_m).await,
        &[
            (
                "distcron_grpc_server_requests_total",
                save_rpc,
                Exactly(1.0),
            ),
            (
                "distcron_grpc_server_request_duration_seconds_count",
                save_rpc,
                Exactly(1.0),
            ),
            (
                "distcron_store_request_duration_seconds_count",
                &[("store", "etcd"), ("op", "txn")],
                AtLeast(1.0),
            ),
            ("process_resident_memory_bytes", &[], AtLeast(1.0)),
            ("distcron_build_info", &[], Exactly(1.0)),
        ],
    );
    check(
        "logsvc",
        &scrape(logs_m).await,
        &[
            (
                "distcron_grpc_server_requests_total",
                &[("method", "AppendRunEvents"), ("code", "OK")],
                AtLeast(1.0),
            ),
            (
                "distcron_logsvc_events_total",
                &[("kind", "finished"), ("result", "accepted")],
                AtLeast(3.0),
            ),
            (
                "distcron_logsvc_append_batch_events_count",
                &[],
                AtLeast(1.0),
            ),
            // "traced\n" per run.
            (
                "distcron_logsvc_output_bytes_total",
                &[],
                AtLeast(3.0 * 7.0),
            ),
            (
                "distcron_store_request_duration_seconds_count",
                &[("store", "mongodb")],
                AtLeast(3.0),
            ),
        ],
    );
    let first = scrape(worker_m).await;
    check(
        "worker",
        &first,
        &[
            (
                "distcron_worker_fires_total",
                &[("outcome", "claimed")],
                AtLeast(3.0),
            ),
            (
                "distcron_worker_fires_total",
                &[("outcome", "missed")],
                Exactly(0.0),
            ),
            (
                "distcron_worker_runs_finished_total",
                &[("status", "succeeded")],
                AtLeast(3.0),
            ),
            (
                "distcron_worker_trigger_lag_seconds_count",
                &[],
                AtLeast(3.0),
            ),
            // Lag is a fraction of a second on an idle machine.
            (
                "distcron_worker_trigger_lag_seconds_bucket",
                &[("le", "1")],
                AtLeast(3.0),
            ),
            (
                "distcron_worker_run_duration_seconds_count",
                &[],
                AtLeast(3.0),
            ),
            (
                "distcron_worker_claim_duration_seconds_count",
                &[],
                AtLeast(3.0),
            ),
            ("distcron_worker_log_batch_events_count", &[], AtLeast(3.0)),
            ("distcron_worker_delivered_events_total", &[], AtLeast(9.0)),
            ("distcron_worker_scheduled_jobs", &[], Exactly(1.0)),
            ("distcron_worker_claiming", &[], Exactly(1.0)),
            ("distcron_worker_sessions_opened_total", &[], Exactly(1.0)),
            // Nothing backs up: at most the batch being delivered right now is spooled.
            ("distcron_worker_spool_batches", &[], AtMost(1.0)),
            // Acknowledged runs are unmarked: only the runs ended in the last moments are marked.
            ("distcron_worker_undelivered_runs", &[], AtMost(3.0)),
            (
                "distcron_store_request_duration_seconds_count",
                &[("store", "etcd"), ("op", "txn")],
                AtLeast(3.0),
            ),
        ],
    );
    let moving = [
        ("distcron_worker_fires_total", &[("outcome", "claimed")][..]),
        (
            "distcron_worker_runs_finished_total",
            &[("status", "succeeded")][..],
        ),
        ("distcron_worker_delivered_events_total", &[][..]),
    ];
    let count = |t: &str, (name, labels): (&str, &[(&str, &str)])| sample(t, name, labels);
    wait_for("the worker's counters to move", async || {
        let t = scrape(worker_m).await;
        moving
            .iter()
            .all(|m| count(&t, *m) > count(&first, *m))
            .then_some(())
    })
    .await;

    // Logs: JSON lines; one grep of a run id finds the run's start and end.
    let run_id = run_span.attributes["run_id"].clone();
    let log = std::fs::read_to_string(&worker_log).unwrap();
    let story: Vec<Value> = log
        .lines()
        .filter(|l| l.contains(&run_id))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = story
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"run starting") && messages.contains(&"run finished"),
        "{messages:?}"
    );
    for line in &story {
        assert_eq!(line["span"]["job"], "obs-job", "{line}");
        assert_eq!(line["span"]["worker"], "obs-worker", "{line}");
    }
}

/// A random 128-bit number (for a trace id), from the standard library's hasher seeds.
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        h.finish()
    };
    (u128::from(word()) << 64) | u128::from(word())
}
