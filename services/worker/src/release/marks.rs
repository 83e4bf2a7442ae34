//! Which released runs are marked undelivered, by marker, and which markers are no longer
//! needed: the releaser's bookkeeping ([`crate::release`]).

use std::collections::{HashMap, HashSet};

use distcron_core::records::RunningRecord;
use distcron_ledger::UndeliveredMarker;

/// Most runs kept marked at once (about 150 bytes each in etcd). Beyond it (logsvc down for
/// long under heavy load) ended runs are released unmarked, with a warning: the spool still
/// holds their events, but a worker lost for good would take those with it.
pub const MAX_MARKED_RUNS: usize = 50_000;
/// How long an acknowledgement that arrived before its run's release is remembered.
const EARLY_ACK_MS: i64 = 60_000;

/// Which released runs are marked, by marker, and which markers are no longer needed.
#[derive(Debug, Default)]
pub struct Marks {
    /// Marker key → its runs that logsvc has not acknowledged yet.
    open: HashMap<String, HashSet<String>>,
    /// Run id → the keys of the markers listing it (more than one when a run was marked
    /// outside the releaser too: released early before a claim, or found in the spool at start).
    marker_of: HashMap<String, Vec<String>>,
    /// Runs acknowledged before they were released, with when (ms).
    acked_early: HashMap<String, i64>,
    /// Markers whose runs are all acknowledged, to delete.
    done: Vec<String>,
}

impl Marks {
    /// logsvc has stored the ends of `runs`.
    pub fn acknowledged(&mut self, runs: impl IntoIterator<Item = String>, now_ms: i64) {
        for run in runs {
            let Some(keys) = self.marker_of.remove(&run) else {
                self.acked_early.insert(run, now_ms);
                continue;
            };
            for key in keys {
                if let Some(left) = self.open.get_mut(&key) {
                    left.remove(&run);
                    if left.is_empty() {
                        self.open.remove(&key);
                        self.done.push(key);
                    }
                }
            }
        }
    }

    /// `marker` is deleted once its runs are acknowledged (those acknowledged already do not
    /// count).
    pub fn adopt(&mut self, marker: UndeliveredMarker) {
        let ids: HashSet<String> = marker
            .runs
            .into_iter()
            .map(|r| r.run_id)
            .filter(|id| self.acked_early.remove(id).is_none())
            .collect();
        if ids.is_empty() {
            self.done.push(marker.key);
            return;
        }
        for id in &ids {
            self.list(id, &marker.key);
        }
        self.open.insert(marker.key, ids);
    }

