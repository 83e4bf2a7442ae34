//! Releases of ended runs' running records, and the markers of runs whose records logsvc has
//! not acknowledged yet.

use distcron_core::records::RunningRecord;
use distcron_core::Keys;
use distcron_kv::{KvError, KvStore, Op, Txn};

use crate::MAX_TXN_OPS;

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
