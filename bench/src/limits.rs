//! The machine's own limits, measured in the same run as the scenarios so that results read as
//! ratios on a noisy machine: process spawns, etcd create-if-absent transactions and raw
//! `insert_many` documents per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use mongodb::bson::doc;
use serde::Serialize;

/// The measured limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MachineLimits {
    /// `sh -c true` spawned and reaped per second, at the worker's concurrency.
    pub spawns_per_s: f64,
    /// etcd create-if-absent transactions per second (64 in flight).
    pub etcd_txns_per_s: f64,
    /// Documents per second inserted with `insert_many` (batches of 500) into the Mongo-wire server.
    pub insert_docs_per_s: f64,
}

/// Runs `op` from `concurrency` tasks for `length`; returns completed operations per second.
/// `op` gets the number of the call (0, 1, … across all tasks) and returns how many operations it
/// completed.
pub async fn rate<F, Fut>(concurrency: usize, length: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (op, done, next) = (op.clone(), done.clone(), next.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let n = op(next.fetch_add(1, Ordering::Relaxed)).await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Spawn rate of `sh -c true` with `concurrency` children at once.
pub async fn spawn_rate(concurrency: usize, length: Duration) -> anyhow::Result<f64> {
    rate(concurrency, length, |_| async {
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "sh -c true failed: {status}");
        Ok(1)
    })
    .await
}

/// Create-if-absent transactions per second against `endpoints`, under key prefix `prefix`.
pub async fn etcd_txn_rate(
    endpoints: &[String],
    prefix: &str,
    length: Duration,
) -> anyhow::Result<f64> {
    let client = etcd_client::Client::connect(endpoints, None)
        .await
        .context("connecting to etcd")?;
    let prefix = prefix.to_owned();
    rate(64, length, move |n| {
        let mut kv = client.kv_client();
        let key = format!("{prefix}{n}");
        async move {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, "1", None)]);
            kv.txn(txn).await?;
            Ok(1)
        }
    })
    .await
}

/// Documents per second inserted by `insert_many` in batches of 500, 3 writers (as 3 logsvc
/// batches would be), shaped like run records.
pub async fn insert_rate(uri: &str, database: &str, length: Duration) -> anyhow::Result<f64> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .context("connecting to the Mongo-wire server")?;
    let coll = client
        .database(database)
        .collection::<mongodb::bson::Document>("raw");
    rate(3, length, move |n| {
        let coll = coll.clone();
        async move {
            let docs: Vec<_> = (0..500u64)
                .map(|i| {
                    doc! {
                        "_id": format!("{n}-{i}"), "runId": format!("{n}-{i}"),
                        "jobName": format!("job-{i}"), "command": "true", "err": "",
                        "output": "", "planTime": 1_i64, "scheduleTime": 1_i64,
                        "startTime": 1_i64, "endTime": 2_i64, "workerId": "worker-1",
                        "status": "succeeded", "exitCode": 0, "trigger": "schedule",
                        "durationMs": 1_i64, "traceId": "", "version": 1_i64,
                    }
                })
                .collect();
            coll.insert_many(docs).await?;
            Ok(500)
        }
    })
    .await
}
