//! Configuration for distcron binaries.
//!
//! Each binary has one `clap` struct. A value comes from, in order of precedence:
//! 1. the command line (`--etcd-endpoints ...`),
//! 2. the environment (`DISTCRON_ETCD_ENDPOINTS=...`),
//! 3. the TOML file named by `--config` / `DISTCRON_CONFIG` (`etcd_endpoints = ["..."]`),
//! 4. the default.
//!
//! File keys are the flags' names with `_` for `-`. A key the binary does not have is an error
//! that names it, so a typo never passes silently.
//!
//! The flag groups several binaries share are flattened into their structs: [`EtcdArgs`],
//! [`TlsArgs`], [`HttpsArgs`], [`TelemetryArgs`], [`AuthArgs`], and [`ServiceArgs`] /
//! [`MetricsArgs`] (see [`service`]).

pub mod private;
pub mod service;

pub use service::{MetricsArgs, MetricsDefaults, ServerArgs, ServiceArgs, ServiceDefaults};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Flags or values are invalid (also used for `--help` and `--version`).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl ConfigError {
    /// Prints the error (or help) and exits with clap's conventions: status 0 for `--help` and
    /// `--version`, 2 for usage errors.
    pub fn exit(&self) -> ! {
        match self {
            Self::Clap(e) => e.exit(),
            other => {
                eprintln!("error: {other}");
                std::process::exit(2)
            }
        }
    }
}

/// Parses the process's arguments and environment, plus the config file if one is named.
/// The struct must have an argument with id `config` (`Option<PathBuf>`).
pub fn load<T: CommandFactory + FromArgMatches>() -> Result<T, ConfigError> {
    load_from(std::env::args_os())
}

/// [`load`] with explicit arguments (the first is the program name).
pub fn load_from<T, I, S>(args: I) -> Result<T, ConfigError>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = T::command().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(T::from_arg_matches(&matches)?);
    };
    let file_args = file_arguments::<T>(&path, &matches)?;
    let mut merged = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args);
    merged.extend(args.into_iter().skip(1));
    let matches = T::command().try_get_matches_from(merged)?;
    Ok(T::from_arg_matches(&matches)?)
}

/// Turns the file's keys into flags, only for arguments the command line and environment left at
/// their defaults.
fn file_arguments<T: CommandFactory>(
    path: &Path,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let command = T::command();
    let file_err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == key && a.get_long().is_some())
            .filter(|a| a.get_id().as_str() != "config")
            .ok_or_else(|| file_err(format!("unknown key {key:?}")))?;
        let explicit = matches!(
            matches.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if explicit {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or(key));
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(OsString::from(flag));
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    out.push(OsString::from(format!(
                        "{flag}={}",
                        scalar(key, item).map_err(file_err)?
                    )));
                }
            }
            other => out.push(OsString::from(format!(
                "{flag}={}",
                scalar(key, other).map_err(file_err)?
            ))),
        }
    }
    Ok(out)
}

fn scalar(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "{key:?}: expected a string, number, boolean or a list of them"
        )),
    }
}

/// How to reach etcd, shared by every binary that uses it.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "DISTCRON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of every distcron key in etcd.
    #[arg(long, env = "DISTCRON_KEY_PREFIX", default_value = "/cron/")]
    pub key_prefix: String,
    /// Timeout of one etcd request, e.g. "5s".
    #[arg(long, env = "DISTCRON_ETCD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub etcd_timeout: std::time::Duration,
    /// etcd user, when etcd authentication is enabled (password in DISTCRON_ETCD_PASSWORD).
    #[arg(long, env = "DISTCRON_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// etcd password.
    #[arg(long, env = "DISTCRON_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// PEM CA bundle that verifies etcd's server certificates (for `https://` endpoints).
    #[arg(long, env = "DISTCRON_ETCD_CA")]
    pub etcd_ca: Option<std::path::PathBuf>,
    /// PEM client certificate presented to etcd (etcd's `--client-cert-auth`); needs
    /// --etcd-key and --etcd-ca.
    #[arg(long, env = "DISTCRON_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// Private key of --etcd-cert (PEM).
    #[arg(long, env = "DISTCRON_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
}

