//! The claim of one slot, until the store settles it: retried while the store is unreachable
//! (the same run id, so an attempt that applied is recognised), waiting for the job's earlier
//! unclaimed slots and then taking them over, and releasing this worker's own finished runs
//! that still block it.

use std::time::Duration;

use distcron_core::records::RunningRecord;
use distcron_kv::{bounded, KvError};
use distcron_ledger::{SlotClaim, SlotOutcome, UndeliveredMarker};
use distcron_metrics::FireOutcome;
use tracing::Instrument;

use super::span::settled;
use crate::ctx::Ctx;
use crate::local::gates::ClaimGate;
use crate::outbox::claims::{attempt_timeout, CLAIM_RETRY_WINDOW};
use crate::outbox::Release;
use crate::unrun::passed_over;

/// How often a claim waiting for its unclaimed earlier slots asks again.
const BEHIND_RETRY: Duration = Duration::from_millis(100);

/// A claim [`claim_until_settled`] stopped trying without the store's answer.
pub struct GaveUp {
    /// Whether an attempt went out without a definite answer, so it may still apply.
    pub uncertain: bool,
}

/// Claims `claim`'s slot (of a job whose parsed schedule is `schedule`, its slots counted from
/// `counts_from_ms`) until the store answers, the retry window is over, or this worker stops
/// claiming. Returns the claim as sent and the store's answer, never [`SlotOutcome::Behind`]: a
/// claim whose earlier slots are unclaimed waits for them (without the job's claim `gate`, if it
/// holds it, so this worker's claims of those slots can go first), then takes them over
/// ([`crate::unrun::passed_over`]).
pub async fn claim_until_settled<'a>(
    ctx: &'a Ctx,
    counts_from_ms: i64,
    schedule: &distcron_schedule::Schedule,
    mut claim: SlotClaim,
    gate: &mut Option<ClaimGate<'a>>,
) -> Result<(SlotClaim, SlotOutcome), GaveUp> {
    claim.expect = passed_over::expect(
        counts_from_ms,
        schedule,
        ctx.cluster.ledger_of(&claim.job),
        claim.slot_ms,
    );
    let mut state = Attempts {
        give_up_at: claim.slot_ms.max(ctx.clock.now_ms())
            + i64::try_from(CLAIM_RETRY_WINDOW.as_millis()).unwrap_or(i64::MAX),
        claim,
        counts_from_ms,
        attempt: 0,
        uncertain: false,
        released_own: false,
        behind_since: None,
        failures: None,
    };
    loop {
        if ctx.cluster.stop_claiming.is_cancelled() {
            return Err(state.gave_up());
        }
        if !ctx.cluster.is_claiming() {
            state.wait_to_claim(ctx).await?;
            continue;
        }
        state.claim.session = ctx.cluster.session();
        state.claim.now_ms = ctx.clock.now_ms();
        let exists = ctx.cluster.ledger_of(&state.claim.job).is_some();
        // The batcher sends it with the other claims due now. A transaction stuck on a dying
        // etcd member is abandoned quickly and the claim retried with the same run id, so the
        // slot is still claimed before the next one of an every-second job.
        let attempt = state.attempt;
        let attempt_result = tokio::select! {
            result = ctx
                .out
                .claim_slot(state.claim.clone(), exists)
                .instrument(tracing::info_span!("claim", attempt)) => result,
            () = ctx.cluster.stop_claiming.cancelled() => return Err(GaveUp { uncertain: true }),
        };
        match attempt_result {
            Ok(SlotOutcome::Overlap { running })
                if !state.released_own && finished_here(ctx, &running) =>
            {
                state.released_own = true;
                release_finished(ctx, running).await;
            }
            Ok(SlotOutcome::Behind { ledger_ms }) => {
                state.behind(ctx, schedule, ledger_ms, gate).await;
            }
            Ok(outcome) => return Ok((state.claim, outcome)),
            Err(e) if e.is_retryable() || matches!(e, KvError::LeaseNotFound(_)) => {
                state.failed(ctx, &e).await?;
            }
            Err(e) => {
                tracing::error!(error = %e, "claim failed");
                settled(&tracing::Span::current(), FireOutcome::Missed);
                return Err(GaveUp { uncertain: true });
            }
        }
    }
}

/// Where the attempts of one claim stand.
struct Attempts {
    /// The claim as it is sent next.
    claim: SlotClaim,
    /// Slots of the job before this instant are not passed over.
    counts_from_ms: i64,
    /// When (this worker's clock) the claim is given up.
    give_up_at: i64,
    /// Failed attempts so far.
    attempt: u32,
    /// Whether an attempt went out and got no definite answer: it may still apply.
    uncertain: bool,
    /// Whether this worker's own finished runs that blocked the slot were released.
    released_own: bool,
    /// Since when (this worker's clock) the claim has been behind the ledger.
    behind_since: Option<i64>,
    /// The store failures seen, for the reason of a take-over.
    failures: Option<passed_over::StoreFailures>,
}

impl Attempts {
    /// The claim given up, as uncertain as its attempts left it.
    fn gave_up(&self) -> GaveUp {
        GaveUp {
            uncertain: self.uncertain,
        }
    }

