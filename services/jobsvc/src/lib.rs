//! distcron's job service: the only writer of job definitions, and the control plane for kills,
//! manual triggers, pausing and schedule previews. State lives in a [`KvStore`] (etcd, or the
//! embedded store) under the key layout of [`distcron_core::keys`].

mod config;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::ServiceRegistration;
use distcron_core::Keys;
use distcron_discovery::Registration;
use distcron_kv::KvStore;
use distcron_proto::jobs::v1::job_service_server::JobServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::JobsvcConfig;
pub use service::JobService;

/// The name under which instances register (`services/jobsvc/<instance>`).
pub const SERVICE_NAME: &str = "jobsvc";

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum JobsvcError {
    /// Registering in the store failed.
    #[error("registration: {0}")]
    Registration(#[from] distcron_kv::KvError),
    /// Server setup failed.
    #[error(transparent)]
    Server(#[from] distcron_server::ServerError),
    /// Serving failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where and as whom this instance serves.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique instance id.
    pub id: String,
    /// The address clients should dial, `http://host:port`.
    pub advertise: String,
    /// How long the registration outlives a crash.
    pub registration_ttl: Duration,
}

/// Serves the job service on `listener` until `shutdown` is cancelled: marks itself healthy,
/// registers in the store, and on shutdown deregisters first (so clients stop picking it), then
/// drains in-flight calls.
pub async fn serve(
    store: Arc<dyn KvStore>,
    keys: Keys,
    instance: Instance,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), JobsvcError> {
    let (router, health) = distcron_server::grpc_router()?;
    let service = JobService::new(store.clone(), keys.clone());
    health.set_serving::<JobServiceServer<JobService>>().await;
    let registration = ServiceRegistration {
        instance_id: instance.id.clone(),
        addr: instance.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: distcron_core::now_ms(),
        host: distcron_discovery::hostname(),
    };
    let registration = Registration::start(
        store,
        keys.service(SERVICE_NAME, &instance.id),
        serde_json::to_vec(&registration).unwrap_or_default(),
        instance.registration_ttl,
    )
    .await?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, advertise = %instance.advertise, instance = %instance.id, "jobsvc serving");
    let (deregistered_tx, deregistered_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        health
            .set_not_serving::<JobServiceServer<JobService>>()
            .await;
        registration.deregister().await;
        let _ = deregistered_tx.send(());
    });
    router
        .add_service(JobServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = deregistered_rx.await;
            },
        )
        .await?;
    tracing::info!(instance = %instance.id, "jobsvc stopped");
    Ok(())
}
