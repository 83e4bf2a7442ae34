//! The key-value store seam of distcron.
//!
//! Job definitions, the slot ledger, kill requests, manual triggers and service and worker
//! registrations all live in one key-value store with etcd's semantics: a global revision counter,
//! multi-key transactions with compares (including compares over a key range), leases whose expiry
//! deletes their keys atomically, and watches that replay history from a revision.
//!
//! [`KvStore`] is that contract. [`EtcdKv`] implements it over a real etcd cluster; [`EmbeddedKv`]
//! in the process itself (written through to a SQLite file), for the single-machine mode. Both must pass the same behavioural suite
//! (`conformance`, behind the `testsuite` feature), so code above this trait never needs to know
//! which store it runs on.

mod compaction;
mod embedded;
mod error;
mod etcd;
mod task_stream;
mod types;
mod watch;

#[cfg(feature = "testsuite")]
pub mod conformance;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

pub use compaction::{run_compactor, Compactor};
pub use embedded::EmbeddedKv;
pub use error::KvError;
pub use etcd::{EtcdConfig, EtcdKv, EtcdTls};
pub use types::{
    CompareOp, CompareTarget, Condition, KeyValue, LeaseId, Op, OpResult, RangeRequest,
    RangeResponse, Revision, Txn, TxnResponse, WatchBatch, WatchEvent, WatchEventKind,
};
pub use watch::{follow_prefix, list_keys, list_prefix, resilient_watch, ResilientWatchEvent};

/// Most compares, and most operations in either branch, of one transaction: etcd's default
/// `--max-txn-ops`. Both stores refuse a larger transaction (etcd with `InvalidArgument: etcdserver:
/// too many operations in txn request`), so batching code finds out in tests on either.
pub const MAX_TXN_OPS: usize = 128;

/// A stream of watch batches; ends with an error when the watch breaks.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, KvError>> + Send>>;

/// A key-value store with etcd's semantics. Keys are UTF-8 strings, values bytes.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// The key's current value, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Keys under a prefix, in key order, with paging.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, KvError>;

    /// Sets a key, optionally attached to a lease; returns the previous value.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Option<KeyValue>, KvError>;

    /// Deletes a key; returns the deleted value.
    async fn delete(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Runs `then` if every condition holds, else `otherwise`, atomically, at one revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, KvError>;

    /// Creates a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError>;

    /// Renews a lease; returns its TTL. [`KvError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, KvError>;

    /// Revokes a lease at once, deleting its keys in one revision.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError>;

    /// Watches every key under `prefix`, replaying history from `start_revision` (0 = from now).
    /// Events carry the new value only (see [`WatchEvent`]). The stream ends with [`KvError::Compacted`] if that history is
    /// gone, or another error if the connection breaks; see [`resilient_watch`].
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, KvError>;

    /// Discards the history before `revision`: reads at older revisions, and watches from them,
    /// end with [`KvError::Compacted`]. Compacting where the history is already compacted is not an
    /// error. See [`Compactor`] for keeping the history bounded.
    async fn compact(&self, revision: Revision) -> Result<(), KvError>;

    /// Writes that this client has sent (puts, deletes, transactions, lease grants and revokes),
    /// counted for metrics and benchmarks.
    fn write_count(&self) -> u64;
}

/// `call`, abandoned after `limit` with [`KvError::Unavailable`] ("`what` timed out"): for
/// writes that must not wait on a dying etcd member longer than a lease or a slot allows.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(KvError::Unavailable(format!("{what} timed out"))))
}

/// How long to wait before the `attempt`-th retry (1-based): 50 ms doubling up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let ms = 50u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(ms).min(max)
}

/// Runs `op` until it succeeds, waiting [`backoff`] (capped at `max`) between attempts and
/// logging each failure as "`what`; retrying"; `None` if `stop` is cancelled first.
pub async fn retry_until<T, E, F, Fut>(
    stop: &tokio_util::sync::CancellationToken,
    max: Duration,
    what: &str,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "{what}; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(backoff(attempt, max)) => {}
        }
    }
}

/// The smallest key greater than every key that starts with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // The empty prefix, or all 0xff: the whole key space (etcd's "\0").
    vec![0]
}
