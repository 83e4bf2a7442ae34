//! Catch-up: the missed-slot policy of each job, evaluated from its ledger when this worker
//! starts or resynchronises (`latest`, `all`, or `skip` recording them `skipped`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use distcron_core::records::RunTrigger;
use distcron_core::{JobDefinition, MissedPolicy};
use distcron_ledger::record_skip;

use crate::ctx::Ctx;
use crate::fire::{fire_slot, Slot};
use crate::unrun::passed_over;

/// Most missed slots one catch-up looks at.
const MAX_CATCH_UP_SCAN: usize = 100_000;
/// How long a catch-up waits for this worker to be claiming (its clock offset judged).
const CATCH_UP_CLAIMING_WAIT: Duration = Duration::from_secs(15);

/// Under the missed-slot policy `skip`: moves the ledger from `ledger_ms` to `last`, the latest
/// slot missed, recording every missed slot `skipped` (exactly once: only the worker whose skip
/// transaction moved the ledger records them).
async fn skip_missed(
    ctx: &Ctx,
    def: &JobDefinition,
    revision: i64,
    schedule: &distcron_schedule::Schedule,
    ledger_ms: i64,
    last: i64,
) {
    let reason = format!(
        "skipped: missed while no worker was claiming (missed-slot policy skip; the job's ledger \
         was at {})",
        passed_over::iso(ledger_ms)
    );
    // The slots after the ledger up to and including `last`; none when they all came before the
    // job's revision.
    let passed = passed_over::between(
        passed_over::counts_from(def, None),
        schedule,
        Some(ledger_ms),
        last.saturating_add(1),
        reason,
    );
    if passed.slots.is_empty() {
        return;
    }
    let expect = distcron_ledger::LedgerExpect::PassOver {
        ledger_ms: Some(ledger_ms),
        passed: passed.clone(),
    };
    match record_skip(
        ctx.store.as_ref(),
        &ctx.keys,
        &def.name,
        revision,
        last,
        &expect,
    )
    .await
    {
        Ok(true) => passed_over::record(ctx, &def.name, &def.command, &passed, true).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(job = %def.name, error = %e, "cannot record the missed slots"),
    }
}

/// Evaluates the missed-slot policy of a job from its ledger (at start-up and after a resync):
/// `latest` runs the most recent missed slot once, `all` every missed slot in the window, `skip`
/// records them skipped. The missed slots are those before `planned_from_ms`, when the
/// scheduler began planning the job (the later ones are its own). Every worker that starts or
/// resyncs does this; [`crate::fire::fire`] then picks one claimant per slot.
/// The job's claim gate is held throughout, so this worker's regular slots of the job wait
/// until the catch-up is settled: a regular slot claimed first would move the ledger past the
/// missed ones, and they could no longer be claimed.
pub async fn catch_up(ctx: Arc<Ctx>, def: Arc<JobDefinition>, revision: i64, planned_from_ms: i64) {
    let _gate = ctx.local.claim_gates.enter(&def.name).await;
    // A worker that just joined claims only once its clock offset has been judged.
    let deadline = tokio::time::Instant::now() + CATCH_UP_CLAIMING_WAIT;
    while !ctx.cluster.is_claiming() {
        if ctx.cluster.stop_claiming.is_cancelled() || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(ledger) = ctx.cluster.ledger_of(&def.name) else {
        return;
    };
    let Ok(schedule) = def.validate().map(Arc::new) else {
        return;
    };
    // Slots from `planned_from_ms` on belong to the regular schedule.
    let now = planned_from_ms;
    let mut from = ledger.max(def.created_at);
    if def.missed_policy == MissedPolicy::All {
        from = from.max(now - i64::from(def.missed_window_seconds) * 1000);
    }
    let from = Utc
        .timestamp_millis_opt(from)
        .single()
        .unwrap_or_else(Utc::now);
    let missed: Vec<i64> = schedule
        .times_after(from)
        .map(|t| t.timestamp_millis())
        .take_while(|t| *t < now)
        .take(MAX_CATCH_UP_SCAN)
        .collect();
    let slots: Vec<i64> = match def.missed_policy {
        MissedPolicy::Latest => missed.last().copied().into_iter().collect(),
        MissedPolicy::All => missed,
        MissedPolicy::Skip => {
            if let Some(last) = missed.last() {
                skip_missed(&ctx, &def, revision, &schedule, ledger, *last).await;
            }
            Vec::new()
        }
    };
    if !slots.is_empty() {
        tracing::info!(job = %def.name, slots = slots.len(), policy = ?def.missed_policy, "catching up missed slots");
    }
    for slot in slots {
        let slot = Slot {
            def: def.clone(),
            revision,
            schedule: schedule.clone(),
            slot_ms: slot,
            trigger: RunTrigger::CatchUp,
            counts_from_ms: passed_over::counts_from(&def, None),
        };
        fire_slot(ctx.clone(), slot, true).await;
    }
}
