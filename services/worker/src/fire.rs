//! Turning a due slot (or a manual trigger) into exactly one run cluster-wide.
//!
//! The preferred worker for a (job, slot), by rendezvous hashing over the live claiming workers,
//! claims at once; the others wait a standby period and claim only if their view of the ledger
//! says the slot is still unclaimed. A dead preferred worker therefore costs a short delay, never
//! a slot, and a fire costs about one store write however many workers there are.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use distcron_core::records::{KillRequest, RunTrigger, RunningRecord, TriggerRequest};
use distcron_core::{JobDefinition, MissedPolicy, OverlapPolicy};
use distcron_kv::{bounded, KvError};
use distcron_ledger::{claim_trigger, record_skip, Claim, SlotClaim, SlotOutcome};
use distcron_metrics::FireOutcome;
use distcron_proto::logs::v1 as pb;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::ctx::{Ctx, LocalRun};
use crate::passed_over;

/// How often a claim waiting for its unclaimed earlier slots asks again.
const BEHIND_RETRY: Duration = Duration::from_millis(100);
/// Most missed slots one catch-up looks at.
const MAX_CATCH_UP_SCAN: usize = 100_000;
/// How long after its time a slot whose claim keeps failing is retried.
pub const CLAIM_RETRY_WINDOW: Duration = Duration::from_secs(30);
/// How long a catch-up waits for this worker to be claiming (its clock offset judged).
const CATCH_UP_CLAIMING_WAIT: Duration = Duration::from_secs(15);
/// Longest a slot waits for a place on the last worker in line (less when the job's next slot
/// comes sooner).
pub const PLACE_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn trigger_to_proto(t: RunTrigger) -> i32 {
    (match t {
        RunTrigger::Schedule => pb::RunTrigger::Schedule,
        RunTrigger::Manual => pb::RunTrigger::Manual,
        RunTrigger::CatchUp => pb::RunTrigger::CatchUp,
    }) as i32
}

/// What is known of a run that this worker records without running it.
struct Facts<'a> {
    run_id: &'a str,
    job: &'a str,
    command: &'a str,
    plan_ms: i64,
    start_ms: i64,
    worker: &'a str,
    trigger: RunTrigger,
    /// Trace and span id of the run's span (empty when the run is not this worker's).
    trace: (String, String),
}

/// The span of one fire of a job: the claim and, when won, the run (spawn, exit, and the
/// delivery of its events). Its trace id is stored with the run; it links to the request that
/// wrote the job's revision (or asked for the manual run).
pub(crate) fn run_span(
    ctx: &Ctx,
    job: &str,
    run_id: &str,
    slot_ms: i64,
    trigger: RunTrigger,
    cause: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "run",
        job = %job,
        run_id = %run_id,
        slot_ms,
        worker = %ctx.id,
        trigger = ?trigger,
        outcome = tracing::field::Empty,
    );
    distcron_telemetry::link_to(&span, cause);
    span
}

/// Counts `outcome` and records it on the fire's span.
fn settled(span: &tracing::Span, outcome: FireOutcome) {
    distcron_metrics::worker().fire(outcome);
    span.record("outcome", format!("{outcome:?}"));
}

/// A `started` event for a run that never starts (skipped), or of a run recorded by another
/// worker (lost).
fn started_event(f: &Facts<'_>, status: pb::RunStatus, err: &str) -> pb::RunEvent {
    pb::RunEvent {
        run_id: f.run_id.to_owned(),
        trace_id: f.trace.0.clone(),
        span_id: f.trace.1.clone(),
        kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
            job_name: f.job.to_owned(),
            command: f.command.to_owned(),
            plan_time_ms: f.plan_ms,
            schedule_time_ms: f.start_ms,
            start_time_ms: f.start_ms,
            worker_id: f.worker.to_owned(),
            trigger: trigger_to_proto(f.trigger),
            status: status as i32,
            err: err.to_owned(),
        })),
    }
}

