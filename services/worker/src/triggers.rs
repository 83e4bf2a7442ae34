//! Manual triggers: the preferred worker (by rendezvous on the run id) claims a pending trigger
//! at once, the others after a standby; the winner runs it.

use std::sync::Arc;

use distcron_core::records::{RunTrigger, TriggerRequest};
use distcron_ledger::{claim_trigger, Claim};
use distcron_metrics::FireOutcome;
use tracing::Instrument;

use crate::ctx::Ctx;
use crate::fire::span::{run_span, settled};
use crate::local::LocalRun;

/// Handles a manual trigger: the preferred worker claims it at once, others after a standby.
pub fn spawn_trigger(ctx: Arc<Ctx>, job: String, run_id: String, request: TriggerRequest) {
    tokio::spawn(async move {
        let rank = ctx.cluster.rank(&format!("trigger/{run_id}"));
        if rank > 0 {
            tokio::time::sleep(ctx.cluster.standby(rank)).await;
        }
        let pending = ctx
            .cluster
            .view
            .read()
            .is_ok_and(|v| v.triggers.contains_key(&run_id));
        if !pending || !ctx.cluster.is_claiming() {
            return;
        }
        let Ok(place) = ctx.local.places.clone().try_acquire_owned() else {
            return;
        };
        let Some((def, _)) = ctx
            .cluster
            .view
            .read()
            .ok()
            .and_then(|v| v.jobs.get(&job).cloned())
        else {
            return;
        };
        let now = ctx.clock.now_ms();
        let span = run_span(
            &ctx,
            &job,
            &run_id,
            request.slot_ms,
            RunTrigger::Manual,
            &request.trace_parent,
        );
        let claimed = claim_trigger(
            ctx.store.as_ref(),
            &ctx.keys,
            &job,
            &request,
            &ctx.id,
            ctx.cluster.session(),
            now,
        )
        .instrument(tracing::info_span!(parent: &span, "claim", attempt = 0))
        .await;
        match claimed {
            Ok(Claim::Won(record)) => {
                settled(&span, FireOutcome::Triggered);
                let tasks = ctx.local.run_tasks.clone();
                let prepared = span.in_scope(|| crate::execution::prepare(&ctx, &record, &def));
                tasks.spawn(
                    async move {
                        let _place = place;
                        let local = LocalRun::of(&record);
                        crate::execution::run(ctx, record, def, prepared, local).await;
                    }
                    .instrument(span),
                );
            }
            Ok(Claim::Lost) => settled(&span, FireOutcome::LostRace),
            Err(e) => span.in_scope(|| tracing::warn!(error = %e, "trigger claim failed")),
        }
    });
}
