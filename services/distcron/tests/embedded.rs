//! The embedded default end to end: the `distcron` binary alone (no etcd, no MongoDB) runs a job
//! created over HTTP, keeps its history, and after a restart still has the job and never runs a
//! slot twice.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use distcron_testkit::free_port;
use serde_json::{json, Value};

struct Distcron {
    child: Child,
}

impl Drop for Distcron {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distcron {
    fn start(data: &std::path::Path, ports: [u16; 3]) -> Self {
        Self::start_with(data, ports, &[])
    }

    fn start_with(data: &std::path::Path, ports: [u16; 3], extra: &[&std::ffi::OsStr]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_distcron"))
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--jobsvc-listen", &format!("127.0.0.1:{}", ports[1])])
            .args(["--logsvc-listen", &format!("127.0.0.1:{}", ports[2])])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "distcron exits cleanly on SIGTERM: {status}"
        );
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..150 {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("distcron did not become ready");
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn runs(http: &reqwest::Client, url: &str) -> Vec<Value> {
    let page = get_json(
        http,
        &format!("{url}/api/v1/jobs/tick/runs?limit=1000&withoutOutput=false"),
    )
    .await;
    page["runs"].as_array().cloned().unwrap_or_default()
}

/// Creates `job` through the API.
async fn create(http: &reqwest::Client, url: &str, job: &Value) {
    let r = http
        .post(format!("{url}/api/v1/jobs"))
        .json(job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
}

/// Creates job `tick`, every second, running `command`.
async fn create_tick(http: &reqwest::Client, url: &str, command: &str) {
    let job = json!({"name": "tick", "command": command, "cronExpr": "* * * * * *"});
    create(http, url, &job).await;
}

/// Three free loopback ports: gateway, jobsvc, logsvc.
fn three_ports() -> [u16; 3] {
    [
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    ]
}

/// The runs of `tick` once at least `n` succeeded; fails after 10 s without them.
async fn wait_succeeded(http: &reqwest::Client, url: &str, n: usize) -> Vec<Value> {
    let mut ran = Vec::new();
    for _ in 0..50 {
        ran = runs(http, url).await;
        if ran.iter().filter(|r| r["status"] == "succeeded").count() >= n {
            return ran;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fewer than {n} runs of tick succeeded in 10 s: {ran:#?}");
}

#[tokio::test]
async fn one_process_runs_jobs_and_keeps_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = three_ports();
    let url = format!("http://127.0.0.1:{}", ports[0]);
    let http = reqwest::Client::new();

    let first = Distcron::start(&data, ports);
    wait_ready(&http, &url).await;
    // Jobs may run as other users: nothing in the data dir is theirs to read.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    for file in ["store.sqlite", "runs.sqlite"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("worker")), 0o700, "the worker's data dir");
    create_tick(&http, &url, "echo embedded").await;
    let before = wait_succeeded(&http, &url, 3).await;
    let done = before
        .iter()
        .find(|r| r["status"] == "succeeded")
        .expect("runs");
    assert_eq!(done["output"], "embedded\n");
    // The console is served too.
    let page = http
        .get(format!("{url}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("distcron"));
    first.stop();

    let second = Distcron::start(&data, ports);
    wait_ready(&http, &url).await;
    let kept = get_json(&http, &format!("{url}/api/v1/jobs/tick")).await;
    assert_eq!(
        kept["command"], "echo embedded",
        "the job survived the restart"
    );
    let mut after = Vec::new();
    for _ in 0..50 {
        after = runs(&http, &url).await;
        if after.len() >= before.len() + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        after.len() >= before.len() + 2,
        "it keeps running after the restart"
    );
    let mut per_slot: HashMap<i64, usize> = HashMap::new();
    for r in after.iter().filter(|r| r["trigger"] == "schedule") {
        *per_slot.entry(r["planTime"].as_i64().unwrap()).or_default() += 1;
    }
    assert!(
        per_slot.values().all(|n| *n == 1),
        "no slot ran twice across the restart: {per_slot:?}"
    );
    assert!(
        per_slot.len() >= before.len() + 2,
        "the slots before and after the restart were checked: {per_slot:?}"
    );
    second.stop();
}

async fn runs_of(http: &reqwest::Client, url: &str, job: &str) -> Vec<Value> {
    let page = get_json(http, &format!("{url}/api/v1/jobs/{job}/runs?limit=1000")).await;
    page["runs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_crash_leaves_no_run_running_and_every_slot_with_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = three_ports();
    let url = format!("http://127.0.0.1:{}", ports[0]);
    // With tokens, so the in-process worker reports with a worker token and the in-process
    // logsvc checks each run's claim against the embedded store.
    let token = "embedded-admin-token";
    let tokens = format!("ops:admin:{}", distcron_auth::hash_token(token));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let with_tokens: [&std::ffi::OsStr; 2] = ["--tokens".as_ref(), tokens.as_ref()];
    let mut first = Distcron::start_with(&data, ports, &with_tokens);
    wait_ready(&http, &url).await;
    let names: Vec<String> = (0..5).map(|i| format!("crash-{i}")).collect();
    for name in &names {
        let job = json!({"name": name, "command": "echo x; sleep 2", "cronExpr": "* * * * * *",
                         "overlapPolicy": "allow"});
        create(&http, &url, &job).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A crash with runs in flight (each runs 2 s), some of them just started.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = Distcron::start_with(&data, ports, &with_tokens);
    wait_ready(&http, &url).await;
    // The earlier incarnation's session lives one TTL (5 s) more, then its runs are recorded.
    tokio::time::sleep(Duration::from_secs(9)).await;
    for name in &names {
        let r = http
            .post(format!("{url}/api/v1/jobs/{name}/disable"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let mut all = Vec::new();
    for _ in 0..60 {
        all.clear();
        for name in &names {
            all.push((name.clone(), runs_of(&http, &url, name).await));
        }
        if all
            .iter()
            .all(|(_, runs)| runs.iter().all(|r| r["status"] != "running"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut lost = 0;
    for (name, runs) in &all {
        let left: Vec<&Value> = runs.iter().filter(|r| r["status"] == "running").collect();
        assert!(left.is_empty(), "{name}: runs left running: {left:#?}");
        let mut per_slot: HashMap<i64, usize> = HashMap::new();
        for r in runs.iter().filter(|r| r["trigger"] == "schedule") {
            *per_slot.entry(r["planTime"].as_i64().unwrap()).or_default() += 1;
        }
        assert!(
            per_slot.values().all(|n| *n == 1),
            "{name}: a slot with two records: {per_slot:?}"
        );
        let mut slots: Vec<i64> = per_slot.keys().copied().collect();
        slots.sort_unstable();
        let gaps: Vec<_> = slots.windows(2).filter(|w| w[1] - w[0] != 1000).collect();
        assert!(
            gaps.is_empty(),
            "{name}: slots without a record between {gaps:?}"
        );
        assert!(slots.len() >= 10, "{name}: {} slots", slots.len());
        lost += runs.iter().filter(|r| r["status"] == "lost").count();
    }
    assert!(
        lost > 0,
        "the runs in flight at the crash are recorded lost"
    );
    second.stop();
}

#[tokio::test]
async fn with_certificates_the_console_is_https_and_the_inner_grpc_is_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = distcron_testkit::TestCa::new(&dir.path().join("tls"), "embedded CA").unwrap();
    let node = ca.issue("node", &["localhost", "127.0.0.1"]).unwrap();
    let ports = three_ports();
    let (cert, key, ca_pem) = (
        node.cert.into_os_string(),
        node.key.into_os_string(),
        ca.ca_pem().into_os_string(),
    );
    let flags: Vec<&std::ffi::OsStr> = vec![
        "--https-cert".as_ref(),
        &cert,
        "--https-key".as_ref(),
        &key,
        "--tls-cert".as_ref(),
        &cert,
        "--tls-key".as_ref(),
        &key,
        "--tls-ca".as_ref(),
        &ca_pem,
        "--tls-client-ca".as_ref(),
        &ca_pem,
    ];
    let _distcron = Distcron::start_with(&dir.path().join("data"), ports, &flags);
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}", ports[0]);
    wait_ready(&http, &url).await;
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    create_tick(&http, &url, "echo embedded-tls").await;
    let ran = wait_succeeded(&http, &url, 1).await;
    let done = ran.iter().find(|r| r["status"] == "succeeded");
    assert_eq!(
        done.map(|r| r["output"].clone()),
        Some(json!("embedded-tls\n")),
        "{ran:?}"
    );
    // The inner gRPC ports speak TLS only: a plaintext gRPC call gets no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports[1]))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let call = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        assert!(call.is_err(), "jobsvc answered plaintext gRPC");
    }
    assert!(
        http.get(format!("http://127.0.0.1:{}/readyz", ports[0]))
            .send()
            .await
            .is_err(),
        "the console answered plain HTTP"
    );
}
