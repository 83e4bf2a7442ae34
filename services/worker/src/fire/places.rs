//! Places: a run needs one of this worker's `--capacity` places. A slot claimed by the last
//! worker in line without a place waits here for one (in the order they were asked for), until
//! the job's next slot, and is recorded `skipped` (or `killed`) if none frees up.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use distcron_core::records::{RunStatus, RunningRecord};
use distcron_core::JobDefinition;
use tokio::sync::OwnedSemaphorePermit;

use crate::ctx::Ctx;
use crate::local::LocalRun;
use crate::unrun::{ended_unstarted, started_event, Facts};

/// Longest a slot waits for a place on the last worker in line (less when the job's next slot
/// comes sooner).
pub const PLACE_WAIT: Duration = Duration::from_secs(30);

/// How much longer than its standby a worker of `rank` with no place waits before claiming a slot
/// of `def` at `slot_ms` as a backup ([`crate::cluster::Cluster::backup_standby`]); at most half the time left until
/// the job's next slot comes up for claiming, so a claim of the next slot elsewhere cannot pass
/// over this one.
pub fn backup_delay(ctx: &Ctx, def: &JobDefinition, slot_ms: i64, rank: usize) -> Duration {
    let lead = i64::try_from(ctx.settings.claim_lead.as_millis()).unwrap_or(0);
    let next_claim_in = place_deadline(def, slot_ms) - lead - ctx.clock.now_ms();
    let half = Duration::from_millis(u64::try_from(next_claim_in / 2).unwrap_or(0));
    ctx.cluster
        .backup_standby(rank)
        .saturating_sub(ctx.cluster.standby(rank))
        .min(half)
}

/// Until when (this worker's clock) a slot of `def` at `slot_ms` waits for a place: the job's next
/// slot, at most [`PLACE_WAIT`] after this one.
pub fn place_deadline(def: &JobDefinition, slot_ms: i64) -> i64 {
    let longest = slot_ms.saturating_add(i64::try_from(PLACE_WAIT.as_millis()).unwrap_or(i64::MAX));
    let next = def.validate().ok().and_then(|schedule| {
        let slot = Utc.timestamp_millis_opt(slot_ms).single()?;
        schedule.next_after(slot)
    });
    next.map_or(longest, |n| n.timestamp_millis().min(longest))
}

/// How a run claimed without a place ended before it started, and why.
pub enum Unplaced {
    /// No place freed up in time, or the worker stopped taking work.
    Skipped(String),
    /// Ended like a running run: a kill request, a lost session.
    Killed(String),
}

/// Waits, for the run of `record` claimed without a place, until a place frees up (handed out in
/// the order they were asked for). The run can be ended meanwhile like a running one (kill
/// requests, a lost session); it gives up at `deadline_ms` (this worker's clock), and when the
/// worker stops taking work.
pub async fn wait_for_place(
    ctx: &Ctx,
    record: &RunningRecord,
    local: &LocalRun,
    deadline_ms: i64,
) -> Result<OwnedSemaphorePermit, Unplaced> {
    if let Ok(mut waiting) = ctx.local.waiting.lock() {
        waiting.insert(record.run_id.clone(), local.clone());
    }
    let left = Duration::from_millis((deadline_ms - ctx.clock.now_ms()).max(0).unsigned_abs());
    let waited = tokio::select! {
        place = ctx.local.places.clone().acquire_owned() => place.map_err(|_| Unplaced::Skipped(
            "skipped: the worker stopped while the run waited for a place".into(),
        )),
        () = tokio::time::sleep(left) => Err(Unplaced::Skipped(format!(
            "skipped: every worker was at capacity ({} runs on {}, which claimed it without a \
             place and waited until the job's next slot)",
            ctx.local.running_count(),
            ctx.id
        ))),
        () = ctx.cluster.stop_claiming.cancelled() => Err(Unplaced::Skipped(
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
        if let Ok(mut runs) = ctx.local.runs.lock() {
            runs.insert(record.run_id.clone(), local.clone());
        }
    }
    if let Ok(mut waiting) = ctx.local.waiting.lock() {
        waiting.remove(&record.run_id);
    }
    waited
}

/// Records the run of `record`, claimed but never started, as `unplaced` says, and releases its
/// running record. A skipped run is one `started` event, like any skipped slot; a killed one is
/// `started` at its claim and `finished` now, like a lost one.
pub async fn end_unplaced(
    ctx: &Ctx,
    def: &JobDefinition,
    record: RunningRecord,
    unplaced: Unplaced,
) {
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
            distcron_metrics::worker().run_finished(RunStatus::Skipped.as_str());
            ctx.out
                .ship_durably(started_event(&facts, RunStatus::Skipped, &err))
                .await;
        }
        Unplaced::Killed(err) => {
            tracing::info!(%err, "run ended before it started");
            distcron_metrics::worker().run_finished(RunStatus::Killed.as_str());
            let [started, finished] =
                ended_unstarted(&facts, RunStatus::Killed, err, ctx.clock.now_ms());
            ctx.out.ship(started).await;
            // Its running record is released next: the end goes to disk first.
            ctx.out.ship_durably(finished).await;
        }
    }
    ctx.release_record(record).await;
}
