//! distcron's worker: stateless apart from its log spool. It follows the cluster state in etcd,
//! schedules every job with a min-heap of fire times, claims each slot exactly once through the
//! slot ledger, runs the command in its own process group, and ships the run's events to logsvc.
//!
//! Tasks (all stopped on shutdown): the cluster follower ([`view`]), the scheduler
//! ([`scheduler`]), the claim batcher ([`claims`]), the session keeper ([`session`]), the
//! releaser ([`release`]), the log shipper ([`shipper`]), and one task per run ([`runner`]);
//! short tasks record the undelivered runs of gone workers ([`undelivered`]).

mod abandoned;
mod claims;
mod clock;
mod config;
mod ctx;
mod data_dir;
mod deleted_jobs;
mod exec;
mod fire;
pub mod leader;
mod mask;
mod passed_over;
mod release;
mod rendezvous;
mod runner;
mod scheduler;
mod session;
mod shipper;
mod undelivered;
mod view;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use distcron_core::Keys;
use distcron_discovery::{balanced_channel, Endpoints};
use distcron_kv::{backoff, KvStore};
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, OffsetEstimator};
pub use config::WorkerConfig;
pub use exec::{execute, Ending, ExecSpec, ProcessRecords};
pub use runner::OutputChunker;
pub use scheduler::{Due, Plan, Upserted};
pub use shipper::{CallMetadata, Shipper, ShipperConfig};

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The data directory could not be prepared or is in use by another worker.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The worker's own executable (the runs' group leader) cannot be found.
    #[error("cannot find the worker executable to lead run process groups: {0}")]
    Executable(String),
    /// logsvc discovery failed.
    #[error(transparent)]
    Discovery(#[from] distcron_discovery::DiscoveryError),
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
    let (release_tx, release_rx) = mpsc::channel(4096);
    let (acks_tx, acks_rx) = mpsc::channel(256);
    let shipper = Shipper::start(
        ShipperConfig {
            dir: config.data_dir.join("spool"),
            max_bytes: config.spool_max_bytes,
            batch_events: config.log_batch_events,
            batch_delay: config.log_batch_delay,
            flush_timeout: Duration::from_secs(5),
        },
        client,
        acks_tx,
    )
    .map_err(|e| data_dir::error(&config.data_dir.join("spool"), &e))?;
    let (jobs_tx, jobs_rx) = mpsc::channel(1024);
    let (claims_tx, claims_rx) = mpsc::channel(4096);
    let id = config
        .worker_id
        .clone()
        .unwrap_or_else(distcron_discovery::default_instance_id);
    let clock = Clock::new(config.test_clock_offset_ms);
    let ctx = Arc::new(ctx::Ctx {
        id: id.clone(),
        keys,
        store,
        clock,
        started_at_ms: clock.now_ms(),
        settings: ctx::Settings {
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
            output_cap_bytes: config.output_cap_bytes,
            start_hold: config.log_start_hold,
            session_ttl: config.session_ttl,
            labels: config.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            max_claim_txns_in_flight: config.max_claim_txns_in_flight as usize,
            allowed_users: config.allowed_users.clone(),
        },
        session: AtomicI64::new(0),
        view: RwLock::new(ctx::View::default()),
        runs: Mutex::new(Default::default()),
        waiting: Mutex::new(Default::default()),
        abandoned: Default::default(),
        ending: Mutex::new(Default::default()),
        places: Arc::new(tokio::sync::Semaphore::new(config.capacity as usize)),
        events: shipper.sender(),
        release: release_tx,
        clock_ok: AtomicBool::new(false),
        status_reason: Mutex::new(crate::clock::Refusal::default()),
        offset: Mutex::new(OffsetEstimator::default()),
        clock_steps: Mutex::new(clock::StepDetector::new(clock.now_ms())),
        claim_latency: ctx::ClaimLatency::default(),
        processes,
        stop_claiming: CancellationToken::new(),
        run_tasks: TaskTracker::new(),
        claim_gates: Mutex::new(Default::default()),
        claims: claims_tx,
    });
    // Load the cluster state first, so the first registration knows its peers.
    let (installed_tx, installed_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(view::follow(
        ctx.clone(),
        jobs_tx,
        installed_tx,
        ctx.stop_claiming.clone(),
    ));
    tokio::select! {
        _ = installed_rx => {}
        () = shutdown.cancelled() => {}
    }
    let mut attempt = 0;
    while let Err(e) = session::open(&ctx).await {
        attempt += 1;
        tracing::warn!(error = %e, attempt, "cannot open a session in etcd; retrying");
        tokio::select! {
            () = shutdown.cancelled() => {
                ctx.stop_claiming.cancel();
                let _ = follower.await;
                shipper.finish().await;
                return Ok(());
            }
            () = tokio::time::sleep(backoff(attempt, Duration::from_secs(2))) => {}
        }
    }
    tracing::info!(worker = %id, capacity = config.capacity, "worker started");
    let session_stop = CancellationToken::new();
    let release_close = CancellationToken::new();
    let scheduler = tokio::spawn(scheduler::schedule(
        ctx.clone(),
        jobs_rx,
        ctx.stop_claiming.clone(),
    ));
    let claimer = tokio::spawn(claims::batch(
        ctx.clone(),
        claims_rx,
        ctx.stop_claiming.clone(),
    ));
    let keeper = tokio::spawn(session::keep(ctx.clone(), session_stop.clone()));
    let releaser = tokio::spawn(release::release(
        ctx.clone(),
        release_rx,
        acks_rx,
        release_close.clone(),
    ));
    undelivered::spawn_recovery(ctx.clone());
    deleted_jobs::spawn_settle(ctx.clone());

    shutdown.cancelled().await;
    tracing::info!(
        running = ctx.running_count(),
        "stopping: no new claims; draining runs"
    );
    ctx.stop_claiming.cancel();
    let _ = follower.await;
    let _ = scheduler.await;
    let _ = claimer.await;
    ctx.run_tasks.close();
    if tokio::time::timeout(config.drain_timeout, ctx.run_tasks.wait())
        .await
        .is_err()
    {
        let n = ctx.stop_runs("worker shutting down", |_, _| true);
        tracing::warn!(
            runs = n,
            "drain timeout reached; killing the remaining runs"
        );
        let _ = tokio::time::timeout(
            config.kill_grace + Duration::from_secs(5),
            ctx.run_tasks.wait(),
        )
        .await;
    }
    // The releaser follows the shipper's last acknowledgements, then deletes the markers they
    // allow.
    release_close.cancel();
    shipper.finish().await;
    let _ = releaser.await;
    session_stop.cancel();
    let _ = keeper.await;
    if let Err(e) = ctx.store.revoke_lease(ctx.session()).await {
        tracing::warn!(error = %e, "could not revoke the session; it will expire");
    }
    background.cancel();
    tracing::info!(worker = %id, "worker stopped");
    Ok(())
}
