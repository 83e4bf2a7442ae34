//! distcron's log service: run history. Workers append run events (idempotent by run id and
//! chunk sequence number); the gateway and console list runs, read one, tail a live run's output
//! and ask for per-job statistics. Storage is a [`RunStore`] (MongoDB, or SQLite in the embedded
//! mode).

mod config;
mod convert;
mod reporter;
mod service;

use std::sync::Arc;
use std::time::Duration;

use distcron_core::output::OutputCap;
use distcron_core::Keys;
use distcron_kv::{retry_until, KvStore};
use distcron_proto::logs::v1::log_service_server::LogServiceServer;
use distcron_runstore::RunStore;
use distcron_server::{serve_registered, Instance, Served, ServerError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::{LogsvcConfig, LogsvcDefaults};
pub use convert::MAX_CHUNK_BYTES;
pub use service::{LogService, MAX_EVENTS_PER_BATCH};

/// The name under which instances register (`services/logsvc/<instance>`).
pub const SERVICE_NAME: &str = "logsvc";

/// How the log service stores runs.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The run store.
    pub runs: Arc<dyn RunStore>,
    /// Days runs are kept (0 = forever).
    pub retention_days: u32,
    /// Output kept per run.
    pub cap: OutputCap,
}

/// Prepares the run store's indexes, retrying while the database is unreachable, until it
/// succeeds or `stop` is cancelled.
async fn init_until_ready(runs: Arc<dyn RunStore>, retention_days: u32, stop: CancellationToken) {
    let init = || runs.init(retention_days);
    let ready = retry_until(&stop, Duration::from_secs(5), "run store not ready", init).await;
    if ready.is_some() {
        tracing::info!(retention_days, "run store ready");
    }
}

/// Serves the log service on `listener` until `shutdown` is cancelled, registered in `registry`.
/// Index creation runs in the background, so the service answers (with `UNAVAILABLE` while the
/// database is down) from the start.
pub async fn serve(
    storage: Storage,
    registry: Arc<dyn KvStore>,
    keys: Keys,
    instance: Instance,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    tokio::spawn(init_until_ready(
        storage.runs.clone(),
        storage.retention_days,
        shutdown.clone(),
    ));
    let (router, health) = distcron_server::grpc_router(Some(instance.tokens.clone()))?;
    let service = LogService::new(
        storage.runs,
        storage.cap,
        Duration::from_millis(250),
        registry.clone(),
        keys.clone(),
    );
    let router = router.add_service(LogServiceServer::new(service));
    let served = Served {
        store: registry,
        keys,
        registry_name: SERVICE_NAME,
        grpc_service: <LogServiceServer<LogService> as NamedService>::NAME,
        instance,
    };
    serve_registered(router, health, served, listener, shutdown).await
}
