//! Deleted jobs' tombstones: reading them and their ledgers, and forgetting them once their
//! unclaimed slots are recorded.

use distcron_core::records::DeletedJob;
use distcron_core::Keys;
use distcron_kv::{Condition, KvError, KvStore, Op, Txn};

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
