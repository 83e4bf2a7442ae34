//! Command-line, environment and file configuration of the worker binary.

use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{parse_duration, ClusterArgs, MetricsArgs, MetricsDefaults};
use distcron_core::output::OutputCap;

/// The worker's default `/metrics` address.
#[derive(Debug, Clone)]
pub struct WorkerDefaults;

impl MetricsDefaults for WorkerDefaults {
    const METRICS_LISTEN: &'static str = "127.0.0.1:9073";
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// worker: schedules jobs, claims each slot exactly once cluster-wide, runs commands and ships
/// their results to logsvc.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "worker", version, about)]
pub struct WorkerConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Worker id, unique in the cluster (default: <host>-<pid>).
    #[arg(long, env = "DISTCRON_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Labels shown in the worker list, key=value, comma-separated.
    #[arg(long, env = "DISTCRON_WORKER_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Bearer token presented to logsvc (a token of role worker), when the
    /// services require tokens.
    #[arg(long, env = "DISTCRON_TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs<WorkerDefaults>,
    /// Most runs at once on this worker.
    #[arg(long, env = "DISTCRON_WORKER_CAPACITY", default_value_t = 64)]
    pub capacity: u32,
    /// Directory for the log spool and the process-group records (locked: one worker per dir).
    #[arg(
        long,
        env = "DISTCRON_WORKER_DATA_DIR",
        default_value = "./data/worker"
    )]
    pub data_dir: PathBuf,
    /// Session lease TTL: how soon after a crash this worker's runs are recorded as lost.
    #[arg(long, env = "DISTCRON_SESSION_TTL", default_value = "5s", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// How long a non-preferred worker waits before claiming a slot nobody claimed, per rank, on
    /// top of the claim duration and watch delay it currently measures.
    #[arg(long, env = "DISTCRON_CLAIM_STANDBY", default_value = "200ms", value_parser = parse_duration)]
    pub claim_standby: Duration,
    /// How long before its slot a slot is claimed; the run still starts at the slot. Hides the
    /// claim's store round trip (and a burst of claims) from the start time.
    #[arg(long, env = "DISTCRON_CLAIM_LEAD", default_value = "250ms", value_parser = parse_duration)]
    pub claim_lead: Duration,
    /// Most claim transactions in flight at once. Claims due meanwhile wait on the worker and
    /// go out together in the next transaction (up to 40 a transaction), not one each into
    /// etcd's queue, where they would time out, be sent again and starve the session's
    /// keep-alives.
    #[arg(long, env = "DISTCRON_MAX_CLAIM_TXNS_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_claim_txns_in_flight: u32,
    /// Largest clock offset from the cluster at which this worker still claims slots.
    #[arg(long, env = "DISTCRON_CLOCK_SKEW_BOUND", default_value = "500ms", value_parser = parse_duration)]
    pub clock_skew_bound: Duration,
    /// Test only: shifts this worker's clock by this many milliseconds.
    #[arg(
        long,
        env = "DISTCRON_TEST_CLOCK_OFFSET_MS",
        default_value_t = 0,
        hide = true,
        allow_hyphen_values = true
    )]
    pub test_clock_offset_ms: i64,
    /// On SIGTERM, how long running runs may finish before they are killed.
    #[arg(long, env = "DISTCRON_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a run is killed or times out.
    #[arg(long, env = "DISTCRON_KILL_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// logsvc addresses (http://host:port, comma-separated); default: discovered in etcd.
    #[arg(long, env = "DISTCRON_LOGSVC_ENDPOINTS", value_delimiter = ',')]
    pub logsvc_endpoints: Vec<String>,
    /// Output bytes a run ships at most (head while it runs, tail at the end), 1024 to 8388608.
    #[arg(long, env = "DISTCRON_OUTPUT_CAP_BYTES", default_value_t = OutputCap::default())]
    pub output_cap_bytes: OutputCap,
    /// Largest size of the on-disk log spool; beyond it events are dropped, loudly.
    #[arg(long, env = "DISTCRON_SPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// Most events in one delivery to logsvc.
    #[arg(long, env = "DISTCRON_LOG_BATCH_EVENTS", default_value_t = 500)]
    pub log_batch_events: usize,
    /// Longest an event waits for its batch.
    #[arg(long, env = "DISTCRON_LOG_BATCH_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub log_batch_delay: Duration,
    /// How long a run's start is held back before it is shipped: a run that ends within it is
    /// stored with one write (start, output and end together); a longer run shows as running
    /// this much later. 0 ships each start at once.
    #[arg(long, env = "DISTCRON_LOG_START_HOLD", default_value = "1s", value_parser = parse_duration)]
    pub log_start_hold: Duration,
    /// Users other than the worker's own that jobs may run as (a job's `user`), comma-separated;
    /// `*` allows any. Default: none, so a job naming another user (root on a root worker) is
    /// refused with the reason recorded on its run.
    #[arg(long, env = "DISTCRON_WORKER_ALLOWED_USERS", value_delimiter = ',')]
    pub allowed_users: Vec<String>,
    /// Shell that runs commands (`<shell> -c <command>`).
    #[arg(long, env = "DISTCRON_SHELL", default_value = "/bin/sh")]
    pub shell: PathBuf,
    /// The program that leads each run's process group. Default: `distcron-group-leader` next
    /// to this executable if it is there, else this executable itself in leader mode (which
    /// takes about three times the CPU to start a run).
    #[arg(long, env = "DISTCRON_GROUP_LEADER")]
    pub group_leader: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_output_cap_defaults_to_one_mebibyte() {
        let config = WorkerConfig::try_parse_from(["worker"]).map_err(|e| e.to_string());
        assert_eq!(config.map(|c| c.output_cap_bytes), Ok(OutputCap::default()));
    }

    #[test]
    fn an_output_cap_out_of_bounds_is_refused_naming_the_flag() {
        for value in ["0", "1023", "8388609", "1k"] {
            let Err(e) = WorkerConfig::try_parse_from(["worker", "--output-cap-bytes", value])
            else {
                panic!("--output-cap-bytes {value} was accepted");
            };
            assert!(e.to_string().contains("--output-cap-bytes"), "{e}");
        }
    }
}
