//! Keeping an instance's key alive on a lease.

use std::sync::Arc;
use std::time::Duration;

use distcron_kv::{backoff, KvError, KvStore, LeaseId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A leased key kept alive in the background until [`Registration::deregister`] (or drop).
///
/// If the lease is lost (etcd unreachable for longer than the TTL), a new lease is granted and the
/// key written again as soon as the store answers.
#[derive(Debug)]
pub struct Registration {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Writes `key` = `value` on a lease of `ttl` and keeps it alive. Returns once the key is
    /// written the first time, or with the store's error.
    pub async fn start(
        store: Arc<dyn KvStore>,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Self, KvError> {
        let lease = register(store.as_ref(), &key, &value, ttl).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(store, key, value, ttl, lease, stop.clone()));
        Ok(Self {
            stop,
            task: Some(task),
        })
    }

    /// Deletes the key (revokes its lease) and stops the keep-alive.
    pub async fn deregister(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn register(
    store: &dyn KvStore,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<LeaseId, KvError> {
    let lease = store.grant_lease(ttl).await?;
    store.put(key, value.to_vec(), Some(lease)).await?;
    Ok(lease)
}

async fn keep(
    store: Arc<dyn KvStore>,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    mut lease: LeaseId,
    stop: CancellationToken,
) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(if failures == 0 { period } else { backoff(failures, period) }) => {}
        }
        let renewed = match store.keep_alive(lease).await {
            Err(KvError::LeaseNotFound(_)) => {
                tracing::warn!(%key, "registration lease lost; registering again");
                register(store.as_ref(), &key, &value, ttl)
                    .await
                    .map(|l| lease = l)
            }
            other => other.map(drop),
        };
        match renewed {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(%key, error = %e, failures, "registration keep-alive failed");
            }
        }
    }
    if let Err(e) = store.revoke_lease(lease).await {
        tracing::warn!(%key, error = %e, "could not revoke registration lease; it will expire");
    }
}
