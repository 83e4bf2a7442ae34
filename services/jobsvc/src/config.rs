//! Command-line, environment and file configuration of the jobsvc binary.

use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{parse_duration, ServerArgs};

distcron_config::service_defaults! {
    /// jobsvc's addresses: its environment variables and default ports.
    JobsvcDefaults: env "JOBSVC", listen "127.0.0.1:8071", metrics "127.0.0.1:9071"
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
    pub server: ServerArgs<JobsvcDefaults>,
    /// How often etcd's history is compacted, to the revision seen one interval earlier (one
    /// instance per interval does it); 0 = never, e.g. when etcd runs with its own
    /// --auto-compaction-retention. Without compaction etcd's database grows until its quota
    /// stops every write.
    #[arg(long, env = "DISTCRON_COMPACT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub compact_interval: Duration,
}
