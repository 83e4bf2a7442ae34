//! The store transactions of distcron: the slot ledger's, that make every slot and every manual
//! trigger run exactly once, cluster-wide, and the job writes they depend on (saves, deletes with
//! their tombstones, pauses, trigger requests), so services only map their requests to these
//! calls.
//!
//! A claim is one transaction that both decides the winner and records the run as running under
//! the claiming worker's session lease, so a claimed run is never invisible and disappears with
//! its worker.

mod claimed;
mod jobs;
mod triggers;

use distcron_core::records::{DeletedJob, RunTrigger, RunningRecord};
use distcron_core::Keys;
use distcron_kv::{CompareOp, CompareTarget, Condition, KvError, KvStore, LeaseId, Op, Txn};

pub use claimed::{ClaimEvidence, ReportedRun};
pub use jobs::{
    delete_job, load_job, save_job, set_job_enabled, EnabledChange, JobDeletion, JobError, JobSave,
    SavedJob, StoredJob,
};
pub use triggers::{claim_trigger, request_trigger, Claim};

/// A scheduled (or catch-up) slot to claim.
#[derive(Debug, Clone)]
pub struct SlotClaim {
    /// The job.
    pub job: String,
    /// The job revision the slot was computed from; the claim fails if the job changed since.
    pub job_revision: i64,
    /// The slot, ms.
    pub slot_ms: i64,
    /// The run id to record.
    pub run_id: String,
    /// The claiming worker.
    pub worker_id: String,
    /// Its session lease.
    pub session: LeaseId,
    /// Now, ms (the claim time recorded).
    pub now_ms: i64,
    /// Schedule or catch-up.
    pub trigger: RunTrigger,
    /// Under `forbid`, the claim also requires that no run of the job is running.
    pub forbid_overlap: bool,
    /// What the claim requires of the ledger besides being before the slot.
    pub expect: LedgerExpect,
}

/// What a claim (or a skip) of slot T requires of the job's ledger L besides L < T, so that the
/// ledger never moves past a slot that nobody claimed without saying so.
///
/// The argument: the ledger only moves forward, and only by a claim or a skip transaction. Each
/// of them names the job's previous slot P (the last slot of the schedule before T that counts:
/// after the job's revision took effect) and succeeds only if L ≥ P ([`LedgerExpect::Reached`]),
/// or, when no slot counts before T, with no more than L < T ([`LedgerExpect::Before`]). By
/// induction every slot before the ledger was claimed or skipped by its own transaction. A claim
/// that finds L < P (its predecessors unclaimed: an etcd stall, a partition, a worker stopped
/// between claim batches, a stepped clock, a catch-up of the latest slot only) either waits for
/// them or takes them over: [`LedgerExpect::PassOver`] requires L to be exactly the value it read
/// and writes the slots in between into the claimed run's running record, so exactly the one
/// worker whose transaction moved the ledger records them `skipped` (and, should it die, the worker
/// that records its run `lost` does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LedgerExpect {
    /// No earlier slot counts: L < T is enough.
    #[default]
    Before,
    /// The ledger must have reached the job's previous slot (ms): L ≥ P.
    Reached(i64),
    /// The ledger must be exactly `ledger_ms` (absent when `None`); the slots between it and T are
    /// passed over and recorded `skipped` by whoever records the claimed run.
    PassOver {
        /// The ledger as read.
        ledger_ms: Option<i64>,
        /// The slots passed over, and why.
        passed: distcron_core::records::PassedOver,
    },
}