/// Fires the slot `due` names. The scheduler calls this up to the claim lead before the slot, so
/// the claim's round trip is over by the slot; a won run starts at the slot.
///
/// A claim that fails because the store is unreachable, or because this worker is between
/// sessions, is retried (the same run id, so a transaction that did apply is recognised) for up to
/// [`CLAIM_RETRY_WINDOW`] after the slot; a slot still unclaimed then is reported missed.
pub async fn fire(ctx: Arc<Ctx>, due: crate::scheduler::Due) {
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
struct Slot {
    def: Arc<JobDefinition>,
    revision: i64,
    schedule: Arc<distcron_schedule::Schedule>,
    slot_ms: i64,
    trigger: RunTrigger,
    /// Slots of the job before this instant are not passed over ([`passed_over::counts_from`]).
    counts_from_ms: i64,
}

/// [`fire`], by a caller that holds the job's claim gate already (`gate_held`) or not.
async fn fire_slot(ctx: Arc<Ctx>, slot: Slot, gate_held: bool) {
    let Slot {
        def,
        revision,
        schedule,
        slot_ms,
        trigger,
        counts_from_ms,
    } = slot;
    // When the slot is due by the monotonic clock, which no step of the wall clock moves.
    let starts_at = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(slot_ms - ctx.cluster_now_ms()).unwrap_or(0));
    let (rank, of) = ctx.place(&format!("{}/{slot_ms}", def.name));
    tracing::debug!(job = %def.name, slot_ms, rank, "slot due");
    if rank > 0 {
        tokio::time::sleep(ctx.standby(rank)).await;
        if ctx.ledger_of(&def.name).is_some_and(|l| l >= slot_ms) {
            return;
        }
    }
    let mut gate = if gate_held {
        None
    } else {
        Some(ctx.claim_gate(&def.name).await)
    };
    if ctx.ledger_of(&def.name).is_some_and(|l| l >= slot_ms) {
        return;
    }
    let run_id = distcron_core::new_run_id();
    let span = run_span(
        &ctx,
        &def.name,
        &run_id,
        slot_ms,
        trigger,
        &def.trace_parent,
    );
    let claim = SlotClaim {
        job: def.name.clone(),
        job_revision: revision,
        slot_ms,
        run_id,
        worker_id: ctx.id.clone(),
        session: 0,
        now_ms: 0,
        trigger,
        forbid_overlap: def.overlap_policy == OverlapPolicy::Forbid,
        expect: distcron_ledger::LedgerExpect::Before,
    };
    // A place for the run is taken before claiming. A worker without one leaves the slot to the
    // workers after it in line; the last one claims it all the same and waits for a place after
    // the claim (see `settle_claim`): the claim moves the job's ledger to this slot, so no later
    // slot claimed meanwhile elsewhere can pass over it unrecorded. The last in line may be gone
    // (killed, its session not expired yet), so the others stand by as backups and claim a slot
    // still unclaimed after it would have, before the job's next slot is claimed.
    let place = match ctx.places.clone().try_acquire_owned() {
        Ok(place) => Some(place),
        Err(_) if rank + 1 >= of => None,
        Err(_) => {
            tracing::debug!(
                capacity = ctx.settings.capacity,
                "at capacity; standing by behind the last worker in line"
            );
            tokio::time::sleep(backup_delay(&ctx, &def, slot_ms, rank)).await;
            ctx.places.clone().try_acquire_owned().ok()
        }
    };
    if ctx.ledger_of(&def.name).is_some_and(|l| l >= slot_ms) {
        return;
    }
    let run_id = claim.run_id.clone();
    let outcome = claim_until_settled(&ctx, counts_from_ms, &schedule, claim, &mut gate)
        .instrument(span.clone())
        .await;
    drop(gate);
    match outcome {
        Ok((claim, outcome)) => {
            settle_claim(
                ctx, def, revision, &schedule, claim, outcome, place, starts_at, span,
            )
            .await;
        }
        // An attempt that failed (timed out, cut off) may still apply: its record, if it shows
        // up, is recorded and released by the orphan sweep.
        Err(GaveUp { uncertain: true }) => ctx.abandoned.abandon(&run_id, ctx.clock.now_ms()),
        Err(GaveUp { uncertain: false }) => {}
    }
}

