//! The embedded default: the whole system in one process on one machine, with no etcd and no
//! MongoDB. jobsvc, logsvc, a worker and the gateway (with the console) run as in a cluster, over
//! the same traits, with [`EmbeddedKv`] for jobs, the slot ledger, kill requests and
//! registrations and [`SqliteRunStore`] for run history, all under one data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use distcron_config::{AuthArgs, HttpsArgs, TelemetryArgs, TlsArgs};
use distcron_core::Keys;
use distcron_discovery::{balanced_channel, Endpoints};
use distcron_kv::{EmbeddedKv, KvStore};
use distcron_runstore::{OutputCap, SqliteRunStore};
use distcron_server::Instance;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// distcron on one machine: the four services in one process, embedded storage under --data-dir.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "distcron", version, about)]
pub struct EmbeddedConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where everything is kept: the job store, the run history and the worker's spool.
    #[arg(long, env = "DISTCRON_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Gateway and console (HTTP).
    #[arg(
        long,
        env = "DISTCRON_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8070"
    )]
    pub listen: SocketAddr,
    /// jobsvc (gRPC).
    #[arg(long, env = "DISTCRON_JOBSVC_LISTEN", default_value = "127.0.0.1:8071")]
    pub jobsvc_listen: SocketAddr,
    /// logsvc (gRPC).
    #[arg(long, env = "DISTCRON_LOGSVC_LISTEN", default_value = "127.0.0.1:8072")]
    pub logsvc_listen: SocketAddr,
    /// Days run history is kept (0 = forever).
    #[arg(long, env = "DISTCRON_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// Most runs at once.
    #[arg(long, env = "DISTCRON_WORKER_CAPACITY", default_value_t = 64)]
    pub capacity: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub https: HttpsArgs,
}

/// Why the embedded system could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// Setting something up failed.
    #[error("{0}")]
    Setup(String),
}

fn setup(what: &str) -> impl Fn(String) -> EmbeddedError + '_ {
    move |e| EmbeddedError::Setup(format!("{what}: {e}"))
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, EmbeddedError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| EmbeddedError::Setup(format!("binding {what} on {addr}: {e}")))
}

/// The address in-process clients dial for a bound listener.
fn advertise(listener: &TcpListener, tls: bool) -> Result<String, EmbeddedError> {
    listener
        .local_addr()
        .map(|local| distcron_discovery::advertise_url(local, tls))
        .map_err(|e| setup("listener")(e.to_string()))
}

