//! Serving a registered instance: health, registration on a lease, and the shutdown order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::ServiceRegistration;
use distcron_core::Keys;
use distcron_discovery::Registration;
use distcron_kv::KvStore;
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