    /// While this worker does not claim: between sessions it waits for the next one (until the
    /// retry window is over); otherwise (clock offset out of bounds) the slot is left to the
    /// other workers.
    async fn wait_to_claim(&self, ctx: &Ctx) -> Result<(), GaveUp> {
        tracing::debug!(session = ctx.cluster.session(), "not claiming");
        if ctx.cluster.session() != 0 || ctx.clock.now_ms() > self.give_up_at {
            return Err(self.gave_up());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ctx
            .cluster
            .ledger_of(&self.claim.job)
            .is_some_and(|l| l >= self.claim.slot_ms)
        {
            // Claimed elsewhere, or by an attempt of this worker that applied late.
            return Err(self.gave_up());
        }
        Ok(())
    }

    /// A retryable store failure: retried after a backoff, unless the retry window is over.
    async fn failed(&mut self, ctx: &Ctx, e: &KvError) -> Result<(), GaveUp> {
        passed_over::StoreFailures::add(&mut self.failures, ctx.clock.now_ms(), e.to_string());
        self.attempt += 1;
        self.uncertain = true;
        if ctx.clock.now_ms() > self.give_up_at {
            tracing::error!(attempts = self.attempt, error = %e, "slot missed: it could not be claimed in time");
            settled(&tracing::Span::current(), FireOutcome::Missed);
            return Err(GaveUp { uncertain: true });
        }
        tracing::warn!(attempt = self.attempt, error = %e, "claim failed; retrying");
        tokio::time::sleep(distcron_kv::backoff(self.attempt, Duration::from_secs(1))).await;
        Ok(())
    }

    /// The store answered that the job's ledger is at `ledger_ms`, behind the slot before this
    /// one: the claim expects more if the ledger moved up meanwhile, takes the unclaimed slots
    /// over once it is time to, or else waits for them.
    async fn behind<'a>(
        &mut self,
        ctx: &'a Ctx,
        schedule: &distcron_schedule::Schedule,
        ledger_ms: Option<i64>,
        gate: &mut Option<ClaimGate<'a>>,
    ) {
        let slot_ms = self.claim.slot_ms;
        let now = ctx.clock.now_ms();
        let since = *self.behind_since.get_or_insert(now);
        let fresh = passed_over::expect(self.counts_from_ms, schedule, ledger_ms, slot_ms);
        if fresh == distcron_ledger::LedgerExpect::Before {
            // The ledger moved up to the slot before this one meanwhile.
            self.claim.expect = fresh;
            return;
        }
        let earliest =
            passed_over::earliest_unclaimed(self.counts_from_ms, schedule, ledger_ms, slot_ms);
        if passed_over::takes_over_now(self.claim.trigger, earliest, since, now) {
            let reason = passed_over::reason(
                ledger_ms,
                slot_ms,
                &ctx.id,
                now - since,
                self.failures.as_ref(),
            );
            tracing::info!(
                ?ledger_ms,
                ?earliest,
                "earlier slots unclaimed; taking them over"
            );
            self.claim.expect =
                passed_over::take_over(self.counts_from_ms, schedule, ledger_ms, slot_ms, reason);
            return;
        }
        tracing::debug!(?ledger_ms, "earlier slots unclaimed; waiting for them");
        // This worker's own claims of the earlier slots wait for the job's claim gate: let them
        // have it meanwhile. The claim is sent again only once this worker's view shows the
        // ledger moved, or when it is time to take over: not a transaction per wait, which after
        // an etcd stall (every job behind at once) would swamp the store.
        let held = gate.take().is_some();
        loop {
            tokio::time::sleep(BEHIND_RETRY).await;
            let now = ctx.clock.now_ms();
            if ctx.cluster.ledger_of(&self.claim.job) != ledger_ms
                || ctx.cluster.stop_claiming.is_cancelled()
                || passed_over::takes_over_now(self.claim.trigger, earliest, since, now)
            {
                break;
            }
        }
        if held {
            *gate = Some(ctx.local.claim_gates.enter(&self.claim.job).await);
        }
    }
}

/// Only runs of this worker that have finished block the slot: their release is still queued
/// (etcd was failing over). Releases them now, so the claim can be sent again, with a marker of
/// them in the same transaction (their records may still wait in the spool, and logsvc stores a
/// run only while its running record or a marker names its worker), which the releaser adopts.
async fn release_finished(ctx: &Ctx, running: Vec<RunningRecord>) {
    let done: Vec<(String, String)> = running
        .iter()
        .map(|r| (r.job_name.clone(), r.run_id.clone()))
        .collect();
    let first = done.first().map_or("", |(_, run)| run.as_str());
    let marker = UndeliveredMarker {
        key: ctx
            .keys
            .undelivered(&ctx.id, &format!("{}-released-{first}", ctx.started_at_ms)),
        runs: running,
    };
    let changes = distcron_ledger::MarkerChanges {
        put: Some(&marker),
        delete: &[],
    };
    let released = bounded(
        attempt_timeout(&ctx.cluster.claim_latency),
        "release",
        distcron_ledger::release(ctx.store.as_ref(), &ctx.keys, &done, changes),
    )
    .await;
    if released.is_err() {
        tracing::warn!("cannot release finished runs before claiming");
    }
    // Adopted even if the answer was lost: the marker may exist, and is deleted once the runs'
    // ends are stored (deleting a marker that is not there does no harm).
    ctx.out.release(Release::Adopted(marker)).await;
}

/// Whether every run in `running` is a run of this worker that has already ended here (its
/// release queued). Not merely "of this worker and not running here": a claim of this worker
/// that applied while its answer was lost (etcd stalled) looks the same, and releasing it would
/// leave its slot claimed, never run and never recorded.
fn finished_here(ctx: &Ctx, running: &[RunningRecord]) -> bool {
    let Ok(ending) = ctx.local.ending.lock() else {
        return false;
    };
    !running.is_empty()
        && running
            .iter()
            .all(|r| r.worker_id == ctx.id && ending.contains(&r.run_id))
}
