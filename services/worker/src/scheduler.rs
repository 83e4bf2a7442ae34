//! The scheduler task: applies job changes to its [`Plan`] and fires each slot the plan says is
//! due, `--claim-lead` ahead of its time.

use std::sync::Arc;
use std::time::Duration;

use distcron_core::JobDefinition;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::plan::{JobEvent, Plan, Upserted};

/// Runs the scheduler until `stop` is cancelled.
pub async fn schedule(
    ctx: Arc<Ctx>,
    mut events: mpsc::Receiver<JobEvent>,
    stop: CancellationToken,
) {
    let mut plan = Plan::default();
    loop {
        // A step of the wall clock stops claims before any slot it made due is fired.
        ctx.cluster.check_clock();
        // Slots are fired `claim_lead` early: claimed ahead, started at their time.
        let lead = i64::try_from(ctx.settings.claim_lead.as_millis()).unwrap_or(0);
        let now = ctx.cluster.now_ms();
        let sleep = plan.next_due().map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(u64::try_from(t - lead - now).unwrap_or(0))
        });
        tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => {
                let Some(event) = event else { return };
                apply(&ctx, &mut plan, event);
                distcron_metrics::worker()
                    .scheduled_jobs
                    .set(i64::try_from(plan.len()).unwrap_or(i64::MAX));
            }
            () = tokio::time::sleep(sleep) => {
                ctx.cluster.check_clock();
                for due in plan.pop_due(ctx.cluster.now_ms() + lead) {
                    let ctx = ctx.clone();
                    tokio::spawn(crate::fire::fire(ctx, due));
                }
            }
        }
    }
}

fn apply(ctx: &Arc<Ctx>, plan: &mut Plan, event: JobEvent) {
    let now = ctx.cluster.now_ms();
    match event {
        JobEvent::Upsert(def, revision) => upsert(ctx, plan, def, revision, now, false),
        JobEvent::Remove(name) => plan.remove(&name),
        JobEvent::Reset(jobs) => {
            let keep: std::collections::HashSet<&str> =
                jobs.iter().map(|(d, _)| d.name.as_str()).collect();
            for name in plan.names() {
                if !keep.contains(name.as_str()) {
                    plan.remove(&name);
                }
            }
            for (def, revision) in jobs {
                upsert(ctx, plan, def, revision, now, true);
            }
        }
    }
}

fn upsert(
    ctx: &Arc<Ctx>,
    plan: &mut Plan,
    def: Arc<JobDefinition>,
    revision: i64,
    now: i64,
    catch_up: bool,
) {
    match plan.upsert(def.clone(), revision, now) {
        Upserted::Scheduled(_) => {
            if catch_up {
                tokio::spawn(crate::catch_up::catch_up(ctx.clone(), def, revision, now));
            }
        }
        // Its last slot may have passed while no worker ran: catch-up settles it by the policy.
        Upserted::Finished => {
            tracing::debug!(job = %def.name, revision, "job has no slot to come; not scheduled");
            if catch_up {
                tokio::spawn(crate::catch_up::catch_up(ctx.clone(), def, revision, now));
            }
        }
        Upserted::Disabled => {}
        Upserted::Invalid(reason) => {
            tracing::error!(job = %def.name, revision, %reason, "stored job is invalid; not scheduled");
            tokio::spawn(crate::unrun::invalid::record_invalid(
                ctx.clone(),
                def,
                revision,
                reason,
            ));
        }
    }
}
