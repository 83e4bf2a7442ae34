//! distcron's job service: the only writer of job definitions, and the control plane for kills,
//! manual triggers, pausing and schedule previews. State lives in a [`KvStore`] (etcd, or the
//! embedded store) under the key layout of [`distcron_core::keys`].

mod config;
mod done;
mod service;

use std::sync::Arc;

use distcron_core::Keys;
use distcron_kv::KvStore;
use distcron_proto::jobs::v1::job_service_server::JobServiceServer;
use distcron_server::{serve_registered, Instance, Served, ServerError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::{JobsvcConfig, JobsvcDefaults};
pub use service::JobService;

/// The name under which instances register (`services/jobsvc/<instance>`).
pub const SERVICE_NAME: &str = "jobsvc";

/// Serves the job service on `listener` until `shutdown` is cancelled, registered in `store`.
pub async fn serve(
    store: Arc<dyn KvStore>,
    keys: Keys,
    instance: Instance,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let (router, health) = distcron_server::grpc_router(Some(instance.tokens.clone()))?;
    let router = router.add_service(JobServiceServer::new(JobService::new(
        store.clone(),
        keys.clone(),
    )));
    let served = Served {
        store,
        keys,
        registry_name: SERVICE_NAME,
        grpc_service: <JobServiceServer<JobService> as NamedService>::NAME,
        instance,
    };
    serve_registered(router, health, served, listener, shutdown).await
}
