//! Stored jobs that cannot be scheduled, recorded once per revision as a `skipped` run.

use std::sync::Arc;

use distcron_core::records::{RunStatus, RunTrigger};
use distcron_core::JobDefinition;

use super::{started_event, Facts};
use crate::ctx::Ctx;

/// Records that a stored job is invalid, once per revision (the run id is derived from it).
pub async fn record_invalid(ctx: Arc<Ctx>, def: Arc<JobDefinition>, revision: i64, reason: String) {
    if ctx.cluster.rank(&format!("invalid/{}", def.name)) != 0 {
        return;
    }
    let run_id = format!("invalid-{}-{revision}", def.name);
    let now = ctx.clock.now_ms();
    let err = format!("not scheduled: stored definition is invalid: {reason}");
    let facts = Facts {
        run_id: &run_id,
        job: &def.name,
        command: &def.command,
        plan_ms: now,
        start_ms: now,
        worker: &ctx.id,
        trigger: RunTrigger::Schedule,
        trace: (String::new(), String::new()),
    };
    distcron_metrics::worker().run_finished(RunStatus::Skipped.as_str());
    ctx.out
        .ship(started_event(&facts, RunStatus::Skipped, &err))
        .await;
}
