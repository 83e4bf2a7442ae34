//! State shared by the worker's tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use distcron_core::records::{RunningRecord, TriggerRequest, WorkerRegistration};
use distcron_core::{JobDefinition, Keys};
use distcron_kv::{KvStore, LeaseId};
use distcron_proto::logs::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, OffsetEstimator, RefusalKind, StepDetector};
use crate::exec::{ProcessRecords, StopReason};
use crate::shipper::Shipment;

/// Fixed settings of this worker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most runs at once.
    pub capacity: u32,
    /// Standby before a non-preferred worker claims.
    pub claim_standby: Duration,
    /// How long before its slot a slot is claimed.
    pub claim_lead: Duration,
    /// Largest tolerated clock offset.
    pub clock_skew_bound: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// The executable started as each run's group leader (this worker's own).
    pub group_leader: std::path::PathBuf,
    /// The shell.
    pub shell: std::path::PathBuf,
    /// Output shipped per run at most.
    pub output_cap_bytes: usize,
    /// How long a run's start (and output) waits to be shipped with its end.
    pub start_hold: Duration,
    /// Session lease TTL.
    pub session_ttl: Duration,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Most claim transactions in flight at once.
    pub max_claim_txns_in_flight: usize,
    /// Users other than its own that runs may run as (`*`: any).
    pub allowed_users: Vec<String>,
}

/// The most a measured delay (claim duration, watch delivery) adds to a standby.
const MAX_MEASURED_DELAY: Duration = Duration::from_secs(10);

/// A moving average (weight 1/8 per sample) of how long claim transactions take on this worker.
#[derive(Debug, Default)]
pub struct ClaimLatency {
    micros: AtomicU64,
}

impl ClaimLatency {
    /// Adds one claim's duration.
    pub fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(if avg == 0 {
                    sample
                } else {
                    avg - avg / 8 + sample / 8
                })
            });
    }

    /// The current average.
    pub fn average(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// A run in progress on this worker.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// The job.
    pub job: String,
    /// When it was claimed, ms.
    pub claimed_at_ms: i64,
    /// Cancelled to end the run.
    pub stop: CancellationToken,
    /// Why it was ended.
    pub reason: StopReason,
}

impl LocalRun {
    /// A run of `record` not ended yet.
    pub fn of(record: &RunningRecord) -> Self {
        Self {
            job: record.job_name.clone(),
            claimed_at_ms: record.claimed_at_ms,
            stop: CancellationToken::new(),
            reason: StopReason::default(),
        }
    }
}

/// What this worker knows of the cluster, from its watch of the whole key prefix.
#[derive(Debug, Default)]
pub struct View {
    /// Job definitions and their revisions (undecodable ones left out).
    pub jobs: HashMap<String, (Arc<JobDefinition>, i64)>,
    /// Live workers.
    pub workers: BTreeMap<String, WorkerRegistration>,
    /// Last claimed slot per job.
    pub ledger: HashMap<String, i64>,
    /// Runs in progress cluster-wide, by run id.
    pub running: HashMap<String, RunningRecord>,
    /// Manual triggers not yet claimed, by run id: (job, request).
    pub triggers: HashMap<String, (String, TriggerRequest)>,
}

/// Everything the worker's tasks share.
pub struct Ctx {
    /// This worker's id.
    pub id: String,
    /// Key layout.
    pub keys: Keys,
    /// The store.
    pub store: Arc<dyn KvStore>,
    /// This worker's clock.
    pub clock: Clock,
    /// When this incarnation started, ms (in its registration; it begins its marker names).
    pub started_at_ms: i64,
    /// Settings.
    pub settings: Settings,
    /// The current session lease.
    pub session: AtomicI64,
    /// The cluster as watched.
    pub view: RwLock<View>,
    /// Runs in progress here, by run id.
    pub runs: Mutex<HashMap<String, LocalRun>>,
    /// Runs claimed here that wait for a place (the last worker in line had none), by run id.
    pub waiting: Mutex<HashMap<String, LocalRun>>,
    /// Runs that ended here and whose running records wait for the releaser, by run id.
    pub ending: Mutex<HashSet<String>>,
    /// Claims given up on while an attempt may still apply ([`crate::abandoned`]).
    pub abandoned: crate::abandoned::Abandoned,
    /// Run events to ship.
    pub events: mpsc::Sender<Shipment>,
    /// Ended runs whose running records are to be released ([`crate::release`]).
    pub release: mpsc::Sender<crate::release::Release>,
    /// Whether the clock is within bounds.
    pub clock_ok: AtomicBool,
    /// Why not claiming, if not.
    pub status_reason: Mutex<crate::clock::Refusal>,
    /// The clock offset estimate.
    pub offset: Mutex<OffsetEstimator>,
    /// Watches the wall clock for steps ([`Ctx::check_clock`]).
    pub clock_steps: Mutex<StepDetector>,
    /// How long this worker's claim transactions take lately.
    pub claim_latency: ClaimLatency,
    /// Process-group records.
    pub processes: ProcessRecords,
    /// Cancelled when the worker stops taking work.
    pub stop_claiming: CancellationToken,
    /// Every run task, to wait for them at shutdown.
    pub run_tasks: TaskTracker,
    /// Per job, held while a slot of the job is being claimed (see [`Ctx::claim_gate`]).
    pub claim_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Slot claims to send, batched ([`crate::claims`]).
    pub claims: mpsc::Sender<crate::claims::ClaimRequest>,
    /// One permit per run this worker is claiming, has claimed or is running: `--capacity` in all.
    /// A won run holds its permit until it has ended; a run the last worker in line claimed
    /// without one waits for one (see [`Ctx::waiting`]).
    pub places: Arc<tokio::sync::Semaphore>,
}

