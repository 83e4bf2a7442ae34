//! Turning a due slot into exactly one run cluster-wide.
//!
//! The preferred worker for a (job, slot), by rendezvous hashing over the live claiming workers,
//! claims at once; the others wait a standby period and claim only if their view of the ledger
//! says the slot is still unclaimed. A dead preferred worker therefore costs a short delay, never
//! a slot, and a fire costs about one store write however many workers there are. The claim
//! itself is in [`claim`], the wait for a place in [`places`]; a won slot starts in [`start`].

pub mod claim;
pub mod places;
pub mod span;
pub mod start;

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunTrigger;
use distcron_core::{JobDefinition, OverlapPolicy};
use distcron_ledger::{SlotClaim, SlotOutcome};
use distcron_metrics::FireOutcome;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use self::claim::{claim_until_settled, GaveUp};
use self::span::{run_span, settled};
use crate::ctx::Ctx;
use crate::plan::Due;
use crate::unrun::{passed_over, skipped};

/// Fires the slot `due` names. The scheduler calls this up to the claim lead before the slot, so
/// the claim's round trip is over by the slot; a won run starts at the slot.
///
/// A claim that fails because the store is unreachable, or because this worker is between
/// sessions, is retried (the same run id, so a transaction that did apply is recognised) for up to
/// [`CLAIM_RETRY_WINDOW`](crate::outbox::claims::CLAIM_RETRY_WINDOW) after the slot; a slot still unclaimed then is reported missed.
pub async fn fire(ctx: Arc<Ctx>, due: Due) {
    let counts_from = passed_over::counts_from(&due.def, Some(due.planned_from_ms));
    let slot = Slot {
        def: due.def,
        revision: due.revision,
        schedule: due.schedule,
        slot_ms: due.slot_ms,
        trigger: RunTrigger::Schedule,
        counts_from_ms: counts_from,
    };
    fire_slot(ctx, slot, false).await;
}

/// A slot to claim, and what the claim needs to know of its job.
pub struct Slot {
    /// The job.
    pub def: Arc<JobDefinition>,
    /// Its store revision.
    pub revision: i64,
    /// Its parsed schedule.
    pub schedule: Arc<distcron_schedule::Schedule>,
    /// The slot, ms.
    pub slot_ms: i64,
    /// What fires it.
    pub trigger: RunTrigger,
    /// Slots of the job before this instant are not passed over ([`passed_over::counts_from`]).
    pub counts_from_ms: i64,
}

/// [`fire`], by a caller that holds the job's claim gate already (`gate_held`) or not.
pub async fn fire_slot(ctx: Arc<Ctx>, slot: Slot, gate_held: bool) {
    let slot_ms = slot.slot_ms;
    // When the slot is due by the monotonic clock, which no step of the wall clock moves.
    let starts_at = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(slot_ms - ctx.cluster.now_ms()).unwrap_or(0));
    let (rank, of) = ctx.cluster.place(&format!("{}/{slot_ms}", slot.def.name));
    tracing::debug!(job = %slot.def.name, slot_ms, rank, "slot due");
    if rank > 0 {
        tokio::time::sleep(ctx.cluster.standby(rank)).await;
        if claimed(&ctx, &slot) {
            return;
        }
    }
    let mut gate = if gate_held {
        None
    } else {
        Some(ctx.local.claim_gates.enter(&slot.def.name).await)
    };
    if claimed(&ctx, &slot) {
        return;
    }
    let claim = slot_claim(&ctx, &slot);
    let run_id = claim.run_id.clone();
    let span = run_span(
        &ctx,
        &slot.def.name,
        &run_id,
        slot_ms,
        slot.trigger,
        &slot.def.trace_parent,
    );
    let place = take_place(&ctx, &slot, rank, of).await;
    if claimed(&ctx, &slot) {
        return;
    }
    let outcome = claim_until_settled(&ctx, slot.counts_from_ms, &slot.schedule, claim, &mut gate)
        .instrument(span.clone())
        .await;
    drop(gate);
    match outcome {
        Ok((claim, outcome)) => {
            let won = Won { place, starts_at };
            settle_claim(ctx, &slot, claim, outcome, won, span).await;
        }
        // An attempt that failed (timed out, cut off) may still apply: its record, if it shows
        // up, is recorded and released by the orphan sweep.
        Err(GaveUp { uncertain: true }) => {
            ctx.local.abandoned.abandon(&run_id, ctx.clock.now_ms());
        }
        Err(GaveUp { uncertain: false }) => {}
    }
}

/// Whether this worker's view shows `slot` claimed (by any worker) already.
fn claimed(ctx: &Ctx, slot: &Slot) -> bool {
    ctx.cluster
        .ledger_of(&slot.def.name)
        .is_some_and(|l| l >= slot.slot_ms)
}

