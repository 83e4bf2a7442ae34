//! Slots of a deleted job that no claim reached before it was deleted.
//!
//! A claim needs its job unchanged, so once jobsvc deletes a job none of its slots is claimed any
//! more: the slots after its ledger and up to the deletion (due while their claims were still
//! queued, as when the cluster is behind after an etcd stall) would end with no record. jobsvc
//! therefore leaves a tombstone (`deleted/<job>`: the definition and the time of the delete) and
//! the job's ledger, which no claim or skip can move once the job is gone. One worker (by
//! rendezvous on the job's name; any worker once the tombstone has waited [`TAKE_OVER_AFTER`], in
//! case that one is gone) records those slots `skipped`, with run ids derived from the slots (a
//! second recording stores nothing new), then removes the tombstone and the ledger in one
//! transaction ([`distcron_ledger::forget_deletion`]).

use std::sync::Arc;
use std::time::Duration;

use distcron_ledger::PendingDeletion;

use super::passed_over;
use crate::ctx::Ctx;

/// How long a tombstone waits for the worker preferred for it before any worker records it.
pub const TAKE_OVER_AFTER: Duration = Duration::from_secs(10);

/// Lists the tombstones and settles those this worker takes: at start, after a resync, when a
/// tombstone appears, and when a worker leaves (its tombstones pass to another).
pub fn spawn_settle(ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        let pending = match distcron_ledger::pending_deletions(ctx.store.as_ref(), &ctx.keys).await
        {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list deleted jobs; the next change retries");
                return;
            }
        };
        let take_over = i64::try_from(TAKE_OVER_AFTER.as_millis()).unwrap_or(i64::MAX);
        for deletion in pending {
            if ctx.cluster.stop_claiming.is_cancelled() {
                return;
            }
            let preferred = ctx.cluster.rank(&format!("deleted/{}", deletion.name)) == 0;
            let waited = ctx.clock.now_ms() - deletion.deleted.deleted_at_ms > take_over;
            if preferred || waited {
                settle(&ctx, &deletion).await;
            }
        }
    });
}

/// Records the unclaimed slots of one deleted job `skipped`, durably, then removes its
/// tombstone and ledger.
async fn settle(ctx: &Ctx, deletion: &PendingDeletion) {
    let name = &deletion.name;
    let (ledger_ms, ledger_revision) =
        match distcron_ledger::pending_ledger(ctx.store.as_ref(), &ctx.keys, deletion).await {
            Ok(Some(ledger)) => ledger,
            // Settled by another worker meanwhile.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "cannot read a deleted job's ledger");
                return;
            }
        };
    let def = &deletion.deleted.job;
    // A disabled job had no slots due; an invalid stored one cannot say which were.
    if let (true, Ok(schedule)) = (def.enabled, def.validate()) {
        let reason = "skipped: the job was deleted before the slot was claimed".to_owned();
        let passed = passed_over::between(
            passed_over::counts_from(def, None),
            &schedule,
            ledger_ms,
            deletion.deleted.deleted_at_ms.saturating_add(1),
            reason,
        );
        if !passed.slots.is_empty() {
            // On disk before the tombstone goes: a crash now leaves the tombstone to retry.
            passed_over::record(ctx, name, &def.command, &passed, true).await;
        }
    }
    match distcron_ledger::forget_deletion(ctx.store.as_ref(), &ctx.keys, deletion, ledger_revision)
        .await
    {
        Ok(_) => tracing::debug!(job = %name, "deleted job settled"),
        Err(e) => {
            tracing::warn!(job = %name, error = %e, "cannot remove a deleted job's tombstone")
        }
    }
}