/// Held while this worker claims a slot of one job; see [`Ctx::claim_gate`].
pub struct ClaimGate<'a> {
    ctx: &'a Ctx,
    job: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ClaimGate<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut gates) = self.ctx.claim_gates.lock() {
            // Only the map still holds it: nobody waits; forget the job's gate.
            if gates
                .get(&self.job)
                .is_some_and(|g| Arc::strong_count(g) == 1)
            {
                gates.remove(&self.job);
            }
        }
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("id", &self.id).finish()
    }
}

impl Ctx {
    /// The current session lease.
    pub fn session(&self) -> LeaseId {
        self.session.load(Ordering::Relaxed)
    }

    /// Checks the wall clock for a step (against the monotonic clock). After one, this worker
    /// stops claiming at once and forgets its offset samples, so it claims again only once its
    /// offset is judged from fresh heartbeats (by the session's next registration). Called on
    /// every scheduler wake-up and session tick.
    pub fn check_clock(&self) {
        let wall = self.clock.now_ms();
        let Some(step) = self.clock_steps.lock().ok().and_then(|mut d| d.check(wall)) else {
            return;
        };
        self.clock_ok.store(false, Ordering::Relaxed);
        if let Ok(mut o) = self.offset.lock() {
            o.reset();
        }
        let reason = format!(
            "the wall clock stepped by {step} ms; not claiming until the offset is measured again"
        );
        if let Ok(mut r) = self.status_reason.lock() {
            r.update(Some(RefusalKind::Stepped), reason.clone(), wall);
        }
        tracing::error!(step_ms = step, %reason, "wall clock stepped");
    }

    /// Cluster time, ms: this worker's clock corrected by its estimated offset from its peers
    /// (when there are enough of them to judge), so a worker whose clock is off within the bound
    /// still fires slots when the others do, not early or late.
    pub fn cluster_now_ms(&self) -> i64 {
        let offset = self
            .offset
            .lock()
            .ok()
            .filter(|o| o.judgeable())
            .map_or(0, |o| o.offset_ms());
        self.clock.now_ms() - offset
    }

    /// How long a worker of `rank` (0 = preferred) for a slot waits before claiming it: per rank
    /// (at most 2), `--claim-standby` plus what the preferred worker's claim takes to show up
    /// here under the current load (a claim's duration and the watch's delivery delay), so
    /// stand-by workers do not pile onto a slot that a busy cluster is still claiming.
    pub fn standby(&self, rank: usize) -> Duration {
        self.standby_step() * u32::try_from(rank.min(2)).unwrap_or(2)
    }

    /// How long a worker of `rank` that has no place for a slot, and is not the last in line,
    /// waits before claiming it all the same if nobody has: one [`standby_step`] after the last
    /// in line would have claimed it (that worker may be gone, its session not yet expired),
    /// plus one per rank, so such backups do not claim together.
    ///
    /// [`standby_step`]: Self::standby_step
    pub fn backup_standby(&self, rank: usize) -> Duration {
        self.standby_step() * u32::try_from(rank.saturating_add(3)).unwrap_or(u32::MAX)
    }

    /// One rank's standby: `--claim-standby` plus what a claim takes to show up here under the
    /// current load.
    fn standby_step(&self) -> Duration {
        let delivery = self
            .offset
            .lock()
            .map_or(Duration::ZERO, |o| o.delivery_delay());
        self.settings.claim_standby
            + self.claim_latency.average().min(MAX_MEASURED_DELAY)
            + delivery.min(MAX_MEASURED_DELAY)
    }