impl LedgerExpect {
    /// The conditions on the ledger at `key` for a claim or skip of `slot_ms`; `exists` is the
    /// caller's guess whether the key exists (used by [`LedgerExpect::Before`] only).
    fn conditions(&self, key: &str, exists: bool, slot_ms: i64) -> Vec<Condition> {
        let value = |ms: i64| CompareTarget::Value(distcron_core::records::ledger::encode(ms));
        match self {
            Self::Before => vec![ledger_condition(key, exists, slot_ms)],
            Self::Reached(previous) => vec![
                Condition::key(key, value(slot_ms), CompareOp::Less),
                Condition::key(key, value(previous.saturating_sub(1)), CompareOp::Greater),
            ],
            Self::PassOver {
                ledger_ms: Some(l), ..
            } => vec![Condition::key(key, value(*l), CompareOp::Equal)],
            Self::PassOver {
                ledger_ms: None, ..
            } => vec![Condition::absent(key)],
        }
    }

    /// Whether a ledger at `ledger` (absent when `None`), before the slot, fails this expectation.
    fn is_behind(&self, ledger: Option<i64>) -> bool {
        match self {
            Self::Before => false,
            Self::Reached(previous) => ledger.is_none_or(|l| l < *previous),
            Self::PassOver { ledger_ms, .. } => ledger != *ledger_ms,
        }
    }

    /// The slots this claim passes over, if any.
    fn passed_over(&self) -> Option<distcron_core::records::PassedOver> {
        match self {
            Self::PassOver { passed, .. } => Some(passed.clone()),
            _ => None,
        }
    }
}

/// The outcome of a slot claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOutcome {
    /// This worker won; the run is recorded as running under its session.
    Won(RunningRecord),
    /// The ledger is already at or past this slot: another worker claimed it (or a later one).
    AlreadyClaimed {
        /// The ledger's slot.
        ledger_ms: i64,
    },
    /// The job was changed or deleted since the slot was computed.
    JobChanged {
        /// The job's current revision (its key's mod revision), or `None` when it was deleted.
        revision: Option<i64>,
        /// When that revision took effect (its `updatedAt`, ms; 0 when deleted or unknown).
        updated_at_ms: i64,
        /// The ledger as read (`None`: absent).
        ledger_ms: Option<i64>,
    },
    /// `forbid` and a run of the job is in progress: the slot is not run. Use [`record_skip`].
    Overlap {
        /// The runs in progress.
        running: Vec<RunningRecord>,
    },
    /// The ledger is not where the claim's [`LedgerExpect`] needs it: an earlier slot is still
    /// unclaimed (or, for a pass-over, the ledger moved since it was read).
    Behind {
        /// The ledger's slot (`None`: no slot of the job was ever claimed).
        ledger_ms: Option<i64>,
    },
}

fn parse_running(kvs: &[distcron_kv::KeyValue]) -> Vec<RunningRecord> {
    kvs.iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect()
}

fn ledger_condition(key: &str, exists: bool, slot_ms: i64) -> Condition {
    if exists {
        Condition::key(
            key,
            CompareTarget::Value(distcron_core::records::ledger::encode(slot_ms)),
            CompareOp::Less,
        )
    } else {
        Condition::absent(key)
    }
}

/// Most slot claims in one transaction: each adds up to three compares, two puts and three reads,
/// and etcd allows [`MAX_TXN_OPS`] of each.
pub const MAX_CLAIMS_PER_TXN: usize = 40;

/// Claims slot `claim.slot_ms` of `claim.job` in one transaction: it succeeds only if the ledger's
/// last slot is before this one, the job is still at `claim.job_revision`, and (under `forbid`) no
/// run of the job is running; it then advances the ledger and records the run as running under the
/// worker's session lease. `ledger_exists` is the caller's belief about whether the ledger key
/// exists (a wrong guess costs one more transaction).
pub async fn claim_slot(
    store: &dyn KvStore,
    keys: &Keys,
    claim: &SlotClaim,
    ledger_exists: bool,
) -> Result<SlotOutcome, KvError> {
    let mut outcomes = claim_slots(store, keys, &[(claim.clone(), ledger_exists)]).await?;
    outcomes.pop().ok_or_else(|| {
        KvError::Other(format!(
            "claim of {} slot {} got no outcome",
            claim.job, claim.slot_ms
        ))
    })
}

