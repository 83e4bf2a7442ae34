//! The worker's clock, and the estimate of its offset from the cluster.

use std::collections::{HashMap, VecDeque};

/// Wall-clock time as this worker sees it (the system clock, shifted in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    shift_ms: i64,
}

impl Clock {
    /// The system clock shifted by `shift_ms` (0 outside tests).
    pub fn new(shift_ms: i64) -> Self {
        Self { shift_ms }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        distcron_core::now_ms() + self.shift_ms
    }
}

/// How long heartbeat samples count towards the offset estimate.
pub const SAMPLE_WINDOW_MS: i64 = 20_000;

/// Estimates this worker's clock offset from the heartbeat timestamps of its peers.
///
/// A peer's heartbeat carries its clock at the moment it was written; seen here at local time
/// `local`, `peer_time - local` is the two clocks' difference minus how long the heartbeat took to
/// arrive (the write and the watch). Delivery delay only ever makes that difference smaller, so of
/// a peer's samples in the last [`SAMPLE_WINDOW_MS`] the largest is the one least delayed (the
/// minimum-delay filter of NTP). Under steady load every heartbeat arrives late alike, this
/// worker's own included (written and read back through the same etcd and the same watch), so the
/// smallest delay of its own heartbeats in the window is added back. A burst of heartbeats held
/// back by an etcd stall (all of them seconds late at once) therefore moves neither figure.
///
/// The estimate is minus the median of the peers' differences, this worker's own zero included,
/// so with three or more workers one skewed worker is outvoted. With fewer than two peers nobody
/// can tell which clock is wrong, and [`OffsetEstimator::judgeable`] is false.
#[derive(Debug, Default)]
pub struct OffsetEstimator {
    /// Per peer: (local time seen, `peer_time - local`).
    samples: HashMap<String, VecDeque<(i64, i64)>>,
    /// This worker's own heartbeats: (local time seen, delivery delay).
    own: VecDeque<(i64, i64)>,
}

/// Drops the samples seen before the window that ends at `now_ms`.
fn prune(samples: &mut VecDeque<(i64, i64)>, now_ms: i64) {
    while samples
        .front()
        .is_some_and(|(seen, _)| *seen < now_ms - SAMPLE_WINDOW_MS)
    {
        samples.pop_front();
    }
}

impl OffsetEstimator {
    /// Records this worker's own heartbeat time `sent_ms`, seen back at local time `local_ms`.
    pub fn observe_own(&mut self, sent_ms: i64, local_ms: i64) {
        self.own.push_back((local_ms, (local_ms - sent_ms).max(0)));
        prune(&mut self.own, local_ms);
        for samples in self.samples.values_mut() {
            prune(samples, local_ms);
        }
        self.samples.retain(|_, s| !s.is_empty());
    }

    /// How late this worker's own last heartbeat came back through the watch.
    pub fn delivery_delay(&self) -> std::time::Duration {
        let last = self.own.back().map_or(0, |(_, d)| *d);
        std::time::Duration::from_millis(last.unsigned_abs())
    }

    fn min_own_delay_ms(&self) -> i64 {
        self.own.iter().map(|(_, d)| *d).min().unwrap_or(0)
    }

    /// Records a peer's heartbeat time `peer_ms`, seen at local time `local_ms`.
    pub fn observe(&mut self, peer: &str, peer_ms: i64, local_ms: i64) {
        let samples = self.samples.entry(peer.to_owned()).or_default();
        samples.push_back((local_ms, peer_ms - local_ms));
        prune(samples, local_ms);
    }

    /// Forgets a peer that left.
    pub fn forget(&mut self, peer: &str) {
        self.samples.remove(peer);
    }

    /// Forgets every sample (taken before this worker's clock stepped): the offset is judged
    /// again from fresh heartbeats.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.own.clear();
    }

    /// Whether there are enough peers to tell whose clock is off.
    pub fn judgeable(&self) -> bool {
        self.samples.len() >= 2
    }

    /// This worker's estimated offset from the cluster, ms (positive: ahead).
    pub fn offset_ms(&self) -> i64 {
        let delay = self.min_own_delay_ms();
        let mut all: Vec<i64> = self
            .samples
            .values()
            .filter_map(|s| s.iter().map(|(_, d)| *d).max())
            .map(|d| d + delay)
            .chain(std::iter::once(0))
            .collect();
        all.sort_unstable();
        let n = all.len();
        let median = if n % 2 == 1 {
            all[n / 2]
        } else {
            (all[n / 2 - 1] + all[n / 2]) / 2
        };
        -median
    }
}

