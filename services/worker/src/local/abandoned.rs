//! Claims this worker gave up on while one of their attempts may still apply.
//!
//! A claim transaction that timed out (etcd stalled, a member dying, the connection reset) is not
//! known to have failed: etcd may hold it in a socket buffer or a queue and apply it seconds
//! later, after the worker has stopped retrying (its retry window over, its clock judged out of
//! bounds, its session lost). Such a claim moves the job's ledger to the slot and writes a
//! running record of this worker that nothing here runs, so without more the slot would end
//! with no record at all (its record held by a live session, released by nobody).
//!
//! One read after giving up cannot settle it: the late transaction may come after the read (on
//! another connection, or queued behind it). So the run id is kept here for [`KEEP_FOR`], and
//! the orphan sweep ([`crate::unrun::orphans::sweep_orphans`], every couple of seconds) records such a
//! record `lost` and releases it as soon as it shows up in the watched view, without the age an
//! orphan of unknown origin must reach first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long an abandoned claim is watched for: a transaction held back longer than this outlives
/// any session TTL, and its record goes with the session it was written under.
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// The run ids of abandoned claims, each with the local time until which it is watched for.
#[derive(Debug, Default)]
pub struct Abandoned {
    entries: Mutex<HashMap<String, i64>>,
}

impl Abandoned {
    /// Gives up on the claim of `run_id` at local time `now_ms`: watched for [`KEEP_FOR`].
    pub fn abandon(&self, run_id: &str, now_ms: i64) {
        let keep = i64::try_from(KEEP_FOR.as_millis()).unwrap_or(i64::MAX);
        tracing::debug!(run_id, "claim abandoned; watching whether it applies");
        self.insert(run_id, now_ms.saturating_add(keep), now_ms);
    }

    /// Adds `run_id`, watched until `until_ms`, and forgets entries watched long enough.
    fn insert(&self, run_id: &str, until_ms: i64, now_ms: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, until| *until > now_ms);
            entries.insert(run_id.to_owned(), until_ms);
        }
    }

    /// Takes `run_id` out; true if it was there (the caller settles it).
    pub fn take(&self, run_id: &str) -> bool {
        self.entries
            .lock()
            .is_ok_and(|mut entries| entries.remove(run_id).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_claim_is_taken_once_and_forgotten_when_it_expires() {
        let abandoned = Abandoned::default();
        abandoned.insert("a", 1_000, 0);
        assert!(!abandoned.take("b"));
        assert!(abandoned.take("a"));
        assert!(!abandoned.take("a"), "taken once");
        abandoned.insert("old", 1_000, 0);
        abandoned.insert("new", 5_000, 2_000);
        assert!(!abandoned.take("old"), "expired");
        assert!(abandoned.take("new"));
        abandoned.abandon("now", 0);
        assert!(abandoned.take("now"));
    }
}