/// Claims several slots, of distinct jobs, each as [`claim_slot`] would, in as few transactions
/// as the answers allow: all of them in one transaction when every condition holds (the usual
/// case); when one does not, the failed transaction's reads say which claims cannot win and why,
/// and the rest are sent again. Outcomes come in the order of `claims`. At most
/// [`MAX_CLAIMS_PER_TXN`] claims, each job once.
pub async fn claim_slots(
    store: &dyn KvStore,
    keys: &Keys,
    claims: &[(SlotClaim, bool)],
) -> Result<Vec<SlotOutcome>, KvError> {
    if claims.len() > MAX_CLAIMS_PER_TXN {
        return Err(KvError::Other(format!(
            "{} claims in one transaction; at most {MAX_CLAIMS_PER_TXN}",
            claims.len()
        )));
    }
    let mut jobs = std::collections::HashSet::new();
    if let Some((dup, _)) = claims.iter().find(|(c, _)| !jobs.insert(c.job.as_str())) {
        return Err(KvError::Other(format!(
            "job {} claimed twice in one transaction",
            dup.job
        )));
    }
    let mut pending: Vec<PendingClaim> = claims
        .iter()
        .enumerate()
        .map(|(index, (claim, ledger_exists))| {
            PendingClaim::new(keys, index, claim, *ledger_exists)
        })
        .collect::<Result<_, _>>()?;
    let mut outcomes: Vec<Option<SlotOutcome>> = vec![None; claims.len()];
    // Each failed round settles at least one claim or corrects an existence guess, so two rounds
    // per claim is enough unless other writers keep changing the keys.
    for _ in 0..2 * claims.len().max(1) {
        if pending.is_empty() {
            break;
        }
        let txn = Txn {
            when: pending.iter().flat_map(PendingClaim::conditions).collect(),
            then: pending.iter().flat_map(PendingClaim::writes).collect(),
            otherwise: pending.iter().flat_map(PendingClaim::reads).collect(),
        };
        let resp = store.txn(txn).await?;
        if resp.succeeded {
            for p in pending.drain(..) {
                outcomes[p.index] = Some(SlotOutcome::Won(p.record));
            }
            break;
        }
        let before = pending.len();
        let mut corrected = false;
        let mut still = Vec::with_capacity(before);
        for (i, mut p) in pending.into_iter().enumerate() {
            let base = 3 * i;
            let guess = p.ledger_exists;
            match p.judge(resp.got(base), resp.got(base + 1), resp.got(base + 2)) {
                Some(outcome) => outcomes[p.index] = Some(outcome),
                None => {
                    corrected |= p.ledger_exists != guess;
                    still.push(p);
                }
            }
        }
        pending = still;
        if pending.len() == before && !corrected {
            // Nothing the reads show explains the failure; sending it again would fail again.
            break;
        }
    }
    if let Some(p) = pending.first() {
        return Err(KvError::Other(format!(
            "claim of {} slot {} did not settle",
            p.claim.job, p.claim.slot_ms
        )));
    }
    outcomes
        .into_iter()
        .zip(claims)
        .map(|(o, (c, _))| {
            o.ok_or_else(|| {
                KvError::Other(format!(
                    "claim of {} slot {} got no outcome",
                    c.job, c.slot_ms
                ))
            })
        })
        .collect()
}

/// One claim of [`claim_slots`] not settled yet.
struct PendingClaim {
    index: usize,
    claim: SlotClaim,
    ledger_exists: bool,
    ledger_key: String,
    job_key: String,
    running_prefix: String,
    running_key: String,
    record: RunningRecord,
    value: Vec<u8>,
}

