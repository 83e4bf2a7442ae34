//! distcron's worker: stateless apart from its log spool. It follows the cluster state in etcd,
//! schedules every job with a min-heap of fire times, claims each slot exactly once through the
//! slot ledger, runs the command in its own process group, and ships the run's events to logsvc.
//!
//! The rooms, by what they do:
//! - State, by owner ([`ctx`]): what the cluster looks like ([`cluster`]: the watched view, the
//!   session and clock judgement, rendezvous rank), what runs here ([`local`]: runs, places,
//!   process groups, claim gates), and what goes out ([`outbox`]: the claim batcher, the log
//!   shipper and its spool, the queue to the releaser).
//! - Tasks (all stopped on shutdown): the cluster follower ([`follow`]), the scheduler
//!   ([`scheduler`], over its [`plan`]), the claim batcher ([`outbox::claims`]), the session keeper
//!   ([`session`]), the releaser ([`release`]), the log shipper ([`outbox::shipper`]), and one task
//!   per run ([`execution`]).
//! - The fire path: a due slot is claimed ([`fire`]: the claim, places, the start of a won
//!   slot), manual triggers ([`triggers`]), missed slots at start ([`catch_up`]).
//! - Runs recorded without running here ([`unrun`]): lost, orphaned, invalid, skipped, passed
//!   over, deleted jobs' slots, and the undelivered runs of gone workers.

#![warn(clippy::too_many_lines)]

mod catch_up;
mod cluster;
mod config;
mod ctx;
mod data_dir;
mod error;
mod execution;
mod fire;
mod follow;
mod local;
mod outbox;
mod plan;
mod release;
mod scheduler;
mod session;
mod settings;
mod triggers;
mod unrun;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::Keys;
use distcron_discovery::{balanced_channel, Endpoints};
use distcron_kv::{retry_until, KvStore};
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::clock::Clock;
use crate::cluster::Cluster;
use crate::ctx::Ctx;
use crate::execution::exec::ProcessRecords;
use crate::local::Local;
use crate::outbox::claims::Batcher;
use crate::outbox::delivery::CallMetadata;
use crate::outbox::shipper::{Shipper, ShipperConfig};
use crate::outbox::{Outbox, Release};
use crate::settings::Settings;

pub use config::WorkerConfig;
pub use error::WorkerError;
pub use execution::leader;

/// The receiving ends of the queues the tasks started by [`run`] take.
struct Queues {
    jobs: mpsc::Receiver<plan::JobEvent>,
    jobs_tx: mpsc::Sender<plan::JobEvent>,
    claims: mpsc::Receiver<outbox::claims::ClaimRequest>,
    releases: mpsc::Receiver<Release>,
    acks: mpsc::Receiver<Vec<String>>,
}

