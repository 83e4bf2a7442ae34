//! gRPC server plumbing shared by distcron services.
//!
//! [`grpc_router`] starts a tonic router that already serves `grpc.health.v1` and server
//! reflection in both versions (v1 for current tools, v1alpha for grpcurl 1.8.6), opens a span per
//! request joined to the caller's trace, counts and times requests for `/metrics`, and returns the
//! health reporter. [`serve_registered`]
//! serves it: marks the service healthy, registers the instance in the store on a lease, and on
//! shutdown deregisters first (so clients stop picking it) and then drains in-flight calls.
//! [`init_process`], [`bind_service`] and [`MetricsServer`] are the start-up every binary's
//! `main` shares (telemetry, the listener and instance from the shared service flags, the
//! shutdown signal, `/metrics`); [`cancel_on_signal`] turns SIGTERM/SIGINT into a cancellation.
//! [`invalid_argument`] makes the
//! `InvalidArgument` status that names the rejected field, [`rejected_field`] reads it back.

mod auth;
mod fd_limit;
mod field_status;
mod registered;
mod startup;
mod tls;

pub use auth::{check, TokenAuth, TokenAuthLayer};
pub use fd_limit::{raise_open_files_limit, raise_open_files_limit_logged};
pub use field_status::{invalid_argument, rejected_field};
pub use registered::{serve_registered, Instance, Served};
pub use startup::{
    bind_service, cancel_on_signal, connect_etcd, init_process, load_tokens, BoundService,
    MetricsServer,
};
pub use tls::{client_tls, https_tls, server_tls, warn_if_tokens_in_clear};

use std::sync::Arc;

use distcron_auth::TokenStore;
use distcron_metrics::GrpcMetricsLayer;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tower::util::Either;

/// The router of a distcron gRPC server: requests counted and timed, and checked for a token
/// when tokens are configured.
pub type GrpcRouter =
    Router<Stack<Either<TokenAuthLayer, Identity>, Stack<GrpcMetricsLayer, Identity>>>;

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
    /// Installing a signal handler failed.
    #[error("signal handler: {0}")]
    Signal(#[from] std::io::Error),
    /// Registering in the store failed.
    #[error("registration: {0}")]
    Registration(#[from] distcron_kv::KvError),
    /// The token configuration is unusable or refused.
    #[error(transparent)]
    Auth(#[from] distcron_auth::AuthError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `/metrics` address could not be bound.
    #[error("binding the metrics address {addr}")]
    MetricsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS settings do not load.
    #[error("TLS: {0}")]
    Tls(#[from] distcron_tls::TlsError),
    /// Serving failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A router serving health and reflection; add the service's own servers to it. With `tokens`
/// (non-empty), every other call needs a token of the method's role.
pub fn grpc_router(
    tokens: Option<Arc<TokenStore>>,
) -> Result<(GrpcRouter, HealthReporter), ServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(distcron_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(distcron_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let auth = tokens.filter(|t| !t.is_empty()).map(TokenAuthLayer::new);
    let router = Server::builder()
        .trace_fn(distcron_telemetry::grpc_server_span)
        .layer(GrpcMetricsLayer)
        .layer(tower::util::option_layer(auth))
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((router, reporter))
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() -> Result<&'static str, ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
    Ok(name)
}
