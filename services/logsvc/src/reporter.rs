//! Which worker may report which run: a worker token is bound to the worker ids its name covers,
//! and a run logsvc has not stored yet must have been claimed by the worker that reports it.
//!
//! A token of role `worker` named `N` reports for worker `N` only; a name ending in `*` covers the
//! ids it prefixes (`fleet-*`: `fleet-1`, `fleet-2`, ...; `*` alone: any worker, unbound). What a
//! run did — its start as running, its output, an end other than `lost` or `skipped` — is accepted
//! only from a token that covers the run's worker (the stored run's; for a run not stored yet, the
//! one its start names), and, for a run not stored yet, only if the cluster state shows that
//! worker's claim of it ([`ClaimEvidence`]: its running record, or an undelivered marker of the
//! worker listing it).
//!
//! That a run did not happen or was lost is accepted from any worker token: the orphan sweep and
//! the recording of passed-over slots run on whichever worker notices, on behalf of another; so is
//! the start as running that goes with a `lost` end in the same batch (the lost worker's claim, as
//! the worker recording the loss read it from the cluster state). But a `lost` end from a token
//! that does not cover the run's worker is refused while that worker's running record of the run
//! is still in the store: its session is alive, so the run is not lost. (Such reports cannot be
//! required to name an existing job: a deleted job's tombstone goes once its unclaimed slots are
//! recorded on the recording worker's disk, before logsvc has them.)

use std::collections::{HashMap, HashSet};

use distcron_auth::{Identity, Role};
use distcron_ledger::{ClaimEvidence, ReportedRun};
use distcron_proto::logs::v1 as pb;

/// The worker ids a caller may report runs for.
#[derive(Debug, Clone)]
pub struct Reporter {
    name: String,
}

/// Whose a reported run is: what logsvc has stored of it, else what its start in the batch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    /// The run's worker.
    pub worker: String,
    /// The run's job.
    pub job: String,
    /// Whether logsvc has stored the run with its worker already.
    pub stored: bool,
}

impl RunOwner {
    /// The run as the claim evidence is read for it.
    pub fn reported<'a>(&'a self, run_id: &'a str) -> ReportedRun<'a> {
        ReportedRun {
            run_id,
            job: &self.job,
            worker_id: &self.worker,
        }
    }
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

    /// Why this token may not send `event` of a run whose owner is `owner` (`None` when neither
    /// a stored run nor a start in the batch names one), given the cluster state `evidence`, or
    /// `None` when it may. `reported_lost`: the batch also says the run was lost, so its start
    /// (the claim as the lost worker made it, sent by whichever worker records the loss) is part
    /// of that report.
    pub fn refusal(
        &self,
        event: &pb::RunEvent,
        owner: Option<&RunOwner>,
        reported_lost: bool,
        evidence: &ClaimEvidence,
    ) -> Option<String> {
        let run = &event.run_id;
        if records_an_absence(event) || (reported_lost && starts_running(event)) {
            return self.absence_refusal(event, evidence);
        }
        let Some(owner) = owner else {
            return Some(format!(
                "no start of this run is known: token {:?} may only continue runs it started",
                self.name
            ));
        };
        if !self.covers(&owner.worker) {
            return Some(format!(
                "token {:?} may report the runs of its own worker, not of {:?}",
                self.name, owner.worker
            ));
        }
        if !owner.stored && !evidence.claimed_by(run, &owner.worker) {
            return Some(format!(
                "run {run:?} of job {:?} was not claimed by worker {:?}: no running record or undelivered marker names it",
                owner.job, owner.worker
            ));
        }
        None
    }

