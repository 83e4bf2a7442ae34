//! Which worker may report which run: a worker token is bound to the worker ids its name covers.
//!
//! A token of role `worker` named `N` reports for worker `N` only; a name ending in `*` covers the
//! ids it prefixes (`fleet-*`: `fleet-1`, `fleet-2`, ...; `*` alone: any worker, unbound). What a
//! run did — its start as running, its output, an end other than `lost` or `skipped` — is accepted
//! only from a token that covers the run's worker (the stored run's; for a run not stored yet, the
//! one its start names). That a run did not
//! happen or was lost is accepted from any worker token: the orphan sweep and the recording of
//! passed-over slots run on whichever worker notices, on behalf of another; so is the start as
//! running that goes with a `lost` end in the same batch (the lost worker's claim, as the worker
//! recording the loss read it from the cluster state).

use std::collections::{HashMap, HashSet};

use distcron_auth::{Identity, Role};
use distcron_proto::logs::v1 as pb;

/// The worker ids a caller may report runs for.
#[derive(Debug, Clone)]
pub struct Reporter {
    name: String,
}

impl Reporter {
    /// The binding of a caller: `None` (no check) when tokens are off or the caller is no worker.
    pub fn of(identity: Option<&Identity>) -> Option<Self> {
        identity.filter(|i| i.role == Role::Worker).map(|i| Self {
            name: i.name.clone(),
        })
    }

    /// Whether this token covers `worker_id`.
    pub fn covers(&self, worker_id: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => worker_id.starts_with(prefix),
            None => self.name == worker_id,
        }
    }

    /// Why this token may not send `event` of a run reported by `worker` (the stored run's, else
    /// the one its start in the batch names; `None` when neither is known), or `None` when it
    /// may. `reported_lost`: the batch also says the run was lost, so its start (the claim as
    /// the lost worker made it, sent by whichever worker records the loss) is part of that
    /// report.
    pub fn refusal(
        &self,
        event: &pb::RunEvent,
        worker: Option<&str>,
        reported_lost: bool,
    ) -> Option<String> {
        if records_an_absence(event) || (reported_lost && starts_running(event)) {
            return None;
        }
        match worker {
            Some(w) if self.covers(w) => None,
            Some(w) => Some(format!(
                "token {:?} may report the runs of its own worker, not of {w:?}",
                self.name
            )),
            None => Some(format!(
                "no start of this run is known: token {:?} may only continue runs it started",
                self.name
            )),
        }
    }
}

/// Whether `event` only says that a run did not happen or was lost (any worker may say so).
fn records_an_absence(event: &pb::RunEvent) -> bool {
    let absent = |status: i32| {
        matches!(
            pb::RunStatus::try_from(status),
            Ok(pb::RunStatus::Lost | pb::RunStatus::Skipped)
        )
    };
    match &event.kind {
        Some(pb::run_event::Kind::Started(s)) => absent(s.status),
        Some(pb::run_event::Kind::Finished(f)) => absent(f.status) && f.exit_code.is_none(),
        _ => false,
    }
}

/// Whether `event` is a start as running (the claim of a run).
fn starts_running(event: &pb::RunEvent) -> bool {
    matches!(&event.kind, Some(pb::run_event::Kind::Started(s))
        if s.status == pb::RunStatus::Running as i32)
}

/// The runs of `events` that the batch records as lost (an end `lost` with no exit code).
pub fn lost_in_batch(events: &[pb::RunEvent]) -> HashSet<String> {
    events
        .iter()
        .filter(|e| {
            matches!(&e.kind, Some(pb::run_event::Kind::Finished(_))) && records_an_absence(e)
        })
        .map(|e| e.run_id.clone())
        .collect()
}

/// The worker each run of `events` is reported by, from the starts in the batch.
pub fn workers_in_batch(events: &[pb::RunEvent]) -> HashMap<String, String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Started(s)) => Some((e.run_id.clone(), s.worker_id.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> Reporter {
        Reporter::of(Some(&Identity {
            name: name.into(),
            role: Role::Worker,
        }))
        .unwrap_or_else(|| Reporter {
            name: String::new(),
        })
    }

    fn finished(status: pb::RunStatus, exit_code: Option<i32>) -> pb::RunEvent {
        pb::RunEvent {
            run_id: "r".into(),
            kind: Some(pb::run_event::Kind::Finished(pb::RunFinished {
                status: status as i32,
                exit_code,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn names_bind_exactly_or_by_prefix() {
        assert!(worker("w1").covers("w1") && !worker("w1").covers("w10"));
        assert!(worker("fleet-*").covers("fleet-3") && !worker("fleet-*").covers("other"));
        assert!(worker("*").covers("anything"));
        let operator = Identity {
            name: "ops".into(),
            role: Role::Operator,
        };
        assert!(Reporter::of(Some(&operator)).is_none());
        assert!(Reporter::of(None).is_none());
    }

    #[test]
    fn outcomes_need_the_runs_worker_and_absences_do_not() {
        let w1 = worker("w1");
        let ok = finished(pb::RunStatus::Succeeded, Some(0));
        assert_eq!(w1.refusal(&ok, Some("w1"), false), None);
        assert!(w1.refusal(&ok, Some("w2"), false).is_some());
        assert!(w1.refusal(&ok, None, false).is_some());
        // A real end stays the run's worker's even next to a `lost` report.
        assert!(w1.refusal(&ok, Some("w2"), true).is_some());
        let lost = finished(pb::RunStatus::Lost, None);
        assert_eq!(w1.refusal(&lost, Some("w2"), false), None);
        // "lost" with an exit code is an outcome, not an absence.
        let ended = finished(pb::RunStatus::Lost, Some(0));
        assert!(w1.refusal(&ended, Some("w2"), false).is_some());
        assert!(lost_in_batch(&[ended]).is_empty());
    }

    #[test]
    fn a_lost_report_carries_the_lost_workers_start() {
        let w1 = worker("w1");
        let start = pb::RunEvent {
            run_id: "r".into(),
            kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
                worker_id: "w2".into(),
                status: pb::RunStatus::Running as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let lost = finished(pb::RunStatus::Lost, None);
        let batch = [start.clone(), lost];
        assert!(lost_in_batch(&batch).contains("r"));
        assert_eq!(w1.refusal(&start, Some("w2"), true), None);
        assert!(w1.refusal(&start, Some("w2"), false).is_some());
    }
}