/// A claim [`claim_until_settled`] stopped trying without the store's answer.
struct GaveUp {
    /// Whether an attempt went out without a definite answer, so it may still apply.
    uncertain: bool,
}

/// How much longer than its standby a worker of `rank` with no place waits before claiming a slot
/// of `def` at `slot_ms` as a backup ([`Ctx::backup_standby`]); at most half the time left until
/// the job's next slot comes up for claiming, so a claim of the next slot elsewhere cannot pass
/// over this one.
fn backup_delay(ctx: &Ctx, def: &JobDefinition, slot_ms: i64, rank: usize) -> Duration {
    let lead = i64::try_from(ctx.settings.claim_lead.as_millis()).unwrap_or(0);
    let next_claim_in = place_deadline(def, slot_ms) - lead - ctx.clock.now_ms();
    let half = Duration::from_millis(u64::try_from(next_claim_in / 2).unwrap_or(0));
    ctx.backup_standby(rank)
        .saturating_sub(ctx.standby(rank))
        .min(half)
}

/// Until when (this worker's clock) a slot of `def` at `slot_ms` waits for a place: the job's next
/// slot, at most [`PLACE_WAIT`] after this one.
fn place_deadline(def: &JobDefinition, slot_ms: i64) -> i64 {
    let longest = slot_ms.saturating_add(i64::try_from(PLACE_WAIT.as_millis()).unwrap_or(i64::MAX));
    let next = def.validate().ok().and_then(|schedule| {
        let slot = Utc.timestamp_millis_opt(slot_ms).single()?;
        schedule.next_after(slot)
    });
    next.map_or(longest, |n| n.timestamp_millis().min(longest))
}

/// How a run claimed without a place ended before it started, and why.
enum Unplaced {
    /// No place freed up in time, or the worker stopped taking work.
    Skipped(String),
    /// Ended like a running run: a kill request, a lost session.
    Killed(String),
}

/// Waits, for the run of `record` claimed without a place, until a place frees up (handed out in
/// the order they were asked for). The run can be ended meanwhile like a running one (kill
/// requests, a lost session); it gives up at `deadline_ms` (this worker's clock), and when the
/// worker stops taking work.
async fn wait_for_place(
    ctx: &Ctx,
    record: &RunningRecord,
    local: &LocalRun,
    deadline_ms: i64,
) -> Result<OwnedSemaphorePermit, Unplaced> {
    if let Ok(mut waiting) = ctx.waiting.lock() {
        waiting.insert(record.run_id.clone(), local.clone());
    }
    let left = Duration::from_millis((deadline_ms - ctx.clock.now_ms()).max(0).unsigned_abs());
    let waited = tokio::select! {
        place = ctx.places.clone().acquire_owned() => place.map_err(|_| Unplaced::Skipped(
            "skipped: the worker stopped while the run waited for a place".into(),
        )),
        () = tokio::time::sleep(left) => Err(Unplaced::Skipped(format!(
            "skipped: every worker was at capacity ({} runs on {}, which claimed it without a \
             place and waited until the job's next slot)",
            ctx.running_count(),
            ctx.id
        ))),
        () = ctx.stop_claiming.cancelled() => Err(Unplaced::Skipped(
            "skipped: the worker stopped while the run waited for a place".into(),
        )),
        () = local.stop.cancelled() => Err(Unplaced::Killed(format!(
            "{} (while it waited for a place; it never started)",
            local.reason.get()
        ))),
    };
    // Running from here on (or ended): it moves to the runs before it leaves the waiting ones, so
    // a kill request always finds it.
    if waited.is_ok() {
        if let Ok(mut runs) = ctx.runs.lock() {
            runs.insert(record.run_id.clone(), local.clone());
        }
    }
    if let Ok(mut waiting) = ctx.waiting.lock() {
        waiting.remove(&record.run_id);
    }
    waited
}