    /// Notes that the marker `key` lists `run`.
    fn list(&mut self, run: &str, key: &str) {
        let keys = self.marker_of.entry(run.to_owned()).or_default();
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_owned());
        }
    }

    /// Of `ended`, the runs a release should mark: those neither acknowledged nor marked yet, as
    /// many as fit under the limit. Also returns how many did not fit.
    pub fn to_mark(&self, ended: &[RunningRecord]) -> (Vec<RunningRecord>, usize) {
        let room = MAX_MARKED_RUNS.saturating_sub(self.marker_of.len());
        let unacked: Vec<RunningRecord> = ended
            .iter()
            .filter(|r| {
                !self.acked_early.contains_key(&r.run_id) && !self.marker_of.contains_key(&r.run_id)
            })
            .cloned()
            .collect();
        let over = unacked.len().saturating_sub(room);
        (unacked.into_iter().take(room).collect(), over)
    }

    /// A release of `runs` applied, writing `marker` (if any).
    pub fn released<'a>(
        &mut self,
        runs: impl IntoIterator<Item = &'a str>,
        marker: Option<&UndeliveredMarker>,
    ) {
        for run in runs {
            self.acked_early.remove(run);
        }
        if let Some(marker) = marker {
            let ids: HashSet<String> = marker.runs.iter().map(|r| r.run_id.clone()).collect();
            for id in &ids {
                self.list(id, &marker.key);
            }
            self.open.insert(marker.key.clone(), ids);
        }
    }

    /// Up to `max` markers to delete (give them back with [`Marks::restore_done`] if the
    /// deletion fails).
    pub fn take_done(&mut self, max: usize) -> Vec<String> {
        let n = self.done_count().min(max);
        self.done.drain(..n).collect()
    }

    /// How many markers wait to be deleted.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// Markers whose deletion failed, to delete later.
    pub fn restore_done(&mut self, keys: Vec<String>) {
        self.done.extend(keys);
    }

    /// Forgets acknowledgements that came more than a minute before any release of their run
    /// (runs this worker recorded for others, or released long ago).
    pub fn prune(&mut self, now_ms: i64) {
        self.acked_early.retain(|_, at| now_ms - *at < EARLY_ACK_MS);
    }

    /// How many runs are marked.
    pub fn marked_runs(&self) -> usize {
        self.marker_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{Marks, UndeliveredMarker, EARLY_ACK_MS};
    use distcron_core::records::{RunTrigger, RunningRecord};

    fn record(run: &str) -> RunningRecord {
        RunningRecord {
            run_id: run.into(),
            job_name: "j".into(),
            worker_id: "w".into(),
            slot_ms: 1_000,
            claimed_at_ms: 900,
            trigger: RunTrigger::Schedule,
            passed_over: None,
        }
    }

    fn release(marks: &mut Marks, key: &str, runs: &[&str]) -> Option<UndeliveredMarker> {
        let ended: Vec<RunningRecord> = runs.iter().map(|r| record(r)).collect();
        let (to_mark, over) = marks.to_mark(&ended);
        assert_eq!(over, 0);
        let marker = (!to_mark.is_empty()).then(|| UndeliveredMarker {
            key: key.into(),
            runs: to_mark,
        });
        marks.released(runs.iter().copied(), marker.as_ref());
        marker
    }

    #[test]
    fn a_marker_is_deleted_once_every_run_in_it_is_acknowledged() {
        let mut marks = Marks::default();
        release(&mut marks, "m1", &["a", "b"]);
        assert_eq!(marks.marked_runs(), 2);
        marks.acknowledged(["a".to_owned()], 0);
        assert!(marks.take_done(16).is_empty());
        marks.acknowledged(["b".to_owned()], 0);
        assert_eq!(marks.take_done(16), vec!["m1".to_owned()]);
        assert_eq!(marks.marked_runs(), 0);
    }

    #[test]
    fn a_run_listed_by_two_markers_clears_both_in_either_order() {
        let mut marks = Marks::default();
        // Released early (a claim needed its slot) and marked there; the releaser's own
        // release of it then marks nothing more.
        marks.adopt(UndeliveredMarker {
            key: "early".into(),
            runs: vec![record("a")],
        });
        assert_eq!(
            release(&mut marks, "m1", &["a", "b"]).unwrap().runs.len(),
            1
        );
        // The other order: the releaser marked it first, the early marker comes after.
        release(&mut marks, "m2", &["c"]);
        marks.adopt(UndeliveredMarker {
            key: "early-2".into(),
            runs: vec![record("c")],
        });
        marks.acknowledged(["a".to_owned(), "b".to_owned(), "c".to_owned()], 0);
        let mut done = marks.take_done(16);
        done.sort();
        assert_eq!(done, ["early", "early-2", "m1", "m2"]);
        assert_eq!(marks.marked_runs(), 0);
    }

    #[test]
    fn a_run_acknowledged_before_its_release_is_not_marked() {
        let mut marks = Marks::default();
        marks.acknowledged(["a".to_owned()], 0);
        let marker = release(&mut marks, "m1", &["a", "b"]).unwrap();
        let marked: Vec<&str> = marker.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(marked, ["b"]);
        // All acknowledged early: no marker at all.
        marks.acknowledged(["c".to_owned()], 0);
        assert_eq!(release(&mut marks, "m2", &["c"]), None);
        // The early acknowledgements were used up by the releases.
        assert_eq!(marks.to_mark(&[record("a")]).0.len(), 1);
    }

    #[test]
    fn failed_deletions_are_retried_and_old_early_acknowledgements_forgotten() {
        let mut marks = Marks::default();
        release(&mut marks, "m1", &["a"]);
        marks.acknowledged(["a".to_owned(), "other-workers-run".to_owned()], 1_000);
        let done = marks.take_done(16);
        marks.restore_done(done);
        assert_eq!(marks.take_done(16), vec!["m1".to_owned()]);
        marks.prune(1_000 + EARLY_ACK_MS);
        assert_eq!(marks.to_mark(&[record("other-workers-run")]).0.len(), 1);
    }

    #[test]
    fn an_adopted_marker_is_deleted_once_its_lost_records_are_stored() {
        let mut marks = Marks::default();
        marks.acknowledged(["x".to_owned()], 0);
        marks.adopt(UndeliveredMarker {
            key: "gone".into(),
            runs: vec![record("x"), record("y")],
        });
        assert!(marks.take_done(16).is_empty());
        marks.acknowledged(["y".to_owned()], 0);
        assert_eq!(marks.take_done(16), vec!["gone".to_owned()]);
        // A marker whose runs are all acknowledged already, or that lists none, goes at once.
        marks.adopt(UndeliveredMarker {
            key: "empty".into(),
            runs: vec![],
        });
        assert_eq!(marks.take_done(16), vec!["empty".to_owned()]);
    }

    #[test]
    fn marking_stops_at_the_limit() {
        let marks = Marks::default();
        let many: Vec<RunningRecord> = (0..super::MAX_MARKED_RUNS + 3)
            .map(|i| record(&i.to_string()))
            .collect();
        let (to_mark, over) = marks.to_mark(&many);
        assert_eq!((to_mark.len(), over), (super::MAX_MARKED_RUNS, 3));
    }
}
