//! Claim gates: per job, held while a slot of the job is being claimed here, so this worker's
//! claims of one job settle in slot order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The gates of the jobs being claimed here.
#[derive(Debug, Default)]
pub struct ClaimGates {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while this worker claims a slot of one job; see [`ClaimGates::enter`].
pub struct ClaimGate<'a> {
    gates: &'a ClaimGates,
    job: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ClaimGate<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut gates) = self.gates.gates.lock() {
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

impl ClaimGates {
    /// Waits until no earlier claim of `job` is in progress on this worker, and holds off later
    /// ones until the returned gate is dropped. The slot ledger only moves forward, so a claim of
    /// slot T still being retried (etcd failing over) must settle before slot T+1 is claimed, or
    /// T would be lost to T+1.
    pub async fn enter(&self, job: &str) -> ClaimGate<'_> {
        let gate = self.gates.lock().ok().map(|mut gates| {
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
            gates: self,
            job: job.to_owned(),
            guard,
        }
    }
}
