//! The real logsvc binary registers in etcd, answers grpcurl, and deregisters on SIGTERM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use distcron_kv::{EtcdConfig, EtcdKv, KvStore, RangeRequest};
use distcron_testkit::{free_port, grpcurl, shared_etcd, shared_mongo, unique_name};

#[tokio::test]
async fn binary_serves_registers_and_deregisters() {
    let prefix = format!("/{}/", unique_name("bin"));
    let port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logsvc"))
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--key-prefix",
            &prefix,
        ])
        .args([
            "--mongo-uri",
            &shared_mongo().uri(),
            "--mongo-database",
            &unique_name("bin"),
        ])
        .arg("--etcd-endpoints")
        .arg(shared_etcd().endpoints().join(","))
        .env("DISTCRON_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logsvc");
    let store = EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
        .await
        .unwrap();
    let services = format!("{prefix}services/logsvc/");
    let registered = async {
        for _ in 0..100 {
            let kvs = store
                .range(RangeRequest {
                    prefix: services.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .kvs;
            if !kvs.is_empty() {
                return kvs.len();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        0
    };
    assert_eq!(registered.await, 1);
    let target = format!("127.0.0.1:{port}");
    let (list, append) = tokio::task::spawn_blocking(move || {
        let list = grpcurl(&["-plaintext", &target, "list"]);
        let append = grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"events":[{"runId":"g1","started":{"jobName":"j","command":"echo","startTimeMs":"5"}}]}"#,
            &target,
            "distcron.logs.v1.LogService/AppendRunEvents",
        ]);
        (list, append)
    })
    .await
    .unwrap();
    assert!(
        list.contains("distcron.logs.v1.LogService") && list.contains("grpc.health.v1.Health"),
        "{list}"
    );
    assert!(append.contains("\"accepted\": 1"), "{append}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let left = store
        .range(RangeRequest {
            prefix: services,
            ..Default::default()
        })
        .await
        .unwrap()
        .kvs;
    assert!(left.is_empty(), "deregistered on SIGTERM");
}
