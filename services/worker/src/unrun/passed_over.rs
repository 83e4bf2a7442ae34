//! Slots that a claim of a later slot moves the ledger past: what a claim expects of the ledger
//! (see [`distcron_ledger::LedgerExpect`] for the argument that no slot is passed over silently),
//! when a claim stops waiting for its predecessors and takes them over, and how the slots it
//! passed over are recorded `skipped`.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use distcron_core::records::{PassedOver, RunTrigger};
use distcron_core::JobDefinition;
use distcron_ledger::LedgerExpect;
use distcron_metrics::FireOutcome;
use distcron_proto::logs::v1 as pb;
use distcron_schedule::Schedule;

use crate::ctx::Ctx;

/// How long a claim whose predecessors are unclaimed waits for them (their claims may still be
/// on their way) before it takes them over.
pub const WAIT_FOR_PREDECESSORS: Duration = Duration::from_secs(3);
/// Most slots looked at when searching a job's previous slot or its passed-over slots.
const MAX_SCAN: usize = 100_000;

/// The first instant whose slots count for `def`: slots before its revision took effect (it was
/// created, changed, or enabled then) are not the current schedule's, and are not passed over;
/// nor, for a slot this worker's scheduler planned, the slots before `planned_from_ms`, when it
/// began planning this revision (it learnt of the revision a moment after it was written, and
/// no worker planned the slots in between).
pub fn counts_from(def: &JobDefinition, planned_from_ms: Option<i64>) -> i64 {
    def.updated_at
        .max(def.created_at)
        .max(planned_from_ms.unwrap_or(i64::MIN))
}

fn utc(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

/// The slots of `schedule` after `after_ms` and before `slot_ms`, at most [`MAX_SCAN`].
fn slots_between(
    schedule: &Schedule,
    after_ms: i64,
    slot_ms: i64,
) -> impl Iterator<Item = i64> + '_ {
    schedule
        .times_after(utc(after_ms))
        .map(|t| t.timestamp_millis())
        .take_while(move |t| *t < slot_ms)
        .take(MAX_SCAN)
}

/// What the claim of `slot_ms` expects of the ledger, believed at `ledger_ms`: that it reached
/// the job's previous slot, or nothing more than being before the slot when no slot counts in
/// between (slots count from `from_ms`, see [`counts_from`]).
pub fn expect(
    from_ms: i64,
    schedule: &Schedule,
    ledger_ms: Option<i64>,
    slot_ms: i64,
) -> LedgerExpect {
    let after = ledger_ms.unwrap_or(i64::MIN).max(from_ms);
    match slots_between(schedule, after, slot_ms).last() {
        Some(previous) => LedgerExpect::Reached(previous),
        None => LedgerExpect::Before,
    }
}

/// The expectation that takes over every slot (counted from `from_ms`) between the ledger, read
/// at `ledger_ms`, and `slot_ms`, with `reason` for each.
pub fn take_over(
    from_ms: i64,
    schedule: &Schedule,
    ledger_ms: Option<i64>,
    slot_ms: i64,
    reason: String,
) -> LedgerExpect {
    let passed = between(from_ms, schedule, ledger_ms, slot_ms, reason);
    LedgerExpect::PassOver { ledger_ms, passed }
}

/// The slots (counted from `from_ms`) after the ledger at `ledger_ms` and before `slot_ms`, with
/// `reason`: the latest [`PassedOver::MAX_LISTED`] listed, the earlier ones counted.
pub fn between(
    from_ms: i64,
    schedule: &Schedule,
    ledger_ms: Option<i64>,
    slot_ms: i64,
    reason: String,
) -> PassedOver {
    let after = ledger_ms.unwrap_or(i64::MIN).max(from_ms);
    let all: Vec<i64> = slots_between(schedule, after, slot_ms).collect();
    let listed_from = all.len().saturating_sub(PassedOver::MAX_LISTED);
    PassedOver {
        slots: all[listed_from..].to_vec(),
        earlier: u64::try_from(listed_from).unwrap_or(u64::MAX),
        earlier_from_ms: all.first().copied().unwrap_or_default(),
        reason,
    }
}

