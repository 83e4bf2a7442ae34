//! Turning run events into stored runs, idempotently.

use std::collections::HashMap;

use distcron_core::output::OutputCap;

use crate::{RunEvent, RunEventKind, RunStatus, RunStore, RunStoreError, StoredRun};

/// Attempts at compare-and-replace before a batch gives up on a run that keeps changing.
const MAX_ATTEMPTS: usize = 8;

/// `run` with `data` appended to its output, kept within `cap`.
fn append_output(run: &mut StoredRun, data: &[u8], cap: OutputCap) {
    let appended = run.stored_output().append(data, cap);
    run.output_bytes += i64::try_from(data.len()).unwrap_or(i64::MAX);
    run.output_head_bytes = i64::try_from(appended.head_bytes).unwrap_or(0);
    run.output_truncated = appended.truncated;
    run.output = appended.text;
}

/// Applies one event to a run (new runs start as `StoredRun::default()` with `run_id` set).
///
/// Re-delivered events change nothing: output chunks below `next_seq` are ignored, a finish
/// for a run that already ended is ignored, except that a real end overrides `lost` (the worker
/// finished after all) and `lost` never overrides a real end. A `skipped` start applies only to
/// a run not stored yet.
pub fn apply_event(run: &mut StoredRun, event: &RunEvent, cap: OutputCap) {
    if run.trace_id.is_empty() {
        run.trace_id.clone_from(&event.trace_id);
    }
    match &event.kind {
        RunEventKind::Started(s) => {
            let fresh = run.job_name.is_empty();
            if fresh {
                run.job_name.clone_from(&s.job_name);
                run.trigger = s.trigger;
            }
            if run.command.is_empty() {
                run.command.clone_from(&s.command);
            }
            if run.worker_id.is_empty() {
                run.worker_id.clone_from(&s.worker_id);
            }
            for (field, value) in [
                (&mut run.plan_time, s.plan_time),
                (&mut run.schedule_time, s.schedule_time),
                (&mut run.start_time, s.start_time),
            ] {
                if *field == 0 {
                    *field = value;
                }
            }
            // A run is recorded skipped only when that is the first thing known of it: a
            // `skipped` start never ends a run already stored as running.
            if fresh && s.status.is_terminal() {
                run.status = s.status;
                run.err.clone_from(&s.err);
                if run.end_time == 0 {
                    run.end_time = s.start_time;
                }
            }
        }
        RunEventKind::Output { seq, data } => {
            let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
            if seq >= run.next_seq {
                append_output(run, data, cap);
                run.next_seq = seq + 1;
            }
        }
        RunEventKind::Finished(f) => {
            let applies = match (run.status, f.status) {
                (RunStatus::Running, _) => true,
                (RunStatus::Lost, s) => s != RunStatus::Lost,
                _ => false,
            };
            if applies {
                run.status = f.status;
                run.end_time = f.end_time;
                run.exit_code = f.exit_code;
                run.signal = f.signal;
                run.err.clone_from(&f.err);
                run.duration_ms = if run.start_time > 0 {
                    (f.end_time - run.start_time).max(0)
                } else {
                    0
                };
                if f.output_bytes_dropped > 0 {
                    run.output_truncated = true;
                    run.output_bytes += i64::try_from(f.output_bytes_dropped).unwrap_or(i64::MAX);
                }
            }
        }
    }
}

/// Stores a batch of events: one insert of every new run and one compare-and-replace of every
/// changed run, so concurrent writers (several logsvc instances) never lose an update. A run whose
/// `started` event is in the batch is taken to be new and inserted without a read (a run's first
/// delivery, the common case); the others, and those the insert finds stored already (a
/// re-delivery), are read in one request and merged. Runs whose events change nothing are not
/// written at all.
pub async fn append_events(
    store: &dyn RunStore,
    events: &[RunEvent],
    cap: OutputCap,
) -> Result<(), RunStoreError> {
    let mut order: Vec<String> = Vec::new();
    let mut by_run: HashMap<&str, Vec<&RunEvent>> = HashMap::new();
    for e in events {
        by_run
            .entry(e.run_id.as_str())
            .or_insert_with(|| {
                order.push(e.run_id.clone());
                Vec::new()
            })
            .push(e);
    }
    let events_of = |run_id: &str| by_run.get(run_id).map_or(&[][..], Vec::as_slice);
    let (assumed_new, mut pending): (Vec<String>, Vec<String>) =
        order.into_iter().partition(|run_id| {
            events_of(run_id)
                .iter()
                .any(|e| matches!(e.kind, RunEventKind::Started(_)))
        });
    if !assumed_new.is_empty() {
        let new: Vec<StoredRun> = assumed_new
            .into_iter()
            .filter_map(|run_id| {
                let events = events_of(&run_id);
                merged(&unstored(run_id), events, cap)
            })
            .collect();
        pending.extend(store.insert_many(&new).await?);
    }
    for _ in 0..MAX_ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let mut stored: HashMap<String, StoredRun> = store
            .get_many(&pending)
            .await?
            .into_iter()
            .map(|r| (r.run_id.clone(), r))
            .collect();
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for run_id in pending {
            let events = events_of(&run_id);
            let base = stored.remove(&run_id).unwrap_or_else(|| unstored(run_id));
            let Some(next) = merged(&base, events, cap) else {
                continue;
            };
            if base.version == 0 {
                new.push(next);
            } else {
                changed.push(next);
            }
        }
        pending = if new.is_empty() {
            Vec::new()
        } else {
            store.insert_many(&new).await?
        };
        if !changed.is_empty() {
            pending.extend(store.update_many(&changed).await?);
        }
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(RunStoreError::Other(format!(
            "runs kept changing while being written: {pending:?}"
        )))
    }
}

