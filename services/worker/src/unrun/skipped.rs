//! Slots that do not run: skipped under the overlap policy `forbid` (the ledger moved past the
//! slot with a skip transaction), or superseded by a change of their job.

use distcron_core::records::RunStatus;
use distcron_core::JobDefinition;
use distcron_ledger::{record_skip, SlotAction, SlotClaim, SlotOutcome};
use distcron_metrics::FireOutcome;
use tracing::Instrument;

use super::{passed_over, started_event, Facts};
use crate::ctx::Ctx;
use crate::fire::span::settled;

/// The change of a job that stopped a claim of one of its slots.
pub struct Superseded {
    /// The job's new revision.
    pub revision: i64,
    /// The ledger when the claim failed.
    pub ledger_ms: Option<i64>,
}

/// Records `claim`'s slot, which a change of its job (after the slot: the new revision plans
/// only later slots) stopped from being claimed, `skipped`, with the job's slots between the
/// ledger and it that nobody claimed either: one skip transaction under the new revision that
/// requires the ledger as it was read, so they are recorded only if no other claim or skip moved
/// it meanwhile, and exactly once. (A deleted job's are recorded from its tombstone, see
/// [`super::deleted_jobs`].)
pub async fn record_superseded(
    ctx: &Ctx,
    def: &JobDefinition,
    schedule: &distcron_schedule::Schedule,
    claim: &SlotClaim,
    change: Superseded,
    span: &tracing::Span,
) {
    let slot = claim.slot_ms;
    let reason = format!(
        "skipped: the job was changed (revision {}) before the slot was claimed",
        change.revision
    );
    // The slot itself and the unclaimed ones before it, counted as the claim counted them.
    let passed = passed_over::between(
        passed_over::counts_from(def, None),
        schedule,
        change.ledger_ms,
        slot.saturating_add(1),
        reason.clone(),
    );
    let expect = distcron_ledger::LedgerExpect::PassOver {
        ledger_ms: change.ledger_ms,
        passed: passed.clone(),
    };
    let skipped = record_skip(
        ctx.store.as_ref(),
        &ctx.keys,
        &def.name,
        change.revision,
        slot,
        &expect,
    )
    .await;
    match skipped {
        Ok(true) => {
            span.in_scope(|| tracing::info!(%reason, "slot skipped"));
            // Nothing else stands for these slots once the ledger moved: on disk first.
            passed_over::record(ctx, &def.name, &def.command, &passed, true).await;
        }
        Ok(false) => {}
        Err(e) => span.in_scope(|| tracing::warn!(error = %e, "cannot record a superseded slot")),
    }
}

/// Advances the ledger past `claim`'s slot without running it and records the run as skipped
/// with `err`, unless another worker recorded the skip (or claimed the slot) first. The skip goes
/// through the claim batcher, so a second in which many slots overlap their jobs' runs costs the
/// store a few transactions, not one per slot.
pub async fn record_skipped(
    ctx: &Ctx,
    def: &JobDefinition,
    claim: &SlotClaim,
    err: String,
    span: &tracing::Span,
) {
    let skip = SlotClaim {
        action: SlotAction::Skip,
        ..claim.clone()
    };
    let exists = ctx.cluster.ledger_of(&def.name).is_some();
    let recorded = ctx
        .out
        .claim_slot(skip, exists)
        .instrument(span.clone())
        .await
        .map(|outcome| outcome == SlotOutcome::Skipped);
    match recorded {
        Ok(true) => {
            if let distcron_ledger::LedgerExpect::PassOver { passed, .. } = &claim.expect {
                passed_over::record(ctx, &def.name, &def.command, passed, false).await;
            }
            settled(span, FireOutcome::Skipped);
            distcron_metrics::worker().run_finished(RunStatus::Skipped.as_str());
            span.in_scope(|| tracing::info!(%err, "slot skipped"));
            let facts = Facts {
                run_id: &claim.run_id,
                job: &def.name,
                command: &def.command,
                plan_ms: claim.slot_ms,
                start_ms: ctx.clock.now_ms(),
                worker: &ctx.id,
                trigger: claim.trigger,
                trace: distcron_telemetry::ids_of(span),
            };
            // The skip moved the ledger: this record is all that stands for the slot, so it goes
            // to disk before anything else (the passed-over records above are in its batch or
            // an earlier one).
            ctx.out
                .ship_durably(started_event(&facts, RunStatus::Skipped, &err))
                .await;
        }
        // Another worker recorded the skip, or claimed the slot, first.
        Ok(false) => settled(span, FireOutcome::LostRace),
        Err(e) => span.in_scope(|| tracing::warn!(error = %e, "cannot record a skipped slot")),
    }
}