impl PendingClaim {
    fn new(
        keys: &Keys,
        index: usize,
        claim: &SlotClaim,
        ledger_exists: bool,
    ) -> Result<Self, KvError> {
        let record = RunningRecord {
            run_id: claim.run_id.clone(),
            job_name: claim.job.clone(),
            worker_id: claim.worker_id.clone(),
            slot_ms: claim.slot_ms,
            claimed_at_ms: claim.now_ms,
            trigger: claim.trigger,
            passed_over: claim.expect.passed_over(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| KvError::Other(e.to_string()))?;
        Ok(Self {
            index,
            ledger_key: keys.ledger(&claim.job),
            job_key: keys.job(&claim.job),
            running_prefix: keys.running_of(&claim.job),
            running_key: keys.running(&claim.job, &claim.run_id),
            claim: claim.clone(),
            ledger_exists,
            record,
            value,
        })
    }

    fn conditions(&self) -> Vec<Condition> {
        let mut when =
            self.claim
                .expect
                .conditions(&self.ledger_key, self.ledger_exists, self.claim.slot_ms);
        when.push(Condition::unchanged(&self.job_key, self.claim.job_revision));
        if self.claim.forbid_overlap {
            when.push(Condition::no_keys_under(&self.running_prefix));
        }
        when
    }

    fn writes(&self) -> [Op; 2] {
        [
            Op::put(
                &self.ledger_key,
                distcron_core::records::ledger::encode(self.claim.slot_ms),
            ),
            Op::Put {
                key: self.running_key.clone(),
                value: self.value.clone(),
                lease: Some(self.claim.session),
            },
        ]
    }

    /// What a failed transaction reads for this claim, three results: the ledger, the job, the
    /// job's running records.
    fn reads(&self) -> [Op; 3] {
        [
            Op::get(&self.ledger_key),
            Op::get(&self.job_key),
            Op::get_prefix(&self.running_prefix),
        ]
    }

    /// The outcome the reads of a failed transaction imply, or `None` when this claim's
    /// conditions would all hold once its guess about the ledger's existence is corrected.
    fn judge(
        &mut self,
        ledger: &[distcron_kv::KeyValue],
        job: &[distcron_kv::KeyValue],
        running: &[distcron_kv::KeyValue],
    ) -> Option<SlotOutcome> {
        let running = parse_running(running);
        if running.iter().any(|r| r.run_id == self.claim.run_id) {
            // A retried transaction whose first attempt applied.
            return Some(SlotOutcome::Won(self.record.clone()));
        }
        let ledger = ledger
            .first()
            .and_then(|kv| distcron_core::records::ledger::decode(&kv.value));
        if let Some(ledger_ms) = ledger.filter(|l| *l >= self.claim.slot_ms) {
            return Some(SlotOutcome::AlreadyClaimed { ledger_ms });
        }
        if job.first().map(|kv| kv.mod_revision) != Some(self.claim.job_revision) {
            let updated_at_ms = job
                .first()
                .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
                .and_then(|v| v.get("updatedAt").and_then(serde_json::Value::as_i64))
                .unwrap_or(0);
            return Some(SlotOutcome::JobChanged {
                revision: job.first().map(|kv| kv.mod_revision),
                updated_at_ms,
                ledger_ms: ledger,
            });
        }
        if self.claim.expect.is_behind(ledger) {
            return Some(SlotOutcome::Behind { ledger_ms: ledger });
        }
        if self.claim.forbid_overlap && !running.is_empty() {
            return Some(SlotOutcome::Overlap { running });
        }
        self.ledger_exists = ledger.is_some();
        None
    }
}

/// Advances the ledger to `slot_ms` without running it (a skipped slot), under the same
/// expectation of the ledger as the claim that found the slot cannot run (`expect`). Returns
/// whether this caller advanced it, so exactly one worker records the skip.
pub async fn record_skip(
    store: &dyn KvStore,
    keys: &Keys,
    job: &str,
    job_revision: i64,
    slot_ms: i64,
    expect: &LedgerExpect,
) -> Result<bool, KvError> {
    let ledger_key = keys.ledger(job);
    let guesses: &[bool] = match expect {
        LedgerExpect::Before => &[true, false],
        _ => &[true],
    };
    for exists in guesses {
        let mut when = expect.conditions(&ledger_key, *exists, slot_ms);
        when.push(Condition::unchanged(keys.job(job), job_revision));
        let txn = Txn {
            when,
            then: vec![Op::put(
                &ledger_key,
                distcron_core::records::ledger::encode(slot_ms),
            )],
            otherwise: vec![],
        };
        if store.txn(txn).await?.succeeded {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Most operations in one etcd transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Runs that ended on a worker and whose records logsvc has not acknowledged yet, kept at
/// `undelivered/<worker-id>/<marker>` without a lease: if the worker is gone for good with those
/// records still in its spool, another worker finds them and records the runs `lost` (a record
/// delivered later, by the worker restarted, overrides `lost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeliveredMarker {
    /// The marker's key.
    pub key: String,
    /// The runs (their running records as they were).
    pub runs: Vec<RunningRecord>,
}

/// What a release transaction does to markers besides deleting running records.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkerChanges<'a> {
    /// A marker of the released runs to write.
    pub put: Option<&'a UndeliveredMarker>,
    /// Markers whose runs logsvc has acknowledged, to delete.
    pub delete: &'a [String],
}

/// Deletes the running records of finished runs, many per transaction; the first transaction
/// also applies `markers`, so a run's marker exists from the moment its running record is gone.
pub async fn release(
    store: &dyn KvStore,
    keys: &Keys,
    runs: &[(String, String)],
    markers: MarkerChanges<'_>,
) -> Result<(), KvError> {
    let mut ops: Vec<Op> = markers
        .delete
        .iter()
        .map(|key| Op::delete(key.clone()))
        .collect();
    if let Some(marker) = markers.put {
        let value = serde_json::to_vec(&marker.runs).map_err(|e| KvError::Other(e.to_string()))?;
        ops.push(Op::put(marker.key.clone(), value));
    }
    if ops.len() >= MAX_TXN_OPS {
        return Err(KvError::Other(format!(
            "{} marker changes do not fit in one transaction",
            ops.len()
        )));
    }
    // The marker changes lead, so they all go in the first transaction.
    ops.extend(
        runs.iter()
            .map(|(job, run)| Op::delete(keys.running(job, run))),
    );
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
        let txn = Txn {
            when: vec![],
            then: std::mem::replace(&mut ops, rest),
            otherwise: vec![],
        };
        store.txn(txn).await?;
    }
    Ok(())
}

/// Writes `marker` on its own: the runs a restarted worker's spool still holds, marked before
/// the spool is delivered (their running records may be gone with the crashed incarnation's
/// session).
pub async fn mark_undelivered(
    store: &dyn KvStore,
    keys: &Keys,
    marker: &UndeliveredMarker,
) -> Result<(), KvError> {
    let changes = MarkerChanges {
        put: Some(marker),
        delete: &[],
    };
    release(store, keys, &[], changes).await
}

/// The markers of `worker_id` (see [`UndeliveredMarker`]); a marker whose value cannot be read
/// is returned with no runs, so it can still be deleted.
pub async fn undelivered_of(
    store: &dyn KvStore,
    keys: &Keys,
    worker_id: &str,
) -> Result<Vec<UndeliveredMarker>, KvError> {
    let (kvs, _) = distcron_kv::list_prefix(store, &keys.undelivered_of(worker_id)).await?;
    Ok(kvs
        .into_iter()
        .map(|kv| UndeliveredMarker {
            runs: serde_json::from_slice(&kv.value).unwrap_or_default(),
            key: kv.key,
        })
        .collect())
}

/// The ids of the workers that have markers.
pub async fn workers_with_undelivered(
    store: &dyn KvStore,
    keys: &Keys,
) -> Result<std::collections::BTreeSet<String>, KvError> {
    let (kvs, _) = distcron_kv::list_keys(store, &keys.undelivered_all()).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| keys.undelivered_worker(&kv.key))
        .map(str::to_owned)
        .collect())
}

