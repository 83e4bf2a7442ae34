//! Command-line, environment and file configuration of the logsvc binary.

use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{
    parse_duration, AuthArgs, EtcdArgs, MetricsDefaults, ServiceArgs, ServiceDefaults,
    TelemetryArgs, TlsArgs,
};

/// Largest per-run output cap: far below MongoDB's 16 MiB document limit.
pub const MAX_OUTPUT_CAP: usize = 8 * 1024 * 1024;

fn parse_cap(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if (1024..=MAX_OUTPUT_CAP).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between 1024 and {MAX_OUTPUT_CAP} bytes"))
    }
}

/// logsvc's addresses: its environment variables and default ports.
#[derive(Debug, Clone)]
pub struct LogsvcDefaults;

impl MetricsDefaults for LogsvcDefaults {
    const METRICS_LISTEN: &'static str = "127.0.0.1:9072";
}

impl ServiceDefaults for LogsvcDefaults {
    const LISTEN: &'static str = "127.0.0.1:8072";
    const LISTEN_ENV: &'static str = "DISTCRON_LOGSVC_LISTEN";
    const ADVERTISE_ENV: &'static str = "DISTCRON_LOGSVC_ADVERTISE";
}

/// logsvc: run history over MongoDB.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "logsvc", version, about)]
pub struct LogsvcConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs<LogsvcDefaults>,
    /// MongoDB connection string.
    #[arg(
        long,
        env = "DISTCRON_MONGO_URI",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub mongo_uri: String,
    /// Database of the run history.
    #[arg(long, env = "DISTCRON_MONGO_DATABASE", default_value = "cron")]
    pub mongo_database: String,
    /// Collection of the run history.
    #[arg(long, env = "DISTCRON_MONGO_COLLECTION", default_value = "log")]
    pub mongo_collection: String,
    /// Timeout of every MongoDB call.
    #[arg(long, env = "DISTCRON_MONGO_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub mongo_timeout: Duration,
    /// Days a run is kept after its last change; 0 keeps runs forever.
    #[arg(long, env = "DISTCRON_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// Output bytes kept per run (head and tail), 1024 to 8388608.
    #[arg(long, env = "DISTCRON_OUTPUT_CAP_BYTES", default_value = "1048576", value_parser = parse_cap)]
    pub output_cap_bytes: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}
