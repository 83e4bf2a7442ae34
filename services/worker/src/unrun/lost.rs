//! Runs whose worker died during them, recorded `lost` by one live worker.

use std::sync::Arc;

use distcron_core::records::{RunStatus, RunningRecord};

use super::{ended_unstarted, passed_over, Facts};
use crate::ctx::Ctx;

/// Records a run whose worker died as `lost`. Exactly one live worker (by rendezvous on the run
/// id) does it; the events are idempotent anyway.
pub async fn record_lost(ctx: &Arc<Ctx>, record: RunningRecord) {
    if ctx.cluster.stop_claiming.is_cancelled()
        || ctx.cluster.rank(&format!("lost/{}", record.run_id)) != 0
    {
        return;
    }
    let err = format!(
        "worker {} stopped while the run was in progress (session expired)",
        record.worker_id
    );
    tracing::warn!(job = %record.job_name, run_id = %record.run_id, worker = %record.worker_id, "run lost");
    ship_lost(ctx, &record, err, false).await;
}

/// Ships `started` (for a run logsvc may not know yet) and `finished` as `lost` for `record`,
/// with the slots it passed over; `durably` when its running record is released next, so the
/// record survives a crash of this worker.
pub async fn ship_lost(ctx: &Ctx, record: &RunningRecord, err: String, durably: bool) {
    let facts = Facts {
        run_id: &record.run_id,
        job: &record.job_name,
        command: "",
        plan_ms: record.slot_ms,
        start_ms: record.claimed_at_ms,
        worker: &record.worker_id,
        trigger: record.trigger,
        trace: (String::new(), String::new()),
    };
    distcron_metrics::worker().run_finished(RunStatus::Lost.as_str());
    if let Some(passed) = &record.passed_over {
        passed_over::record(ctx, &record.job_name, "", passed, false).await;
    }
    let [started, finished] = ended_unstarted(&facts, RunStatus::Lost, err, ctx.clock.now_ms());
    ctx.out.ship(started).await;
    if durably {
        ctx.out.ship_durably(finished).await;
    } else {
        // Another worker's run (its record gone with its session, or marked undelivered): nothing
        // of this worker waits on it, so it goes in its batch's time.
        ctx.out.ship(finished).await;
    }
}
