//! The jobsvc binary: wires configuration, telemetry, etcd and the gRPC server.

use std::sync::Arc;

use anyhow::Context;
use distcron_core::Keys;
use distcron_jobsvc::{serve, JobsvcConfig};
use distcron_server::Instance;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: JobsvcConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_telemetry::init("jobsvc", &config.telemetry)?;
    let store = Arc::new(
        distcron_server::connect_etcd(&config.etcd)
            .await
            .context("connecting to etcd")?,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let instance = Instance::new(
        config.instance_id.clone(),
        config.advertise.clone(),
        listener.local_addr()?,
        config.registration_ttl,
        distcron_auth::load_tokens(
            config.auth.tokens.as_deref(),
            config.auth.tokens_file.as_deref(),
            config.listen,
            config.auth.insecure_no_auth,
        )?,
    );
    let shutdown = distcron_server::cancel_on_signal();
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
