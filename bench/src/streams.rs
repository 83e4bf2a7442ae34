//! The live-output streams scenario: many viewers follow one talkative run at once, then leave.
//! Measures the gateway's and logsvc's resident memory before, while the streams are open, and
//! after they closed: each stream's memory must be bounded, and return when it closes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use crate::measure::rss_mib;
use crate::report::Check;
use crate::scenarios::Bench;

/// How long the streams stay open (reading) before they are closed.
const OPEN_FOR: Duration = Duration::from_secs(15);
/// How long after the close the memory is measured again.
const SETTLE_FOR: Duration = Duration::from_secs(15);
/// Most memory, MiB, a process may keep above its level before the streams once they closed.
pub const KEPT_AFTER_CLOSE_MIB: f64 = 32.0;
/// Most memory, MiB, one open stream may take in a process.
pub const PER_STREAM_MIB: f64 = 1.0;

/// Resident memory of one process at the three moments, MiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// Before any stream opened.
    pub before: f64,
    /// The highest sample while they were open.
    pub open_peak: f64,
    /// After they closed and the process settled.
    pub after: f64,
}

/// What the streams scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsResult {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that opened (answered 200 and delivered output).
    pub opened: usize,
    /// Output bytes the streams received in all.
    pub bytes_received: u64,
    /// The gateway.
    pub gateway: Memory,
    /// logsvc.
    pub logsvc: Memory,
}

fn rss(pid: u32) -> anyhow::Result<f64> {
    rss_mib(pid).with_context(|| format!("cannot read the memory of process {pid}"))
}

/// Opens `n` live-output streams of one run printing ~20 KB/s, reads them for [`OPEN_FOR`],
/// closes them, and measures memory.
pub async fn streams(bench: &Bench, n: usize) -> anyhow::Result<StreamsResult> {
    let base = bench.stack.gateway_url.clone();
    let (Some(gateway_pid), Some(logsvc_pid)) = (
        bench.stack.service_pid("gateway"),
        bench.stack.service_pid("logsvc"),
    ) else {
        bail!("the gateway or logsvc process is not running");
    };
    let job = "bench-streams";
    let http = reqwest::Client::new();
    let saved = http
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({
            "name": job,
            "command": "for i in $(seq 1 600); do head -c 2000 /dev/zero | tr '\\0' x; echo; sleep 0.1; done",
            "cronExpr": "0 0 0 1 1 *",
        }))
        .send()
        .await?;
    if !saved.status().is_success() {
        bail!("saving {job}: {}", saved.status());
    }
    let triggered: serde_json::Value = http
        .post(format!("{base}/api/v1/jobs/{job}/trigger"))
        .send()
        .await?
        .json()
        .await?;
    let run_id = triggered["runId"]
        .as_str()
        .context("the trigger answered no runId")?
        .to_owned();
    // The streams follow a running run: wait until it is stored as running, then let the
    // processes settle.
    let mut running = false;
    for _ in 0..120 {
        let run: serde_json::Value = http
            .get(format!("{base}/api/v1/runs/{run_id}"))
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        if run["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !running {
        bail!("run {run_id} of {job} was not running within 60 s");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (rss(gateway_pid)?, rss(logsvc_pid)?);

    let url = format!("{base}/api/v1/runs/{run_id}/output");
    let opened = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            let (opened, received) = (opened.clone(), received.clone());
            tokio::spawn(async move {
                let Ok(response) = http.get(&url).send().await else {
                    return;
                };
                if !response.status().is_success() {
                    return;
                }
                let mut body = response.bytes_stream();
                let mut first = true;
                while let Some(Ok(chunk)) = body.next().await {
                    if std::mem::take(&mut first) {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut peak = before;
    let opened_at = tokio::time::Instant::now();
    while opened_at.elapsed() < OPEN_FOR {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = (peak.0.max(rss(gateway_pid)?), peak.1.max(rss(logsvc_pid)?));
    }
    // Closing: the readers are dropped mid-stream, as browsers leaving the page.
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    let (opened, bytes_received) = (
        opened.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    tokio::time::sleep(SETTLE_FOR).await;
    let after = (rss(gateway_pid)?, rss(logsvc_pid)?);
    let _ = http
        .post(format!("{base}/api/v1/jobs/{job}/kill"))
        .send()
        .await;
    let _ = http
        .delete(format!("{base}/api/v1/jobs/{job}"))
        .send()
        .await;
    Ok(StreamsResult {
        streams: n,
        opened,
        bytes_received,
        gateway: Memory {
            before: before.0,
            open_peak: peak.0,
            after: after.0,
        },
        logsvc: Memory {
            before: before.1,
            open_peak: peak.1,
            after: after.1,
        },
    })
}

/// The goals of the streams scenario.
pub fn streams_checks(r: &StreamsResult) -> Vec<Check> {
    let n = r.opened.max(1) as f64;
    let mut checks = vec![
        Check::at_least("streams opened", r.streams as f64, r.opened as f64, ""),
        Check::info("output received", r.bytes_received as f64 / 1e6, "MB"),
    ];
    for (name, m) in [("gateway", r.gateway), ("logsvc", r.logsvc)] {
        checks.push(Check::info(&format!("{name} RSS before"), m.before, "MiB"));
        checks.push(Check::at_most(
            &format!("{name} RSS per open stream"),
            PER_STREAM_MIB,
            (m.open_peak - m.before).max(0.0) / n,
            "MiB",
        ));
        checks.push(Check::at_most(
            &format!("{name} RSS kept after close"),
            KEPT_AFTER_CLOSE_MIB,
            (m.after - m.before).max(0.0),
            "MiB",
        ));
    }
    checks
}
