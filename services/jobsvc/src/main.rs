//! The jobsvc binary: wires configuration, telemetry, etcd, the gRPC server, `/metrics` and the
//! compaction of etcd's history.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_jobsvc::{serve, JobsvcConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: JobsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_telemetry::init("jobsvc", &config.telemetry)?;
    distcron_server::raise_open_files_limit_logged();
    let store = Arc::new(
        distcron_server::connect_etcd(&config.etcd)
            .await
            .context("connecting to etcd")?,
    );
    let (listener, instance) = distcron_server::bind_instance(
        config.service.listen,
        config.service.instance_id.clone(),
        config.service.advertise.clone(),
        config.service.registration_ttl,
        &config.auth,
        &config.tls,
    )
    .await?;
    let shutdown = distcron_server::cancel_on_signal();
    let metrics =
        distcron_metrics::spawn_server(config.service.metrics.metrics_listen, shutdown.clone())
            .await
            .with_context(|| {
                format!(
                    "binding the metrics address {}",
                    config.service.metrics.metrics_listen
                )
            })?;
    let keys = Keys::new(&config.etcd.key_prefix);
    let compactor = (!config.compact_interval.is_zero()).then(|| {
        tokio::spawn(distcron_kv::run_compactor(
            store.clone(),
            keys.compaction(),
            config.compact_interval,
            shutdown.clone(),
        ))
    });
    serve(store, keys, instance, listener, shutdown).await?;
    let _ = metrics.await;
    if let Some(compactor) = compactor {
        let _ = compactor.await;
    }
    Ok(())
}
