//! The worker binary: wires configuration, telemetry, etcd, logsvc discovery and `/metrics` (or, started
//! with `__group-leader`, leads one run's process group; see `distcron_worker::leader`).

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_discovery::Endpoints;
use distcron_server::MetricsServer;
use distcron_worker::WorkerConfig;

fn main() -> anyhow::Result<()> {
    distcron_worker::leader::block_on_unless_leader(serve()).context("starting the runtime")?
}

async fn serve() -> anyhow::Result<()> {
    let config: WorkerConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_server::init_process("worker", &config.cluster.telemetry)?;
    let store = Arc::new(
        distcron_server::connect_etcd(&config.cluster.etcd)
            .await
            .context("connecting to etcd")?,
    );
    let keys = Keys::new(&config.cluster.etcd.key_prefix);
    let logsvc = if config.logsvc_endpoints.is_empty() {
        Endpoints::Discovered {
            store: store.clone(),
            prefix: keys.services("logsvc"),
        }
    } else {
        Endpoints::Static(config.logsvc_endpoints.clone())
    };
    let shutdown = distcron_server::cancel_on_signal();
    let metrics = MetricsServer::start(&config.metrics, &shutdown).await?;
    let tls = distcron_server::client_tls(&config.cluster.tls).context("TLS settings")?;
    distcron_worker::run(config, store, keys, logsvc, tls, shutdown).await?;
    metrics.stopped().await;
    Ok(())
}
