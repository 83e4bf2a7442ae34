//! Command-line, environment and file configuration of the logsvc binary.

use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{parse_duration, ServerArgs};
use distcron_core::output::OutputCap;

distcron_config::service_defaults! {
    /// logsvc's addresses: its environment variables and default ports.
    LogsvcDefaults: env "LOGSVC", listen "127.0.0.1:8072", metrics "127.0.0.1:9072"
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
    pub server: ServerArgs<LogsvcDefaults>,
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
    #[arg(long, env = "DISTCRON_OUTPUT_CAP_BYTES", default_value_t = OutputCap::default())]
    pub output_cap_bytes: OutputCap,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_output_cap_defaults_to_one_mebibyte() {
        let config = LogsvcConfig::try_parse_from(["logsvc"]).map_err(|e| e.to_string());
        assert_eq!(config.map(|c| c.output_cap_bytes), Ok(OutputCap::default()));
    }

    #[test]
    fn an_output_cap_out_of_bounds_is_refused_naming_the_flag() {
        for value in ["0", "1023", "8388609", "1k"] {
            let Err(e) = LogsvcConfig::try_parse_from(["logsvc", "--output-cap-bytes", value])
            else {
                panic!("--output-cap-bytes {value} was accepted");
            };
            assert!(e.to_string().contains("--output-cap-bytes"), "{e}");
        }
    }
}