/// Whether a claim answered [`distcron_ledger::SlotOutcome::Behind`] takes its predecessors over
/// now: a catch-up always does (it runs only the slots its policy names); otherwise once the
/// earliest unclaimed slot is past the claim retry window (nobody claims it any more), or once
/// this claim has waited [`WAIT_FOR_PREDECESSORS`] for them.
pub fn takes_over_now(
    trigger: RunTrigger,
    earliest_unclaimed_ms: Option<i64>,
    behind_since_ms: i64,
    now_ms: i64,
) -> bool {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    trigger == RunTrigger::CatchUp
        || earliest_unclaimed_ms
            .is_some_and(|e| now_ms - e > ms(crate::outbox::claims::CLAIM_RETRY_WINDOW) + 1_000)
        || now_ms - behind_since_ms >= ms(WAIT_FOR_PREDECESSORS)
}

/// The earliest slot (counted from `from_ms`) after the ledger at `ledger_ms` and before
/// `slot_ms`.
pub fn earliest_unclaimed(
    from_ms: i64,
    schedule: &Schedule,
    ledger_ms: Option<i64>,
    slot_ms: i64,
) -> Option<i64> {
    let after = ledger_ms.unwrap_or(i64::MIN).max(from_ms);
    slots_between(schedule, after, slot_ms).next()
}

/// Why slots are passed over: the ledger, how long the claim of `slot_ms` waited, and the store
/// failures it saw.
pub fn reason(
    ledger_ms: Option<i64>,
    slot_ms: i64,
    worker: &str,
    waited_ms: i64,
    store_failures: Option<&StoreFailures>,
) -> String {
    let ledger = ledger_ms.map_or_else(|| "never claimed".to_owned(), |l| format!("at {}", iso(l)));
    let failures = store_failures.map_or_else(String::new, |f| {
        format!(
            "; the store failed claims from {} to {} ({})",
            iso(f.first_ms),
            iso(f.last_ms),
            f.error
        )
    });
    format!(
        "skipped: the slot was not claimed in time (the job's ledger was {ledger} when {worker} \
         claimed slot {} after waiting {waited_ms} ms for the earlier slots{failures})",
        iso(slot_ms)
    )
}

