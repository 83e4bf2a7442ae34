//! Recording the runs a gone worker ended but never delivered to logsvc (the markers written by
//! [`crate::release`]).
//!
//! When a worker's registration is deleted (its session expired or was revoked), one live worker,
//! by rendezvous on the gone worker's id, reads its markers, ships each marked run as `lost`
//! and adopts the markers, which its releaser deletes once logsvc has stored those records. A
//! worker that starts does the same for the markers of its own earlier incarnations and of any
//! worker not registered (gone while no worker watched). A record delivered later, by the gone
//! worker restarted with its spool, overrides `lost`.

use std::sync::Arc;

use crate::ctx::Ctx;
use crate::outbox::Release;

/// Whether this worker is the one to record the undelivered runs of `worker_id`, another worker
/// that is gone: it still takes work and comes first by rendezvous.
fn takes_over(ctx: &Ctx, worker_id: &str) -> bool {
    worker_id != ctx.id
        && !ctx.cluster.stop_claiming.is_cancelled()
        && ctx.cluster.rank(&format!("undelivered/{worker_id}")) == 0
}

/// Records the undelivered runs of `worker_id`, which is gone, if this worker is the one to.
pub fn spawn_gone(ctx: Arc<Ctx>, worker_id: String) {
    if takes_over(&ctx, &worker_id) {
        tokio::spawn(async move { record(&ctx, &worker_id, |_| true).await });
    }
}

/// At start (after the session opened) and after a resynchronisation: records the undelivered
/// runs of this worker's earlier incarnations, and of the workers not registered that this
/// worker is the one to take.
pub fn spawn_recovery(ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        let workers = match distcron_ledger::workers_with_undelivered(ctx.store.as_ref(), &ctx.keys)
            .await
        {
            Ok(workers) => workers,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list undelivered runs; the next start or worker loss retries");
                return;
            }
        };
        let own = ctx
            .keys
            .undelivered(&ctx.id, &format!("{}-", ctx.started_at_ms));
        for worker in workers {
            if worker == ctx.id {
                record(&ctx, &worker, |key| !key.starts_with(&own)).await;
                continue;
            }
            let registered = ctx
                .cluster
                .view
                .read()
                .map(|v| v.workers.contains_key(&worker))
                .unwrap_or(true);
            if !registered && takes_over(&ctx, &worker) {
                record(&ctx, &worker, |_| true).await;
            }
        }
    });
}

/// Ships the runs of `worker_id`'s markers that `take` accepts (by key) as `lost`, and hands the
/// markers to the releaser.
async fn record(ctx: &Ctx, worker_id: &str, take: impl Fn(&str) -> bool) {
    let markers = match distcron_ledger::undelivered_of(ctx.store.as_ref(), &ctx.keys, worker_id)
        .await
    {
        Ok(markers) => markers,
        Err(e) => {
            tracing::warn!(error = %e, worker = %worker_id, "cannot read the undelivered runs of a gone worker");
            return;
        }
    };
    let markers: Vec<_> = markers.into_iter().filter(|m| take(&m.key)).collect();
    let runs: usize = markers.iter().map(|m| m.runs.len()).sum();
    if markers.is_empty() {
        return;
    }
    tracing::warn!(
        worker = %worker_id,
        runs,
        markers = markers.len(),
        "recording runs lost: their worker is gone and their records never reached logsvc"
    );
    let err = format!(
        "worker {worker_id} stopped before logsvc stored this run's record; the run had ended there, how is unknown"
    );
    for marker in markers {
        let runs = marker.runs.clone();
        // Adopted before the records are shipped, so their acknowledgements find the marker.
        if !ctx.out.release(Release::Adopted(marker)).await {
            return;
        }
        for run in &runs {
            super::lost::ship_lost(ctx, run, err.clone(), false).await;
        }
    }
}
