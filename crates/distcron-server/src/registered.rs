//! Serving a registered instance, and the start-up pieces every service binary shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distcron_config::EtcdArgs;
use distcron_core::records::ServiceRegistration;
use distcron_core::Keys;
use distcron_discovery::Registration;
use distcron_kv::{EtcdConfig, EtcdKv, KvError, KvStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::ServerError;

/// Who this instance is and where clients reach it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique instance id.
    pub id: String,
    /// The address clients dial, `http://host:port`.
    pub advertise: String,
    /// How long the registration outlives a crash.
    pub registration_ttl: Duration,
    /// The tokens calls must carry (empty: none needed).
    pub tokens: std::sync::Arc<distcron_auth::TokenStore>,
    /// TLS of the server (`None`: plaintext).
    pub tls: Option<distcron_tls::ServerTls>,
}

impl Instance {
    /// An instance bound to `local`, with the configured id and advertised address or defaults
    /// (`<host>-<pid>`; the bound address, or the host name when bound to all interfaces, as
    /// `https://` under TLS).
    pub fn new(
        id: Option<String>,
        advertise: Option<String>,
        local: SocketAddr,
        registration_ttl: Duration,
        tokens: distcron_auth::TokenStore,
        tls: Option<distcron_tls::ServerTls>,
    ) -> Self {
        Self {
            id: id.unwrap_or_else(distcron_discovery::default_instance_id),
            advertise: advertise
                .unwrap_or_else(|| distcron_discovery::advertise_url(local, tls.is_some())),
            registration_ttl,
            tokens: std::sync::Arc::new(tokens),
            tls,
        }
    }
}

/// The tokens `auth` configures, for a process listening on `listens` (see
/// [`distcron_auth::load_tokens`]).
pub fn load_tokens(
    auth: &distcron_config::AuthArgs,
    listens: &[SocketAddr],
) -> Result<distcron_auth::TokenStore, distcron_auth::AuthError> {
    distcron_auth::load_tokens(
        auth.tokens.as_deref(),
        auth.tokens_file.as_deref(),
        listens,
        auth.insecure_no_auth,
    )
}

/// Binds a gRPC service's listener and describes the instance: its id and advertised address
/// (configured, or defaults from the bound address), the tokens it accepts and its TLS.
pub async fn bind_instance(
    listen: SocketAddr,
    id: Option<String>,
    advertise: Option<String>,
    registration_ttl: Duration,
    auth: &distcron_config::AuthArgs,
    tls: &distcron_config::TlsArgs,
) -> Result<(TcpListener, Instance), ServerError> {
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
    let instance = Instance::new(id, advertise, local, registration_ttl, tokens, tls);
    Ok((listener, instance))
}

/// What [`serve_registered`] serves and where it registers.
#[derive(Debug, Clone)]
pub struct Served {
    /// The registry.
    pub store: Arc<dyn KvStore>,
    /// Key layout of the registry.
    pub keys: Keys,
    /// Registry name (`services/<registry_name>/<instance>`), e.g. `jobsvc`.
    pub registry_name: &'static str,
    /// Full gRPC name of the main service, for health, e.g. `distcron.jobs.v1.JobService`.
    pub grpc_service: &'static str,
    /// This instance.
    pub instance: Instance,
}

/// Serves `router` on `listener` until `shutdown` is cancelled (see the crate docs for the order
/// of start-up and shutdown).
pub async fn serve_registered(
    router: crate::GrpcRouter,
    health: HealthReporter,
    served: Served,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    health
        .set_service_status(served.grpc_service, ServingStatus::Serving)
        .await;
    let registration = ServiceRegistration {
        instance_id: served.instance.id.clone(),
        addr: served.instance.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: distcron_core::now_ms(),
        host: distcron_discovery::hostname(),
    };
    let registration = Registration::start(
        served.store.clone(),
        served
            .keys
            .service(served.registry_name, &served.instance.id),
        serde_json::to_vec(&registration).unwrap_or_default(),
        served.instance.registration_ttl,
    )
    .await?;
    let local = listener.local_addr().ok();
    tracing::info!(
        service = served.registry_name,
        addr = ?local,
        advertise = %served.instance.advertise,
        instance = %served.instance.id,
        tls = served.instance.tls.is_some(),
        mutual_tls = served.instance.tls.as_ref().is_some_and(distcron_tls::ServerTls::is_mutual),
        "serving"
    );
    let (deregistered_tx, deregistered_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_service = served.grpc_service;
    tokio::spawn(async move {
        follow_write_health(&health, grpc_service, &shutdown).await;
        health
            .set_service_status(grpc_service, ServingStatus::NotServing)
            .await;
        registration.deregister().await;
        let _ = deregistered_tx.send(());
    });
    let deregistered = async {
        let _ = deregistered_rx.await;
    };
    match served.instance.tls.clone() {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    distcron_tls::tls_incoming(listener, tls),
                    deregistered,
                )
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    deregistered,
                )
                .await?
        }
    }
    tracing::info!(service = served.registry_name, instance = %served.instance.id, "stopped");
    Ok(())
}

/// How often the stores' write health is reflected in the gRPC health status.
const WRITE_HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Until `shutdown`, reports `grpc_service` NOT_SERVING in gRPC health while a store of this
/// process cannot write (its last write failed, see `distcron_metrics::unwritable`), and SERVING
/// otherwise: the gateway's `/readyz` asks this.
async fn follow_write_health(
    health: &HealthReporter,
    grpc_service: &'static str,
    shutdown: &CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(WRITE_HEALTH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let unwritable = distcron_metrics::unwritable();
        if unwritable.is_empty() != serving {
            serving = unwritable.is_empty();
            let status = if serving {
                ServingStatus::Serving
            } else {
                tracing::error!(service = grpc_service, stores = ?unwritable, "not serving: a store cannot write");
                ServingStatus::NotServing
            };
            health.set_service_status(grpc_service, status).await;
        }
    }
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