/// A deleted job waiting for its unclaimed slots to be recorded ([`DeletedJob`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    /// The job's name.
    pub name: String,
    /// The tombstone.
    pub deleted: DeletedJob,
    /// The tombstone's revision.
    pub revision: i64,
}

/// The deleted jobs whose unclaimed slots are not recorded yet.
pub async fn pending_deletions(
    store: &dyn KvStore,
    keys: &Keys,
) -> Result<Vec<PendingDeletion>, KvError> {
    let (kvs, _) = distcron_kv::list_prefix(store, &keys.deleted_all()).await?;
    Ok(kvs
        .into_iter()
        .filter_map(|kv| {
            let distcron_core::Key::Deleted(name) = keys.parse(&kv.key) else {
                return None;
            };
            let name = name.to_owned();
            let deleted = serde_json::from_slice(&kv.value).ok()?;
            Some(PendingDeletion {
                name,
                deleted,
                revision: kv.mod_revision,
            })
        })
        .collect())
}

/// A deleted job's ledger (the last claimed slot, if any, and the key's revision, 0 when absent),
/// read in one transaction with its tombstone: `None` once the tombstone is gone or changed. (A
/// ledger read alone could come after another worker settled the deletion and removed the
/// ledger, and count slots that ran.)
pub async fn pending_ledger(
    store: &dyn KvStore,
    keys: &Keys,
    pending: &PendingDeletion,
) -> Result<Option<(Option<i64>, i64)>, KvError> {
    let txn = Txn {
        when: vec![Condition::unchanged(
            keys.deleted(&pending.name),
            pending.revision,
        )],
        then: vec![Op::get(keys.ledger(&pending.name))],
        otherwise: vec![],
    };
    let resp = store.txn(txn).await?;
    if !resp.succeeded {
        return Ok(None);
    }
    Ok(Some(match resp.got(0).first() {
        Some(kv) => (
            distcron_core::records::ledger::decode(&kv.value),
            kv.mod_revision,
        ),
        None => (None, 0),
    }))
}

