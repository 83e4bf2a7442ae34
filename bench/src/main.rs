//! distcron-bench: starts the distributed stack on loopback (etcd cluster, Mongo-wire server,
//! logsvc, jobsvc, workers, gateway), measures this machine's limits, runs the scenarios of
//! `BENCHMARKS.md`, prints a table per scenario and writes JSON under `bench/results/`.

mod gateway;
mod limits;
mod measure;
mod report;
mod scenarios;
mod stack;
mod streams;
mod truth;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::report::{publish, Machine};
use crate::scenarios::{Bench, Faults};
use crate::stack::{Stack, StackShape};

/// A scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Worker CPU and memory with the hourly jobs loaded and nothing due.
    Idle,
    /// Gateway list and save latency under concurrent clients.
    Api,
    /// Every-second jobs for a window: exactly once, lag, etcd writes and CPU per fire,
    /// visibility of finished runs.
    Steady,
    /// Run events per second through logsvc against the raw insert rate.
    LogPath,
    /// Many jobs due in the same second.
    Burst,
    /// Raises the every-second job count until a slot is missed or p99 lag exceeds 100 ms.
    Ceiling,
    /// The steady run with every etcd member frozen for 10 s, then a worker SIGKILLed, another
    /// one's wall clock stepped +2 s for 6 s, and an etcd member stopped.
    Failover,
    /// Live-output streams of one run opened at once, then closed: memory per stream, and
    /// memory returned after they close.
    Streams,
}

/// Runs the benchmark suite against a stack it starts and stops itself, on loopback only.
#[derive(Debug, Parser)]
#[command(name = "distcron-bench", version, about)]
struct BenchConfig {
    /// Scenarios to run (default: all, in the order listed).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Workers to start.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Runs at once per worker.
    #[arg(long, default_value_t = 64)]
    worker_capacity: u32,
    /// etcd members to start.
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// Hourly jobs loaded (not due) for the whole benchmark.
    #[arg(long, default_value_t = 10_000)]
    hourly_jobs: usize,
    /// Every-second jobs of the steady and failover scenarios.
    #[arg(long, default_value_t = 500)]
    jobs: usize,
    /// Window of the steady, failover and ceiling runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Every-second jobs of the first ceiling step.
    #[arg(long, default_value_t = 200)]
    ceiling_start: usize,
    /// Jobs added per ceiling step.
    #[arg(long, default_value_t = 200)]
    ceiling_step: usize,
    /// Most ceiling steps (the defaults go up to the 800 fires/s goal).
    #[arg(long, default_value_t = 4)]
    ceiling_steps: usize,
    /// Jobs of the burst scenario.
    #[arg(long, default_value_t = 2000)]
    burst_jobs: usize,
    /// Live-output streams of the streams scenario (the gateway's total cap is 256).
    #[arg(long, default_value_t = 256)]
    streams: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 50)]
    api_clients: usize,
    /// How long each measurement of the limits, idle, API and log-path scenarios lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    measure_for: Duration,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
    /// Keep the services' and workers' logs after the run (they are kept anyway when a scenario
    /// fails); their directory is logged at startup.
    #[arg(long)]
    keep_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DISTCRON_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = BenchConfig::parse();
    let scenarios = if config.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        config.scenarios.clone()
    };
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the benchmark binary has no directory")?
        .to_path_buf();
    let machine = Machine::this();
    tracing::info!(?machine, "starting the stack");
    let stack = Stack::start(
        &bin_dir,
        StackShape {
            etcd_members: config.etcd_members,
            workers: config.workers,
            worker_capacity: config.worker_capacity,
        },
    )?;
    tracing::info!(logs = %stack.log_dir().display(), "stack up");
    let gateway = gateway::Gateway::new(&stack.gateway_url)?;
    gateway.wait_ready(Duration::from_secs(30)).await?;

    tracing::info!("measuring the machine's limits");
    let length = config.measure_for.min(Duration::from_secs(5));
    let limits = limits::MachineLimits {
        spawns_per_s: limits::spawn_rate(config.worker_capacity as usize, length).await?,
        etcd_txns_per_s: limits::etcd_txn_rate(&stack.etcd.endpoints(), "/bench-limits/", length)
            .await?,
        insert_docs_per_s: limits::insert_rate(&stack.mongo.uri(), "bench_limits", length).await?,
    };
    let mut bench = Bench {
        stack,
        gateway,
        http: reqwest::Client::new(),
        limits,
    };
    publish(
        &config.results_dir,
        "limits",
        &machine,
        &limits,
        &[
            report::Check::info("sh -c true spawns/s", limits.spawns_per_s, ""),
            report::Check::info("etcd create-if-absent txns/s", limits.etcd_txns_per_s, ""),
            report::Check::info("insert_many docs/s", limits.insert_docs_per_s, ""),
        ],
        &limits,
    )?;

    tracing::info!(n = config.hourly_jobs, "loading the hourly jobs");
    scenarios::load_hourly(&bench, config.hourly_jobs).await?;
    // Let every worker build its schedule before anything is measured.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let outcome = run_scenarios(&mut bench, &config, scenarios, &machine).await;
    if outcome.is_err() {
        bench.stack.keep_logs();
        tracing::error!(logs = %bench.stack.log_dir().display(), "a scenario failed; the services' logs are kept");
    } else if config.keep_logs {
        bench.stack.keep_logs();
        tracing::info!(logs = %bench.stack.log_dir().display(), "the services' logs are kept");
    }
    tracing::info!("stopping the stack");
    drop(bench);
    outcome
}

