//! The worker's clock, and the estimate of its offset from the cluster.

use std::collections::HashMap;

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

/// Estimates this worker's clock offset from the heartbeat timestamps of its peers: each peer
/// sample is `peer_time - my_time` at arrival plus the delivery delay, which this worker measures
/// on its own heartbeats (written and read back through the same etcd and the same watch, so under
/// load the backlog that delays a peer's heartbeat delays its own alike). The estimate is minus the
/// median of the samples, this worker's own zero included, so with three or more workers one
/// skewed worker is outvoted. With fewer than two peers nobody can tell which clock is wrong, and
/// [`OffsetEstimator::judgeable`] is false.
#[derive(Debug, Default)]
pub struct OffsetEstimator {
    samples: HashMap<String, i64>,
    delivery_delay_ms: i64,
}

impl OffsetEstimator {
    /// Records this worker's own heartbeat time `sent_ms`, seen back at local time `local_ms`.
    pub fn observe_own(&mut self, sent_ms: i64, local_ms: i64) {
        self.delivery_delay_ms = (local_ms - sent_ms).max(0);
    }

    /// How late this worker's own last heartbeat came back through the watch.
    pub fn delivery_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.delivery_delay_ms.unsigned_abs())
    }

    /// Records a peer's heartbeat time `peer_ms`, seen at local time `local_ms`.
    pub fn observe(&mut self, peer: &str, peer_ms: i64, local_ms: i64) {
        self.samples
            .insert(peer.to_owned(), peer_ms - local_ms + self.delivery_delay_ms);
    }

    /// Forgets a peer that left.
    pub fn forget(&mut self, peer: &str) {
        self.samples.remove(peer);
    }

    /// Whether there are enough peers to tell whose clock is off.
    pub fn judgeable(&self) -> bool {
        self.samples.len() >= 2
    }

    /// This worker's estimated offset from the cluster, ms (positive: ahead).
    pub fn offset_ms(&self) -> i64 {
        let mut all: Vec<i64> = self
            .samples
            .values()
            .copied()
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
}
