//! Runs recorded without being run here: the runs of dead workers (`lost`, [`lost`]), claims that
//! applied after this worker gave up on them ([`orphans`]), stored jobs that cannot be scheduled
//! ([`invalid`]), slots that do not run (`skipped`, [`skipped`]; the slots a later claim passes
//! over, [`passed_over`]; those of deleted jobs, [`deleted_jobs`]), and the runs that ended on a
//! gone worker whose records never reached logsvc ([`undelivered`]), or that a restarted worker's
//! spool still holds ([`spooled`]). This module builds their events.

pub mod deleted_jobs;
pub mod invalid;
pub mod lost;
pub mod orphans;
pub mod passed_over;
pub mod skipped;
pub mod spooled;
pub mod undelivered;

use distcron_core::records::{RunStatus, RunTrigger};
use distcron_proto::logs::v1 as pb;

/// What is known of a run that this worker records without running it.
pub struct Facts<'a> {
    /// The run.
    pub run_id: &'a str,
    /// Its job.
    pub job: &'a str,
    /// The job's command (empty when not known).
    pub command: &'a str,
    /// Its slot, ms.
    pub plan_ms: i64,
    /// When it started (or was claimed), ms.
    pub start_ms: i64,
    /// The worker it belongs to.
    pub worker: &'a str,
    /// What started it.
    pub trigger: RunTrigger,
    /// Trace and span id of the run's span (empty when the run is not this worker's).
    pub trace: (String, String),
}

/// A `started` event for a run that never starts (skipped), or of a run recorded by another
/// worker (lost).
pub fn started_event(f: &Facts<'_>, status: RunStatus, err: &str) -> pb::RunEvent {
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
            trigger: f.trigger.into(),
            status: status.into(),
            err: err.to_owned(),
        })),
    }
}

/// The `started` event at `facts.start_ms` and the `finished` event at `end_ms` with `status` and
/// `err`, for a run that ended without a process of its own here (lost, or killed while waiting
/// for a place).
pub fn ended_unstarted(
    facts: &Facts<'_>,
    status: RunStatus,
    err: String,
    end_ms: i64,
) -> [pb::RunEvent; 2] {
    let finished = pb::RunEvent {
        run_id: facts.run_id.to_owned(),
        trace_id: facts.trace.0.clone(),
        span_id: facts.trace.1.clone(),
        kind: Some(pb::run_event::Kind::Finished(pb::RunFinished {
            status: status.into(),
            end_time_ms: end_ms,
            exit_code: None,
            signal: None,
            err,
            output_bytes_dropped: 0,
        })),
    };
    [started_event(facts, RunStatus::Running, ""), finished]
}
