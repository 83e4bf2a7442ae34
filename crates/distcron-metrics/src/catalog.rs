//! The metric groups. Each is a static, registered on first use.
//!
//! Constructors take constant names, help texts and label sets, so they cannot fail at run time;
//! the crate's tests construct every group.
#![allow(clippy::expect_used)]

use std::sync::LazyLock;
use std::time::Duration;

use distcron_core::records::RunStatus;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

use crate::register;

/// Latency buckets for requests and store calls, seconds: 0.5 ms to 10 s.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Trigger-lag buckets, seconds: 1 ms to 30 s.
const LAG: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Run-duration buckets, seconds: 10 ms to 6 h.
const RUN: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0,
];
/// Batch-size buckets, events.
const BATCH: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// A registered gauge vector (for metrics kept outside the catalog, e.g. write health).
pub(crate) fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid metric"),
    )
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
}

static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "distcron_build_info",
                "Always 1; the version of this build.",
            ),
            &["version"],
        )
        .expect("valid metric"),
    )
});

/// Sets `distcron_build_info`.
pub(crate) fn build_info() {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
}

/// Registers every group (for [`crate::metric_names`]).
pub(crate) fn register_all() {
    build_info();
    let _ = (worker(), logsvc(), store(), grpc(), http());
}

/// What became of a due slot on the worker that handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// A scheduled slot claimed by this worker.
    Claimed,
    /// A missed slot claimed by this worker under the `latest`/`all` missed policy.
    CaughtUp,
    /// A manual trigger claimed by this worker.
    Triggered,
    /// The claim transaction found the slot taken by another worker.
    LostRace,
    /// The slot was recorded as skipped (overlap policy `forbid`).
    Skipped,
    /// The slot could not be claimed in time (store unreachable, or this worker at capacity).
    Missed,
    /// The job changed between planning and claiming; the new revision decides.
    Superseded,
}

impl FireOutcome {
    const ALL: [Self; 7] = [
        Self::Claimed,
        Self::CaughtUp,
        Self::Triggered,
        Self::LostRace,
        Self::Skipped,
        Self::Missed,
        Self::Superseded,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::CaughtUp => "caught_up",
            Self::Triggered => "triggered",
            Self::LostRace => "lost_race",
            Self::Skipped => "skipped",
            Self::Missed => "missed",
            Self::Superseded => "superseded",
        }
    }
}

/// The labels of the statuses a run can end in.
fn final_statuses() -> impl Iterator<Item = &'static str> {
    RunStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(RunStatus::as_str)
}

/// The worker's metrics.
#[derive(Debug)]
pub struct WorkerMetrics {
    fires: IntCounterVec,
    /// Slot start minus slot time of scheduled runs.
    pub trigger_lag: Histogram,
    runs_finished: IntCounterVec,
    /// How long runs took.
    pub run_duration: Histogram,
    /// Runs in progress on this worker.
    pub running: IntGauge,
    /// Duration of one claim transaction.
    pub claim_duration: Histogram,
    /// Jobs this worker schedules.
    pub scheduled_jobs: IntGauge,
    /// Bytes in the log spool.
    pub spool_bytes: IntGauge,
    /// Batches in the log spool.
    pub spool_batches: IntGauge,
    /// Ended runs marked in etcd until logsvc stores their records.
    pub undelivered_runs: IntGauge,
    /// Run events logsvc acknowledged.
    pub delivered_events: IntCounter,
    dropped_events: IntCounterVec,
    dropped_batches: IntCounterVec,
    /// Failed deliveries to logsvc (the batch stays spooled and is retried).
    pub delivery_failures: IntCounter,
    /// Events per batch delivered to logsvc.
    pub log_batch_events: Histogram,
    /// This worker's estimated clock offset from its peers.
    pub clock_offset: Gauge,
    /// 1 while this worker claims slots.
    pub claiming: IntGauge,
    /// Full re-listings after the watch history was compacted.
    pub watch_resyncs: IntCounter,
    /// Sessions opened (the first, and one after each expiry).
    pub sessions_opened: IntCounter,
}

impl WorkerMetrics {
    /// Counts a fire with its outcome.
    pub fn fire(&self, outcome: FireOutcome) {
        self.fires(outcome, 1);
    }

    /// Counts `n` fires with the same outcome.
    pub fn fires(&self, outcome: FireOutcome, n: u64) {
        self.fires.with_label_values(&[outcome.label()]).inc_by(n);
    }

    /// Counts a run that ended in `status` (a lower-case run status such as "succeeded").
    pub fn run_finished(&self, status: &str) {
        let status = if final_statuses().any(|s| s == status) {
            status
        } else {
            "other"
        };
        self.runs_finished.with_label_values(&[status]).inc();
    }

