//! The slot ledger: the store transactions that make every slot and every manual trigger run
//! exactly once, cluster-wide.
//!
//! A claim is one transaction that both decides the winner and records the run as running under
//! the claiming worker's session lease, so a claimed run is never invisible and disappears with
//! its worker.

use distcron_core::records::{RunTrigger, RunningRecord, TriggerRequest};
use distcron_core::Keys;
use distcron_kv::{CompareOp, CompareTarget, Condition, KvError, KvStore, LeaseId, Op, Txn};

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker won: the run is recorded as running under its lease.
    Won(RunningRecord),
    /// Another worker already took it (or it no longer exists).
    Lost,
}

/// Claims the manual trigger `run_id` of `job`: succeeds for exactly one caller, by deleting the
/// trigger request and writing the running record in the same transaction.
pub async fn claim_trigger(
    store: &dyn KvStore,
    keys: &Keys,
    job: &str,
    request: &TriggerRequest,
    worker_id: &str,
    session: LeaseId,
    now_ms: i64,
) -> Result<Claim, KvError> {
    let trigger_key = keys.trigger(job, &request.run_id);
    let record = RunningRecord {
        run_id: request.run_id.clone(),
        job_name: job.to_owned(),
        worker_id: worker_id.to_owned(),
        slot_ms: request.slot_ms,
        claimed_at_ms: now_ms,
        trigger: RunTrigger::Manual,
    };
    let value = serde_json::to_vec(&record).map_err(|e| KvError::Other(e.to_string()))?;
    let txn = Txn {
        when: vec![Condition::key(
            &trigger_key,
            CompareTarget::Version(0),
            CompareOp::Greater,
        )],
        then: vec![
            Op::delete(&trigger_key),
            Op::Put {
                key: keys.running(job, &request.run_id),
                value,
                lease: Some(session),
            },
        ],
        otherwise: vec![Op::get(keys.running(job, &request.run_id))],
    };
    let resp = store.txn(txn).await?;
    if resp.succeeded {
        return Ok(Claim::Won(record));
    }
    // A retried transaction whose first attempt applied: our own record is there.
    let ours = resp
        .got(0)
        .first()
        .and_then(|kv| serde_json::from_slice::<RunningRecord>(&kv.value).ok());
    Ok(match ours {
        Some(r) if r.worker_id == worker_id => Claim::Won(r),
        _ => Claim::Lost,
    })
}

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
    JobChanged,
    /// `forbid` and a run of the job is in progress: the slot is not run. Use [`record_skip`].
    Overlap {
        /// The runs in progress.
        running: Vec<RunningRecord>,
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

/// Claims slot `claim.slot_ms` of `claim.job` in one transaction: it succeeds only if the ledger's
/// last slot is before this one, the job is still at `claim.job_revision`, and (under `forbid`) no
/// run of the job is running; it then advances the ledger and records the run as running under the
/// worker's session lease. `ledger_exists` is the caller's belief about whether the ledger key
/// exists (a wrong guess costs one more transaction).
pub async fn claim_slot(
    store: &dyn KvStore,
    keys: &Keys,
    claim: &SlotClaim,
    mut ledger_exists: bool,
) -> Result<SlotOutcome, KvError> {
    let ledger_key = keys.ledger(&claim.job);
    let running_key = keys.running(&claim.job, &claim.run_id);
    let record = RunningRecord {
        run_id: claim.run_id.clone(),
        job_name: claim.job.clone(),
        worker_id: claim.worker_id.clone(),
        slot_ms: claim.slot_ms,
        claimed_at_ms: claim.now_ms,
        trigger: claim.trigger,
    };
    let value = serde_json::to_vec(&record).map_err(|e| KvError::Other(e.to_string()))?;
    for _ in 0..2 {
        let mut when = vec![
            ledger_condition(&ledger_key, ledger_exists, claim.slot_ms),
            Condition::unchanged(keys.job(&claim.job), claim.job_revision),
        ];
        if claim.forbid_overlap {
            when.push(Condition::no_keys_under(keys.running_of(&claim.job)));
        }
        let txn = Txn {
            when,
            then: vec![
                Op::put(
                    &ledger_key,
                    distcron_core::records::ledger::encode(claim.slot_ms),
                ),
                Op::Put {
                    key: running_key.clone(),
                    value: value.clone(),
                    lease: Some(claim.session),
                },
            ],
            otherwise: vec![
                Op::get(&ledger_key),
                Op::get(keys.job(&claim.job)),
                Op::get_prefix(keys.running_of(&claim.job)),
            ],
        };
        let resp = store.txn(txn).await?;
        if resp.succeeded {
            return Ok(SlotOutcome::Won(record));
        }
        let running = parse_running(resp.got(2));
        if running.iter().any(|r| r.run_id == claim.run_id) {
            // A retried transaction whose first attempt applied.
            return Ok(SlotOutcome::Won(record));
        }
        let ledger = resp
            .got(0)
            .first()
            .and_then(|kv| distcron_core::records::ledger::decode(&kv.value));
        if let Some(ledger_ms) = ledger.filter(|l| *l >= claim.slot_ms) {
            return Ok(SlotOutcome::AlreadyClaimed { ledger_ms });
        }
        if resp.got(1).first().map(|kv| kv.mod_revision) != Some(claim.job_revision) {
            return Ok(SlotOutcome::JobChanged);
        }
        if claim.forbid_overlap && !running.is_empty() {
            return Ok(SlotOutcome::Overlap { running });
        }
        // The only failed condition is our guess about the ledger's existence.
        ledger_exists = ledger.is_some();
    }
    Err(KvError::Other(format!(
        "claim of {} slot {} did not settle",
        claim.job, claim.slot_ms
    )))
}

/// Advances the ledger to `slot_ms` without running it (a skipped slot). Returns whether this
/// caller advanced it, so exactly one worker records the skip.
pub async fn record_skip(
    store: &dyn KvStore,
    keys: &Keys,
    job: &str,
    job_revision: i64,
    slot_ms: i64,
) -> Result<bool, KvError> {
    let ledger_key = keys.ledger(job);
    for exists in [true, false] {
        let txn = Txn {
            when: vec![
                ledger_condition(&ledger_key, exists, slot_ms),
                Condition::unchanged(keys.job(job), job_revision),
            ],
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

/// Deletes the running records of finished runs, many per transaction.
pub async fn release(
    store: &dyn KvStore,
    keys: &Keys,
    runs: &[(String, String)],
) -> Result<(), KvError> {
    for chunk in runs.chunks(MAX_TXN_OPS) {
        let txn = Txn {
            when: vec![],
            then: chunk
                .iter()
                .map(|(job, run)| Op::delete(keys.running(job, run)))
                .collect(),
            otherwise: vec![],
        };
        store.txn(txn).await?;
    }
    Ok(())
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