/// Runs a worker until `shutdown` is cancelled, then drains: stops claiming, lets running runs
/// finish for up to the drain timeout, kills the rest, ships what is left (or leaves it spooled),
/// and revokes the session so the worker disappears at once. `logsvc_tls` is the TLS of its
/// calls to logsvc (`None`: plaintext).
pub async fn run(
    config: WorkerConfig,
    store: Arc<dyn KvStore>,
    keys: Keys,
    logsvc: Endpoints,
    logsvc_tls: Option<distcron_tls::ClientTls>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let _lock = data_dir::lock(&config.data_dir)?;
    let processes = ProcessRecords::open(&config.data_dir)
        .map_err(|e| data_dir::error(&config.data_dir, &e))?;
    let reaped = processes.reap_leftovers();
    if !reaped.is_empty() {
        tracing::warn!(runs = ?reaped, "killed process groups left by a previous incarnation");
    }
    let background = CancellationToken::new();
    let channel = balanced_channel(logsvc, logsvc_tls, background.clone()).await?;
    let credentials = distcron_discovery::BearerToken::new(config.token.as_deref())?;
    let client = LogServiceClient::with_interceptor(channel, CallMetadata(credentials));
    let (acks_tx, acks_rx) = mpsc::channel(256);
    let id = config
        .worker_id
        .clone()
        .unwrap_or_else(distcron_discovery::default_instance_id);
    let spooled = spooled_at_start(&config, &id).await?;
    let shipper = Shipper::start(shipper_config(&config), client, acks_tx)
        .map_err(|e| data_dir::error(&config.data_dir.join("spool"), &e))?;
    let (ctx, queues) = context(&config, id, store, keys, processes, &shipper, acks_rx)?;
    // Load the cluster state first, so the first registration knows its peers.
    let (installed_tx, installed_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(follow::follow(
        ctx.clone(),
        queues.jobs_tx.clone(),
        installed_tx,
        ctx.cluster.stop_claiming.clone(),
    ));
    tokio::select! {
        _ = installed_rx => {}
        () = shutdown.cancelled() => {}
    }
    if !open_session(&ctx, &shutdown).await
        || !unrun::spooled::mark_spooled(&ctx, spooled, &shutdown).await
    {
        ctx.cluster.stop_claiming.cancel();
        let _ = follower.await;
        shipper.finish().await;
        return Ok(());
    }
    shipper.open_delivery();
    tracing::info!(worker = %ctx.id, capacity = config.capacity, "worker started");
    let tasks = Tasks::start(&ctx, queues, follower);
    shutdown.cancelled().await;
    tasks.drain(&ctx, &config, shipper).await;
    background.cancel();
    tracing::info!(worker = %ctx.id, "worker stopped");
    Ok(())
}

/// The runs that earlier incarnations of worker `id` left in the spool, read before the shipper
/// opens it ([`unrun::spooled`]).
async fn spooled_at_start(
    config: &WorkerConfig,
    id: &str,
) -> Result<unrun::spooled::Spooled, WorkerError> {
    let dir = config.data_dir.join("spool");
    let (max_bytes, worker) = (config.spool_max_bytes, id.to_owned());
    let read = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || unrun::spooled::spooled_runs(&dir, max_bytes, &worker))
    };
    match read.await {
        Ok(result) => result.map_err(|e| data_dir::error(&dir, &e)),
        Err(e) => Err(data_dir::error(&dir, &std::io::Error::other(e.to_string()))),
    }
}

/// How the shipper batches and spools, from the worker's configuration.
fn shipper_config(config: &WorkerConfig) -> ShipperConfig {
    ShipperConfig {
        dir: config.data_dir.join("spool"),
        max_bytes: config.spool_max_bytes,
        batch_events: config.log_batch_events,
        batch_delay: config.log_batch_delay,
        flush_timeout: Duration::from_secs(5),
    }
}

/// The shared state of worker `id` configured by `config`, and the queues its tasks take.
fn context(
    config: &WorkerConfig,
    id: String,
    store: Arc<dyn KvStore>,
    keys: Keys,
    processes: ProcessRecords,
    shipper: &Shipper,
    acks: mpsc::Receiver<Vec<String>>,
) -> Result<(Arc<Ctx>, Queues), WorkerError> {
    let (jobs_tx, jobs) = mpsc::channel(1024);
    let (claims_tx, claims) = mpsc::channel(4096);
    let (releases_tx, releases) = mpsc::channel(4096);
    let clock = Clock::new(config.test_clock_offset_ms);
    let settings = settings(config)?;
    let ctx = Arc::new(Ctx {
        cluster: Cluster::new(&id, clock, settings.claim_standby),
        local: Local::new(config.capacity, processes),
        out: Outbox {
            events: shipper.sender(),
            releases: releases_tx,
            claims: claims_tx,
        },
        id,
        keys,
        store,
        clock,
        started_at_ms: clock.now_ms(),
        settings,
    });
    let queues = Queues {
        jobs,
        jobs_tx,
        claims,
        releases,
        acks,
    };
    Ok((ctx, queues))
}

