//! Between gRPC messages and the run store's types, with validation of incoming events.

use distcron_core::job::validate_name;
use distcron_core::records::RunTrigger;
use distcron_core::FieldError;
use distcron_proto::logs::v1 as pb;
use distcron_runstore::{RunEvent, RunEventKind, RunFinish, RunStart, RunStatus, StoredRun};

/// Largest accepted output chunk.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Checks a run id: 1 to 128 of `[A-Za-z0-9._-]`.
pub fn validate_run_id(run_id: &str) -> Result<(), FieldError> {
    if run_id.is_empty() || run_id.len() > 128 {
        return Err(FieldError::new("runId", "1 to 128 characters"));
    }
    if !run_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(FieldError::new(
            "runId",
            "use letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Largest accepted output chunk number: a chunk of one byte a microsecond for 30 years stays
/// below it, and a forged number near the top of the range cannot make a run ignore its real
/// later output.
pub const MAX_SEQ: u64 = 1 << 50;

/// Checks an event time: milliseconds since the epoch, not before it.
fn check_time(field: &str, value: i64) -> Result<(), String> {
    if value < 0 {
        return Err(format!(
            "{field}: {value} is before 1970 (ms since the epoch)"
        ));
    }
    Ok(())
}

/// A validated domain event, or why the event is rejected (naming the field).
pub fn event_from_proto(e: &pb::RunEvent) -> Result<RunEvent, String> {
    validate_run_id(&e.run_id).map_err(|f| f.to_string())?;
    if e.trace_id.len() > 64 || !e.trace_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("traceId: at most 64 hex digits".into());
    }
    let kind = match &e.kind {
        None => return Err("kind: one of started, output, finished is required".into()),
        Some(pb::run_event::Kind::Started(s)) => {
            validate_name(&s.job_name).map_err(|f| format!("started.jobName: {}", f.message))?;
            // A start that names no status is running.
            let status = if s.status == pb::RunStatus::Unspecified as i32 {
                Ok(RunStatus::Running)
            } else {
                RunStatus::try_from(s.status)
            };
            let status = match status {
                Ok(status @ (RunStatus::Running | RunStatus::Skipped)) => status,
                _ => return Err("started.status: RUNNING or SKIPPED".into()),
            };
            for (field, value) in [
                ("started.planTimeMs", s.plan_time_ms),
                ("started.scheduleTimeMs", s.schedule_time_ms),
                ("started.startTimeMs", s.start_time_ms),
            ] {
                check_time(field, value)?;
            }
            RunEventKind::Started(RunStart {
                job_name: s.job_name.clone(),
                command: s.command.clone(),
                plan_time: s.plan_time_ms,
                schedule_time: s.schedule_time_ms,
                start_time: s.start_time_ms,
                worker_id: s.worker_id.clone(),
                trigger: RunTrigger::try_from(s.trigger)
                    .map_err(|e| format!("started.trigger: {e}"))?,
                status,
                err: s.err.clone(),
            })
        }
        Some(pb::run_event::Kind::Output(o)) => {
            if o.seq > MAX_SEQ {
                return Err(format!("output.seq: {} is beyond {MAX_SEQ}", o.seq));
            }
            if o.data.len() > MAX_CHUNK_BYTES {
                return Err(format!(
                    "output.data: {} bytes; at most {MAX_CHUNK_BYTES}",
                    o.data.len()
                ));
            }
            RunEventKind::Output {
                seq: o.seq,
                data: o.data.clone(),
            }
        }
        Some(pb::run_event::Kind::Finished(f)) => {
            let status = RunStatus::try_from(f.status)
                .ok()
                .filter(|s| s.is_terminal())
                .ok_or_else(|| "finished.status: a final status (not RUNNING)".to_owned())?;
            check_time("finished.endTimeMs", f.end_time_ms)?;
            RunEventKind::Finished(RunFinish {
                status,
                end_time: f.end_time_ms,
                exit_code: f.exit_code,
                signal: f.signal,
                err: f.err.clone(),
                output_bytes_dropped: f.output_bytes_dropped,
            })
        }
    };
    Ok(RunEvent {
        run_id: e.run_id.clone(),
        trace_id: e.trace_id.clone(),
        kind,
    })
}

/// The gRPC form of a stored run.
pub fn run_to_proto(r: StoredRun) -> pb::Run {
    pb::Run {
        run_id: r.run_id,
        job_name: r.job_name,
        command: r.command,
        status: r.status.into(),
        trigger: r.trigger.into(),
        plan_time_ms: r.plan_time,
        schedule_time_ms: r.schedule_time,
        start_time_ms: r.start_time,
        end_time_ms: r.end_time,
        worker_id: r.worker_id,
        exit_code: r.exit_code,
        signal: r.signal,
        err: r.err,
        output: r.output.into_bytes(),
        output_truncated: r.output_truncated,
        output_bytes: u64::try_from(r.output_bytes).unwrap_or(0),
        trace_id: r.trace_id,
    }
}
