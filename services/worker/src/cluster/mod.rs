//! What the cluster looks like from this worker: the watched state ([`view`]), this worker's
//! session and clock judgement ([`clock`]), and where it stands in line for a key
//! ([`rendezvous`]). The follower ([`crate::follow`]) and the session keeper
//! ([`crate::session`]) change it; everyone else reads it.

pub mod clock;
pub mod latency;
pub mod rendezvous;
pub mod view;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use distcron_kv::LeaseId;
use tokio_util::sync::CancellationToken;

use self::clock::{Clock, OffsetEstimator, Refusal, RefusalKind, StepDetector};
use self::latency::ClaimLatency;
use self::view::View;

/// The most a measured delay (claim duration, watch delivery) adds to a standby.
const MAX_MEASURED_DELAY: Duration = Duration::from_secs(10);

/// This worker's picture of the cluster and of its own standing in it.
#[derive(Debug)]
pub struct Cluster {
    /// This worker's id.
    me: String,
    /// This worker's clock.
    clock: Clock,
    /// `--claim-standby`.
    claim_standby: Duration,
    /// The cluster as watched (written by the follower).
    pub view: RwLock<View>,
    /// The current session lease, 0 between sessions (written by the session keeper).
    pub session: AtomicI64,
    /// Whether the clock is within bounds.
    pub clock_ok: AtomicBool,
    /// Why not claiming, if not.
    pub status_reason: Mutex<Refusal>,
    /// The clock offset estimate (fed by the follower from heartbeats).
    pub offset: Mutex<OffsetEstimator>,
    /// Watches the wall clock for steps ([`Cluster::check_clock`]).
    clock_steps: Mutex<StepDetector>,
    /// How long this worker's claim transactions take lately (measured by the claim batcher).
    pub claim_latency: Arc<ClaimLatency>,
    /// Cancelled when the worker stops taking work.
    pub stop_claiming: CancellationToken,
}

impl Cluster {
    /// The cluster as seen by worker `me` before its first listing: no session, clock not judged.
    pub fn new(me: &str, clock: Clock, claim_standby: Duration) -> Self {
        Self {
            me: me.to_owned(),
            clock,
            claim_standby,
            view: RwLock::new(View::default()),
            session: AtomicI64::new(0),
            clock_ok: AtomicBool::new(false),
            status_reason: Mutex::new(Refusal::default()),
            offset: Mutex::new(OffsetEstimator::default()),
            clock_steps: Mutex::new(StepDetector::new(clock.now_ms())),
            claim_latency: Arc::default(),
            stop_claiming: CancellationToken::new(),
        }
    }

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
    pub fn now_ms(&self) -> i64 {
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
        self.claim_standby
            + self.claim_latency.average().min(MAX_MEASURED_DELAY)
            + delivery.min(MAX_MEASURED_DELAY)
    }

    /// Whether this worker claims slots now.
    pub fn is_claiming(&self) -> bool {
        !self.stop_claiming.is_cancelled()
            && self.clock_ok.load(Ordering::Relaxed)
            && self.session() != 0
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
        if self.is_claiming() && !ids.contains(&self.me.as_str()) {
            ids.push(&self.me);
        }
        let of = ids.len();
        (rendezvous::rank(&self.me, ids, key), of)
    }

    /// The last claimed slot of `job`, if the ledger has one.
    pub fn ledger_of(&self, job: &str) -> Option<i64> {
        self.view
            .read()
            .ok()
            .and_then(|v| v.ledger.get(job).copied())
    }
}