/// The fixed settings of a worker configured by `config`.
fn settings(config: &WorkerConfig) -> Result<Settings, WorkerError> {
    Ok(Settings {
        capacity: config.capacity,
        claim_standby: config.claim_standby,
        claim_lead: config.claim_lead,
        clock_skew_bound: config.clock_skew_bound,
        kill_grace: config.kill_grace,
        group_leader: match &config.group_leader {
            Some(path) => path.clone(),
            None => {
                leader::default_program().map_err(|e| WorkerError::Executable(e.to_string()))?
            }
        },
        shell: config.shell.clone(),
        output_cap_bytes: config.output_cap_bytes.bytes,
        start_hold: config.log_start_hold,
        session_ttl: config.session_ttl,
        labels: config.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        max_claim_txns_in_flight: config.max_claim_txns_in_flight as usize,
        allowed_users: config.allowed_users.clone(),
    })
}

/// Opens the first session, retrying while the store is unreachable; false if `shutdown` came
/// first.
async fn open_session(ctx: &Ctx, shutdown: &CancellationToken) -> bool {
    let what = "cannot open a session in etcd";
    retry_until(shutdown, Duration::from_secs(2), what, || {
        session::open(ctx)
    })
    .await
    .is_some()
}

/// The worker's long-running tasks, and how each is stopped.
struct Tasks {
    follower: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
    claimer: tokio::task::JoinHandle<()>,
    keeper: tokio::task::JoinHandle<()>,
    releaser: tokio::task::JoinHandle<()>,
    session_stop: CancellationToken,
    release_close: CancellationToken,
}

impl Tasks {
    /// Starts the tasks of a worker whose session is open (the follower runs already), and the
    /// recovery of what earlier incarnations and gone workers left.
    fn start(ctx: &Arc<Ctx>, queues: Queues, follower: tokio::task::JoinHandle<()>) -> Self {
        let stop = ctx.cluster.stop_claiming.clone();
        let session_stop = CancellationToken::new();
        let release_close = CancellationToken::new();
        let batcher = Batcher {
            store: ctx.store.clone(),
            keys: ctx.keys.clone(),
            latency: ctx.cluster.claim_latency.clone(),
            max_in_flight: ctx.settings.max_claim_txns_in_flight,
        };
        let tasks = Self {
            follower,
            scheduler: tokio::spawn(scheduler::schedule(ctx.clone(), queues.jobs, stop.clone())),
            claimer: tokio::spawn(outbox::claims::batch(batcher, queues.claims, stop)),
            keeper: tokio::spawn(session::keep(ctx.clone(), session_stop.clone())),
            releaser: tokio::spawn(release::release(
                ctx.clone(),
                queues.releases,
                queues.acks,
                release_close.clone(),
            )),
            session_stop,
            release_close,
        };
        unrun::undelivered::spawn_recovery(ctx.clone());
        unrun::deleted_jobs::spawn_settle(ctx.clone());
        tasks
    }

    /// Drains at shutdown: no new claims; running runs finish within the drain timeout (the rest
    /// are killed); the releaser follows the shipper's last acknowledgements, then deletes the
    /// markers they allow; the session is revoked.
    async fn drain(self, ctx: &Ctx, config: &WorkerConfig, shipper: Shipper) {
        tracing::info!(
            running = ctx.local.running_count(),
            "stopping: no new claims; draining runs"
        );
        ctx.cluster.stop_claiming.cancel();
        let _ = self.follower.await;
        let _ = self.scheduler.await;
        let _ = self.claimer.await;
        let runs = &ctx.local.run_tasks;
        runs.close();
        if tokio::time::timeout(config.drain_timeout, runs.wait())
            .await
            .is_err()
        {
            let n = ctx.local.stop_runs("worker shutting down", |_, _| true);
            tracing::warn!(
                runs = n,
                "drain timeout reached; killing the remaining runs"
            );
            let _ =
                tokio::time::timeout(config.kill_grace + Duration::from_secs(5), runs.wait()).await;
        }
        self.release_close.cancel();
        shipper.finish().await;
        let _ = self.releaser.await;
        self.session_stop.cancel();
        let _ = self.keeper.await;
        if let Err(e) = ctx.store.revoke_lease(ctx.cluster.session()).await {
            tracing::warn!(error = %e, "could not revoke the session; it will expire");
        }
    }
}
