//! The jobsvc binary: wires configuration, telemetry, etcd, the gRPC server, `/metrics` and the
//! compaction of etcd's history.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_jobsvc::{serve, JobsvcConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: JobsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_server::init_process("jobsvc", &config.server.cluster.telemetry)?;
    let store = Arc::new(
        distcron_server::connect_etcd(&config.server.cluster.etcd)
            .await
            .context("connecting to etcd")?,
    );
    let bound = distcron_server::bind_service(&config.server).await?;
    let keys = Keys::new(&config.server.cluster.etcd.key_prefix);
    let compactor = (!config.compact_interval.is_zero()).then(|| {
        tokio::spawn(distcron_kv::run_compactor(
            store.clone(),
            keys.compaction(),
            config.compact_interval,
            bound.shutdown.clone(),
        ))
    });
    serve(store, keys, bound.instance, bound.listener, bound.shutdown).await?;
    bound.metrics.stopped().await;
    if let Some(compactor) = compactor {
        let _ = compactor.await;
    }
    Ok(())
}