/// Removes a deleted job's tombstone (at `revision`) and its ledger (at `ledger_revision`, 0 if
/// absent) once its unclaimed slots are recorded; the ledger stays if a job of that name was
/// created again meanwhile (it is that job's now). Returns whether this call removed the
/// tombstone (false: another worker did, or it changed).
pub async fn forget_deletion(
    store: &dyn KvStore,
    keys: &Keys,
    pending: &PendingDeletion,
    ledger_revision: i64,
) -> Result<bool, KvError> {
    let tombstone = keys.deleted(&pending.name);
    let ledger = keys.ledger(&pending.name);
    let ledger_unchanged = if ledger_revision == 0 {
        Condition::absent(&ledger)
    } else {
        Condition::unchanged(&ledger, ledger_revision)
    };
    let txn = Txn {
        when: vec![
            Condition::unchanged(&tombstone, pending.revision),
            Condition::absent(keys.job(&pending.name)),
            ledger_unchanged,
        ],
        then: vec![Op::delete(&tombstone), Op::delete(&ledger)],
        otherwise: vec![],
    };
    if store.txn(txn).await?.succeeded {
        return Ok(true);
    }
    // Recreated (or its ledger moved by the new job): only the tombstone goes.
    let txn = Txn {
        when: vec![Condition::unchanged(&tombstone, pending.revision)],
        then: vec![Op::delete(&tombstone)],
        otherwise: vec![],
    };
    Ok(store.txn(txn).await?.succeeded)
}

/// How long a kill request stays visible to workers that are reconnecting.
pub const KILL_REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Publishes a kill request at `killer/<job>` on a short lease; every worker watching sees it.
pub async fn publish_kill(
    store: &dyn KvStore,
    keys: &Keys,
    job: &str,
    request: &distcron_core::records::KillRequest,
) -> Result<(), KvError> {
    let lease = store.grant_lease(KILL_REQUEST_TTL).await?;
    let value = serde_json::to_vec(request).map_err(|e| KvError::Other(e.to_string()))?;
    store.put(&keys.killer(job), value, Some(lease)).await?;
    Ok(())
}
