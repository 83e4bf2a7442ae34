//! Manual triggers ("run now"): the request jobsvc writes, and the claim that makes exactly one
//! worker run it.

use distcron_core::records::{RunTrigger, RunningRecord, TriggerRequest};
use distcron_core::{now_ms, Keys};
use distcron_kv::{CompareOp, CompareTarget, Condition, KvError, KvStore, LeaseId, Op, Txn};

use crate::jobs::{load_job, JobError};

/// Asks for a run of the job `name` now: writes a [`TriggerRequest`] (a new run id, now as its
/// slot, the job's revision) in one transaction conditional on the job still being at the
/// revision read, so a trigger never outlives a delete it raced with. Returns the request.
pub async fn request_trigger(
    store: &dyn KvStore,
    keys: &Keys,
    name: &str,
    trace_parent: &str,
) -> Result<TriggerRequest, JobError> {
    let stored = load_job(store, keys, name).await?;
    let trigger = TriggerRequest {
        run_id: distcron_core::new_run_id(),
        slot_ms: now_ms(),
        job_revision: stored.revision,
        trace_parent: trace_parent.to_owned(),
    };
    let txn = Txn {
        when: vec![Condition::unchanged(keys.job(name), stored.revision)],
        then: vec![Op::put(
            keys.trigger(name, &trigger.run_id),
            serde_json::to_vec(&trigger)?,
        )],
        otherwise: vec![],
    };
    if !store.txn(txn).await?.succeeded {
        return Err(JobError::ChangedWhileTriggering {
            name: name.to_owned(),
        });
    }
    Ok(trigger)
}

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
        passed_over: None,
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