/// Smallest jump of the wall clock against the monotonic clock taken for a step (NTP step, VM
/// resume, an operator's `date -s`), on top of [`SLEW_ALLOWANCE`] of the time between checks.
pub const STEP_THRESHOLD_MS: i64 = 200;
/// How much the wall clock may drift from the monotonic clock per millisecond between checks
/// without counting as a step: NTP slews at most 500 ppm.
const SLEW_ALLOWANCE: f64 = 0.001;

/// Detects steps of the wall clock by comparing it with the monotonic clock at each check.
#[derive(Debug)]
pub struct StepDetector {
    mono: std::time::Instant,
    wall_ms: i64,
}

impl StepDetector {
    /// Anchored at `wall_ms`, now.
    pub fn new(wall_ms: i64) -> Self {
        Self {
            mono: std::time::Instant::now(),
            wall_ms,
        }
    }

    /// Compares the wall clock `wall_ms`, read now, with the monotonic clock since the last
    /// check; returns the step (ms, positive: the wall clock jumped ahead) if there was one.
    pub fn check(&mut self, wall_ms: i64) -> Option<i64> {
        let now = std::time::Instant::now();
        let elapsed = i64::try_from(now.duration_since(self.mono).as_millis()).unwrap_or(i64::MAX);
        let step = self.step(elapsed, wall_ms);
        self.mono = now;
        self.wall_ms = wall_ms;
        step
    }

    /// The step seen when the monotonic clock advanced `elapsed_ms` and the wall clock reads
    /// `wall_ms`, if it is one.
    fn step(&self, elapsed_ms: i64, wall_ms: i64) -> Option<i64> {
        let drift = (wall_ms - self.wall_ms) - elapsed_ms;
        let allowed = STEP_THRESHOLD_MS + (elapsed_ms as f64 * SLEW_ALLOWANCE) as i64;
        (drift.abs() > allowed).then_some(drift)
    }
}

/// How often a worker that does not claim says so again in its log, while it lasts.
const REFUSAL_LOG_EVERY_MS: i64 = 60_000;

/// Why a worker does not claim slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Its clock offset against its peers is not measured yet.
    Measuring,
    /// Its clock offset is beyond the bound.
    BeyondBound,
    /// Its wall clock stepped; the offset is being measured again.
    Stepped,
}

/// Why this worker does not claim (shown in its registration), and when it last said so in its
/// log: at once when the reason starts or changes (at start-up too), then every minute while it
/// lasts.
#[derive(Debug, Default)]
pub struct Refusal {
    /// The reason; empty while claiming.
    pub reason: String,
    kind: Option<RefusalKind>,
    logged_at_ms: i64,
}