/// Runs everything until `shutdown`, then stops the worker first (it drains its runs) and the
/// servers after it.
pub async fn run(config: EmbeddedConfig, shutdown: CancellationToken) -> Result<(), EmbeddedError> {
    // The owner's only: jobs' environments and run output are in there.
    distcron_config::private::create_dir(&config.data_dir)
        .map_err(|e| setup("data dir")(e.to_string()))?;
    let (store_file, runs_file) = (
        config.data_dir.join("store.sqlite"),
        config.data_dir.join("runs.sqlite"),
    );
    for file in [&store_file, &runs_file] {
        distcron_config::private::create_file(file)
            .map_err(|e| setup("data dir")(format!("{}: {e}", file.display())))?;
    }
    let grpc_tls =
        distcron_server::server_tls(&config.tls).map_err(|e| setup("TLS")(e.to_string()))?;
    let client_tls =
        distcron_server::client_tls(&config.tls).map_err(|e| setup("TLS")(e.to_string()))?;
    if grpc_tls.is_some() != client_tls.is_some() {
        return Err(setup("TLS")(
            "--tls-cert and --tls-ca go together here: the in-process clients verify the \
             in-process servers"
                .into(),
        ));
    }
    let https =
        distcron_server::https_tls(&config.https).map_err(|e| setup("HTTPS")(e.to_string()))?;
    let listens = [config.listen, config.jobsvc_listen, config.logsvc_listen];
    let tokens = distcron_server::load_tokens(&config.auth, &listens)
        .map_err(|e| setup("tokens")(e.to_string()))?;
    // With tokens configured, the in-process worker needs a token of its own: one is made for
    // this run of the process and accepted alongside the configured ones.
    let (accepted, worker_token) = if tokens.is_empty() {
        (tokens.clone(), None)
    } else {
        let token = format!("embedded-worker-{}", distcron_core::new_run_id());
        let mut all = tokens.clone();
        // Named by the worker's id: logsvc takes from a worker token only the runs of the
        // worker its name covers.
        all.extend(
            distcron_auth::TokenStore::parse(&format!(
                "{}:worker:{}",
                distcron_discovery::hostname(),
                distcron_auth::hash_token(&token)
            ))
            .map_err(|e| setup("tokens")(e.to_string()))?,
        );
        (all, Some(token))
    };
    let accepted = Arc::new(accepted);
    let store: Arc<dyn KvStore> =
        Arc::new(EmbeddedKv::open(&store_file).map_err(|e| setup("job store")(e.to_string()))?);
    let runs = Arc::new(
        SqliteRunStore::open(&runs_file).map_err(|e| setup("run history")(e.to_string()))?,
    );
    let keys = Keys::default();
    let services = CancellationToken::new();
    let ttl = Duration::from_secs(10);

    for listen in [config.jobsvc_listen, config.logsvc_listen] {
        distcron_server::warn_if_tokens_in_clear(
            "gRPC",
            listen,
            !accepted.is_empty(),
            grpc_tls.is_some(),
        );
    }
    let jobs_listener = bind(config.jobsvc_listen, "jobsvc").await?;
    let jobs_addr = advertise(&jobs_listener, grpc_tls.is_some())?;
    let instance = Instance {
        id: "jobsvc".into(),
        advertise: jobs_addr.clone(),
        registration_ttl: ttl,
        tokens: accepted.clone(),
        tls: grpc_tls.clone(),
    };
    let jobsvc = tokio::spawn(distcron_jobsvc::serve(
        store.clone(),
        keys.clone(),
        instance,
        jobs_listener,
        services.clone(),
    ));

    let logs_listener = bind(config.logsvc_listen, "logsvc").await?;
    let logs_addr = advertise(&logs_listener, grpc_tls.is_some())?;
    let storage = distcron_logsvc::Storage {
        runs,
        retention_days: config.retention_days,
        cap: OutputCap::default(),
    };
    let instance = Instance {
        id: "logsvc".into(),
        advertise: logs_addr.clone(),
        registration_ttl: ttl,
        tokens: accepted,
        tls: grpc_tls,
    };
    let logsvc = tokio::spawn(distcron_logsvc::serve(
        storage,
        store.clone(),
        keys.clone(),
        instance,
        logs_listener,
        services.clone(),
    ));

    let jobs_channel = balanced_channel(
        Endpoints::Static(vec![jobs_addr.clone()]),
        client_tls.clone(),
        services.clone(),
    )
    .await
    .map_err(|e| setup("jobsvc client")(e.to_string()))?;
    let logs_channel = balanced_channel(
        Endpoints::Static(vec![logs_addr.clone()]),
        client_tls.clone(),
        services.clone(),
    )
    .await
    .map_err(|e| setup("logsvc client")(e.to_string()))?;
    let state = distcron_gateway::AppState {
        backends: distcron_gateway::Backends::new(jobs_channel, logs_channel),
        tokens: Arc::new(tokens),
        sessions: Arc::default(),
        streams: Arc::default(),
    };
    distcron_server::warn_if_tokens_in_clear(
        "HTTP",
        config.listen,
        !state.tokens.is_empty(),
        https.is_some(),
    );
    let http = bind(config.listen, "gateway").await?;
    let gateway = tokio::spawn(distcron_gateway::serve(
        distcron_gateway::router(state, distcron_gateway::Limits::default()),
        http,
        services.clone(),
        distcron_gateway::ConnectionLimits::default(),
        https.clone(),
    ));
    tracing::info!(
        console = %format!("{}://{}", if https.is_some() { "https" } else { "http" }, config.listen),
        jobsvc = %jobs_addr,
        logsvc = %logs_addr,
        data_dir = %config.data_dir.display(),
        "distcron is running (embedded: no etcd, no MongoDB)"
    );

    let mut worker_args: Vec<String> = vec![
        "worker".into(),
        "--worker-id".into(),
        distcron_discovery::hostname(),
        "--data-dir".into(),
        config.data_dir.join("worker").display().to_string(),
        "--capacity".into(),
        config.capacity.to_string(),
    ];
    if let Some(token) = &worker_token {
        worker_args.extend(["--token".into(), token.clone()]);
    }
    let worker_config: distcron_worker::WorkerConfig =
        distcron_config::load_from(worker_args).map_err(|e| setup("worker")(e.to_string()))?;
    let worker = distcron_worker::run(
        worker_config,
        store,
        keys,
        Endpoints::Static(vec![logs_addr]),
        client_tls,
        shutdown.clone(),
    );
    let worker_result = worker.await;
    services.cancel();
    for (name, task) in [("jobsvc", jobsvc), ("logsvc", logsvc)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(service = name, error = %e, "stopped with an error"),
            Err(e) => tracing::error!(service = name, error = %e, "task failed"),
        }
    }
    if let Ok(Err(e)) = gateway.await {
        tracing::error!(error = %e, "gateway stopped with an error");
    }
    worker_result.map_err(|e| setup("worker")(e.to_string()))
}
