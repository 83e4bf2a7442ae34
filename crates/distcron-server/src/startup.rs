//! The start-up every distcron binary shares: telemetry and the open-files limit, etcd, the
//! accepted tokens, the shutdown signal, the `/metrics` server, and a registered service's
//! listener and instance from the shared service flags.

use std::net::SocketAddr;

use distcron_config::{
    AuthArgs, EtcdArgs, MetricsArgs, MetricsDefaults, ServerArgs, ServiceArgs, ServiceDefaults,
    TelemetryArgs, TlsArgs,
};
use distcron_kv::{EtcdConfig, EtcdKv, KvError};
use distcron_telemetry::{Telemetry, TelemetryError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Instance, ServerError};

/// Starts the process of the binary `service`: its logs and traces as `telemetry` configures
/// them, and the open-files limit raised. Keep the returned guard until the process ends: its
/// drop flushes the traces.
pub fn init_process(
    service: &'static str,
    telemetry: &TelemetryArgs,
) -> Result<Telemetry, TelemetryError> {
    let guard = distcron_telemetry::init(service, telemetry)?;
    crate::raise_open_files_limit_logged();
    Ok(guard)
}

/// Connects to etcd as configured by the shared etcd flags.
pub async fn connect_etcd(args: &EtcdArgs) -> Result<EtcdKv, KvError> {
    let mut config = EtcdConfig::new(args.etcd_endpoints.clone());
    config.request_timeout = args.etcd_timeout;
    config.credentials = args.etcd_user.clone().zip(args.etcd_password.clone());
    config.tls = args.etcd_ca.clone().map(|ca| distcron_kv::EtcdTls {
        ca,
        identity: args.etcd_cert.clone().zip(args.etcd_key.clone()),
    });
    EtcdKv::connect(config).await
}

/// The tokens `auth` configures, for a process listening on `listens` (see
/// [`distcron_auth::load_tokens`]).
pub fn load_tokens(
    auth: &AuthArgs,
    listens: &[SocketAddr],
) -> Result<distcron_auth::TokenStore, distcron_auth::AuthError> {
    distcron_auth::load_tokens(
        auth.tokens.as_deref(),
        auth.tokens_file.as_deref(),
        listens,
        auth.insecure_no_auth,
    )
}

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::shutdown_signal().await {
            tracing::error!(error = %e, "cannot wait for signals; stopping");
        }
        cancel.cancel();
    });
    token
}

/// A process's running Prometheus `/metrics` server.
#[derive(Debug)]
pub struct MetricsServer(JoinHandle<()>);

impl MetricsServer {
    /// Serves `/metrics` on `--metrics-listen` until `shutdown` is cancelled.
    pub async fn start<D: MetricsDefaults>(
        args: &MetricsArgs<D>,
        shutdown: &CancellationToken,
    ) -> Result<Self, ServerError> {
        let addr = args.metrics_listen;
        distcron_metrics::spawn_server(addr, shutdown.clone())
            .await
            .map(Self)
            .map_err(|source| ServerError::MetricsBind { addr, source })
    }

    /// Waits until the server has stopped (after the shutdown).
    pub async fn stopped(self) {
        let _ = self.0.await;
    }
}

/// A registered gRPC service ready to serve: what [`bind_service`] sets up.
#[derive(Debug)]
pub struct BoundService {
    /// The bound gRPC listener.
    pub listener: TcpListener,
    /// Who the service registers as, with its tokens and TLS.
    pub instance: Instance,
    /// Cancelled by SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// The service's `/metrics` server, stopping with `shutdown`.
    pub metrics: MetricsServer,
}

/// Sets up a registered gRPC service from the shared flags: binds `--listen`, describes the
/// instance (`--instance-id`, `--advertise` and `--registration-ttl`, or defaults from the bound
/// address; the tokens its auth flags accept; the server TLS of its TLS flags), turns SIGTERM and SIGINT into
/// its shutdown from then on, and starts its `/metrics` server.
pub async fn bind_service<D: ServiceDefaults>(
    args: &ServerArgs<D>,
) -> Result<BoundService, ServerError> {
    let (listener, instance) = bind_instance(&args.service, &args.auth, &args.cluster.tls).await?;
    let shutdown = cancel_on_signal();
    let metrics = MetricsServer::start(&args.service.metrics, &shutdown).await?;
    Ok(BoundService {
        listener,
        instance,
        shutdown,
        metrics,
    })
}

/// Binds a gRPC service's listener and describes the instance (see [`bind_service`]).
async fn bind_instance<D: ServiceDefaults>(
    args: &ServiceArgs<D>,
    auth: &AuthArgs,
    tls: &TlsArgs,
) -> Result<(TcpListener, Instance), ServerError> {
    let listen = args.listen;
    let tokens = load_tokens(auth, &[listen])?;
    let tls = crate::server_tls(tls)?;
    crate::warn_if_tokens_in_clear("gRPC", listen, !tokens.is_empty(), tls.is_some());
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let instance = Instance::new(
        args.instance_id.clone(),
        args.advertise.clone(),
        local,
        args.registration_ttl,
        tokens,
        tls,
    );
    Ok((listener, instance))
}