/// Records the run of `record`, claimed but never started, as `unplaced` says, and releases its
/// running record. A skipped run is one `started` event, like any skipped slot; a killed one is
/// `started` at its claim and `finished` now, like a lost one.
async fn end_unplaced(ctx: &Ctx, def: &JobDefinition, record: RunningRecord, unplaced: Unplaced) {
    let facts = Facts {
        run_id: &record.run_id,
        job: &def.name,
        command: &def.command,
        plan_ms: record.slot_ms,
        start_ms: record.claimed_at_ms,
        worker: &ctx.id,
        trigger: record.trigger,
        trace: distcron_telemetry::ids_of(&tracing::Span::current()),
    };
    match unplaced {
        Unplaced::Skipped(err) => {
            tracing::info!(%err, "slot skipped");
            distcron_metrics::worker().run_finished("skipped");
            ctx.ship_durably(started_event(&facts, pb::RunStatus::Skipped, &err))
                .await;
        }
        Unplaced::Killed(err) => {
            tracing::info!(%err, "run ended before it started");
            distcron_metrics::worker().run_finished("killed");
            let [started, finished] =
                ended_unstarted(&facts, pb::RunStatus::Killed, err, ctx.clock.now_ms());
            ctx.ship(started).await;
            // Its running record is released next: the end goes to disk first.
            ctx.ship_durably(finished).await;
        }
    }
    ctx.release_record(record).await;
}

