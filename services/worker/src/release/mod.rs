//! The releaser: deletes the running records of ended runs in batches and keeps a marker of the
//! runs whose records logsvc has not acknowledged yet.
//!
//! A run's running record lives on the worker's session lease: if the worker dies during the run,
//! the lease takes the record and another worker records the run `lost`. Once the run has ended,
//! its record is released, but its events may still wait in the worker's spool (logsvc slow or
//! down). So the release transaction also writes one marker (`undelivered/<worker>/<marker>`, no
//! lease) listing the released runs that logsvc has not acknowledged, and a later release deletes
//! the marker once logsvc has acknowledged all of them. If the worker is gone for good, another
//! worker records the marked runs `lost` ([`crate::unrun::undelivered`]), so no ended run is left
//! without a record; a record the worker delivers later, restarted, overrides `lost`.

pub mod marks;

use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunningRecord;
use distcron_kv::bounded;
use distcron_ledger::{MarkerChanges, UndeliveredMarker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::marks::{Marks, MAX_MARKED_RUNS};
use crate::ctx::Ctx;
use crate::outbox::Release;
use crate::session::REGISTRATION_REFRESH;

/// How long one release transaction may take before it is retried.
const RELEASE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(700);
/// How old (beyond the kill grace) a running record of this worker that no run owns must be
/// before it is treated as an orphan claim (see [`crate::unrun::orphans`]).
const ORPHAN_AGE: Duration = Duration::from_secs(30);
/// Most marker deletions in one release transaction.
const MAX_UNMARKS_PER_TXN: usize = 16;
/// How long markers no longer needed wait for a release to go with before they are deleted in
/// a transaction of their own.
const LONE_UNMARK_AFTER: Duration = Duration::from_secs(1);
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
/// ([`crate::unrun::orphans`]). After `close` it releases what was sent so far, follows the
/// acknowledgements until the shipper is done (`acks` closed), deletes the markers that allows,
/// and ends.
pub async fn release(
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<Release>,
    acks: mpsc::Receiver<Vec<String>>,
    close: CancellationToken,
) {
    let mut releaser = Releaser {
        ctx,
        rx,
        acks,
        marks: Marks::default(),
        pending: Pending::default(),
        next_marker: 0,
        open: true,
        acks_open: true,
        over_limit_warned: false,
        last_sweep: tokio::time::Instant::now(),
        last_release: tokio::time::Instant::now(),
    };
    loop {
        releaser.sweep_when_due().await;
        releaser.gather(&close).await;
        // The shipper is never held up by a slow store: acknowledgements are taken every round.
        while let Ok(ids) = releaser.acks.try_recv() {
            releaser
                .marks
                .acknowledged(ids, releaser.ctx.clock.now_ms());
        }
        let unmark = releaser.unmarks_due();
        if releaser.pending.len() == 0 && unmark.is_empty() {
            if !releaser.open && !releaser.acks_open {
                return;
            }
            continue;
        }
        if !releaser.commit(unmark).await {
            return;
        }
    }
}

/// The releaser's state between rounds.
struct Releaser {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<Release>,
    acks: mpsc::Receiver<Vec<String>>,
    marks: Marks,
    pending: Pending,
    next_marker: u64,
    /// Whether releases may still arrive (not closed).
    open: bool,
    /// Whether the shipper may still acknowledge runs.
    acks_open: bool,
    over_limit_warned: bool,
    last_sweep: tokio::time::Instant,
    last_release: tokio::time::Instant,
}

impl Releaser {
    /// Every [`REGISTRATION_REFRESH`] while open: queues the orphan records for release.
    async fn sweep_when_due(&mut self) {
        if self.open && self.last_sweep.elapsed() >= REGISTRATION_REFRESH {
            self.last_sweep = tokio::time::Instant::now();
            let min_age = self.ctx.settings.kill_grace + ORPHAN_AGE;
            self.pending
                .orphans
                .extend(crate::unrun::orphans::sweep_orphans(&self.ctx, min_age).await);
            self.marks.prune(self.ctx.clock.now_ms());
        }
    }

    /// Takes releases and acknowledgements for up to 50 ms or a transaction's worth; on `close`,
    /// takes what was sent and stops taking more.
    async fn gather(&mut self, close: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        while self.pending.len() < distcron_ledger::MAX_TXN_OPS && (self.open || self.acks_open) {
            tokio::select! {
                item = self.rx.recv(), if self.open => match item {
                    Some(item) => self.pending.take(item, &mut self.marks),
                    None => self.open = false,
                },
                ids = self.acks.recv(), if self.acks_open => match ids {
                    Some(ids) => self.marks.acknowledged(ids, self.ctx.clock.now_ms()),
                    None => self.acks_open = false,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = close.cancelled(), if self.open => {
                    while let Ok(item) = self.rx.try_recv() {
                        self.pending.take(item, &mut self.marks);
                    }
                    self.open = false;
                }
            }
        }
    }

    /// Markers no longer needed go with the next release; alone only once a transaction's worth
    /// waits, a second has passed without a release, or at shutdown.
    fn unmarks_due(&mut self) -> Vec<String> {
        if self.pending.len() > 0
            || self.marks.done_count() >= MAX_UNMARKS_PER_TXN
            || self.last_release.elapsed() >= LONE_UNMARK_AFTER
            || !self.open
        {
            self.marks.take_done(MAX_UNMARKS_PER_TXN)
        } else {
            Vec::new()
        }
    }

    /// The marker of the pending batch's runs not acknowledged yet, if any (its key kept across
    /// retries); adds to `unmark` an earlier attempt's marker no longer needed.
    fn marker(&mut self, unmark: &mut Vec<String>) -> Option<UndeliveredMarker> {
        let (to_mark, over) = self.marks.to_mark(&self.pending.ended);
        if to_mark.is_empty() {
            // An earlier attempt of this batch may have written its marker after all (its
            // answer lost); everything in it is acknowledged by now.
            unmark.extend(self.pending.marker_key.take());
        }
        if over > 0 && !self.over_limit_warned {
            self.over_limit_warned = true;
            tracing::warn!(
                marked = self.marks.marked_runs(),
                "too many ended runs wait for logsvc; releasing more without a marker (a worker lost for good now takes their records with it)"
            );
        } else if over == 0 && self.marks.marked_runs() < MAX_MARKED_RUNS / 2 {
            self.over_limit_warned = false;
        }
        if to_mark.is_empty() {
            return None;
        }
        let ctx = &self.ctx;
        let next_marker = &mut self.next_marker;
        let key = self
            .pending
            .marker_key
            .get_or_insert_with(|| {
                *next_marker += 1;
                ctx.keys.undelivered(
                    &ctx.id,
                    &format!("{}-{:010}", ctx.started_at_ms, *next_marker),
                )
            })
            .clone();
        Some(UndeliveredMarker { key, runs: to_mark })
    }

    /// Releases the pending batch with its marker, deleting `unmark`. Returns false when the
    /// releaser is done (a failure at shutdown with nothing more to wait for).
    async fn commit(&mut self, mut unmark: Vec<String>) -> bool {
        let marker = self.marker(&mut unmark);
        let runs = self.pending.runs();
        // Bounded, so a write stuck on a dying etcd member is retried on another one soon: an
        // unreleased record keeps a `forbid` job from running its next slot.
        let released = bounded(
            RELEASE_ATTEMPT_TIMEOUT,
            "release",
            distcron_ledger::release(
                self.ctx.store.as_ref(),
                &self.ctx.keys,
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
                self.last_release = tokio::time::Instant::now();
                if let Ok(mut ending) = self.ctx.local.ending.lock() {
                    for (_, run) in &runs {
                        ending.remove(run);
                    }
                }
                self.marks
                    .released(runs.iter().map(|(_, run)| run.as_str()), marker.as_ref());
                self.pending = Pending::default();
                distcron_metrics::worker()
                    .undelivered_runs
                    .set(i64::try_from(self.marks.marked_runs()).unwrap_or(i64::MAX));
            }
            Err(e) => {
                self.marks.restore_done(unmark);
                if self.open {
                    tracing::warn!(error = %e, runs = runs.len(), "cannot release ended runs yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    // Shutting down: revoking the session deletes the running records anyway;
                    // markers left behind are cleared by this worker restarted, or another one.
                    tracing::warn!(error = %e, runs = runs.len(), "release failed at shutdown; the session revoke cleans up");
                    self.pending = Pending::default();
                    if !self.acks_open {
                        return false;
                    }
                }
            }
        }
        true
    }
}
