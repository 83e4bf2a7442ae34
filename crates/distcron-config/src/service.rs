//! The flags of a registered gRPC service (listen and advertised address, instance id,
//! registration TTL) and of a process's `/metrics` endpoint. Their names, file keys and help are
//! the same in every binary; the environment variables of the addresses and the default ports
//! are each binary's own, given by a type implementing [`ServiceDefaults`] (or
//! [`MetricsDefaults`]).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{parse_duration, AuthArgs, ClusterArgs};

/// The default of one binary's `--metrics-listen`.
pub trait MetricsDefaults {
    /// Default address of the `/metrics` endpoint, e.g. `"127.0.0.1:9071"`.
    const METRICS_LISTEN: &'static str;
}

/// The environment variables and defaults of one registered service's [`ServiceArgs`].
pub trait ServiceDefaults: MetricsDefaults {
    /// Default gRPC listen address, e.g. `"127.0.0.1:8071"`.
    const LISTEN: &'static str;
    /// Environment variable of `--listen`, e.g. `"DISTCRON_JOBSVC_LISTEN"`.
    const LISTEN_ENV: &'static str;
    /// Environment variable of `--advertise`, e.g. `"DISTCRON_JOBSVC_ADVERTISE"`.
    const ADVERTISE_ENV: &'static str;
}

/// Where a process serves Prometheus `/metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs<D: MetricsDefaults> {
    /// Address of the Prometheus `/metrics` endpoint (plain HTTP).
    #[arg(long, env = "DISTCRON_METRICS_LISTEN", default_value = D::METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    #[arg(skip)]
    defaults: PhantomData<D>,
}

/// Where a registered gRPC service listens, how clients reach it and how it registers, with its
/// `/metrics` endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs<D: ServiceDefaults> {
    /// gRPC listen address.
    #[arg(long, env = D::LISTEN_ENV, default_value = D::LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs<D>,
    /// Address other components dial (default: derived from --listen and the host name).
    #[arg(long, env = D::ADVERTISE_ENV)]
    pub advertise: Option<String>,
    /// Instance id in the registry (default: <host>-<pid>).
    #[arg(long, env = "DISTCRON_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How long a crashed instance stays registered.
    #[arg(long, env = "DISTCRON_REGISTRATION_TTL", default_value = "10s", value_parser = parse_duration)]
    pub registration_ttl: Duration,
}

/// Every flag of a registered gRPC service of the cluster (jobsvc, logsvc): its addresses and
/// registration, the flags every cluster process shares, and who may call it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs<D: ServiceDefaults> {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs<D>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// Defines a registered service's [`ServiceDefaults`]: a unit type named `$name`, its default
/// gRPC and `/metrics` addresses, and its environment variables `DISTCRON_<$env>_LISTEN` and
/// `DISTCRON_<$env>_ADVERTISE`.
///
/// ```
/// distcron_config::service_defaults! {
///     /// jobsvc's addresses.
///     JobsvcDefaults: env "JOBSVC", listen "127.0.0.1:8071", metrics "127.0.0.1:9071"
/// }
/// use distcron_config::ServiceDefaults;
/// assert_eq!(JobsvcDefaults::LISTEN_ENV, "DISTCRON_JOBSVC_LISTEN");
/// ```
#[macro_export]
macro_rules! service_defaults {
    ($(#[$doc:meta])* $name:ident: env $env:literal, listen $listen:literal, metrics $metrics:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name;

        impl $crate::MetricsDefaults for $name {
            const METRICS_LISTEN: &'static str = $metrics;
        }

        impl $crate::ServiceDefaults for $name {
            const LISTEN: &'static str = $listen;
            const LISTEN_ENV: &'static str = concat!("DISTCRON_", $env, "_LISTEN");
            const ADVERTISE_ENV: &'static str = concat!("DISTCRON_", $env, "_ADVERTISE");
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    crate::service_defaults! {
        /// The defaults of a demo service.
        Demo: env "DEMO", listen "127.0.0.1:8999", metrics "127.0.0.1:9999"
    }

    #[derive(Debug, Parser)]
    struct DemoConfig {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        service: ServiceArgs<Demo>,
    }

    #[test]
    fn defaults_and_environment_variables_are_the_binarys_own() {
        let command = <DemoConfig as clap::CommandFactory>::command();
        let arg = |id: &str| command.get_arguments().find(|a| a.get_id() == id).cloned();
        let listen = arg("listen").expect("--listen");
        assert_eq!(listen.get_default_values(), ["127.0.0.1:8999"]);
        assert_eq!(
            listen.get_env(),
            Some(std::ffi::OsStr::new("DISTCRON_DEMO_LISTEN"))
        );
        let advertise = arg("advertise").expect("--advertise");
        assert_eq!(
            advertise.get_env(),
            Some(std::ffi::OsStr::new("DISTCRON_DEMO_ADVERTISE"))
        );
        let metrics = arg("metrics_listen").expect("--metrics-listen");
        assert_eq!(metrics.get_default_values(), ["127.0.0.1:9999"]);
        assert_eq!(
            metrics.get_env(),
            Some(std::ffi::OsStr::new("DISTCRON_METRICS_LISTEN"))
        );
    }

    #[test]
    fn flags_and_file_keys_keep_their_names() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(
            b"metrics_listen = \"0.0.0.0:9100\"\ninstance_id = \"a\"\nregistration_ttl = \"3s\"\n",
        )
        .expect("write");
        let path = f.path().to_str().expect("utf8 path");
        let d: DemoConfig = crate::load_from([
            "demo",
            "--config",
            path,
            "--listen",
            "0.0.0.0:1",
            "--advertise",
            "http://h:1",
        ])
        .expect("load");
        assert_eq!(d.service.listen, "0.0.0.0:1".parse().expect("addr"));
        assert_eq!(
            d.service.metrics.metrics_listen,
            "0.0.0.0:9100".parse().expect("addr")
        );
        assert_eq!(d.service.advertise.as_deref(), Some("http://h:1"));
        assert_eq!(d.service.instance_id.as_deref(), Some("a"));
        assert_eq!(d.service.registration_ttl, Duration::from_secs(3));
    }
}