/// Claims `claim`'s slot (of a job whose parsed schedule is `schedule`, its slots counted from
/// `counts_from_ms`) until the store answers, the retry window is over, or this worker stops
/// claiming. Returns the claim as sent and the store's answer, never [`SlotOutcome::Behind`]: a
/// claim whose earlier slots are unclaimed waits for them (without the job's claim `gate`, if it
/// holds it, so this worker's claims of those slots can go first), then takes them over
/// ([`crate::passed_over`]).
async fn claim_until_settled<'a>(
    ctx: &'a Ctx,
    counts_from_ms: i64,
    schedule: &distcron_schedule::Schedule,
    mut claim: SlotClaim,
    gate: &mut Option<crate::ctx::ClaimGate<'a>>,
) -> Result<(SlotClaim, SlotOutcome), GaveUp> {
    let (job, slot_ms) = (claim.job.clone(), claim.slot_ms);
    let give_up_at = slot_ms.max(ctx.clock.now_ms())
        + i64::try_from(CLAIM_RETRY_WINDOW.as_millis()).unwrap_or(i64::MAX);
    claim.expect = passed_over::expect(counts_from_ms, schedule, ctx.ledger_of(&job), slot_ms);
    let mut attempt = 0;
    // Whether an attempt went out and got no definite answer: it may still apply.
    let mut uncertain = false;
    let gave_up = |uncertain| Err(GaveUp { uncertain });
    let mut released_own = false;
    let mut behind_since = None;
    let mut failures = None;
    loop {
        if ctx.stop_claiming.is_cancelled() {
            return gave_up(uncertain);
        }
        if !ctx.is_claiming() {
            tracing::debug!(session = ctx.session(), "not claiming");
            // Between sessions the worker waits for the next one; otherwise (clock offset out of
            // bounds) the slot is left to the other workers.
            if ctx.session() != 0 || ctx.clock.now_ms() > give_up_at {
                return gave_up(uncertain);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if ctx.ledger_of(&job).is_some_and(|l| l >= slot_ms) {
                // Claimed elsewhere, or by an attempt of this worker that applied late.
                return gave_up(uncertain);
            }
            continue;
        }
        claim.session = ctx.session();
        claim.now_ms = ctx.clock.now_ms();
        let exists = ctx.ledger_of(&job).is_some();
        // The batcher sends it with the other claims due now. A transaction stuck on a dying
        // etcd member is abandoned quickly and the claim retried with the same run id, so the
        // slot is still claimed before the next one of an every-second job.
        let attempt_result = tokio::select! {
            result = ctx
                .claim_slot(claim.clone(), exists)
                .instrument(tracing::info_span!("claim", attempt)) => result,
            () = ctx.stop_claiming.cancelled() => return gave_up(true),
        };
        match attempt_result {
            Ok(SlotOutcome::Overlap { running })
                if !released_own && finished_here(ctx, &running) =>
            {
                // Only runs of this worker that have finished block the slot: their release is
                // still queued (etcd was failing over). Release them now and claim again (the
                // releaser, which still has them queued, writes their marker).
                released_own = true;
                let done: Vec<(String, String)> = running
                    .into_iter()
                    .map(|r| (r.job_name, r.run_id))
                    .collect();
                let released = bounded(
                    crate::claims::attempt_timeout(ctx),
                    "release",
                    distcron_ledger::release(
                        ctx.store.as_ref(),
                        &ctx.keys,
                        &done,
                        distcron_ledger::MarkerChanges::default(),
                    ),
                )
                .await;
                if released.is_err() {
                    tracing::warn!("cannot release finished runs before claiming");
                }
            }
            Ok(SlotOutcome::Behind { ledger_ms }) => {
                let now = ctx.clock.now_ms();
                let since = *behind_since.get_or_insert(now);
                let fresh = passed_over::expect(counts_from_ms, schedule, ledger_ms, slot_ms);
                if fresh == distcron_ledger::LedgerExpect::Before {
                    // The ledger moved up to the slot before this one meanwhile.
                    claim.expect = fresh;
                    continue;
                }
                let earliest =
                    passed_over::earliest_unclaimed(counts_from_ms, schedule, ledger_ms, slot_ms);
                if passed_over::takes_over_now(claim.trigger, earliest, since, now) {
                    let reason = passed_over::reason(
                        ledger_ms,
                        slot_ms,
                        &ctx.id,
                        now - since,
                        failures.as_ref(),
                    );
                    tracing::info!(
                        ?ledger_ms,
                        ?earliest,
                        "earlier slots unclaimed; taking them over"
                    );
                    claim.expect = passed_over::take_over(
                        counts_from_ms,
                        schedule,
                        ledger_ms,
                        slot_ms,
                        reason,
                    );
                } else {
                    tracing::debug!(?ledger_ms, "earlier slots unclaimed; waiting for them");
                    // This worker's own claims of the earlier slots wait for the job's claim
                    // gate: let them have it meanwhile. The claim is sent again only once this
                    // worker's view shows the ledger moved, or when it is time to take over: not
                    // a transaction per wait, which after an etcd stall (every job behind at
                    // once) would swamp the store.
                    let held = gate.take().is_some();
                    loop {
                        tokio::time::sleep(BEHIND_RETRY).await;
                        let now = ctx.clock.now_ms();
                        if ctx.ledger_of(&job) != ledger_ms
                            || ctx.stop_claiming.is_cancelled()
                            || passed_over::takes_over_now(claim.trigger, earliest, since, now)
                        {
                            break;
                        }
                    }
                    if held {
                        *gate = Some(ctx.claim_gate(&job).await);
                    }
                }
            }
            Ok(outcome) => return Ok((claim, outcome)),
            Err(e) if e.is_retryable() || matches!(e, KvError::LeaseNotFound(_)) => {
                passed_over::StoreFailures::add(&mut failures, ctx.clock.now_ms(), e.to_string());
                attempt += 1;
                uncertain = true;
                if ctx.clock.now_ms() > give_up_at {
                    tracing::error!(attempts = attempt, error = %e, "slot missed: it could not be claimed in time");
                    settled(&tracing::Span::current(), FireOutcome::Missed);
                    return gave_up(true);
                }
                tracing::warn!(attempt, error = %e, "claim failed; retrying");
                tokio::time::sleep(distcron_kv::backoff(attempt, Duration::from_secs(1))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "claim failed");
                settled(&tracing::Span::current(), FireOutcome::Missed);
                return gave_up(true);
            }
        }
    }
}

/// Whether every run in `running` is a run of this worker that has already ended here (its
/// release queued). Not merely "of this worker and not running here": a claim of this worker
/// that applied while its answer was lost (etcd stalled) looks the same, and releasing it would
/// leave its slot claimed, never run and never recorded.
fn finished_here(ctx: &Ctx, running: &[RunningRecord]) -> bool {
    let Ok(ending) = ctx.ending.lock() else {
        return false;
    };
    !running.is_empty()
        && running
            .iter()
            .all(|r| r.worker_id == ctx.id && ending.contains(&r.run_id))
}

/// Acts on the outcome of a claim: runs a won slot (which keeps `place` until it has ended),
/// records a skipped one.
#[allow(clippy::too_many_arguments)]
async fn settle_claim(
    ctx: Arc<Ctx>,
    def: Arc<JobDefinition>,
    revision: i64,
    schedule: &distcron_schedule::Schedule,
    claim: SlotClaim,
    outcome: SlotOutcome,
    place: Option<OwnedSemaphorePermit>,
    starts_at: tokio::time::Instant,
    span: tracing::Span,
) {
    let slot_ms = claim.slot_ms;
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
            let tasks = ctx.run_tasks.clone();
            let local = LocalRun::of(&record);
            tasks.spawn(
                async move {
                    let _place = match place {
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
                    let prepared = crate::runner::prepare(&ctx, &record, &def);
                    // A slot claimed ahead of its time (the claim lead) starts at its time, by
                    // the cluster's clock and by this machine's own: an offset estimate skewed by
                    // slow heartbeat delivery must not start a run before its slot.
                    let early = slot_ms - ctx.cluster_now_ms().min(ctx.clock.now_ms());
                    if early > 0 {
                        tokio::time::sleep(Duration::from_millis(early.unsigned_abs())).await;
                    }
                    // Nor a wall clock that stepped ahead since the slot was fired: the slot's
                    // time as the monotonic clock counts it.
                    tokio::time::sleep_until(starts_at).await;
                    if def.overlap_policy == OverlapPolicy::Replace {
                        replace_running(&ctx, &record).await;
                    }
                    crate::runner::run(ctx, record, def, prepared, local).await;
                }
                .instrument(span),
            );
        }
        SlotOutcome::Overlap { running } => {
            let ids: Vec<&str> = running.iter().map(|r| r.run_id.as_str()).collect();
            let err = format!(
                "skipped: run {} still running (overlap policy forbid)",
                ids.join(", ")
            );
            record_skipped(&ctx, &def, revision, &claim, err, &span).await;
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
                tracing::debug!(revision, ?current, "job changed since the slot was planned")
            });
            if let Some(current) = current.filter(|_| updated_at_ms > slot_ms) {
                let change = Superseded {
                    revision: current,
                    ledger_ms,
                };
                record_superseded(&ctx, &def, schedule, &claim, change, &span).await;
            }
        }
        SlotOutcome::Behind { ledger_ms } => {
            // `claim_until_settled` waits out or takes over every `Behind`; the slot's own record
            // then comes from the claim that passes over it.
            settled(&span, FireOutcome::LostRace);
            span.in_scope(|| tracing::warn!(?ledger_ms, "claim settled behind the ledger"));
        }
    }
}

