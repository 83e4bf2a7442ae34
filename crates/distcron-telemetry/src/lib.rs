//! Logging and tracing for distcron binaries.
//!
//! [`init`] installs a `tracing` subscriber (env-filter syntax, text or JSON, to stderr) with an
//! OpenTelemetry layer, so every span has a W3C trace id. Spans are exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (standard OTLP variables apply); otherwise nothing is sent.
//!
//! Trace context crosses gRPC hops in the `traceparent` metadata: clients add
//! [`TracePropagation`] as an interceptor, servers pass [`grpc_server_span`] to tonic's
//! `Server::trace_fn`.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
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
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
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
        .with(filter)
        .with(fmt)
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
    let parent = extract(request.headers());
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn context_crosses_a_metadata_hop() {
        let provider = tracer_provider("test").expect("provider");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
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
}
