//! Command-line, environment and file configuration of the jobsvc binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{parse_duration, AuthArgs, EtcdArgs, TelemetryArgs, TlsArgs};

/// jobsvc: job definitions and job control over etcd.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "jobsvc", version, about)]
pub struct JobsvcConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "DISTCRON_JOBSVC_LISTEN", default_value = "127.0.0.1:8071")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (plain HTTP).
    #[arg(
        long,
        env = "DISTCRON_METRICS_LISTEN",
        default_value = "127.0.0.1:9071"
    )]
    pub metrics_listen: std::net::SocketAddr,
    /// Address other components dial, e.g. "http://10.0.0.5:8071" (default: derived from --listen
    /// and the host name).
    #[arg(long, env = "DISTCRON_JOBSVC_ADVERTISE")]
    pub advertise: Option<String>,
    /// Instance id in the registry (default: <host>-<pid>).
    #[arg(long, env = "DISTCRON_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How long a crashed instance stays registered.
    #[arg(long, env = "DISTCRON_REGISTRATION_TTL", default_value = "10s", value_parser = parse_duration)]
    pub registration_ttl: Duration,
    /// How often etcd's history is compacted, to the revision seen one interval earlier (one
    /// instance per interval does it); 0 = never, e.g. when etcd runs with its own
    /// --auto-compaction-retention. Without compaction etcd's database grows until its quota
    /// stops every write.
    #[arg(long, env = "DISTCRON_COMPACT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub compact_interval: Duration,
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