/// The change of a job that stopped a claim of one of its slots.
struct Superseded {
    /// The job's new revision.
    revision: i64,
    /// The ledger when the claim failed.
    ledger_ms: Option<i64>,
}

/// Records `claim`'s slot, which a change of its job (after the slot: the new revision plans
/// only later slots) stopped from being claimed, `skipped`, with the job's slots between the
/// ledger and it that nobody claimed either: one skip transaction under the new revision that
/// requires the ledger as it was read, so they are recorded only if no other claim or skip moved
/// it meanwhile, and exactly once. (A deleted job's are recorded from its tombstone, see
/// [`crate::deleted_jobs`].)
async fn record_superseded(
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
/// with `err`, unless another worker recorded the skip (or claimed the slot) first.
async fn record_skipped(
    ctx: &Ctx,
    def: &JobDefinition,
    revision: i64,
    claim: &SlotClaim,
    err: String,
    span: &tracing::Span,
) {
    let recorded = record_skip(
        ctx.store.as_ref(),
        &ctx.keys,
        &def.name,
        revision,
        claim.slot_ms,
        &claim.expect,
    )
    .instrument(span.clone())
    .await;
    match recorded {
        Ok(true) => {
            if let distcron_ledger::LedgerExpect::PassOver { passed, .. } = &claim.expect {
                passed_over::record(ctx, &def.name, &def.command, passed, false).await;
            }
            settled(span, FireOutcome::Skipped);
            distcron_metrics::worker().run_finished("skipped");
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
            ctx.ship_durably(started_event(&facts, pb::RunStatus::Skipped, &err))
                .await;
        }
        // Another worker recorded the skip, or claimed the slot, first.
        Ok(false) => settled(span, FireOutcome::LostRace),
        Err(e) => span.in_scope(|| tracing::warn!(error = %e, "cannot record a skipped slot")),
    }
}

/// Under `replace`: asks every worker to end the job's runs claimed before `record`, and waits
/// (up to the kill grace plus a little) until they are gone.
async fn replace_running(ctx: &Arc<Ctx>, record: &RunningRecord) {
    let older = |ctx: &Ctx| {
        ctx.view.read().is_ok_and(|v| {
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

/// Handles a manual trigger: the preferred worker claims it at once, others after a standby.
pub fn spawn_trigger(ctx: Arc<Ctx>, job: String, run_id: String, request: TriggerRequest) {
    tokio::spawn(async move {
        let rank = ctx.rank(&format!("trigger/{run_id}"));
        if rank > 0 {
            tokio::time::sleep(ctx.standby(rank)).await;
        }
        let pending = ctx
            .view
            .read()
            .is_ok_and(|v| v.triggers.contains_key(&run_id));
        if !pending || !ctx.is_claiming() {
            return;
        }
        let Ok(place) = ctx.places.clone().try_acquire_owned() else {
            return;
        };
        let Some((def, _)) = ctx.view.read().ok().and_then(|v| v.jobs.get(&job).cloned()) else {
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
            ctx.session(),
            now,
        )
        .instrument(tracing::info_span!(parent: &span, "claim", attempt = 0))
        .await;
        match claimed {
            Ok(Claim::Won(record)) => {
                settled(&span, FireOutcome::Triggered);
                let tasks = ctx.run_tasks.clone();
                let prepared = span.in_scope(|| crate::runner::prepare(&ctx, &record, &def));
                tasks.spawn(
                    async move {
                        let _place = place;
                        let local = LocalRun::of(&record);
                        crate::runner::run(ctx, record, def, prepared, local).await;
                    }
                    .instrument(span),
                );
            }
            Ok(Claim::Lost) => settled(&span, FireOutcome::LostRace),
            Err(e) => span.in_scope(|| tracing::warn!(error = %e, "trigger claim failed")),
        }
    });
}

/// Records a run whose worker died as `lost`. Exactly one live worker (by rendezvous on the run
/// id) does it; the events are idempotent anyway.
pub async fn record_lost(ctx: &Arc<Ctx>, record: RunningRecord) {
    if ctx.stop_claiming.is_cancelled() || ctx.rank(&format!("lost/{}", record.run_id)) != 0 {
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
pub(crate) async fn ship_lost(ctx: &Ctx, record: &RunningRecord, err: String, durably: bool) {
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
    distcron_metrics::worker().run_finished("lost");
    if let Some(passed) = &record.passed_over {
        passed_over::record(ctx, &record.job_name, "", passed, false).await;
    }
    let [started, finished] = ended_unstarted(&facts, pb::RunStatus::Lost, err, ctx.clock.now_ms());
    ctx.ship(started).await;
    if durably {
        ctx.ship_durably(finished).await;
    } else {
        // Another worker's run (its record gone with its session, or marked undelivered): nothing
        // of this worker waits on it, so it goes in its batch's time.
        ctx.ship(finished).await;
    }
}

/// The `started` event at `facts.start_ms` and the `finished` event at `end_ms` with `status` and
/// `err`, for a run that ended without a process of its own here (lost, or killed while waiting
/// for a place).
fn ended_unstarted(
    facts: &Facts<'_>,
    status: pb::RunStatus,
    err: String,
    end_ms: i64,
) -> [pb::RunEvent; 2] {
    let finished = pb::RunEvent {
        run_id: facts.run_id.to_owned(),
        trace_id: facts.trace.0.clone(),
        span_id: facts.trace.1.clone(),
        kind: Some(pb::run_event::Kind::Finished(pb::RunFinished {
            status: status as i32,
            end_time_ms: end_ms,
            exit_code: None,
            signal: None,
            err,
            output_bytes_dropped: 0,
        })),
    };
    [started_event(facts, pb::RunStatus::Running, ""), finished]
}

/// Running records of this worker that no local run owns: a claim transaction that applied
/// after this worker had given up on it. Those of claims this worker knows it abandoned
/// ([`crate::abandoned`]) are taken at once, others once older than `min_age`. Each is recorded
/// `lost` (ignored by logsvc if the run in fact finished and only its release is pending), its
/// end on disk before it is released, so it never blocks the job's overlap policy or leaves its
/// slot without a record. Returns the (job, run id) pairs to release.
pub async fn sweep_orphans(ctx: &Arc<Ctx>, min_age: Duration) -> Vec<(String, String)> {
    let now = ctx.clock.now_ms();
    let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
    let mut local: std::collections::HashSet<String> = ctx
        .runs
        .lock()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    if let Ok(waiting) = ctx.waiting.lock() {
        local.extend(waiting.keys().cloned());
    }
    if let Ok(ending) = ctx.ending.lock() {
        local.extend(ending.iter().cloned());
    }
    let orphans: Vec<RunningRecord> = ctx
        .view
        .read()
        .map(|v| {
            v.running
                .values()
                .filter(|r| {
                    r.worker_id == ctx.id
                        && !local.contains(&r.run_id)
                        && (ctx.abandoned.take(&r.run_id) || now - r.claimed_at_ms > min_age_ms)
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

/// Records that a stored job is invalid, once per revision (the run id is derived from it).
pub async fn record_invalid(ctx: Arc<Ctx>, def: Arc<JobDefinition>, revision: i64, reason: String) {
    if ctx.rank(&format!("invalid/{}", def.name)) != 0 {
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
    distcron_metrics::worker().run_finished("skipped");
    ctx.ship(started_event(&facts, pb::RunStatus::Skipped, &err))
        .await;
}

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
/// resyncs does this; [`fire`] then picks one claimant per slot.
/// The job's claim gate is held throughout, so this worker's regular slots of the job wait
/// until the catch-up is settled: a regular slot claimed first would move the ledger past the
/// missed ones, and they could no longer be claimed.
pub async fn catch_up(ctx: Arc<Ctx>, def: Arc<JobDefinition>, revision: i64, planned_from_ms: i64) {
    let _gate = ctx.claim_gate(&def.name).await;
    // A worker that just joined claims only once its clock offset has been judged.
    let deadline = tokio::time::Instant::now() + CATCH_UP_CLAIMING_WAIT;
    while !ctx.is_claiming() {
        if ctx.stop_claiming.is_cancelled() || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(ledger) = ctx.ledger_of(&def.name) else {
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
