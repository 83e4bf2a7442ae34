//! jobsvc keeps working through etcd trouble, and the real binary registers, answers grpcurl and
//! deregisters on SIGTERM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{job, save, Harness};
use distcron_kv::{EtcdConfig, EtcdKv, KvStore, RangeRequest};
use distcron_proto::jobs::v1 as pb;
use distcron_testkit::{free_port, grpcurl, shared_etcd, unique_name, wait_until, Etcd};
use tonic::Code;

#[tokio::test]
async fn keeps_answering_while_one_etcd_member_is_down() {
    let mut cluster = tokio::task::spawn_blocking(|| Etcd::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let mut h = Harness::on(cluster.endpoints()).await;
    h.client.save_job(save(job("before"))).await.unwrap();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_member(0);
        cluster
    })
    .await
    .unwrap();
    for i in 0..20 {
        let name = format!("during-{i}");
        h.client
            .save_job(save(job(&name)))
            .await
            .expect("save with a member down");
        h.client
            .get_job(pb::GetJobRequest { name })
            .await
            .expect("get with a member down");
    }
    let all = h
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.jobs.len(), 21);
    h.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test]
async fn reports_unavailable_while_etcd_is_down_and_recovers_without_restart() {
    let mut etcd = tokio::task::spawn_blocking(Etcd::single)
        .await
        .unwrap()
        .unwrap();
    let mut h = Harness::on(etcd.endpoints()).await;
    h.client.save_job(save(job("a"))).await.unwrap();
    let etcd_trouble = || {
        let text = distcron_metrics::render();
        let n = |name| distcron_metrics::sample_sum(&text, name, &[("store", "etcd")]);
        (
            n("distcron_store_errors_total").unwrap_or(0.0),
            n("distcron_store_retries_total").unwrap_or(0.0),
        )
    };
    let (errors, retries) = etcd_trouble();
    etcd = tokio::task::spawn_blocking(move || {
        etcd.stop_member(0);
        etcd
    })
    .await
    .unwrap();
    let started = Instant::now();
    let err = h
        .client
        .get_job(pb::GetJobRequest { name: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (errors_after, retries_after) = etcd_trouble();
    assert!(
        errors_after > errors && retries_after > retries,
        "etcd errors and retries are counted: {errors}→{errors_after}, {retries}→{retries_after}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails fast enough: {:?}",
        started.elapsed()
    );
    etcd = tokio::task::spawn_blocking(move || etcd.start_member(0).map(|()| etcd))
        .await
        .unwrap()
        .unwrap();
    let mut recovered = false;
    for _ in 0..40 {
        if h.client
            .get_job(pb::GetJobRequest { name: "a".into() })
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "jobsvc answers again once etcd is back");
    h.shutdown().await;
    tokio::task::spawn_blocking(move || drop(etcd))
        .await
        .unwrap();
}

#[tokio::test]
async fn binary_registers_answers_grpcurl_and_deregisters_on_sigterm() {
    let prefix = format!("/{}/", unique_name("bin"));
    let port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobsvc"))
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--key-prefix",
            &prefix,
        ])
        .arg("--etcd-endpoints")
        .arg(shared_etcd().endpoints().join(","))
        .env("DISTCRON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start jobsvc");
    let store = EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
        .await
        .unwrap();
    let services = format!("{prefix}services/jobsvc/");
    let mut registered = Vec::new();
    for _ in 0..100 {
        registered = store
            .range(RangeRequest {
                prefix: services.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs;
        if !registered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registered.len(), 1, "one registration key");
    assert_ne!(registered[0].lease, 0, "registered on a lease");
    let reg: serde_json::Value = serde_json::from_slice(&registered[0].value).unwrap();
    assert_eq!(reg["addr"], format!("http://127.0.0.1:{port}"));

    let target = format!("127.0.0.1:{port}");
    let list = tokio::task::spawn_blocking({
        let target = target.clone();
        move || grpcurl(&["-plaintext", &target, "list"])
    })
    .await
    .unwrap();
    for service in [
        "distcron.jobs.v1.JobService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.contains(service), "{service} missing from:\n{list}");
    }
    let health = tokio::task::spawn_blocking({
        let target = target.clone();
        move || {
            grpcurl(&[
                "-plaintext",
                "-d",
                r#"{"service":"distcron.jobs.v1.JobService"}"#,
                &target,
                "grpc.health.v1.Health/Check",
            ])
        }
    })
    .await
    .unwrap();
    assert!(health.contains("SERVING"), "{health}");
    let preview = tokio::task::spawn_blocking(move || {
        grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"cronExpr":"@daily","count":2}"#,
            &target,
            "distcron.jobs.v1.JobService/PreviewSchedule",
        ])
    })
    .await
    .unwrap();
    assert!(preview.contains("fireTimes"), "{preview}");

    let pid = i32::try_from(child.id()).unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let gone = store
        .range(RangeRequest {
            prefix: services,
            ..Default::default()
        })
        .await
        .unwrap()
        .kvs
        .is_empty();
    assert!(gone, "registration revoked at shutdown, not left to expire");
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(1), || {
        !distcron_testkit::port_open(port)
    }));
}