/// The claim of `slot` by this worker, under a new run id (session and time set per attempt).
fn slot_claim(ctx: &Ctx, slot: &Slot) -> SlotClaim {
    SlotClaim {
        job: slot.def.name.clone(),
        job_revision: slot.revision,
        slot_ms: slot.slot_ms,
        run_id: distcron_core::new_run_id(),
        worker_id: ctx.id.clone(),
        session: 0,
        now_ms: 0,
        trigger: slot.trigger,
        forbid_overlap: slot.def.overlap_policy == OverlapPolicy::Forbid,
        expect: distcron_ledger::LedgerExpect::Before,
        action: distcron_ledger::SlotAction::Run,
    }
}

/// A place for the run of `slot`, taken before claiming, for a worker of `rank` among `of`.
///
/// A worker without one leaves the slot to the workers after it in line; the last one claims
/// it all the same and waits for a place after the claim ([`start`]): the claim moves the
/// job's ledger to this slot, so no later slot claimed meanwhile elsewhere can pass over it
/// unrecorded. The last in line may be gone (killed, its session not expired yet), so the
/// others stand by as backups and claim a slot still unclaimed after it would have, before the
/// job's next slot is claimed.
async fn take_place(
    ctx: &Ctx,
    slot: &Slot,
    rank: usize,
    of: usize,
) -> Option<OwnedSemaphorePermit> {
    match ctx.local.places.clone().try_acquire_owned() {
        Ok(place) => Some(place),
        Err(_) if rank + 1 >= of => None,
        Err(_) => {
            tracing::debug!(
                capacity = ctx.settings.capacity,
                "at capacity; standing by behind the last worker in line"
            );
            let delay = places::backup_delay(ctx, &slot.def, slot.slot_ms, rank);
            tokio::time::sleep(delay).await;
            ctx.local.places.clone().try_acquire_owned().ok()
        }
    }
}

/// What a won claim starts with: its place, if it had one, and when its slot is due.
pub struct Won {
    /// The place taken before the claim, if any.
    pub place: Option<OwnedSemaphorePermit>,
    /// When the slot is due, by the monotonic clock.
    pub starts_at: tokio::time::Instant,
}

/// Acts on the outcome of `claim` of `slot`: starts a won slot (which keeps its place until it
/// has ended), records a skipped or superseded one.
async fn settle_claim(
    ctx: Arc<Ctx>,
    slot: &Slot,
    claim: SlotClaim,
    outcome: SlotOutcome,
    won: Won,
    span: tracing::Span,
) {
    let def = &slot.def;
    match outcome {
        SlotOutcome::Won(record) => {
            settled(
                &span,
                if claim.trigger == RunTrigger::CatchUp {
                    FireOutcome::CaughtUp
                } else {
                    FireOutcome::Claimed
                },
            );
            if let Some(passed) = &record.passed_over {
                passed_over::record(&ctx, &def.name, &def.command, passed, false).await;
            }
            start::spawn(ctx, def.clone(), record, won, span);
        }
        SlotOutcome::Overlap { running } => {
            let ids: Vec<&str> = running.iter().map(|r| r.run_id.as_str()).collect();
            let err = format!(
                "skipped: run {} still running (overlap policy forbid)",
                ids.join(", ")
            );
            skipped::record_skipped(&ctx, def, &claim, err, &span).await;
        }
        SlotOutcome::AlreadyClaimed { ledger_ms } => {
            settled(&span, FireOutcome::LostRace);
            span.in_scope(|| tracing::debug!(ledger_ms, "slot already claimed"));
        }
        SlotOutcome::JobChanged {
            revision: current,
            updated_at_ms,
            ledger_ms,
        } => {
            settled(&span, FireOutcome::Superseded);
            span.in_scope(|| {
                tracing::debug!(
                    revision = slot.revision,
                    ?current,
                    "job changed since the slot was planned"
                )
            });
            if let Some(current) = current.filter(|_| updated_at_ms > claim.slot_ms) {
                let change = skipped::Superseded {
                    revision: current,
                    ledger_ms,
                };
                skipped::record_superseded(&ctx, def, &slot.schedule, &claim, change, &span).await;
            }
        }
        SlotOutcome::Skipped => {
            // Only a claim with `SlotAction::Skip` is answered so, and this one asked to run.
            settled(&span, FireOutcome::Missed);
            span.in_scope(|| tracing::error!("a run claim was answered as a skip"));
        }
        SlotOutcome::Behind { ledger_ms } => {
            // `claim_until_settled` waits out or takes over every `Behind`; the slot's own record
            // then comes from the claim that passes over it.
            settled(&span, FireOutcome::LostRace);
            span.in_scope(|| tracing::warn!(?ledger_ms, "claim settled behind the ledger"));
        }
    }
}
