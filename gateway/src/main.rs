//! The gateway binary: wires configuration, telemetry, backend discovery and the HTTP server.
//! `gateway hash-token <token>` prints the hash to put in the token configuration.

use std::sync::Arc;

use anyhow::{bail, Context};
use distcron_core::Keys;
use distcron_discovery::{balanced_channel, Endpoints};
use distcron_gateway::{
    router, serve, AppState, Backends, ConnectionLimits, GatewayConfig, Limits,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hash-token") {
        let Some(token) = args.get(2) else {
            bail!("usage: gateway hash-token <token>");
        };
        // The one thing this command prints, for the token configuration.
        #[allow(clippy::print_stdout)]
        {
            println!("{}", distcron_auth::hash_token(token));
        }
        return Ok(());
    }
    let config: GatewayConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_server::init_process("gateway", &config.cluster.telemetry)?;
    let tokens = distcron_server::load_tokens(&config.auth, &[config.listen])?;
    if tokens.is_empty() {
        tracing::warn!("no tokens configured: authentication is off");
    }
    let background = CancellationToken::new();
    let keys = Keys::new(&config.cluster.etcd.key_prefix);
    let needs_etcd = config.jobsvc_endpoints.is_empty() || config.logsvc_endpoints.is_empty();
    let store = if needs_etcd {
        Some(Arc::new(
            distcron_server::connect_etcd(&config.cluster.etcd)
                .await
                .context("connecting to etcd")?,
        ))
    } else {
        None
    };
    let endpoints = |fixed: &Vec<String>, service: &str| match (&store, fixed.is_empty()) {
        (Some(store), true) => Endpoints::Discovered {
            store: store.clone(),
            prefix: keys.services(service),
        },
        _ => Endpoints::Static(fixed.clone()),
    };
    let grpc_tls = distcron_server::client_tls(&config.cluster.tls).context("TLS settings")?;
    let https = distcron_server::https_tls(&config.https).context("HTTPS settings")?;
    distcron_server::warn_if_tokens_in_clear(
        "HTTP",
        config.listen,
        !tokens.is_empty(),
        https.is_some(),
    );
    let jobs = balanced_channel(
        endpoints(&config.jobsvc_endpoints, "jobsvc"),
        grpc_tls.clone(),
        background.clone(),
    )
    .await?;
    let logs = balanced_channel(
        endpoints(&config.logsvc_endpoints, "logsvc"),
        grpc_tls,
        background.clone(),
    )
    .await?;
    let state = AppState {
        backends: Backends::new(jobs, logs),
        tokens: Arc::new(tokens),
        sessions: Arc::default(),
        streams: Arc::new(distcron_gateway::streams::StreamLimits::new(
            config.max_output_streams,
            config.max_output_streams_per_token,
        )),
    };
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = distcron_server::cancel_on_signal();
    let connections = ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        ..ConnectionLimits::default()
    };
    serve(
        router(state, limits),
        listener,
        shutdown,
        connections,
        https,
    )
    .await?;
    background.cancel();
    Ok(())
}