/// A run not stored yet (version 0), as the base its first events apply to.
fn unstored(run_id: String) -> StoredRun {
    StoredRun {
        run_id,
        ..StoredRun::default()
    }
}

/// `base` with `events` applied and its version raised by one, or `None` when they change nothing
/// (a re-delivery).
fn merged(base: &StoredRun, events: &[&RunEvent], cap: OutputCap) -> Option<StoredRun> {
    let mut next = base.clone();
    for e in events {
        apply_event(&mut next, e, cap);
    }
    if next == *base {
        return None;
    }
    next.version = base.version + 1;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunFinish, RunStart, TRUNCATION_MARKER};

    fn ev(kind: RunEventKind) -> RunEvent {
        RunEvent {
            run_id: "r".into(),
            trace_id: "t".into(),
            kind,
        }
    }

    fn out(seq: u64, s: &str) -> RunEvent {
        ev(RunEventKind::Output {
            seq,
            data: s.as_bytes().to_vec(),
        })
    }

    fn started() -> RunEvent {
        ev(RunEventKind::Started(RunStart {
            job_name: "j".into(),
            command: "echo".into(),
            plan_time: 1000,
            schedule_time: 1001,
            start_time: 1002,
            worker_id: "w".into(),
            ..Default::default()
        }))
    }

    fn finished(status: RunStatus) -> RunEvent {
        ev(RunEventKind::Finished(RunFinish {
            status,
            end_time: 1502,
            exit_code: Some(0),
            ..Default::default()
        }))
    }

    #[test]
    fn redelivery_changes_nothing() {
        let cap = OutputCap::default();
        let events = [
            started(),
            out(0, "a"),
            out(1, "b"),
            finished(RunStatus::Succeeded),
        ];
        let mut once = StoredRun::default();
        for e in &events {
            apply_event(&mut once, e, cap);
        }
        let mut twice = once.clone();
        for e in &events {
            apply_event(&mut twice, e, cap);
        }
        assert_eq!(once, twice);
        assert_eq!(once.output, "ab");
        assert_eq!(once.status, RunStatus::Succeeded);
        assert_eq!(once.duration_ms, 500);
        assert_eq!(once.trace_id, "t");
    }

    #[test]
    fn cap_keeps_head_and_tail() {
        let cap = OutputCap { bytes: 10 };
        let mut run = StoredRun::default();
        for (i, chunk) in ["0123", "4567", "89ab", "cdef"].iter().enumerate() {
            apply_event(&mut run, &out(i as u64, chunk), cap);
        }
        assert!(run.output_truncated);
        assert_eq!(run.output, format!("01234{TRUNCATION_MARKER}bcdef"));
        assert_eq!(run.output_bytes, 16);
        // More output moves only the tail.
        apply_event(&mut run, &out(4, "XY"), cap);
        assert_eq!(run.output, format!("01234{TRUNCATION_MARKER}defXY"));
    }

    #[test]
    fn output_within_the_cap_is_whole() {
        let cap = OutputCap { bytes: 10 };
        let mut run = StoredRun::default();
        apply_event(&mut run, &out(0, "01234567"), cap);
        apply_event(&mut run, &out(1, "89"), cap);
        assert!(!run.output_truncated);
        assert_eq!(run.output, "0123456789");
    }

    #[test]
    fn multibyte_text_is_never_split() {
        let cap = OutputCap { bytes: 7 };
        let mut run = StoredRun::default();
        apply_event(&mut run, &out(0, "ééééé"), cap);
        apply_event(&mut run, &out(1, "üüüüü"), cap);
        assert!(run.output.starts_with('é'));
        assert!(run.output.ends_with('ü'));
        assert!(!run.output.contains('\u{FFFD}'));
    }

    #[test]
    fn lost_and_real_endings() {
        let cap = OutputCap::default();
        let mut run = StoredRun::default();
        apply_event(&mut run, &started(), cap);
        apply_event(&mut run, &finished(RunStatus::Lost), cap);
        assert_eq!(run.status, RunStatus::Lost);
        // The worker's own spool delivers the real end later: it wins.
        apply_event(&mut run, &finished(RunStatus::Succeeded), cap);
        assert_eq!(run.status, RunStatus::Succeeded);
        // A late "lost" never overrides a real end.
        apply_event(&mut run, &finished(RunStatus::Lost), cap);
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn skipped_runs_end_at_once() {
        let mut run = StoredRun::default();
        let mut s = started();
        let RunEventKind::Started(st) = &mut s.kind else {
            panic!("a start event: {s:?}");
        };
        st.status = RunStatus::Skipped;
        st.err = "previous run still running".into();
        apply_event(&mut run, &s, OutputCap::default());
        assert_eq!(run.status, RunStatus::Skipped);
        assert_eq!(run.end_time, 1002);
        assert_eq!(run.err, "previous run still running");
        // A skipped start for a run already running does not end it.
        let mut running = StoredRun::default();
        apply_event(&mut running, &started(), OutputCap::default());
        apply_event(&mut running, &s, OutputCap::default());
        assert_eq!(running.status, RunStatus::Running);
        apply_event(
            &mut running,
            &finished(RunStatus::Succeeded),
            OutputCap::default(),
        );
        assert_eq!(running.status, RunStatus::Succeeded);
    }
}