/// TLS of this process's gRPC servers and gRPC clients, shared by every binary. Without these,
/// gRPC is plaintext (loopback, or a network you trust).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain this process's gRPC servers present, and its client certificate
    /// for servers that require one; needs --tls-key.
    #[arg(long, env = "DISTCRON_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, env = "DISTCRON_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle that verifies the gRPC servers this process dials; with it every gRPC
    /// client uses TLS and dials only `https://` addresses.
    #[arg(long, env = "DISTCRON_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM CA bundle client certificates must chain to; with it this process's gRPC servers
    /// require one (mutual TLS). Needs --tls-cert.
    #[arg(long, env = "DISTCRON_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

/// HTTPS of the gateway's listener (console, REST routes), shared by the gateway and the
/// embedded default. Without a certificate the listener speaks plain HTTP (loopback, or behind a
/// TLS-terminating proxy).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpsArgs {
    /// PEM certificate chain of the HTTPS listener; needs --https-key.
    #[arg(long, env = "DISTCRON_HTTPS_CERT", requires = "https_key")]
    pub https_cert: Option<std::path::PathBuf>,
    /// Private key of --https-cert (PEM).
    #[arg(long, env = "DISTCRON_HTTPS_KEY", requires = "https_cert")]
    pub https_key: Option<std::path::PathBuf>,
}

/// Logging and tracing, shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log filter in `tracing` syntax, e.g. "info,distcron=debug".
    #[arg(long, env = "DISTCRON_LOG", default_value = "info")]
    pub log: String,
    /// Log output format.
    #[arg(long, env = "DISTCRON_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Who may call: bearer tokens with roles (shared by the gateway and the gRPC services).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Accepted tokens as `name:role:sha256-hex` entries, comma-separated (roles: viewer,
    /// operator, admin, worker; `gateway hash-token <token>` prints the hash).
    #[arg(long, env = "DISTCRON_TOKENS")]
    pub tokens: Option<String>,
    /// File with token entries, one per line.
    #[arg(long, env = "DISTCRON_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Serve without authentication even on a non-loopback address.
    #[arg(long, env = "DISTCRON_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,
}

/// The flags every cluster process (jobsvc, logsvc, gateway, worker) shares: how to reach etcd,
/// logging and tracing, and the TLS of its gRPC servers and clients.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsArgs,
}

/// Parses a human duration such as "500ms", "5s" or "1h30m".
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, env = "DISTCRON_TEST_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "DISTCRON_TEST_LISTEN", default_value = "127.0.0.1:1")]
        listen: String,
        #[arg(long, value_delimiter = ',', default_value = "a")]
        endpoints: Vec<String>,
        #[arg(long)]
        verbose: bool,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let f = file("listen = \"0.0.0.0:9\"\nendpoints = [\"x\", \"y\"]\nverbose = true\ntimeout = \"2m\"\n");
        let path = f.path().to_str().expect("utf8 path");
        let d: Demo = load_from(["demo", "--config", path]).expect("load");
        assert_eq!(d.listen, "0.0.0.0:9");
        assert_eq!(d.endpoints, ["x", "y"]);
        assert!(d.verbose);
        assert_eq!(d.timeout, std::time::Duration::from_secs(120));
        let d: Demo = load_from(["demo", "--config", path, "--listen", "1.2.3.4:5"]).expect("load");
        assert_eq!(d.listen, "1.2.3.4:5");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let f = file("listn = \"x\"\n");
        let path = f.path().to_str().expect("utf8 path");
        let err = load_from::<Demo, _, _>(["demo", "--config", path]).expect_err("unknown key");
        assert!(err.to_string().contains("\"listn\""), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1h30m"),
            Ok(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
