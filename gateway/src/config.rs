//! Command-line, environment and file configuration of the gateway binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use distcron_config::{parse_duration, AuthArgs, ClusterArgs, HttpsArgs};

/// gateway: the seed's REST routes and /api/v1 over jobsvc and logsvc.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", version, about)]
pub struct GatewayConfig {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "DISTCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address (the seed's port).
    #[arg(
        long,
        env = "DISTCRON_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8070"
    )]
    pub listen: SocketAddr,
    /// jobsvc addresses (`http://host:port`, comma-separated); default: discovered in etcd.
    #[arg(long, env = "DISTCRON_JOBSVC_ENDPOINTS", value_delimiter = ',')]
    pub jobsvc_endpoints: Vec<String>,
    /// logsvc addresses; default: discovered in etcd.
    #[arg(long, env = "DISTCRON_LOGSVC_ENDPOINTS", value_delimiter = ',')]
    pub logsvc_endpoints: Vec<String>,
    /// Largest accepted request body.
    #[arg(long, env = "DISTCRON_GATEWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most HTTP connections open at once (more wait in the listen backlog).
    #[arg(long, env = "DISTCRON_GATEWAY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Longest wait for a request's headers on a connection, new or kept alive; then it is closed.
    #[arg(long, env = "DISTCRON_GATEWAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Most live-output streams open at once.
    #[arg(
        long,
        env = "DISTCRON_GATEWAY_MAX_OUTPUT_STREAMS",
        default_value_t = 256
    )]
    pub max_output_streams: usize,
    /// Most live-output streams one token may have open.
    #[arg(
        long,
        env = "DISTCRON_GATEWAY_MAX_OUTPUT_STREAMS_PER_TOKEN",
        default_value_t = 16
    )]
    pub max_output_streams_per_token: usize,
    /// Time limit of a request (streams excepted).
    #[arg(long, env = "DISTCRON_GATEWAY_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub https: HttpsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}
