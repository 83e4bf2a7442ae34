//! The worker's session: one lease per process, kept alive, carrying the registration and every
//! running record of this worker. If the lease is lost (etcd unreachable for longer than its
//! TTL), the cluster has already considered this worker's runs lost, so they are ended here too
//! (fencing) before a new session starts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::WorkerRegistration;
use distcron_kv::{bounded, retry_until, KvError, LeaseId};
use tokio_util::sync::CancellationToken;

use crate::cluster::clock::RefusalKind;
use crate::ctx::Ctx;

/// How often the registration is rewritten (heartbeat, running count, clock offset).
pub const REGISTRATION_REFRESH: Duration = Duration::from_secs(2);
fn addresses() -> Vec<String> {
    // Addresses of this host as the resolver sees its name; informational only.
    use std::net::ToSocketAddrs;
    let host = distcron_discovery::hostname();
    let mut out: Vec<String> = (host.as_str(), 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Updates the clock judgement; returns the registration to write.
fn registration(ctx: &Ctx, addresses: &[String]) -> WorkerRegistration {
    let (offset, judgeable) = ctx
        .cluster
        .offset
        .lock()
        .map(|o| (o.offset_ms(), o.judgeable()))
        .unwrap_or((0, false));
    let bound = i64::try_from(ctx.settings.clock_skew_bound.as_millis()).unwrap_or(i64::MAX);
    let peers = ctx
        .cluster
        .view
        .read()
        .map(|v| v.workers.keys().filter(|id| **id != ctx.id).count())
        .unwrap_or(0);
    let (kind, reason) = if peers < 2 {
        // Alone or with one peer nobody can tell whose clock is wrong: claim.
        (None, String::new())
    } else if !judgeable {
        (
            Some(RefusalKind::Measuring),
            "measuring clock offset against peers; not claiming yet".to_owned(),
        )
    } else if offset.abs() <= bound {
        (None, String::new())
    } else {
        (
            Some(RefusalKind::BeyondBound),
            format!("clock offset {offset} ms exceeds the bound of {bound} ms; not claiming"),
        )
    };
    let ok = kind.is_none();
    let was_ok = ctx.cluster.clock_ok.swap(ok, Ordering::Relaxed);
    if ok && !was_ok {
        tracing::info!(offset_ms = offset, "clock offset within bound; claiming");
    }
    let now = ctx.clock.now_ms();
    let log = ctx
        .cluster
        .status_reason
        .lock()
        .is_ok_and(|mut r| r.update(kind, reason.clone(), now));
    match kind {
        Some(RefusalKind::BeyondBound) if log => tracing::error!(
            offset_ms = offset,
            bound_ms = bound,
            %reason,
            "clock offset beyond bound; refusing to claim slots"
        ),
        Some(RefusalKind::Measuring) if log => {
            tracing::warn!(peers, %reason, "not claiming slots yet")
        }
        _ => {}
    }
    let metrics = distcron_metrics::worker();
    metrics.clock_offset.set(offset as f64 / 1000.0);
    metrics.claiming.set(i64::from(ctx.cluster.is_claiming()));
    WorkerRegistration {
        worker_id: ctx.id.clone(),
        host: distcron_discovery::hostname(),
        addresses: addresses.to_vec(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        labels: ctx.settings.labels.clone(),
        started_at_ms: ctx.started_at_ms,
        heartbeat_at_ms: ctx.clock.now_ms(),
        running: u32::try_from(ctx.local.running_count()).unwrap_or(u32::MAX),
        capacity: ctx.settings.capacity,
        clock_offset_ms: offset,
        claiming: ctx.cluster.is_claiming(),
        status_reason: reason,
    }
}

async fn register(ctx: &Ctx, lease: LeaseId, addresses: &[String]) -> Result<(), KvError> {
    let value = serde_json::to_vec(&registration(ctx, addresses))
        .map_err(|e| KvError::Other(e.to_string()))?;
    ctx.store
        .put(&ctx.keys.worker(&ctx.id), value, Some(lease))
        .await
        .map(drop)
}

/// Grants the first session and registers; returns once both are done.
pub async fn open(ctx: &Ctx) -> Result<(), KvError> {
    let lease = ctx.store.grant_lease(ctx.settings.session_ttl).await?;
    distcron_metrics::worker().sessions_opened.inc();
    ctx.cluster.session.store(lease, Ordering::Relaxed);
    register(ctx, lease, &addresses()).await
}

/// Keeps the session alive and the registration fresh until `stop` is cancelled: the session is
/// renewed every TTL/3 (at most [`REGISTRATION_REFRESH`] apart), the registration rewritten every
/// [`REGISTRATION_REFRESH`], each on its own deadline.
pub async fn keep(ctx: Arc<Ctx>, stop: CancellationToken) {
    let ttl = ctx.settings.session_ttl;
    let addresses = addresses();
    let mut last_renewal = tokio::time::Instant::now();
    let period = (ttl / 3)
        .max(Duration::from_millis(200))
        .min(REGISTRATION_REFRESH);
    let mut renew_at = last_renewal + period;
    let mut register_at = last_renewal + REGISTRATION_REFRESH;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(renew_at.min(register_at)) => {}
        }
        // At least every 2 s, even while no slot is due.
        ctx.cluster.check_clock();
        if tokio::time::Instant::now() >= renew_at {
            renew_at = tokio::time::Instant::now() + period;
            if renew(&ctx, ttl, period, &mut last_renewal, &mut failures, &stop).await {
                // A new session: register under it at once.
                register_at = tokio::time::Instant::now();
            }
            if stop.is_cancelled() {
                return;
            }
        }
        if tokio::time::Instant::now() >= register_at {
            // Bounded like the renewal, so a stuck write never delays the next renewal.
            let refreshed = bounded(
                period,
                "registration",
                register(&ctx, ctx.cluster.session(), &addresses),
            )
            .await;
            register_at = match refreshed {
                Ok(()) => tokio::time::Instant::now() + REGISTRATION_REFRESH,
                Err(e) => {
                    tracing::warn!(error = %e, "registration refresh failed");
                    renew_at
                }
            };
        }
    }
}

/// Renews the session once; when it has expired (or renewals failed for a whole TTL), ends this
/// worker's runs and opens a new session. Returns whether a new session was opened.
async fn renew(
    ctx: &Ctx,
    ttl: Duration,
    period: Duration,
    last_renewal: &mut tokio::time::Instant,
    failures: &mut u32,
    stop: &CancellationToken,
) -> bool {
    let lease = ctx.cluster.session();
    // A renewal stuck on a dying etcd member must not outlast the lease: give up on it after
    // one period and try again.
    let renewal = bounded(period, "keep-alive", ctx.store.keep_alive(lease)).await;
    let expired = match renewal {
        Ok(_) => {
            *last_renewal = tokio::time::Instant::now();
            *failures = 0;
            false
        }
        Err(KvError::LeaseNotFound(_)) => true,
        Err(e) => {
            *failures += 1;
            tracing::warn!(error = %e, failures = *failures, "session keep-alive failed");
            last_renewal.elapsed() > ttl
        }
    };
    if !expired {
        return false;
    }
    // No claims under the dead lease; claims wait for the next one.
    ctx.cluster.session.store(0, Ordering::Relaxed);
    let fenced = ctx.local.stop_runs(
        "session lost: the cluster recorded this run as lost",
        |_, _| true,
    );
    tracing::error!(
        runs_ended = fenced,
        "session lease lost; runs ended, starting a new session"
    );
    let grant = || ctx.store.grant_lease(ttl);
    let what = "cannot open a new session";
    let Some(new) = retry_until(stop, Duration::from_secs(2), what, grant).await else {
        return false;
    };
    distcron_metrics::worker().sessions_opened.inc();
    ctx.cluster.session.store(new, Ordering::Relaxed);
    *last_renewal = tokio::time::Instant::now();
    true
}
