//! What runs here: the runs in progress and those waiting for a place, the places themselves
//! (`--capacity`), the process groups, the claim gates, and the claims given up on. The fire
//! path and the run tasks change it; the session keeper and the follower end runs through it.

pub mod abandoned;
pub mod gates;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use distcron_core::records::RunningRecord;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::abandoned::Abandoned;
use self::gates::ClaimGates;
use crate::execution::exec::{ProcessRecords, StopReason};

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

/// The runs of this worker and what they hold.
#[derive(Debug)]
pub struct Local {
    /// Runs in progress here, by run id.
    pub runs: Mutex<HashMap<String, LocalRun>>,
    /// Runs claimed here that wait for a place (the last worker in line had none), by run id.
    pub waiting: Mutex<HashMap<String, LocalRun>>,
    /// Runs that ended here and whose running records wait for the releaser, by run id.
    pub ending: Mutex<HashSet<String>>,
    /// Claims given up on while an attempt may still apply ([`abandoned`]).
    pub abandoned: Abandoned,
    /// Process-group records.
    pub processes: ProcessRecords,
    /// Every run task, to wait for them at shutdown.
    pub run_tasks: TaskTracker,
    /// Per job, held while a slot of the job is being claimed ([`ClaimGates::enter`]).
    pub claim_gates: ClaimGates,
    /// One permit per run this worker is claiming, has claimed or is running: `--capacity` in all.
    /// A won run holds its permit until it has ended; a run the last worker in line claimed
    /// without one waits for one (see [`Local::waiting`]).
    pub places: Arc<tokio::sync::Semaphore>,
}

impl Local {
    /// Nothing running yet: `capacity` places, and the process groups recorded in `processes`.
    pub fn new(capacity: u32, processes: ProcessRecords) -> Self {
        Self {
            runs: Mutex::default(),
            waiting: Mutex::default(),
            ending: Mutex::default(),
            abandoned: Abandoned::default(),
            processes,
            run_tasks: TaskTracker::new(),
            claim_gates: ClaimGates::default(),
            places: Arc::new(tokio::sync::Semaphore::new(capacity as usize)),
        }
    }

    /// Runs in progress here.
    pub fn running_count(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
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

    /// The runs this worker owns in any state: running, waiting for a place, or ended with
    /// their release queued.
    pub fn owned_runs(&self) -> HashSet<String> {
        let mut owned: HashSet<String> = self
            .runs
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        if let Ok(waiting) = self.waiting.lock() {
            owned.extend(waiting.keys().cloned());
        }
        if let Ok(ending) = self.ending.lock() {
            owned.extend(ending.iter().cloned());
        }
        owned
    }
}
