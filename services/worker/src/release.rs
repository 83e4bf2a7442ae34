//! The releaser: deletes the running records of ended runs in batches and keeps a marker of the
//! runs whose records logsvc has not acknowledged yet.
//!
//! A run's running record lives on the worker's session lease: if the worker dies during the run,
//! the lease takes the record and another worker records the run `lost`. Once the run has ended,
//! its record is released, but its events may still wait in the worker's spool (logsvc slow or
//! down). So the release transaction also writes one marker (`undelivered/<worker>/<marker>`, no
//! lease) listing the released runs that logsvc has not acknowledged, and a later release deletes
//! the marker once logsvc has acknowledged all of them. If the worker is gone for good, another
//! worker records the marked runs `lost` ([`crate::undelivered`]), so no ended run is left
//! without a record; a record the worker delivers later, restarted, overrides `lost`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunningRecord;
use distcron_kv::bounded;
use distcron_ledger::{MarkerChanges, UndeliveredMarker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::session::REGISTRATION_REFRESH;

/// How long one release transaction may take before it is retried.
const RELEASE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(700);
/// How old (beyond the kill grace) a running record of this worker that no run owns must be
/// before it is treated as an orphan claim (see [`crate::fire::sweep_orphans`]).
const ORPHAN_AGE: Duration = Duration::from_secs(30);
/// Most runs kept marked at once (about 150 bytes each in etcd). Beyond it (logsvc down for
/// long under heavy load) ended runs are released unmarked, with a warning: the spool still
/// holds their events, but a worker lost for good would take those with it.
const MAX_MARKED_RUNS: usize = 50_000;
/// Most marker deletions in one release transaction.
const MAX_UNMARKS_PER_TXN: usize = 16;
/// How long markers no longer needed wait for a release to go with before they are deleted in
/// a transaction of their own.
const LONE_UNMARK_AFTER: Duration = Duration::from_secs(1);
/// How long an acknowledgement that arrived before its run's release is remembered.
const EARLY_ACK_MS: i64 = 60_000;

/// What the releaser is sent.
#[derive(Debug)]
pub enum Release {
    /// The running record of a run of this worker that ended, whose end was shipped.
    Ended(RunningRecord),
    /// A marker of another worker (or an earlier incarnation of this one) whose runs this worker
    /// has just shipped as `lost`: deleted once logsvc has stored those.
    Adopted(UndeliveredMarker),
}

/// Which released runs are marked, by marker, and which markers are no longer needed.
#[derive(Debug, Default)]
pub struct Marks {
    /// Marker key → its runs that logsvc has not acknowledged yet.
    open: HashMap<String, HashSet<String>>,
    /// Run id → the key of the marker listing it.
    marker_of: HashMap<String, String>,
    /// Runs acknowledged before they were released, with when (ms).
    acked_early: HashMap<String, i64>,
    /// Markers whose runs are all acknowledged, to delete.
    done: Vec<String>,
}

impl Marks {
    /// logsvc has stored the ends of `runs`.
    pub fn acknowledged(&mut self, runs: impl IntoIterator<Item = String>, now_ms: i64) {
        for run in runs {
            let Some(key) = self.marker_of.remove(&run) else {
                self.acked_early.insert(run, now_ms);
                continue;
            };
            if let Some(left) = self.open.get_mut(&key) {
                left.remove(&run);
                if left.is_empty() {
                    self.open.remove(&key);
                    self.done.push(key);
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
            self.marker_of.insert(id.clone(), marker.key.clone());
        }
        self.open.insert(marker.key, ids);
    }

    /// Of `ended`, the runs a release should mark: those not acknowledged yet, as many as fit
    /// under the limit. Also returns how many did not fit.
    pub fn to_mark(&self, ended: &[RunningRecord]) -> (Vec<RunningRecord>, usize) {
        let room = MAX_MARKED_RUNS.saturating_sub(self.marker_of.len());
        let unacked: Vec<RunningRecord> = ended
            .iter()
            .filter(|r| !self.acked_early.contains_key(&r.run_id))
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
                self.marker_of.insert(id.clone(), marker.key.clone());
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

/// One batch of releases: the ended runs and orphan records to delete.
#[derive(Default)]
struct Pending {
    ended: Vec<RunningRecord>,
    orphans: Vec<(String, String)>,
    /// The marker key this batch writes, kept across retries so a retried write replaces an
    /// attempt that applied after all.
    marker_key: Option<String>,
}

impl Pending {
    /// Takes what the releaser was sent: an ended run into this batch, an adopted marker into
    /// `marks`.
    fn take(&mut self, item: Release, marks: &mut Marks) {
        match item {
            Release::Ended(record) => self.ended.push(record),
            Release::Adopted(marker) => marks.adopt(marker),
        }
    }

    fn len(&self) -> usize {
        self.ended.len() + self.orphans.len()
    }

    fn runs(&self) -> Vec<(String, String)> {
        self.ended
            .iter()
            .map(|r| (r.job_name.clone(), r.run_id.clone()))
            .chain(self.orphans.iter().cloned())
            .collect()
    }
}

/// Deletes the running records of ended runs (sent once their ends were shipped) in batches
/// (every 50 ms, up to 128 records per transaction), so ending a run costs a fraction of a store
/// write; each transaction also writes the marker of its runs not yet acknowledged by logsvc
/// (`acks`: the run ids whose ends logsvc stored) and deletes markers no longer needed, adopted
/// ones included. Every few seconds it also sweeps orphan records
/// ([`crate::fire::sweep_orphans`]). After `close` it releases what was sent so far, follows the
/// acknowledgements until the shipper is done (`acks` closed), deletes the markers that allows,
/// and ends.
pub async fn release(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Release>,
    mut acks: mpsc::Receiver<Vec<String>>,
    close: CancellationToken,
) {
    let mut marks = Marks::default();
    let mut pending = Pending::default();
    let mut next_marker = 0u64;
    let mut open = true;
    let mut acks_open = true;
    let mut over_limit_warned = false;
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_release = tokio::time::Instant::now();
    loop {
        if open && last_sweep.elapsed() >= REGISTRATION_REFRESH {
            last_sweep = tokio::time::Instant::now();
            pending.orphans.extend(
                crate::fire::sweep_orphans(&ctx, ctx.settings.kill_grace + ORPHAN_AGE).await,
            );
            marks.prune(ctx.clock.now_ms());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        while pending.len() < distcron_ledger::MAX_TXN_OPS && (open || acks_open) {
            tokio::select! {
                item = rx.recv(), if open => match item {
                    Some(item) => pending.take(item, &mut marks),
                    None => open = false,
                },
                ids = acks.recv(), if acks_open => match ids {
                    Some(ids) => marks.acknowledged(ids, ctx.clock.now_ms()),
                    None => acks_open = false,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = close.cancelled(), if open => {
                    while let Ok(item) = rx.try_recv() {
                        pending.take(item, &mut marks);
                    }
                    open = false;
                }
            }
        }
        // The shipper is never held up by a slow store: acknowledgements are taken every round.
        while let Ok(ids) = acks.try_recv() {
            marks.acknowledged(ids, ctx.clock.now_ms());
        }
        // Markers no longer needed go with the next release; alone only once a transaction's
        // worth waits, a second has passed without a release, or at shutdown.
        let mut unmark = if pending.len() > 0
            || marks.done_count() >= MAX_UNMARKS_PER_TXN
            || last_release.elapsed() >= LONE_UNMARK_AFTER
            || !open
        {
            marks.take_done(MAX_UNMARKS_PER_TXN)
        } else {
            Vec::new()
        };
        if pending.len() == 0 && unmark.is_empty() {
            if !open && !acks_open {
                return;
            }
            continue;
        }
        let (to_mark, over) = marks.to_mark(&pending.ended);
        if to_mark.is_empty() {
            // An earlier attempt of this batch may have written its marker after all (its
            // answer lost); everything in it is acknowledged by now.
            unmark.extend(pending.marker_key.take());
        }
        if over > 0 && !over_limit_warned {
            over_limit_warned = true;
            tracing::warn!(
                marked = marks.marked_runs(),
                "too many ended runs wait for logsvc; releasing more without a marker (a worker lost for good now takes their records with it)"
            );
        } else if over == 0 && marks.marked_runs() < MAX_MARKED_RUNS / 2 {
            over_limit_warned = false;
        }
        let marker = (!to_mark.is_empty()).then(|| UndeliveredMarker {
            key: pending
                .marker_key
                .get_or_insert_with(|| {
                    next_marker += 1;
                    ctx.keys
                        .undelivered(&ctx.id, &format!("{}-{next_marker:010}", ctx.started_at_ms))
                })
                .clone(),
            runs: to_mark,
        });
        let runs = pending.runs();
        // Bounded, so a write stuck on a dying etcd member is retried on another one soon: an
        // unreleased record keeps a `forbid` job from running its next slot.
        let released = bounded(
            RELEASE_ATTEMPT_TIMEOUT,
            "release",
            distcron_ledger::release(
                ctx.store.as_ref(),
                &ctx.keys,
                &runs,
                MarkerChanges {
                    put: marker.as_ref(),
                    delete: &unmark,
                },
            ),
        )
        .await;
        match released {
            Ok(()) => {
                last_release = tokio::time::Instant::now();
                if let Ok(mut ending) = ctx.ending.lock() {
                    for (_, run) in &runs {
                        ending.remove(run);
                    }
                }
                marks.released(runs.iter().map(|(_, run)| run.as_str()), marker.as_ref());
                pending = Pending::default();
                distcron_metrics::worker()
                    .undelivered_runs
                    .set(i64::try_from(marks.marked_runs()).unwrap_or(i64::MAX));
            }
            Err(e) => {
                marks.restore_done(unmark);
                if open {
                    tracing::warn!(error = %e, runs = runs.len(), "cannot release ended runs yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    // Shutting down: revoking the session deletes the running records anyway;
                    // markers left behind are cleared by this worker restarted, or another one.
                    tracing::warn!(error = %e, runs = runs.len(), "release failed at shutdown; the session revoke cleans up");
                    pending = Pending::default();
                    if !acks_open {
                        return;
                    }
                }
            }
        }
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