/// Runs `scenarios` in order, publishing each one's results.
async fn run_scenarios(
    bench: &mut Bench,
    config: &BenchConfig,
    scenarios: Vec<Scenario>,
    machine: &Machine,
) -> anyhow::Result<()> {
    for scenario in scenarios {
        tracing::info!(?scenario, "running");
        let (checks, measured) = match scenario {
            Scenario::Idle => {
                let r =
                    scenarios::idle(bench, config.measure_for.max(Duration::from_secs(20))).await?;
                (scenarios::idle_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Api => {
                let r = scenarios::api(bench, config.api_clients, config.measure_for).await;
                (scenarios::api_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Steady => {
                let r =
                    scenarios::steady(bench, "steady", config.jobs, config.window, None).await?;
                (scenarios::steady_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::LogPath => {
                let r = scenarios::log_path(bench, config.measure_for).await?;
                (scenarios::log_path_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Burst => {
                let r = scenarios::burst(bench, config.burst_jobs).await?;
                (scenarios::burst_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Ceiling => {
                let r = scenarios::ceiling(
                    bench,
                    config.ceiling_start,
                    config.ceiling_step,
                    config.ceiling_steps,
                    config.window,
                )
                .await?;
                (scenarios::ceiling_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Failover => {
                let faults = Faults {
                    stall_etcd_at: Duration::from_secs(5),
                    stall_etcd_for: Duration::from_secs(10),
                    kill_worker_at: Duration::from_secs(20),
                    step_clock_at: Duration::from_secs(25),
                    step_clock_by_s: 2,
                    step_clock_for: Duration::from_secs(6),
                    stop_etcd_member_at: Duration::from_secs(40),
                };
                let r =
                    scenarios::steady(bench, "failover", config.jobs, config.window, Some(faults))
                        .await?;
                (scenarios::failover_checks(&r), serde_json::to_value(&r)?)
            }
            Scenario::Streams => {
                let r = streams::streams(bench, config.streams).await?;
                (streams::streams_checks(&r), serde_json::to_value(&r)?)
            }
        };
        let name = scenario
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_else(|| format!("{scenario:?}"));
        publish(
            &config.results_dir,
            &name,
            machine,
            &bench.limits,
            &checks,
            &measured,
        )?;
    }
    Ok(())
}
