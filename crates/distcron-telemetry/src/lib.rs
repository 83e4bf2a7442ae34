//! Logging and tracing for distcron binaries.
//!
//! [`init`] installs a `tracing` subscriber (env-filter syntax, text or JSON, to stderr) with an
//! OpenTelemetry layer, so every span has a W3C trace id. Spans are exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (standard OTLP variables apply); otherwise nothing is sent.
//!
//! Trace context crosses gRPC hops in the `traceparent` metadata: clients add
//! [`TracePropagation`] as an interceptor, servers pass [`grpc_server_span`] to tonic's
//! `Server::trace_fn`. HTTP servers join the caller's trace with [`join_caller_trace`]. A
//! context kept in data (a job's last save, a run's span in its events) travels as a W3C
//! `traceparent` string: [`current_traceparent`], [`set_parent_from`], [`link_to`].
//!
//! The log filter applies to the log output only: spans of level INFO and above are always
//! recorded for tracing, so a run has a trace id even when logs are quiet.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use distcron_config::TelemetryArgs;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("bad log filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("tracing already initialised: {0}")]
    AlreadySet(String),
}

/// Keeps the tracer provider alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
    }
}

/// The tracer provider for `service`: spans always get ids; they are exported over OTLP only
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the global subscriber and propagator for `service`.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_new(&args.log).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let provider = tracer_provider(service)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(LevelFilter::INFO);
    // Logs go to stderr, so stdout stays free for what a command prints.
    let fmt = match args.log_format.as_str() {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadySet(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The W3C trace id of the current span, or empty if it has none.
pub fn current_trace_id() -> String {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The W3C `traceparent` of the current span, or empty if it has none.
pub fn current_traceparent() -> String {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// The span context named by a W3C `traceparent`, if it parses.
fn parse_traceparent(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The W3C `traceparent` of a span given by its ids (hex), or empty if they are not valid.
pub fn traceparent_of(trace_id: &str, span_id: &str) -> String {
    let candidate = format!("00-{trace_id}-{span_id}-01");
    if parse_traceparent(&candidate).is_some() {
        candidate
    } else {
        String::new()
    }
}

/// Makes `span` a child of the span named by `traceparent`; returns whether it parsed.
pub fn set_parent_from(span: &tracing::Span, traceparent: &str) -> bool {
    match parse_traceparent(traceparent) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

/// Links `span` to the span named by `traceparent` (e.g. a run to the save of its job).
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    if let Some(cx) = parse_traceparent(traceparent) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Most spans [`join_or_link`] links one span to.
pub const MAX_LINKS: usize = 32;

/// Places `span`, the work done on behalf of several others (a batch), in their traces: a child
/// of the one span when `traceparents` name one (after removing duplicates and empty ones), else
/// linked to each of them, up to [`MAX_LINKS`].
pub fn join_or_link(span: &tracing::Span, mut traceparents: Vec<String>) {
    traceparents.retain(|t| !t.is_empty());
    traceparents.sort_unstable();
    traceparents.dedup();
    match traceparents.as_slice() {
        [one] => {
            set_parent_from(span, one);
        }
        many => {
            for t in many.iter().take(MAX_LINKS) {
                link_to(span, t);
            }
        }
    }
}

/// The trace id and span id (hex) of `span`, or empty strings if it has none.
pub fn ids_of(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let s = cx.span();
    let sc = s.span_context();
    if sc.is_valid() {
        (sc.trace_id().to_string(), sc.span_id().to_string())
    } else {
        (String::new(), String::new())
    }
}

/// Makes `span` a child of the trace context in incoming HTTP/gRPC `headers`, if they carry one.
pub fn join_caller_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The trace context carried by incoming HTTP/gRPC headers.
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// A tonic client interceptor that adds the current trace context to every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracePropagation;

impl tonic::service::Interceptor for TracePropagation {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(request.metadata_mut());
        Ok(request)
    }
}

/// The span of one incoming gRPC request, child of the caller's trace when there is one.
/// Pass it to tonic's `Server::builder().trace_fn(...)`.
pub fn grpc_server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        otel.kind = "server",
        rpc.method = %request.uri().path(),
    );
    join_caller_trace(&span, request.headers());
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `f` with an OpenTelemetry layer (no exporter) as the subscriber.
    fn traced(f: impl FnOnce()) {
        let provider = tracer_provider("test").expect("provider");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn context_crosses_a_metadata_hop() {
        traced(|| {
            let client = tracing::info_span!("client");
            let _g = client.enter();
            let sent = current_trace_id();
            assert_eq!(sent.len(), 32, "a trace id is assigned without an exporter");
            let mut md = tonic::metadata::MetadataMap::new();
            inject_current(&mut md);
            let headers = md.into_headers();
            assert!(headers.contains_key("traceparent"));
            let request = http::Request::builder()
                .uri("/distcron.jobs.v1.JobService/GetJob")
                .body(());
            let mut request = request.expect("request");
            *request.headers_mut() = headers;
            let server = grpc_server_span(&request);
            let _s = server.enter();
            assert_eq!(
                current_trace_id(),
                sent,
                "the server span joins the client's trace"
            );
        });
    }

    #[test]
    fn traceparents_carry_parents_and_links() {
        traced(|| {
            let save = tracing::info_span!("save");
            let saved = save.in_scope(current_traceparent);
            let (trace, span) = ids_of(&save);
            assert_eq!(saved, format!("00-{trace}-{span}-01"));
            assert_eq!(traceparent_of(&trace, &span), saved);
            assert_eq!(traceparent_of("zz", &span), "");

            let child = tracing::info_span!("deliver");
            assert!(set_parent_from(&child, &saved));
            assert_eq!(ids_of(&child).0, trace, "the child joins the trace");
            assert!(!set_parent_from(&tracing::info_span!("x"), "garbage"));

            let run = tracing::info_span!("run");
            link_to(&run, &saved);
            assert_ne!(
                ids_of(&run).0,
                trace,
                "a link does not make it the same trace"
            );
        });
    }
}
