//! The logsvc binary: wires configuration, telemetry, MongoDB, etcd, the gRPC server and
//! `/metrics`.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_logsvc::{serve, LogsvcConfig, Storage};
use distcron_runstore::{MongoConfig, MongoRunStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: LogsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_server::init_process("logsvc", &config.server.cluster.telemetry)?;
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
        distcron_server::connect_etcd(&config.server.cluster.etcd)
            .await
            .context("connecting to etcd")?,
    );
    let storage = Storage {
        runs,
        retention_days: config.retention_days,
        cap: config.output_cap_bytes,
    };
    let bound = distcron_server::bind_service(&config.server).await?;
    serve(
        storage,
        registry,
        Keys::new(&config.server.cluster.etcd.key_prefix),
        bound.instance,
        bound.listener,
        bound.shutdown,
    )
    .await?;
    bound.metrics.stopped().await;
    Ok(())
}
