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
    let page = get_json(http, &format!("{url}/api/v1/jobs/tick/runs?limit=1000")).await;
    page["runs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn one_process_runs_jobs_and_keeps_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = [
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    ];
    let url = format!("http://127.0.0.1:{}", ports[0]);
    let http = reqwest::Client::new();

    let first = Distcron::start(&data, ports);
    wait_ready(&http, &url).await;
    let job = json!({"name": "tick", "command": "echo embedded", "cronExpr": "* * * * * *"});
    let r = http
        .post(format!("{url}/api/v1/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let mut before = Vec::new();
    for _ in 0..50 {
        before = runs(&http, &url).await;
        if before.iter().filter(|r| r["status"] == "succeeded").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    second.stop();
}