    /// Counts events dropped for `reason` ("spool_full", "spool_error", "rejected").
    pub fn dropped(&self, reason: &'static str, events: u64) {
        self.dropped_events
            .with_label_values(&[reason])
            .inc_by(events);
    }

    /// Counts `batches` whole batches dropped for `reason` ("spool_full", "spool_error",
    /// "rejected", "unreadable"), and their `events` (an unreadable batch's cannot be counted).
    pub fn dropped_batches(&self, reason: &'static str, batches: u64, events: u64) {
        self.dropped_batches
            .with_label_values(&[reason])
            .inc_by(batches);
        if events > 0 {
            self.dropped(reason, events);
        }
    }
}

static WORKER: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    let m = WorkerMetrics {
        fires: counter_vec(
            "distcron_worker_fires_total",
            "Due slots and triggers this worker handled, by outcome.",
            &["outcome"],
        ),
        trigger_lag: histogram(
            "distcron_worker_trigger_lag_seconds",
            "Start of a scheduled run minus its slot time.",
            LAG,
        ),
        runs_finished: counter_vec(
            "distcron_worker_runs_finished_total",
            "Runs this worker recorded as ended, by final status.",
            &["status"],
        ),
        run_duration: histogram(
            "distcron_worker_run_duration_seconds",
            "Wall time of runs from start to exit.",
            RUN,
        ),
        running: gauge(
            "distcron_worker_running_runs",
            "Runs in progress on this worker.",
        ),
        claim_duration: histogram(
            "distcron_worker_claim_duration_seconds",
            "Duration of one slot-claim transaction, retries not included.",
            LATENCY,
        ),
        scheduled_jobs: gauge(
            "distcron_worker_scheduled_jobs",
            "Enabled, valid jobs in this worker's schedule.",
        ),
        spool_bytes: gauge(
            "distcron_worker_spool_bytes",
            "Bytes of run events in the on-disk spool, not yet acknowledged by logsvc.",
        ),
        spool_batches: gauge(
            "distcron_worker_spool_batches",
            "Batches of run events in the on-disk spool (spool depth).",
        ),
        undelivered_runs: gauge(
            "distcron_worker_undelivered_runs",
            "Ended runs marked in etcd (undelivered/) until logsvc stores their records; at most 50,000.",
        ),
        delivered_events: counter(
            "distcron_worker_delivered_events_total",
            "Run events acknowledged by logsvc.",
        ),
        dropped_events: counter_vec(
            "distcron_worker_dropped_events_total",
            "Run events dropped, by reason: spool_full, spool_error, rejected (by logsvc).",
            &["reason"],
        ),
        dropped_batches: counter_vec(
            "distcron_worker_dropped_batches_total",
            "Whole batches of run events dropped, by reason: spool_full, spool_error, rejected (by logsvc), unreadable (a spooled batch that cannot be decoded).",
            &["reason"],
        ),
        delivery_failures: counter(
            "distcron_worker_log_delivery_failures_total",
            "Deliveries to logsvc that failed and will be retried.",
        ),
        log_batch_events: histogram(
            "distcron_worker_log_batch_events",
            "Run events per batch delivered to logsvc.",
            BATCH,
        ),
        clock_offset: register(
            Gauge::new(
                "distcron_worker_clock_offset_seconds",
                "This worker's estimated clock offset from its peers (positive: ahead).",
            )
            .expect("valid metric"),
        ),
        claiming: gauge(
            "distcron_worker_claiming",
            "1 while this worker claims slots, 0 while it does not (clock, session, shutdown).",
        ),
        watch_resyncs: counter(
            "distcron_worker_watch_resyncs_total",
            "Times the watch history was compacted and the state re-listed in full.",
        ),
        sessions_opened: counter(
            "distcron_worker_sessions_opened_total",
            "Sessions (leases) opened: the first, and one after each expiry.",
        ),
    };
    // Known label values start at zero, so rates work from the first scrape.
    for outcome in FireOutcome::ALL {
        m.fires.with_label_values(&[outcome.label()]);
    }
    for status in final_statuses() {
        m.runs_finished.with_label_values(&[status]);
    }
    for reason in ["spool_full", "spool_error", "rejected"] {
        m.dropped_events.with_label_values(&[reason]);
    }
    for reason in ["spool_full", "spool_error", "rejected", "unreadable"] {
        m.dropped_batches.with_label_values(&[reason]);
    }
    m
});

/// The worker's metrics.
pub fn worker() -> &'static WorkerMetrics {
    &WORKER
}

