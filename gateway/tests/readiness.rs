//! `/readyz` answers 503 while a backend's store cannot write, and 200 again once it can: a real
//! jobsvc process over an etcd that hits its space quota (etcd's NOSPACE alarm, what a full disk
//! looks like to etcd's clients).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use distcron_discovery::{balanced_channel, Endpoints};
use distcron_gateway::{router, AppState, Backends, Limits};
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_testkit::{free_port, shared_etcd, shared_mongo, unique_name, workspace_binary, Etcd};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(package: &str, bin: &str, args: &[&str]) -> (Killed, String) {
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(workspace_binary(package, bin))
        .args(["--listen", &listen, "--metrics-listen", "127.0.0.1:0"])
        .args(["--registration-ttl", "3s"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Killed(child), format!("http://{listen}"))
}

async fn readyz(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = http.get(format!("{url}/readyz")).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

async fn wait_readyz(http: &reqwest::Client, url: &str, want: StatusCode) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = readyz(http, url).await;
        if status == want {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz never answered {want}; last {last}");
}

#[tokio::test]
async fn readyz_fails_while_a_store_cannot_write_and_recovers_when_it_can() {
    let etcd = Etcd::single_with(&["--quota-backend-bytes", "4194304"]).unwrap();
    let endpoints = etcd.endpoints().join(",");
    let prefix = format!("/{}/", unique_name("ready"));
    let (_jobsvc, jobs_addr) = spawn(
        "distcron-jobsvc",
        "jobsvc",
        &[
            "--etcd-endpoints",
            &endpoints,
            "--key-prefix",
            &prefix,
            "--compact-interval",
            "0s",
        ],
    );
    let (_logsvc, logs_addr) = spawn(
        "distcron-logsvc",
        "logsvc",
        &[
            "--etcd-endpoints",
            &shared_etcd().endpoints().join(","),
            "--key-prefix",
            &prefix,
            "--mongo-uri",
            &shared_mongo().uri(),
            "--mongo-database",
            &unique_name("ready"),
        ],
    );
    let stop = CancellationToken::new();
    let channel =
        |addr: String| balanced_channel(Endpoints::Static(vec![addr]), None, stop.clone());
    let state = AppState {
        backends: Backends::new(
            channel(jobs_addr).await.unwrap(),
            channel(logs_addr).await.unwrap(),
        ),
        tokens: std::sync::Arc::default(),
        sessions: std::sync::Arc::default(),
        streams: std::sync::Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(distcron_gateway::serve(
        router(state, Limits::default()),
        listener,
        stop.clone(),
        distcron_gateway::ConnectionLimits::default(),
        None,
    ));
    let http = reqwest::Client::new();
    wait_readyz(&http, &url, StatusCode::OK).await;
    let save = |name: &str| {
        http.post(format!("{url}/api/v1/jobs"))
            .json(&json!({"name": name, "command": "true", "cronExpr": "0 0 0 1 1 *"}))
            .send()
    };
    assert_eq!(save("before").await.unwrap().status(), StatusCode::CREATED);

    // Fill etcd past its quota: it raises NOSPACE and refuses every write from then on.
    let filler = EtcdKv::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .unwrap();
    let value = vec![b'x'; 512 * 1024];
    let mut full = false;
    for i in 0..64 {
        if filler
            .put(&format!("/filler/{i}"), value.clone(), None)
            .await
            .is_err()
        {
            full = true;
            break;
        }
    }
    assert!(full, "etcd never refused a write");
    let refused = save("during").await.unwrap().status();
    assert!(
        refused.is_server_error(),
        "a save into a full etcd: {refused}"
    );
    let body = wait_readyz(&http, &url, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body, json!({"jobsvc": false, "logsvc": true}));

    // Make room (delete, compact, defragment, disarm): the next write succeeds, and readiness
    // comes back with it.
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let deleted = client
        .delete(
            "/filler/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let revision = deleted.header().unwrap().revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    client.defragment().await.unwrap();
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(!alarms.alarms().is_empty(), "etcd raised no alarm");
    for alarm in alarms.alarms() {
        let mut member = etcd_client::AlarmOptions::new();
        member.with_member(alarm.member_id());
        client
            .alarm(
                etcd_client::AlarmAction::Deactivate,
                alarm.alarm(),
                Some(member),
            )
            .await
            .unwrap();
    }
    let mut saved = false;
    for attempt in 0..50 {
        if save(&format!("after-{attempt}")).await.unwrap().status() == StatusCode::CREATED {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saved, "saves never worked again after the room was made");
    wait_readyz(&http, &url, StatusCode::OK).await;
    stop.cancel();
}
