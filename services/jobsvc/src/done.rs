//! Whether a job is done: it will never fire again. Derived from the schedule and the slot
//! ledger on every read, never stored, so finishing a job needs no write.

use chrono::{DateTime, TimeZone, Utc};
use distcron_core::records::ledger;
use distcron_core::{JobDefinition, Keys};
use distcron_kv::{KvError, KvStore};
use distcron_ledger::StoredJob;
use distcron_proto::jobs::v1 as pb;

/// The gRPC message of `stored`, its `done` computed at `now` ([`is_done`]).
pub async fn job_with_done(
    store: &dyn KvStore,
    keys: &Keys,
    stored: &StoredJob,
    now: DateTime<Utc>,
) -> Result<pb::Job, KvError> {
    let mut job = stored.job.to_proto(stored.revision);
    job.done = is_done(store, keys, &stored.job, now).await?;
    Ok(job)
}

/// Whether `def` will never fire again: its schedule (bounds included) has no slot after `now`,
/// and none after its ledger either, so its last slot was claimed or settled as skipped. The
/// ledger is read only for a job with no slot to come, so listing ordinary jobs costs no read
/// more. A job whose stored definition no longer validates is not done: it says nothing.
pub async fn is_done(
    store: &dyn KvStore,
    keys: &Keys,
    def: &JobDefinition,
    now: DateTime<Utc>,
) -> Result<bool, KvError> {
    let Ok(schedule) = def.validate() else {
        return Ok(false);
    };
    if schedule.next_after(now).is_some() {
        return Ok(false);
    }
    let reached = store
        .get(&keys.ledger(&def.name))
        .await?
        .and_then(|kv| ledger::decode(&kv.value))
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    Ok(reached.is_some_and(|ledger| schedule.next_after(ledger).is_none()))
}
