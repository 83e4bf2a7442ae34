//! Orphan records: running records of this worker that no run here owns (a claim transaction
//! that applied after this worker had given up on it), recorded `lost` and released.

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunningRecord;

use super::lost::ship_lost;
use crate::ctx::Ctx;

/// Running records of this worker that no local run owns: a claim transaction that applied
/// after this worker had given up on it. Those of claims this worker knows it abandoned
/// ([`crate::local::abandoned`]) are taken at once, others once older than `min_age`. Each is recorded
/// `lost` (ignored by logsvc if the run in fact finished and only its release is pending), its
/// end on disk before it is released, so it never blocks the job's overlap policy or leaves its
/// slot without a record. Returns the (job, run id) pairs to release.
pub async fn sweep_orphans(ctx: &Arc<Ctx>, min_age: Duration) -> Vec<(String, String)> {
    let now = ctx.clock.now_ms();
    let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
    let local = ctx.local.owned_runs();
    let orphans: Vec<RunningRecord> = ctx
        .cluster
        .view
        .read()
        .map(|v| {
            v.running
                .values()
                .filter(|r| {
                    r.worker_id == ctx.id
                        && !local.contains(&r.run_id)
                        && (ctx.local.abandoned.take(&r.run_id)
                            || now - r.claimed_at_ms > min_age_ms)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for record in &orphans {
        tracing::warn!(job = %record.job_name, run_id = %record.run_id, "releasing a running record no run of this worker owns");
        let err =
            "the slot was claimed after this worker had given up on the claim; it did not run";
        ship_lost(ctx, record, err.into(), true).await;
    }
    orphans
        .into_iter()
        .map(|r| (r.job_name, r.run_id))
        .collect()
}