/// logsvc's metrics.
#[derive(Debug)]
pub struct LogsvcMetrics {
    /// Events per AppendRunEvents call.
    pub append_batch_events: Histogram,
    events: IntCounterVec,
    /// Output bytes stored.
    pub output_bytes: IntCounter,
    /// Output streams (TailRun) open.
    pub tail_streams: IntGauge,
}

impl LogsvcMetrics {
    /// Counts an appended event of `kind` ("started", "output", "finished") as accepted or not.
    pub fn event(&self, kind: &'static str, accepted: bool) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.events.with_label_values(&[kind, result]).inc();
    }
}

static LOGSVC: LazyLock<LogsvcMetrics> = LazyLock::new(|| {
    LogsvcMetrics {
    append_batch_events: histogram(
        "distcron_logsvc_append_batch_events",
        "Run events per AppendRunEvents call.",
        BATCH,
    ),
    events: counter_vec(
        "distcron_logsvc_events_total",
        "Run events received, by kind (started, output, finished; none for an event without one) and result (accepted, rejected).",
        &["kind", "result"],
    ),
    output_bytes: counter(
        "distcron_logsvc_output_bytes_total",
        "Bytes of run output received in accepted events.",
    ),
    tail_streams: gauge(
        "distcron_logsvc_tail_streams",
        "Live output streams (TailRun) open.",
    ),
}
});

/// logsvc's metrics.
pub fn logsvc() -> &'static LogsvcMetrics {
    &LOGSVC
}

/// Metrics of the storage backends: etcd and the embedded store, MongoDB and SQLite.
#[derive(Debug)]
pub struct StoreMetrics {
    duration: HistogramVec,
    errors: IntCounterVec,
    retries: IntCounterVec,
}

impl StoreMetrics {
    /// Records one call to `store` ("etcd", "embedded", "mongodb", "sqlite") doing `op`.
    pub fn observe(&self, store: &'static str, op: &'static str, took: Duration, ok: bool) {
        self.duration
            .with_label_values(&[store, op])
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.with_label_values(&[store, op]).inc();
        }
    }

    /// Counts a retry of `op` on `store`.
    pub fn retry(&self, store: &'static str, op: &'static str) {
        self.retries.with_label_values(&[store, op]).inc();
    }
}

static STORE: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    duration: histogram_vec(
        "distcron_store_request_duration_seconds",
        "Duration of storage calls (etcd, embedded, mongodb, sqlite), by store and operation.",
        &["store", "op"],
        LATENCY,
    ),
    errors: counter_vec(
        "distcron_store_errors_total",
        "Storage calls that failed, by store and operation.",
        &["store", "op"],
    ),
    retries: counter_vec(
        "distcron_store_retries_total",
        "Storage calls retried after a transient failure, by store and operation.",
        &["store", "op"],
    ),
});

/// The storage metrics.
pub fn store() -> &'static StoreMetrics {
    &STORE
}

/// Counts and durations of requests by three labels: gRPC (`service`, `method`, `code`) or HTTP
/// (`method`, `route`, `status`).
#[derive(Debug)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    fn new(
        (requests, requests_help): (&str, &str),
        (duration, duration_help): (&str, &str),
        labels: [&str; 3],
    ) -> Self {
        Self {
            requests: counter_vec(requests, requests_help, &labels),
            duration: histogram_vec(duration, duration_help, &labels, LATENCY),
        }
    }

    /// Records one handled request with its label values (in the order of the label names).
    pub fn observe(&self, labels: [&str; 3], took: Duration) {
        self.requests.with_label_values(&labels).inc();
        self.duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }
}

static GRPC: LazyLock<RequestMetrics> = LazyLock::new(|| {
    RequestMetrics::new(
        (
            "distcron_grpc_server_requests_total",
            "gRPC requests handled, by service, method and status code.",
        ),
        (
            "distcron_grpc_server_request_duration_seconds",
            "gRPC request duration to the end of the response (streams: their lifetime).",
        ),
        ["service", "method", "code"],
    )
});

/// The gRPC server metrics: labels `service`, `method`, `code`.
pub fn grpc() -> &'static RequestMetrics {
    &GRPC
}

static HTTP: LazyLock<RequestMetrics> = LazyLock::new(|| {
    RequestMetrics::new(
        (
            "distcron_http_requests_total",
            "HTTP requests handled by the gateway, by method, route template and status.",
        ),
        (
            "distcron_http_request_duration_seconds",
            "HTTP request duration to the response head, by method, route template and status.",
        ),
        ["method", "route", "status"],
    )
});

/// The gateway's HTTP metrics: labels `method`, `route` (the route template, never the raw path),
/// `status`.
pub fn http() -> &'static RequestMetrics {
    &HTTP
}
