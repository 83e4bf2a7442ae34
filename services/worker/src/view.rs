//! Following the cluster: one watch over the whole key prefix, so every change arrives in one
//! total order. It keeps the [`View`](crate::ctx::View) current, feeds the scheduler, and reacts
//! to kill requests, manual triggers and lost runs.

use std::sync::Arc;

use distcron_core::records::{KillRequest, RunningRecord, TriggerRequest, WorkerRegistration};
use distcron_core::JobDefinition;
use distcron_kv::{list_prefix, resilient_watch, KeyValue, ResilientWatchEvent, WatchEventKind};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ctx::{Ctx, View};
use crate::scheduler::JobEvent;

/// The kinds of key under the prefix.
enum Key<'a> {
    Job(&'a str),
    Killer(&'a str),
    Ledger(&'a str),
    Running(&'a str),
    Trigger(&'a str, &'a str),
    Worker(&'a str),
    Deleted,
    Other,
}

fn classify<'a>(prefix: &str, key: &'a str) -> Key<'a> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Key::Other;
    };
    let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
    match kind {
        "jobs" => Key::Job(name),
        "killer" => Key::Killer(name),
        "ledger" => Key::Ledger(name),
        "running" => Key::Running(name.split_once('/').map_or("", |(_, run)| run)),
        "triggers" => name
            .split_once('/')
            .map_or(Key::Other, |(job, run)| Key::Trigger(job, run)),
        "workers" => Key::Worker(name),
        "deleted" => Key::Deleted,
        _ => Key::Other,
    }
}

fn decode_job(kv: &KeyValue, name: &str) -> Option<Arc<JobDefinition>> {
    match JobDefinition::from_json(&kv.value) {
        Ok(def) if def.name == name => Some(Arc::new(def)),
        Ok(def) => {
            tracing::error!(key = %kv.key, stored_name = %def.name, "job name does not match its key; ignored");
            None
        }
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "stored job is not valid JSON; ignored");
            None
        }
    }
}

/// Builds a view from a full listing.
fn view_from(ctx: &Ctx, kvs: &[KeyValue]) -> View {
    let prefix = ctx.keys.prefix();
    let mut view = View::default();
    for kv in kvs {
        match classify(prefix, &kv.key) {
            Key::Job(name) => {
                if let Some(def) = decode_job(kv, name) {
                    view.jobs.insert(name.to_owned(), (def, kv.mod_revision));
                }
            }
            Key::Ledger(job) => {
                if let Some(slot) = distcron_core::records::ledger::decode(&kv.value) {
                    view.ledger.insert(job.to_owned(), slot);
                }
            }
            Key::Running(run) => {
                if let Ok(r) = serde_json::from_slice::<RunningRecord>(&kv.value) {
                    view.running.insert(run.to_owned(), r);
                }
            }
            Key::Trigger(job, run) => {
                if let Ok(t) = serde_json::from_slice::<TriggerRequest>(&kv.value) {
                    view.triggers.insert(run.to_owned(), (job.to_owned(), t));
                }
            }
            Key::Worker(id) => {
                if let Ok(w) = serde_json::from_slice::<WorkerRegistration>(&kv.value) {
                    view.workers.insert(id.to_owned(), w);
                }
            }
            Key::Killer(_) | Key::Deleted | Key::Other => {}
        }
    }
    view
}

fn apply_kill(ctx: &Ctx, job: &str, value: &[u8]) {
    let request = KillRequest::from_value(value);
    let reason = if request.claimed_before_ms > 0 {
        "replaced by the job's next run (overlap policy replace)"
    } else {
        "killed on request"
    };
    let n = ctx.stop_runs(reason, |run_id, run| {
        run.job == job && request.targets(run_id, run.claimed_at_ms)
    });
    if n > 0 {
        tracing::info!(job, run_id = %request.run_id, runs = n, "kill request applied");
    }
}

/// Installs a full listing: replaces the view, resets the scheduler, handles pending triggers
/// and recent kill requests.
async fn install(ctx: &Arc<Ctx>, kvs: Vec<KeyValue>, jobs_tx: &mpsc::Sender<JobEvent>) {
    let view = view_from(ctx, &kvs);
    let jobs: Vec<(Arc<JobDefinition>, i64)> = view.jobs.values().cloned().collect();
    let triggers: Vec<(String, String, TriggerRequest)> = view
        .triggers
        .iter()
        .map(|(run, (job, t))| (run.clone(), job.clone(), t.clone()))
        .collect();
    if let Ok(mut v) = ctx.view.write() {
        *v = view;
    }
    let _ = jobs_tx.send(JobEvent::Reset(jobs)).await;
    for (run, job, t) in triggers {
        crate::fire::spawn_trigger(ctx.clone(), job, run, t);
    }
    for kv in &kvs {
        if let Key::Killer(job) = classify(ctx.keys.prefix(), &kv.key) {
            apply_kill(ctx, job, &kv.value);
        }
    }
}

