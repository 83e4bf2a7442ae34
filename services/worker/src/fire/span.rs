//! The telemetry of one fire: its span and its counted outcome.

use distcron_core::records::RunTrigger;
use distcron_metrics::FireOutcome;

use crate::ctx::Ctx;

/// The span of one fire of a job: the claim and, when won, the run (spawn, exit, and the
/// delivery of its events). Its trace id is stored with the run; it links to the request that
/// wrote the job's revision (or asked for the manual run).
pub fn run_span(
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
pub fn settled(span: &tracing::Span, outcome: FireOutcome) {
    distcron_metrics::worker().fire(outcome);
    span.record("outcome", format!("{outcome:?}"));
}
