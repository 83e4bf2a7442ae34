//! Command-line, environment and file configuration of the jobsvc binary.

use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{
    parse_duration, AuthArgs, EtcdArgs, MetricsDefaults, ServiceArgs, ServiceDefaults,
    TelemetryArgs, TlsArgs,
};

/// jobsvc's addresses: its environment variables and default ports.
#[derive(Debug, Clone)]
pub struct JobsvcDefaults;

impl MetricsDefaults for JobsvcDefaults {
    const METRICS_LISTEN: &'static str = "127.0.0.1:9071";
}

impl ServiceDefaults for JobsvcDefaults {
    const LISTEN: &'static str = "127.0.0.1:8071";
    const LISTEN_ENV: &'static str = "DISTCRON_JOBSVC_LISTEN";
    const ADVERTISE_ENV: &'static str = "DISTCRON_JOBSVC_ADVERTISE";
}

/// jobsvc: job definitions and job control over etcd.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "jobsvc", version, about)]
pub struct JobsvcConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs<JobsvcDefaults>,
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
