//! Measurements: latency summaries, a process's CPU time and memory, and etcd's own request
//! counters.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises samples given in milliseconds.
    pub fn of_ms(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1],
        }
    }

    /// Summarises durations.
    pub fn of(samples: &[Duration]) -> Self {
        Self::of_ms(samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
}

/// CPU time a process has used itself (user + system, its children excluded), in milliseconds,
/// from `/proc/<pid>/stat`.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) * 1000.0 / ticks)
}

/// Resident set size of a process in MiB, from `/proc/<pid>/status`.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// etcd write requests as counted by the members themselves.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EtcdWrites {
    /// `Txn` requests handled (every code: losers and failures included).
    pub txns: f64,
    /// `Put` requests handled.
    pub puts: f64,
    /// `DeleteRange` requests handled.
    pub deletes: f64,
}

impl EtcdWrites {
    /// Txns and puts: the writes the cost-per-fire goal counts.
    pub fn txns_and_puts(&self) -> f64 {
        self.txns + self.puts
    }

    /// Adds what happened between `earlier` and `later`.
    pub fn add_delta(&mut self, later: &Self, earlier: &Self) {
        self.txns += later.txns - earlier.txns;
        self.puts += later.puts - earlier.puts;
        self.deletes += later.deletes - earlier.deletes;
    }

    fn add_exposition(&mut self, text: &str) {
        let handled = |method: &str| {
            distcron_metrics::sample_sum(
                text,
                "grpc_server_handled_total",
                &[("grpc_method", method)],
            )
            .unwrap_or(0.0)
        };
        self.txns += handled("Txn");
        self.puts += handled("Put");
        self.deletes += handled("DeleteRange");
    }
}

/// What a worker's own `/metrics` said at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WorkerGauges {
    /// Its estimate of its clock offset from the cluster, ms.
    pub clock_offset_ms: f64,
    /// Sum and count of its claim transaction durations, s.
    pub claim_sum_s: f64,
    /// Claims timed.
    pub claim_count: f64,
    /// Sum and count of its trigger lag (start − slot), s.
    pub lag_sum_s: f64,
    /// Runs whose lag was timed.
    pub lag_count: f64,
    /// Batches of run events in its spool, not yet acknowledged by logsvc.
    pub spool_batches: f64,
}

impl WorkerGauges {
    /// Reads a worker's exposition.
    pub fn parse(text: &str) -> Self {
        let get = |name: &str| distcron_metrics::sample_sum(text, name, &[]).unwrap_or(0.0);
        Self {
            clock_offset_ms: get("distcron_worker_clock_offset_seconds") * 1000.0,
            claim_sum_s: get("distcron_worker_claim_duration_seconds_sum"),
            claim_count: get("distcron_worker_claim_duration_seconds_count"),
            lag_sum_s: get("distcron_worker_trigger_lag_seconds_sum"),
            lag_count: get("distcron_worker_trigger_lag_seconds_count"),
            spool_batches: get("distcron_worker_spool_batches"),
        }
    }
}

/// A worker's view over a window: its clock offset at the end and its mean claim duration and
/// trigger lag during the window, from its own metrics (for explaining lag).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerWindow {
    /// Worker id.
    pub worker: String,
    /// Its clock offset estimate at the end, ms.
    pub clock_offset_ms: f64,
    /// Mean claim transaction duration, ms.
    pub mean_claim_ms: f64,
    /// Mean trigger lag as the worker measured it, ms.
    pub mean_lag_ms: f64,
}

impl WorkerWindow {
    /// The window between two readings of one worker.
    pub fn between(worker: &str, before: &WorkerGauges, after: &WorkerGauges) -> Self {
        let mean = |sum: f64, count: f64| {
            if count > 0.0 {
                sum / count * 1000.0
            } else {
                0.0
            }
        };
        Self {
            worker: worker.to_owned(),
            clock_offset_ms: after.clock_offset_ms,
            mean_claim_ms: mean(
                after.claim_sum_s - before.claim_sum_s,
                after.claim_count - before.claim_count,
            ),
            mean_lag_ms: mean(
                after.lag_sum_s - before.lag_sum_s,
                after.lag_count - before.lag_count,
            ),
        }
    }
}

/// The write counters of one member (`http://host:port` client URL); `None` when it does not
/// answer (a stopped member's counters are gone with it).
pub async fn etcd_writes(http: &reqwest::Client, endpoint: &str) -> Option<EtcdWrites> {
    let text = http
        .get(format!("{endpoint}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut writes = EtcdWrites::default();
    writes.add_exposition(&text);
    Some(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Summary::of_ms((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Summary::of_ms(vec![]).count, 0);
    }

    #[test]
    fn etcd_counters_are_summed_by_method_over_codes() {
        let mut w = EtcdWrites::default();
        w.add_exposition(concat!(
            "# TYPE grpc_server_handled_total counter\n",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 7\n",
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3\n",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 50\n",
        ));
        assert_eq!((w.txns, w.puts, w.deletes), (9.0, 3.0, 0.0));
        assert_eq!(w.txns_and_puts(), 12.0);
    }

    #[test]
    fn own_cpu_and_rss_are_read_from_proc() {
        let pid = std::process::id();
        assert!(cpu_ms(pid).is_some_and(|c| c >= 0.0));
        assert!(rss_mib(pid).is_some_and(|r| r > 0.0));
    }
}