    /// Whether this worker claims slots now.
    pub fn is_claiming(&self) -> bool {
        !self.stop_claiming.is_cancelled()
            && self.clock_ok.load(Ordering::Relaxed)
            && self.session() != 0
    }

    /// Runs in progress here.
    pub fn running_count(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// This worker's rank for `key` among the live workers that claim (0 = preferred).
    pub fn rank(&self, key: &str) -> usize {
        self.place(key).0
    }

    /// This worker's rank for `key` among the live workers that claim, and how many they are
    /// (this one included when it claims).
    pub fn place(&self, key: &str) -> (usize, usize) {
        let view = match self.view.read() {
            Ok(v) => v,
            Err(_) => return (0, 1),
        };
        let mut ids: Vec<&str> = view
            .workers
            .values()
            .filter(|w| w.claiming)
            .map(|w| w.worker_id.as_str())
            .collect();
        if self.is_claiming() && !ids.contains(&self.id.as_str()) {
            ids.push(&self.id);
        }
        let of = ids.len();
        (crate::rendezvous::rank(&self.id, ids, key), of)
    }

    /// Waits until no earlier claim of `job` is in progress on this worker, and holds off later
    /// ones until the returned gate is dropped. The slot ledger only moves forward, so a claim of
    /// slot T still being retried (etcd failing over) must settle before slot T+1 is claimed, or
    /// T would be lost to T+1.
    pub async fn claim_gate(&self, job: &str) -> ClaimGate<'_> {
        let gate = self.claim_gates.lock().ok().map(|mut gates| {
            gates
                .entry(job.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        });
        let guard = match gate {
            Some(gate) => Some(gate.lock_owned().await),
            None => None,
        };
        ClaimGate {
            ctx: self,
            job: job.to_owned(),
            guard,
        }
    }

    /// The last claimed slot of `job`, if the ledger has one.
    pub fn ledger_of(&self, job: &str) -> Option<i64> {
        self.view
            .read()
            .ok()
            .and_then(|v| v.ledger.get(job).copied())
    }

    /// Ends the local runs `matches` selects, those running and those waiting for a place,
    /// giving `reason`. Returns how many.
    pub fn stop_runs(&self, reason: &str, matches: impl Fn(&str, &LocalRun) -> bool) -> usize {
        let mut n = 0;
        for map in [&self.runs, &self.waiting] {
            let Ok(runs) = map.lock() else { continue };
            for (run_id, run) in runs.iter() {
                if matches(run_id, run) {
                    run.reason.set(reason);
                    run.stop.cancel();
                    n += 1;
                }
            }
        }
        n
    }

    /// Queues the running record of an ended run, whose end was shipped, for release.
    pub async fn release_record(&self, record: RunningRecord) {
        if let Ok(mut ending) = self.ending.lock() {
            ending.insert(record.run_id.clone());
        }
        if self
            .release
            .send(crate::release::Release::Ended(record))
            .await
            .is_err()
        {
            tracing::warn!("releaser is gone; the running record stays until the session ends");
        }
    }

    /// Queues an event for logsvc (waits while the shipper is busy).
    pub async fn ship(&self, event: pb::RunEvent) {
        if self.events.send(Shipment::event(event)).await.is_err() {
            tracing::error!("log shipper is gone; run event lost");
        }
    }

    /// Queues a run's last event for logsvc and waits until it is on disk in the spool, so the
    /// run's running record is released only once its end survives a crash of this worker.
    pub async fn ship_durably(&self, event: pb::RunEvent) {
        let (shipment, spooled) = Shipment::durable(event);
        if self.events.send(shipment).await.is_err() {
            tracing::error!("log shipper is gone; run event lost");
            return;
        }
        // Dropped unanswered when the spool could not take the batch (counted and logged there).
        let _ = spooled.await;
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimLatency;
    use std::time::Duration;

    #[test]
    fn claim_latency_follows_the_recent_claims() {
        let latency = ClaimLatency::default();
        assert_eq!(latency.average(), Duration::ZERO);
        latency.observe(Duration::from_millis(8));
        assert_eq!(latency.average(), Duration::from_millis(8));
        for _ in 0..40 {
            latency.observe(Duration::from_millis(600));
        }
        let loaded = latency.average();
        assert!(loaded > Duration::from_millis(590), "{loaded:?}");
        for _ in 0..40 {
            latency.observe(Duration::from_millis(4));
        }
        assert!(latency.average() < Duration::from_millis(10));
    }
}
