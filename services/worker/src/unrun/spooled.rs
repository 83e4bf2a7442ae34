//! What a restarted worker's spool holds, marked undelivered before it is delivered.
//!
//! logsvc stores the first record of a run that a worker token reports only if the cluster
//! state shows that worker's claim of it: its running record, or one of the worker's undelivered
//! markers listing it. A worker that crashed with records in its spool may come back after its
//! session expired, and its running records went with the session. So before the shipper
//! delivers what the spool held, the worker marks every run that the spool starts here (one
//! marker of the current incarnation per [`RUNS_PER_MARKER`] runs) and hands the markers to the
//! releaser, which deletes them once logsvc has stored those runs' ends. A run that the spool
//! starts but does not end was cut off by the crash (its process group was killed at this start,
//! see [`crate::execution::exec::ProcessRecords::reap_leftovers`]): its end is shipped as `lost`,
//! so its marker is acknowledged too, and the output it had spooled is kept.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use distcron_core::records::{RunTrigger, RunningRecord};
use distcron_kv::retry_until;
use distcron_ledger::UndeliveredMarker;
use distcron_proto::logs::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::outbox::spool::Spool;
use crate::outbox::Release;

/// Most runs one marker lists (about 200 bytes each: well under etcd's request limit).
pub const RUNS_PER_MARKER: usize = 4_000;

/// The runs a spool starts on this worker, read before the shipper opens it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Spooled {
    /// Each run the spool starts as running here, as its start names it, in spool order.
    pub runs: Vec<RunningRecord>,
    /// Those of them that the spool does not end.
    pub unended: HashSet<String>,
}

/// Reads the spool in `dir` (bounded at `max_bytes`) for the runs it starts as running on
/// `worker_id`. Blocking: run it off the runtime. A batch that cannot be read is skipped (the
/// shipper drops it when it comes to deliver it).
pub fn spooled_runs(dir: &Path, max_bytes: u64, worker_id: &str) -> std::io::Result<Spooled> {
    let spool = Spool::open(dir, max_bytes)?;
    let mut spooled = Spooled::default();
    let mut ended = HashSet::new();
    for seq in spool.oldest(u64::MAX) {
        let Ok(batch) = spool.read(seq).map_err(|e| e.to_string()).and_then(|b| {
            pb::AppendRunEventsRequest::decode(b.as_slice()).map_err(|e| e.to_string())
        }) else {
            continue;
        };
        for event in batch.events {
            match &event.kind {
                Some(pb::run_event::Kind::Started(s))
                    if s.worker_id == worker_id && s.status == pb::RunStatus::Running as i32 =>
                {
                    spooled.runs.push(record_of(&event.run_id, s));
                }
                Some(pb::run_event::Kind::Finished(_)) => {
                    ended.insert(event.run_id);
                }
                _ => {}
            }
        }
    }
    let mut seen = HashSet::new();
    spooled.runs.retain(|r| seen.insert(r.run_id.clone()));
    spooled.unended = spooled
        .runs
        .iter()
        .map(|r| r.run_id.clone())
        .filter(|id| !ended.contains(id))
        .collect();
    Ok(spooled)
}

/// The claim of `run_id` as its spooled start `s` names it.
fn record_of(run_id: &str, s: &pb::RunStarted) -> RunningRecord {
    RunningRecord {
        run_id: run_id.to_owned(),
        job_name: s.job_name.clone(),
        worker_id: s.worker_id.clone(),
        slot_ms: s.plan_time_ms,
        claimed_at_ms: s.schedule_time_ms,
        trigger: RunTrigger::try_from(s.trigger).unwrap_or_default(),
        passed_over: None,
    }
}

/// Marks the runs of `spooled` undelivered (retrying while the store is unreachable), hands the
/// markers to the releaser and ships the unended runs as `lost`. Returns false if `shutdown` came
/// first: the spool then stays as it is for the next start. (A run an earlier incarnation's
/// marker lists too is listed twice; the releaser deletes both markers once its end is stored.)
pub async fn mark_spooled(ctx: &Ctx, spooled: Spooled, shutdown: &CancellationToken) -> bool {
    if spooled.runs.is_empty() {
        return true;
    }
    tracing::info!(
        runs = spooled.runs.len(),
        unended = spooled.unended.len(),
        "marking the runs spooled before a restart undelivered"
    );
    for (i, runs) in spooled.runs.chunks(RUNS_PER_MARKER).enumerate() {
        let marker = UndeliveredMarker {
            key: ctx
                .keys
                .undelivered(&ctx.id, &format!("{}-spool-{i:06}", ctx.started_at_ms)),
            runs: runs.to_vec(),
        };
        let write = || distcron_ledger::mark_undelivered(ctx.store.as_ref(), &ctx.keys, &marker);
        let what = "cannot mark the spooled runs undelivered";
        if retry_until(shutdown, Duration::from_secs(2), what, write)
            .await
            .is_none()
        {
            return false;
        }
        // Adopted before the ends are delivered, so their acknowledgements find the marker.
        if !ctx.out.release(Release::Adopted(marker)).await {
            return false;
        }
    }
    let err = "the worker stopped while the run was in progress (it restarted with the run's records spooled)";
    for record in spooled
        .runs
        .iter()
        .filter(|r| spooled.unended.contains(&r.run_id))
    {
        super::lost::ship_lost(ctx, record, err.to_owned(), false).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run: &str, worker: &str, status: pb::RunStatus) -> pb::RunEvent {
        pb::RunEvent {
            run_id: run.into(),
            kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
                job_name: "j".into(),
                worker_id: worker.into(),
                plan_time_ms: 1_000,
                schedule_time_ms: 1_001,
                trigger: pb::RunTrigger::Manual as i32,
                status: status as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn finished(run: &str) -> pb::RunEvent {
        pb::RunEvent {
            run_id: run.into(),
            kind: Some(pb::run_event::Kind::Finished(pb::RunFinished::default())),
            ..Default::default()
        }
    }

    #[test]
    fn the_spool_s_own_starts_are_found_with_those_it_does_not_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        let batches = [
            vec![
                started("ended", "w1", pb::RunStatus::Running),
                started("theirs", "w2", pb::RunStatus::Running),
                started("skipped", "w1", pb::RunStatus::Skipped),
            ],
            vec![
                finished("ended"),
                started("cut-off", "w1", pb::RunStatus::Running),
                // The same start twice (a batch spooled again) lists the run once.
                started("cut-off", "w1", pb::RunStatus::Running),
            ],
        ];
        for events in batches {
            let pushed = spool
                .push(&pb::AppendRunEventsRequest { events })
                .expect("push");
            assert!(pushed);
        }
        drop(spool);
        let spooled = spooled_runs(dir.path(), 1 << 20, "w1").expect("read");
        let ids: Vec<&str> = spooled.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["ended", "cut-off"]);
        assert_eq!(spooled.unended, HashSet::from(["cut-off".to_owned()]));
        let record = &spooled.runs[0];
        assert_eq!(
            (record.job_name.as_str(), record.worker_id.as_str()),
            ("j", "w1")
        );
        assert_eq!((record.slot_ms, record.claimed_at_ms), (1_000, 1_001));
        assert_eq!(record.trigger, RunTrigger::Manual);
    }
}