impl Refusal {
    /// Records the current judgement at `now_ms`; returns whether to log it.
    pub fn update(&mut self, kind: Option<RefusalKind>, reason: String, now_ms: i64) -> bool {
        let log = kind.is_some()
            && (kind != self.kind || now_ms - self.logged_at_ms >= REFUSAL_LOG_EVERY_MS);
        if log {
            self.logged_at_ms = now_ms;
        }
        self.kind = kind;
        self.reason = reason;
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_worker_is_outvoted() {
        // Worker "me" is 800 ms ahead of two correct peers.
        let mut me = OffsetEstimator::default();
        me.observe("a", 10_000, 10_801);
        me.observe("b", 10_000, 10_802);
        assert!(me.judgeable());
        assert!((799..=802).contains(&me.offset_ms()), "{}", me.offset_ms());
        // A correct worker sees one skewed peer and one correct one: it stays near zero.
        let mut ok = OffsetEstimator::default();
        ok.observe("skewed", 10_800, 10_001);
        ok.observe("b", 10_000, 10_001);
        assert!(ok.offset_ms().abs() <= 1, "{}", ok.offset_ms());
        // Under load every heartbeat arrives ~900 ms late, this worker's own alike: that is
        // delivery delay, not skew.
        let mut loaded = OffsetEstimator::default();
        loaded.observe_own(10_000, 10_905);
        loaded.observe("a", 10_100, 11_002);
        loaded.observe("b", 10_200, 11_098);
        assert!(loaded.offset_ms().abs() <= 5, "{}", loaded.offset_ms());
        let mut alone = OffsetEstimator::default();
        alone.observe("x", 0, 5_000);
        assert!(!alone.judgeable());
        alone.forget("x");
        assert_eq!(alone.offset_ms(), 0);
    }

    #[test]
    fn heartbeats_held_back_by_a_stall_do_not_move_the_estimate() {
        let mut me = OffsetEstimator::default();
        // Steady: every heartbeat 20 ms late, this worker's own alike.
        for t in (0..10_000).step_by(2_000) {
            me.observe_own(t, t + 20);
            me.observe("a", t + 5, t + 25);
            me.observe("b", t + 10, t + 30);
        }
        assert!(me.offset_ms().abs() <= 10, "{}", me.offset_ms());
        // etcd stalls 10 s: the heartbeats written meanwhile all arrive at once when it resumes.
        let resumed = 20_000;
        for t in (10_000..resumed).step_by(2_000) {
            me.observe_own(t, resumed);
            me.observe("a", t, resumed + 1);
            me.observe("b", t, resumed + 2);
        }
        assert!(me.offset_ms().abs() <= 10, "{}", me.offset_ms());
        // Samples older than the window stop counting: a peer whose clock stepped back 3 s (and
        // the other peer agreeing) moves the estimate once the old samples have aged out.
        for t in (resumed..resumed + SAMPLE_WINDOW_MS + 4_000).step_by(2_000) {
            me.observe_own(t, t + 20);
            me.observe("a", t - 3_000, t + 20);
            me.observe("b", t - 3_000, t + 20);
        }
        assert!(
            (2_990..=3_010).contains(&me.offset_ms()),
            "{}",
            me.offset_ms()
        );
    }

    #[test]
    fn a_refusal_is_logged_when_it_starts_or_changes_and_every_minute_while_it_lasts() {
        let mut r = Refusal::default();
        assert!(r.update(Some(RefusalKind::Measuring), "measuring".into(), 0));
        assert!(!r.update(Some(RefusalKind::Measuring), "measuring".into(), 2_000));
        assert!(r.update(
            Some(RefusalKind::BeyondBound),
            "offset 900 ms".into(),
            4_000
        ));
        assert_eq!(r.reason, "offset 900 ms");
        assert!(!r.update(
            Some(RefusalKind::BeyondBound),
            "offset 910 ms".into(),
            63_000
        ));
        assert!(r.update(
            Some(RefusalKind::BeyondBound),
            "offset 920 ms".into(),
            64_000
        ));
        assert!(!r.update(None, String::new(), 66_000));
        assert!(r.reason.is_empty());
        // Beyond the bound from the start: said at once.
        let mut fresh = Refusal::default();
        assert!(fresh.update(Some(RefusalKind::BeyondBound), "offset".into(), 1_000));
    }

    #[test]
    fn a_wall_clock_jump_against_the_monotonic_clock_is_a_step_a_slew_is_not() {
        let d = StepDetector {
            mono: std::time::Instant::now(),
            wall_ms: 1_000_000,
        };
        assert_eq!(d.step(2_000, 1_002_000), None, "in step");
        assert_eq!(d.step(2_000, 1_004_000), Some(2_000), "stepped ahead 2 s");
        assert_eq!(d.step(2_000, 1_000_000), Some(-2_000), "stepped back 2 s");
        assert_eq!(d.step(2_000, 1_002_150), None, "150 ms is jitter");
        // An hour between checks: NTP's slew (up to 1.8 s/h) is no step.
        assert_eq!(d.step(3_600_000, 1_000_000 + 3_600_000 + 1_500), None);
    }
}
