//! Starting a won slot: the wait for a place when it was claimed without one, the group leader
//! started ahead, the wait until the slot's time, the overlap policy `replace`, then the run.

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::{KillRequest, RunningRecord};
use distcron_core::{JobDefinition, OverlapPolicy};

use tracing::Instrument;

use super::places::{end_unplaced, place_deadline, wait_for_place};
use super::Won;
use crate::ctx::Ctx;
use crate::local::LocalRun;

/// Starts the run of `record`, a won slot of `def`, in a run task (in `span`): with the place it
/// was claimed with, or once one frees up; at the slot's time; after ending the job's older runs
/// under `replace`.
pub fn spawn(
    ctx: Arc<Ctx>,
    def: Arc<JobDefinition>,
    record: RunningRecord,
    won: Won,
    span: tracing::Span,
) {
    let tasks = ctx.local.run_tasks.clone();
    tasks.spawn(start(ctx, def, record, won).instrument(span));
}

/// The body of a run task of a won slot; see [`spawn`].
async fn start(ctx: Arc<Ctx>, def: Arc<JobDefinition>, record: RunningRecord, won: Won) {
    let local = LocalRun::of(&record);
    let slot_ms = record.slot_ms;
    let _place = match won.place {
        Some(place) => place,
        None => {
            let deadline = place_deadline(&def, slot_ms);
            match wait_for_place(&ctx, &record, &local, deadline).await {
                Ok(place) => place,
                Err(unplaced) => {
                    end_unplaced(&ctx, &def, record, unplaced).await;
                    return;
                }
            }
        }
    };
    let prepared = crate::execution::prepare(&ctx, &record, &def);
    // A slot claimed ahead of its time (the claim lead) starts at its time, by the cluster's
    // clock and by this machine's own: an offset estimate skewed by slow heartbeat delivery must
    // not start a run before its slot.
    let early = slot_ms - ctx.cluster.now_ms().min(ctx.clock.now_ms());
    if early > 0 {
        tokio::time::sleep(Duration::from_millis(early.unsigned_abs())).await;
    }
    // Nor a wall clock that stepped ahead since the slot was fired: the slot's time as the
    // monotonic clock counts it.
    tokio::time::sleep_until(won.starts_at).await;
    if def.overlap_policy == OverlapPolicy::Replace {
        replace_running(&ctx, &record).await;
    }
    crate::execution::run(ctx, record, def, prepared, local).await;
}

/// Under `replace`: asks every worker to end the job's runs claimed before `record`, and waits
/// (up to the kill grace plus a little) until they are gone.
async fn replace_running(ctx: &Ctx, record: &RunningRecord) {
    let older = |ctx: &Ctx| {
        ctx.cluster.view.read().is_ok_and(|v| {
            v.running.values().any(|r| {
                r.job_name == record.job_name
                    && r.run_id != record.run_id
                    && r.claimed_at_ms < record.claimed_at_ms
            })
        })
    };
    if !older(ctx) {
        return;
    }
    let request = KillRequest {
        run_id: String::new(),
        requested_at_ms: ctx.clock.now_ms(),
        claimed_before_ms: record.claimed_at_ms,
    };
    if let Err(e) =
        distcron_ledger::publish_kill(ctx.store.as_ref(), &ctx.keys, &record.job_name, &request)
            .await
    {
        tracing::warn!(job = %record.job_name, error = %e, "cannot ask for the replaced run to end");
    }
    let deadline = tokio::time::Instant::now() + ctx.settings.kill_grace + Duration::from_secs(3);
    while older(ctx) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
