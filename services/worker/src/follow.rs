//! Following the cluster: one watch over the whole key prefix ([`distcron_kv::follow_prefix`]),
//! so every change arrives in one total order. The [`View`](crate::cluster::view::View) takes
//! each snapshot and batch; this task acts on what they mean: it feeds the scheduler, the clock
//! offset estimate, kill requests, manual triggers, lost runs, gone workers and deleted jobs.

use std::sync::Arc;

use distcron_core::records::KillRequest;
use distcron_kv::{follow_prefix, ResilientWatchEvent};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cluster::view::Effects;
use crate::ctx::Ctx;
use crate::plan::JobEvent;

/// Follows the prefix until `stop` is cancelled; `installed` fires once the first listing is in
/// the view.
pub async fn follow(
    ctx: Arc<Ctx>,
    jobs_tx: mpsc::Sender<JobEvent>,
    installed: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut watch = follow_prefix(ctx.store.clone(), ctx.keys.prefix().to_owned());
    let mut installed = Some(installed);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = watch.next() => e,
        };
        let (effects, snapshot) = match event {
            None => return,
            Some(ResilientWatchEvent::Snapshot { kvs, .. }) => {
                let Ok(mut view) = ctx.cluster.view.write() else {
                    return;
                };
                (view.replace(&ctx.keys, &kvs), true)
            }
            Some(ResilientWatchEvent::Batch(batch)) => {
                let Ok(mut view) = ctx.cluster.view.write() else {
                    return;
                };
                (view.apply(&ctx.keys, &batch.events), false)
            }
        };
        if !act(&ctx, effects, &jobs_tx).await {
            return;
        }
        if snapshot {
            match installed.take() {
                Some(installed) => {
                    let _ = installed.send(());
                }
                None => resynced(&ctx),
            }
        }
    }
}

/// After a snapshot other than the first (the watch history was compacted): workers gone during
/// the gap may have left undelivered runs, jobs deleted during it unclaimed slots.
fn resynced(ctx: &Arc<Ctx>) {
    distcron_metrics::worker().watch_resyncs.inc();
    tracing::warn!("watch history compacted; resynchronised from a full listing");
    crate::unrun::undelivered::spawn_recovery(ctx.clone());
    crate::unrun::deleted_jobs::spawn_settle(ctx.clone());
}

/// Acts on `effects`. Returns false once the scheduler is gone.
async fn act(ctx: &Arc<Ctx>, effects: Effects, jobs_tx: &mpsc::Sender<JobEvent>) -> bool {
    let now = ctx.clock.now_ms();
    if let Ok(mut offset) = ctx.cluster.offset.lock() {
        for (id, heartbeat) in &effects.registrations {
            match heartbeat {
                Some(at) if *id == ctx.id => offset.observe_own(*at, now),
                Some(at) => offset.observe(id, *at, now),
                None => offset.forget(id),
            }
        }
    }
    for event in effects.jobs {
        if jobs_tx.send(event).await.is_err() {
            return false;
        }
    }
    for (job, value) in &effects.kills {
        apply_kill(ctx, job, value);
    }
    for (job, run, request) in effects.triggers {
        crate::triggers::spawn_trigger(ctx.clone(), job, run, request);
    }
    for record in effects.lost {
        crate::unrun::lost::record_lost(ctx, record).await;
    }
    // A job deleted, or a worker gone that may have been the one to record a deleted job's slots.
    if effects.deleted || !effects.gone.is_empty() {
        crate::unrun::deleted_jobs::spawn_settle(ctx.clone());
    }
    for worker in effects.gone {
        crate::unrun::undelivered::spawn_gone(ctx.clone(), worker);
    }
    true
}

/// Ends the runs of `job` here that the kill request `value` targets.
fn apply_kill(ctx: &Ctx, job: &str, value: &[u8]) {
    let request = KillRequest::from_value(value);
    let reason = if request.claimed_before_ms > 0 {
        "replaced by the job's next run (overlap policy replace)"
    } else {
        "killed on request"
    };
    let n = ctx.local.stop_runs(reason, |run_id, run| {
        run.job == job && request.targets(run_id, run.claimed_at_ms)
    });
    if n > 0 {
        tracing::info!(job, run_id = %request.run_id, runs = n, "kill request applied");
    }
}
