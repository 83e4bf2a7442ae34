//! The evidence that reported runs were claimed: what logsvc reads from the cluster state before
//! it stores the first record of a run that a worker token reports.
//!
//! From the claim until logsvc has stored a run's end, the cluster state names the run's worker
//! in one of two places: the run's running record (`running/<job>/<run-id>`, written by the claim
//! transaction, deleted by the release), or, once released, one of the worker's undelivered
//! markers (`undelivered/<worker-id>/…`, written by the same transaction that deletes the running
//! record, see [`crate::release`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use distcron_core::records::RunningRecord;
use distcron_core::Keys;
use distcron_kv::{KvError, KvStore, Op, Txn};

use crate::MAX_TXN_OPS;

/// One run whose record a worker reports, as its start names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedRun<'a> {
    /// The run.
    pub run_id: &'a str,
    /// Its job.
    pub job: &'a str,
    /// The worker its start names.
    pub worker_id: &'a str,
}

/// What the cluster state says of a set of reported runs: their running records and the markers
/// of their workers, read by [`ClaimEvidence::read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimEvidence {
    /// Run id → the worker its running record names.
    running: HashMap<String, String>,
    /// (worker id, run id) pairs that the worker's undelivered markers list.
    marked: HashSet<(String, String)>,
}

impl ClaimEvidence {
    /// Reads the evidence for `runs`: their running records (transactions of at most
    /// [`MAX_TXN_OPS`] reads), then the undelivered markers of the workers whose runs have no
    /// running record (one prefix read per such worker).
    pub async fn read(
        store: &dyn KvStore,
        keys: &Keys,
        runs: &[ReportedRun<'_>],
    ) -> Result<Self, KvError> {
        let mut evidence = Self::default();
        let gets: Vec<String> = runs.iter().map(|r| keys.running(r.job, r.run_id)).collect();
        for chunk in gets.chunks(MAX_TXN_OPS) {
            let txn = Txn {
                when: Vec::new(),
                then: chunk.iter().map(Op::get).collect(),
                otherwise: Vec::new(),
            };
            let response = store.txn(txn).await?;
            for (i, key) in chunk.iter().enumerate() {
                for kv in response.got(i) {
                    evidence.note(keys, key, &kv.value);
                }
            }
        }
        let unproven: BTreeSet<&str> = runs
            .iter()
            .filter(|r| !evidence.running.contains_key(r.run_id))
            .map(|r| r.worker_id)
            .collect();
        for worker in unproven {
            for marker in crate::undelivered_of(store, keys, worker).await? {
                evidence.marked.extend(
                    marker
                        .runs
                        .into_iter()
                        .map(|r| (worker.to_owned(), r.run_id)),
                );
            }
        }
        Ok(evidence)
    }

    /// This evidence and a running record of `run_id` naming `worker_id`.
    pub fn with_running(mut self, run_id: &str, worker_id: &str) -> Self {
        self.running.insert(run_id.to_owned(), worker_id.to_owned());
        self
    }

    /// This evidence and an undelivered marker of `worker_id` listing `run_id`.
    pub fn with_marked(mut self, worker_id: &str, run_id: &str) -> Self {
        self.marked
            .insert((worker_id.to_owned(), run_id.to_owned()));
        self
    }

    /// Records what the running record `value` at `key` (one of those [`Self::read`] asked for)
    /// says.
    fn note(&mut self, keys: &Keys, key: &str, value: &[u8]) {
        if let distcron_core::Key::Running { run_id, .. } = keys.parse(key) {
            // A record that cannot be read names no worker: it proves nothing.
            if let Ok(record) = serde_json::from_slice::<RunningRecord>(value) {
                self.running.insert(run_id.to_owned(), record.worker_id);
            }
        }
    }

    /// Whether `worker_id` claimed `run_id`: the run's running record names it, or one of its
    /// undelivered markers lists the run.
    pub fn claimed_by(&self, run_id: &str, worker_id: &str) -> bool {
        self.running.get(run_id).map(String::as_str) == Some(worker_id)
            || self
                .marked
                .contains(&(worker_id.to_owned(), run_id.to_owned()))
    }

    /// The worker whose running record of `run_id` is still in the store, if any: the run is
    /// still claimed by that worker's live session.
    pub fn running_on(&self, run_id: &str) -> Option<&str> {
        self.running.get(run_id).map(String::as_str)
    }
}
