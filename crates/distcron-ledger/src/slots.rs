//! Slot claims and skips: the transactions that move a job's ledger, so each slot is claimed
//! (or recorded skipped) exactly once.

use distcron_core::records::{RunTrigger, RunningRecord};
use distcron_core::Keys;
use distcron_kv::{
    CompareOp, CompareTarget, Condition, KvError, KvStore, LeaseId, Op, Txn, MAX_TXN_OPS,
};

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
    /// Whether the slot is claimed to run or to be skipped.
    pub action: SlotAction,
}

/// What a [`SlotClaim`] does to its slot when its conditions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotAction {
    /// Moves the ledger to the slot and records the run as running.
    #[default]
    Run,
    /// Moves the ledger to the slot without a run (the slot is recorded `skipped` by the caller):
    /// the same conditions on the ledger and the job as a run's claim, none on running runs.
    Skip,
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
    /// This claim's [`SlotAction::Skip`] moved the ledger to the slot: the caller records it.
    Skipped,
    /// `forbid` and a run of the job is in progress: the slot is not run; claim it again with
    /// [`SlotAction::Skip`] (or use [`record_skip`]).
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

/// Most slot claims in one transaction: each adds two puts and three reads, and from two to four
/// compares ([`SlotClaim::compares`]); etcd allows [`MAX_TXN_OPS`] of each, so a batch is also
/// bounded by its compares.
pub const MAX_CLAIMS_PER_TXN: usize = 40;

impl SlotClaim {
    /// The compares this claim adds to a transaction: one or two on the ledger (two for
    /// [`LedgerExpect::Reached`]), one on the job, and under `forbid` one on its running runs.
    pub fn compares(&self) -> usize {
        let ledger = match self.expect {
            LedgerExpect::Reached(_) => 2,
            LedgerExpect::Before | LedgerExpect::PassOver { .. } => 1,
        };
        let overlap = usize::from(self.forbid_overlap && self.action == SlotAction::Run);
        ledger + 1 + overlap
    }
}

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
/// [`MAX_CLAIMS_PER_TXN`] claims with at most [`MAX_TXN_OPS`] compares in all, each job once.
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
    let compares: usize = claims.iter().map(|(c, _)| c.compares()).sum();
    if compares > MAX_TXN_OPS {
        return Err(KvError::Other(format!(
            "{compares} compares in one transaction; at most {MAX_TXN_OPS}"
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
                outcomes[p.index] = Some(match p.claim.action {
                    SlotAction::Run => SlotOutcome::Won(p.record),
                    SlotAction::Skip => SlotOutcome::Skipped,
                });
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
        if self.claim.forbid_overlap && self.claim.action == SlotAction::Run {
            when.push(Condition::no_keys_under(&self.running_prefix));
        }
        when
    }

    fn writes(&self) -> Vec<Op> {
        let ledger = Op::put(
            &self.ledger_key,
            distcron_core::records::ledger::encode(self.claim.slot_ms),
        );
        match self.claim.action {
            SlotAction::Run => vec![
                ledger,
                Op::Put {
                    key: self.running_key.clone(),
                    value: self.value.clone(),
                    lease: Some(self.claim.session),
                },
            ],
            SlotAction::Skip => vec![ledger],
        }
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
        if self.claim.action == SlotAction::Run
            && running.iter().any(|r| r.run_id == self.claim.run_id)
        {
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
        if self.claim.forbid_overlap && self.claim.action == SlotAction::Run && !running.is_empty()
        {
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