/// Follows the prefix until `stop` is cancelled; `installed` fires once the first full listing is
/// in the view.
pub async fn follow(
    ctx: Arc<Ctx>,
    jobs_tx: mpsc::Sender<JobEvent>,
    installed: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let prefix = ctx.keys.prefix().to_owned();
    let (kvs, revision) = loop {
        match list_prefix(ctx.store.as_ref(), &prefix).await {
            Ok(listing) => break listing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cluster state; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    };
    install(&ctx, kvs, &jobs_tx).await;
    let _ = installed.send(());
    let mut watch = resilient_watch(ctx.store.clone(), prefix.clone(), revision + 1);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = watch.next() => e,
        };
        match event {
            None => return,
            Some(ResilientWatchEvent::Snapshot { kvs, .. }) => {
                distcron_metrics::worker().watch_resyncs.inc();
                tracing::warn!("watch history compacted; resynchronised from a full listing");
                install(&ctx, kvs, &jobs_tx).await;
                // Workers gone during the gap may have left undelivered runs, jobs deleted during
                // it unclaimed slots.
                crate::undelivered::spawn_recovery(ctx.clone());
                crate::deleted_jobs::spawn_settle(ctx.clone());
            }
            Some(ResilientWatchEvent::Batch(batch)) => {
                let mut lost: Vec<RunningRecord> = Vec::new();
                let mut gone: Vec<String> = Vec::new();
                let mut job_events = Vec::new();
                let mut kills = Vec::new();
                let mut new_triggers = Vec::new();
                let mut deleted = false;
                {
                    let Ok(mut view) = ctx.view.write() else {
                        return;
                    };
                    let now = ctx.clock.now_ms();
                    for e in &batch.events {
                        let put = e.kind == WatchEventKind::Put;
                        match classify(&prefix, &e.kv.key) {
                            Key::Job(name) => {
                                if put {
                                    match decode_job(&e.kv, name) {
                                        Some(def) => {
                                            view.jobs.insert(
                                                name.to_owned(),
                                                (def.clone(), e.kv.mod_revision),
                                            );
                                            job_events
                                                .push(JobEvent::Upsert(def, e.kv.mod_revision));
                                        }
                                        None => {
                                            view.jobs.remove(name);
                                            job_events.push(JobEvent::Remove(name.to_owned()));
                                        }
                                    }
                                } else {
                                    view.jobs.remove(name);
                                    job_events.push(JobEvent::Remove(name.to_owned()));
                                }
                            }
                            Key::Ledger(job) => {
                                match (put, distcron_core::records::ledger::decode(&e.kv.value)) {
                                    (true, Some(slot)) => view.ledger.insert(job.to_owned(), slot),
                                    _ => view.ledger.remove(job),
                                };
                            }
                            Key::Running(run) => {
                                if put {
                                    if let Ok(r) =
                                        serde_json::from_slice::<RunningRecord>(&e.kv.value)
                                    {
                                        view.running.insert(run.to_owned(), r);
                                    }
                                } else if let Some(r) = view.running.remove(run) {
                                    lost.push(r);
                                }
                            }
                            Key::Trigger(job, run) => {
                                if put {
                                    if let Ok(t) =
                                        serde_json::from_slice::<TriggerRequest>(&e.kv.value)
                                    {
                                        view.triggers
                                            .insert(run.to_owned(), (job.to_owned(), t.clone()));
                                        new_triggers.push((job.to_owned(), run.to_owned(), t));
                                    }
                                } else {
                                    view.triggers.remove(run);
                                }
                            }
                            Key::Worker(id) => {
                                if put {
                                    if let Ok(w) =
                                        serde_json::from_slice::<WorkerRegistration>(&e.kv.value)
                                    {
                                        if let Ok(mut o) = ctx.offset.lock() {
                                            if id == ctx.id {
                                                o.observe_own(w.heartbeat_at_ms, now);
                                            } else {
                                                o.observe(id, w.heartbeat_at_ms, now);
                                            }
                                        }
                                        view.workers.insert(id.to_owned(), w);
                                    }
                                } else {
                                    view.workers.remove(id);
                                    gone.push(id.to_owned());
                                    if let Ok(mut o) = ctx.offset.lock() {
                                        o.forget(id);
                                    }
                                }
                            }
                            Key::Killer(job) => {
                                if put {
                                    kills.push((job.to_owned(), e.kv.value.clone()));
                                }
                            }
                            Key::Deleted => deleted |= put,
                            Key::Other => {}
                        }
                    }
                    // A running record deleted while its worker is gone (the session lease
                    // expired and took both keys in one revision), or while a later incarnation
                    // of that worker is registered (it restarted within the lease), is a lost
                    // run. Other deletions are releases of finished runs.
                    lost.retain(|r| {
                        view.workers
                            .get(&r.worker_id)
                            .is_none_or(|w| w.started_at_ms > r.claimed_at_ms)
                    });
                    gone.retain(|id| !view.workers.contains_key(id));
                }
                for ev in job_events {
                    if jobs_tx.send(ev).await.is_err() {
                        return;
                    }
                }
                for (job, value) in kills {
                    apply_kill(&ctx, &job, &value);
                }
                for (job, run, t) in new_triggers {
                    crate::fire::spawn_trigger(ctx.clone(), job, run, t);
                }
                for record in lost {
                    crate::fire::record_lost(&ctx, record).await;
                }
                // A job deleted, or a worker gone that may have been the one to record a deleted
                // job's slots.
                if deleted || !gone.is_empty() {
                    crate::deleted_jobs::spawn_settle(ctx.clone());
                }
                for worker in gone {
                    crate::undelivered::spawn_gone(ctx.clone(), worker);
                }
            }
        }
    }
}