/// `ms` as an RFC 3339 UTC time with milliseconds.
pub fn iso(ms: i64) -> String {
    utc(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The store failures one claim saw, for the reason of the slots it passes over.
#[derive(Debug, Clone)]
pub struct StoreFailures {
    /// The first failure, ms.
    pub first_ms: i64,
    /// The last failure, ms.
    pub last_ms: i64,
    /// The last error.
    pub error: String,
}

impl StoreFailures {
    /// Adds a failure at `now_ms`.
    pub fn add(seen: &mut Option<Self>, now_ms: i64, error: String) {
        match seen {
            Some(f) => {
                f.last_ms = now_ms;
                f.error = error;
            }
            None => {
                *seen = Some(Self {
                    first_ms: now_ms,
                    last_ms: now_ms,
                    error,
                })
            }
        }
    }
}

/// Records the slots of `job` in `passed` as `skipped` runs (one per listed slot, one for the
/// earlier ones together), each counted as a missed fire; `durably`: returns once they are on
/// disk in the spool (what they stand for is removed next). Idempotent: the run ids come from
/// the slots.
pub async fn record(ctx: &Ctx, job: &str, command: &str, passed: &PassedOver, durably: bool) {
    let now = ctx.clock.now_ms();
    let skipped = |run_id: String, plan_ms: i64, err: String| pb::RunEvent {
        run_id,
        trace_id: String::new(),
        span_id: String::new(),
        kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
            job_name: job.to_owned(),
            command: command.to_owned(),
            plan_time_ms: plan_ms,
            schedule_time_ms: now,
            start_time_ms: now,
            worker_id: ctx.id.clone(),
            trigger: pb::RunTrigger::Schedule as i32,
            status: pb::RunStatus::Skipped as i32,
            err,
        })),
    };
    let metrics = distcron_metrics::worker();
    if passed.earlier > 0 {
        let err = format!(
            "{} (with {} more slots from here on not listed one by one)",
            passed.reason,
            passed.earlier - 1
        );
        let from = passed.earlier_from_ms;
        ctx.out
            .ship(skipped(PassedOver::run_id(job, from), from, err))
            .await;
        metrics.fires(FireOutcome::Missed, passed.earlier);
        metrics.run_finished("skipped");
    }
    for (i, slot) in passed.slots.iter().enumerate() {
        let event = skipped(PassedOver::run_id(job, *slot), *slot, passed.reason.clone());
        // Batches are spooled in order: the last one on disk means all are.
        if durably && i + 1 == passed.slots.len() {
            ctx.out.ship_durably(event).await;
        } else {
            ctx.out.ship(event).await;
        }
        metrics.fire(FireOutcome::Missed);
        metrics.run_finished("skipped");
    }
    let total = passed.earlier + u64::try_from(passed.slots.len()).unwrap_or(u64::MAX);
    tracing::warn!(job, slots = total, reason = %passed.reason, "slots passed over: recorded skipped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_second() -> (i64, Schedule) {
        let mut def = JobDefinition::new("j", "true", "* * * * * *");
        def.created_at = 500;
        def.updated_at = 1_000;
        let schedule = def.validate().unwrap();
        (counts_from(&def, None), schedule)
    }

    #[test]
    fn slots_count_from_the_revision_or_from_when_this_worker_began_planning_it() {
        let mut def = JobDefinition::new("j", "true", "* * * * * *");
        def.created_at = 500;
        def.updated_at = 1_000;
        assert_eq!(counts_from(&def, None), 1_000);
        assert_eq!(counts_from(&def, Some(1_050)), 1_050);
        assert_eq!(counts_from(&def, Some(900)), 1_000);
    }

    #[test]
    fn a_claim_expects_its_previous_slot_claimed_unless_none_counts_in_between() {
        let (from, schedule) = every_second();
        assert_eq!(
            expect(from, &schedule, Some(9_000), 10_000),
            LedgerExpect::Before
        );
        assert_eq!(
            expect(from, &schedule, Some(7_000), 10_000),
            LedgerExpect::Reached(9_000)
        );
        assert_eq!(
            expect(from, &schedule, None, 10_000),
            LedgerExpect::Reached(9_000)
        );
        // Slots before the revision took effect do not count.
        assert_eq!(expect(from, &schedule, None, 2_000), LedgerExpect::Before);
    }

    #[test]
    fn a_take_over_lists_the_latest_slots_and_counts_the_earlier_ones() {
        let (from, schedule) = every_second();
        let LedgerExpect::PassOver { ledger_ms, passed } =
            take_over(from, &schedule, Some(5_000), 9_000, "why".into())
        else {
            panic!("a pass-over");
        };
        assert_eq!(ledger_ms, Some(5_000));
        assert_eq!(passed.slots, [6_000, 7_000, 8_000]);
        assert_eq!(passed.earlier, 0);
        let LedgerExpect::PassOver { passed, .. } =
            take_over(from, &schedule, Some(1_000), 202_000, "why".into())
        else {
            panic!("a pass-over");
        };
        assert_eq!(passed.slots.len(), PassedOver::MAX_LISTED);
        assert_eq!(passed.slots.first(), Some(&102_000));
        assert_eq!(passed.earlier, 100, "2000 … 101000 are counted, not listed");
        assert_eq!(passed.earlier_from_ms, 2_000);
    }

    #[test]
    fn a_claim_waits_for_its_predecessors_only_while_they_may_still_be_claimed() {
        let now = 100_000;
        assert!(takes_over_now(RunTrigger::CatchUp, Some(now - 1), now, now));
        assert!(!takes_over_now(
            RunTrigger::Schedule,
            Some(now - 1_000),
            now - 100,
            now
        ));
        assert!(takes_over_now(
            RunTrigger::Schedule,
            Some(now - 1_000),
            now - 3_000,
            now
        ));
        assert!(takes_over_now(
            RunTrigger::Schedule,
            Some(now - 40_000),
            now,
            now
        ));
    }

    #[test]
    fn the_reason_names_the_ledger_the_wait_and_the_store_failures() {
        let failures = StoreFailures {
            first_ms: 1_000,
            last_ms: 11_000,
            error: "unavailable".into(),
        };
        let text = reason(Some(0), 12_000, "w1", 3_000, Some(&failures));
        assert!(
            text.starts_with("skipped: the slot was not claimed in time"),
            "{text}"
        );
        assert!(text.contains("ledger was at 1970-01-01T00:00:00.000Z when w1 claimed slot 1970-01-01T00:00:12.000Z after waiting 3000 ms"), "{text}");
        assert!(text.contains("the store failed claims from 1970-01-01T00:00:01.000Z to 1970-01-01T00:00:11.000Z (unavailable)"), "{text}");
    }
}
