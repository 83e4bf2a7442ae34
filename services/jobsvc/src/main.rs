//! The jobsvc binary: wires configuration, telemetry, etcd and the gRPC server.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_jobsvc::{serve, Instance, JobsvcConfig};
use distcron_kv::{EtcdConfig, EtcdKv};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: JobsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_telemetry::init("jobsvc", &config.telemetry)?;
    let mut etcd = EtcdConfig::new(config.etcd.etcd_endpoints.clone());
    etcd.request_timeout = config.etcd.etcd_timeout;
    etcd.credentials = config
        .etcd
        .etcd_user
        .clone()
        .zip(config.etcd.etcd_password.clone());
    let store = Arc::new(EtcdKv::connect(etcd).await.context("connecting to etcd")?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    let instance = Instance {
        id: config
            .instance_id
            .clone()
            .unwrap_or_else(distcron_discovery::default_instance_id),
        advertise: config
            .advertise
            .clone()
            .unwrap_or_else(|| distcron_discovery::advertise_url(local)),
        registration_ttl: config.registration_ttl,
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = distcron_server::shutdown_signal().await {
            tracing::error!(error = %e, "cannot wait for signals; stopping");
        }
        signal.cancel();
    });
    serve(
        store,
        Keys::new(&config.etcd.key_prefix),
        instance,
        listener,
        shutdown,
    )
    .await?;
    Ok(())
}
