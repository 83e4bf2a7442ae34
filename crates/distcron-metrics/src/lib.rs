//! Every Prometheus metric of distcron, in one process-wide registry.
//!
//! Each component records into its group of metrics — [`worker()`], [`logsvc()`], [`store()`],
//! [`grpc()`], [`http()`] — which registers itself on first use, and [`render`] writes them all
//! in the Prometheus text format, with the process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...) and `distcron_build_info`. The gRPC services serve that
//! on a separate address with [`serve`]; the gateway adds [`metrics_handler`] to its own routes.
//! In the single-process mode every component shares the one registry.
//!
//! [`GrpcMetricsLayer`] counts and times every gRPC request by service, method and status code.
//!
//! The names follow Prometheus conventions: base units (seconds, bytes), `_total` for counters.
//! Label values are closed sets (no job names or run ids), so series stay few. The README lists
//! every metric; a test here checks that it does.

mod catalog;
mod grpc_layer;
mod write_health;

use std::sync::{LazyLock, Mutex};

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

pub use catalog::{
    grpc, http, logsvc, store, worker, FireOutcome, LogsvcMetrics, RequestMetrics, StoreMetrics,
    WorkerMetrics,
};
pub use grpc_layer::{GrpcMetricsLayer, GrpcMetricsService, RecordedBody};
pub use write_health::{unwritable, StoreFailure};

/// The registry every metric of the process is in.
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(process)) {
        tracing::warn!(error = %e, "process metrics unavailable");
    }
    registry
});

/// The names of the metric families registered so far, for [`metric_names`].
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers `collector` (once per process; every group is a static) and remembers its names.
pub(crate) fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    if let Ok(mut names) = NAMES.lock() {
        names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
    }
    if let Err(e) = REGISTRY.register(Box::new(collector.clone())) {
        tracing::warn!(error = %e, "metric not registered");
    }
    collector
}

/// Runs `call` as one operation `op` on `store` ("etcd", "embedded", "mongodb", "sqlite"): timed
/// and counted in [`store()`] (an `Err` counts as an error), and, when it is part of a trace, in a
/// client span of its own. Background calls outside any trace get no span. A write's outcome
/// also sets the store's write health ([`unwritable`]).
pub async fn store_call<T, E: write_health::StoreFailure + std::fmt::Display>(
    store: &'static str,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let span = if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "store",
            otel.name = %format!("{store} {op}"),
            otel.kind = "client",
            db.system = store,
            db.operation = op,
        )
    };
    let start = std::time::Instant::now();
    let result = call.instrument(span).await;
    catalog::store().observe(store, op, start.elapsed(), result.is_ok());
    if write_health::is_data_write(op) {
        match &result {
            Ok(_) => write_health::record(store, None),
            Err(e) if e.is_store_failure() => write_health::record(store, Some(e.to_string())),
            Err(_) => {}
        }
    }
    result
}

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    catalog::build_info();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sum of the samples of metric `name` in `exposition` (Prometheus text format) whose labels
/// include every `(label, value)` of `labels`; `None` when no sample matches. For tests and
/// benchmarks that read `/metrics` (or [`render`]).
pub fn sample_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let matches = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .any(|(lk, lv)| lk == *k && lv.trim_matches('"') == *v)
        });
        if let (true, Ok(v)) = (matches, value.parse::<f64>()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The names of every distcron metric family (every group registered), for documentation checks.
pub fn metric_names() -> Vec<String> {
    catalog::register_all();
    let mut names = NAMES.lock().map(|n| n.clone()).unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// `GET /metrics`: the registry in the Prometheus text format.
pub async fn metrics_handler() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
        tokio::task::spawn_blocking(render)
            .await
            .unwrap_or_default(),
    )
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = axum::Router::new().route("/metrics", axum::routing::get(metrics_handler));
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds `addr` and serves `/metrics` there in the background until `shutdown`.
pub async fn spawn_server(
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, shutdown).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_registers_and_renders() {
        let names = metric_names();
        for expected in [
            "distcron_worker_fires_total",
            "distcron_store_request_duration_seconds",
            "distcron_grpc_server_requests_total",
            "distcron_http_requests_total",
            "distcron_logsvc_append_batch_events",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        worker().fire(FireOutcome::LostRace);
        let text = render();
        assert!(
            text.contains("distcron_worker_fires_total{outcome=\"lost_race\"} 1"),
            "{text}"
        );
        assert!(text.contains("distcron_worker_fires_total{outcome=\"missed\"} 0"));
        assert!(text.contains("distcron_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn runs_finished_counts_final_statuses_by_label_and_others_as_other() {
        let count = |status: &str| {
            sample_sum(
                &render(),
                "distcron_worker_runs_finished_total",
                &[("status", status)],
            )
        };
        for status in [
            "succeeded",
            "failed",
            "killed",
            "timed_out",
            "skipped",
            "lost",
        ] {
            let before = count(status).unwrap_or_else(|| panic!("{status} starts at zero"));
            worker().run_finished(status);
            assert_eq!(count(status), Some(before + 1.0), "{status}");
        }
        let other = count("other").unwrap_or(0.0);
        worker().run_finished("running");
        assert_eq!(count("other"), Some(other + 1.0));
        assert_eq!(count("running"), None);
    }

    #[test]
    fn samples_are_summed_by_label_subset() {
        let text = "# HELP x help\n# TYPE x counter\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\nx{a=\"2\",b=\"2\"} 5\nxy 9\n";
        assert_eq!(sample_sum(text, "x", &[("a", "1")]), Some(7.0));
        assert_eq!(sample_sum(text, "x", &[("b", "2")]), Some(8.0));
        assert_eq!(sample_sum(text, "x", &[]), Some(12.0));
        assert_eq!(sample_sum(text, "x", &[("a", "9")]), None);
        assert_eq!(sample_sum(text, "xy", &[]), Some(9.0));
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let names = metric_names();
        assert!(!names.is_empty(), "no metric is registered");
        for name in names {
            assert!(name.starts_with("distcron_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn the_readme_documents_every_metric() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap_or_default();
        let names = metric_names();
        assert!(!names.is_empty(), "no metric is registered");
        let missing: Vec<String> = names
            .into_iter()
            .filter(|n| !readme.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md does not document {missing:?}"
        );
    }
}