    /// Why this token may not report `event`, which says the run did not happen or was lost.
    fn absence_refusal(&self, event: &pb::RunEvent, evidence: &ClaimEvidence) -> Option<String> {
        match evidence.running_on(&event.run_id) {
            Some(live) if ends_lost(event) && !self.covers(live) => Some(format!(
                "run {:?} is still claimed by the live session of worker {live:?}: it is not lost",
                event.run_id
            )),
            _ => None,
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

/// Whether `event` is an end `lost` with no exit code (a report that the run was lost).
fn ends_lost(event: &pb::RunEvent) -> bool {
    matches!(&event.kind, Some(pb::run_event::Kind::Finished(f))
        if f.status == pb::RunStatus::Lost as i32 && f.exit_code.is_none())
}

/// Whether `event` is a start as running (the claim of a run).
fn starts_running(event: &pb::RunEvent) -> bool {
    matches!(&event.kind, Some(pb::run_event::Kind::Started(s))
        if s.status == pb::RunStatus::Running as i32)
}

/// The runs of `events` that the batch records as not run or lost (an end `skipped` or `lost`
/// with no exit code).
pub fn lost_in_batch(events: &[pb::RunEvent]) -> HashSet<String> {
    events
        .iter()
        .filter(|e| {
            matches!(&e.kind, Some(pb::run_event::Kind::Finished(_))) && records_an_absence(e)
        })
        .map(|e| e.run_id.clone())
        .collect()
}

/// The owner each run of `events` has by its start in the batch (not stored).
pub fn owners_in_batch(events: &[pb::RunEvent]) -> HashMap<String, RunOwner> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Started(s)) => Some((
                e.run_id.clone(),
                RunOwner {
                    worker: s.worker_id.clone(),
                    job: s.job_name.clone(),
                    stored: false,
                },
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> Reporter {
        Reporter { name: name.into() }
    }

    fn owner(worker: &str, stored: bool) -> RunOwner {
        RunOwner {
            worker: worker.into(),
            job: "j".into(),
            stored,
        }
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

    fn started(worker: &str) -> pb::RunEvent {
        pb::RunEvent {
            run_id: "r".into(),
            kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
                worker_id: worker.into(),
                job_name: "j".into(),
                status: pb::RunStatus::Running as i32,
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
        let none = ClaimEvidence::default();
        let ok = finished(pb::RunStatus::Succeeded, Some(0));
        assert_eq!(
            w1.refusal(&ok, Some(&owner("w1", true)), false, &none),
            None
        );
        assert!(w1
            .refusal(&ok, Some(&owner("w2", true)), false, &none)
            .is_some());
        assert!(w1.refusal(&ok, None, false, &none).is_some());
        // A real end stays the run's worker's even next to a `lost` report.
        assert!(w1
            .refusal(&ok, Some(&owner("w2", true)), true, &none)
            .is_some());
        let lost = finished(pb::RunStatus::Lost, None);
        assert_eq!(
            w1.refusal(&lost, Some(&owner("w2", true)), false, &none),
            None
        );
        // "lost" with an exit code is an outcome, not an absence.
        let ended = finished(pb::RunStatus::Lost, Some(0));
        assert!(w1
            .refusal(&ended, Some(&owner("w2", true)), false, &none)
            .is_some());
        assert!(lost_in_batch(&[ended]).is_empty());
    }

    #[test]
    fn a_run_not_stored_needs_its_workers_claim() {
        let w1 = worker("w1");
        let start = started("w1");
        let fresh = owner("w1", false);
        let refused = w1.refusal(&start, Some(&fresh), false, &ClaimEvidence::default());
        assert!(refused.is_some_and(|r| r.contains("not claimed")));
        let running = ClaimEvidence::default().with_running("r", "w1");
        assert_eq!(w1.refusal(&start, Some(&fresh), false, &running), None);
        let marked = ClaimEvidence::default().with_marked("w1", "r");
        assert_eq!(w1.refusal(&start, Some(&fresh), false, &marked), None);
        // Another worker's claim proves nothing for this one.
        let theirs = ClaimEvidence::default()
            .with_running("r", "w2")
            .with_marked("w2", "r");
        assert!(w1.refusal(&start, Some(&fresh), false, &theirs).is_some());
    }

    #[test]
    fn absences_need_no_live_claim_of_another_worker() {
        let w1 = worker("w1");
        let lost = finished(pb::RunStatus::Lost, None);
        let start = started("w2");
        let gone = owner("w2", false);
        let none = ClaimEvidence::default();
        assert_eq!(w1.refusal(&lost, Some(&gone), false, &none), None);
        assert_eq!(w1.refusal(&start, Some(&gone), true, &none), None);
        assert!(w1.refusal(&start, Some(&gone), false, &none).is_some());
        // w2's session still holds the run: not lost, unless w2 itself says so.
        let live = ClaimEvidence::default().with_running("r", "w2");
        let refused = w1.refusal(&lost, Some(&gone), false, &live);
        assert!(refused.is_some_and(|r| r.contains("still claimed")));
        assert_eq!(worker("w2").refusal(&lost, Some(&gone), false, &live), None);
    }
}
