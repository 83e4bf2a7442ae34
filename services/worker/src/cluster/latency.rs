//! How long this worker's claim transactions take lately: the claim batcher measures it, the
//! standbys and the claim timeout follow it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
