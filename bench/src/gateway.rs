//! The benchmark's client of the public HTTP API (`/api/v1`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;

/// Requests in flight while loading or removing jobs.
const LOAD_CONCURRENCY: usize = 32;

/// A job to save.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Its name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its command.
    pub command: String,
}

/// A run as listed by `/api/v1/jobs/{name}/runs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedRun {
    /// Run id.
    pub run_id: String,
    /// Status name.
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct RunPage {
    runs: Vec<ListedRun>,
}

/// An HTTP client of one gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
}

impl Gateway {
    /// A client of the gateway at `base` (`http://127.0.0.1:<port>`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    /// Waits until the gateway answers `/readyz` (its backends are reachable).
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("gateway at {} not ready within {within:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves (creates or replaces) one job; returns how long the request took.
    pub async fn save(&self, job: &JobSpec) -> anyhow::Result<Duration> {
        let body = json!({
            "command": job.command,
            "cronExpr": job.cron,
            "timeZone": "UTC",
            "timeoutSeconds": 60,
        });
        let start = Instant::now();
        let resp = self
            .http
            .put(format!("{}/api/v1/jobs/{}", self.base, job.name))
            .json(&body)
            .send()
            .await?;
        let took = start.elapsed();
        let status = resp.status();
        if !status.is_success() {
            bail!("save {}: {status}: {}", job.name, resp.text().await?);
        }
        Ok(took)
    }

    /// Saves every job, [`LOAD_CONCURRENCY`] at a time, each retried like [`retried`].
    pub async fn save_all(&self, jobs: &[JobSpec]) -> anyhow::Result<()> {
        stream::iter(jobs)
            .map(|j| retried(&j.name, || self.save(j)))
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Deletes every named job, [`LOAD_CONCURRENCY`] at a time, each retried like [`retried`].
    pub async fn delete_all(&self, names: &[String]) -> anyhow::Result<()> {
        stream::iter(names)
            .map(|n| {
                retried(n, move || async move {
                    let resp = self
                        .http
                        .delete(format!("{}/api/v1/jobs/{n}", self.base))
                        .send()
                        .await?;
                    let status = resp.status();
                    if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
                        bail!("delete {n}: {status}");
                    }
                    anyhow::Ok(())
                })
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// The newest runs of `job`.
    pub async fn runs(&self, job: &str, limit: u32) -> anyhow::Result<Vec<ListedRun>> {
        let resp = self
            .http
            .get(format!(
                "{}/api/v1/jobs/{job}/runs?limit={limit}",
                self.base
            ))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("runs of {job}: {status}");
        }
        Ok(resp.json::<RunPage>().await.context("runs page")?.runs)
    }

    /// `GET /api/v1/jobs?limit=<limit>`; returns how long it took.
    pub async fn list_jobs(&self, limit: u32) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let resp = self
            .http
            .get(format!("{}/api/v1/jobs?limit={limit}", self.base))
            .send()
            .await?;
        let status = resp.status();
        resp.bytes().await?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!("list jobs: {status}");
        }
        Ok(took)
    }
}

/// Tries of one job's save or delete while loading or unloading the stack.
const LOAD_ATTEMPTS: u32 = 6;

/// Runs `op` until it succeeds, at most [`LOAD_ATTEMPTS`] times with 2 s between tries: an
/// overloaded stack answers 503 or times out, and a client (like these load steps) tries again.
async fn retried<T, F, Fut>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < LOAD_ATTEMPTS => {
                tracing::warn!(%what, attempt, error = %e, "retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
