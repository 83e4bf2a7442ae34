//! The logsvc binary: wires configuration, telemetry, MongoDB, etcd, the gRPC server and
//! `/metrics`.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_logsvc::{serve, LogsvcConfig, Storage};
use distcron_runstore::{MongoConfig, MongoRunStore, OutputCap};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: LogsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_telemetry::init("logsvc", &config.telemetry)?;
    distcron_server::raise_open_files_limit_logged();
    let mongo = MongoConfig {
        uri: config.mongo_uri.clone(),
        database: config.mongo_database.clone(),
        collection: config.mongo_collection.clone(),
        timeout: config.mongo_timeout,
    };
    let runs = Arc::new(
        MongoRunStore::connect(&mongo)
            .await
            .context("MongoDB connection string")?,
    );
    let registry = Arc::new(
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
    let storage = Storage {
        runs,
        retention_days: config.retention_days,
        cap: OutputCap {
            bytes: config.output_cap_bytes,
        },
    };
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
    serve(
        storage,
        registry,
        Keys::new(&config.etcd.key_prefix),
        instance,
        listener,
        shutdown,
    )
    .await?;
    let _ = metrics.await;
    Ok(())
}
