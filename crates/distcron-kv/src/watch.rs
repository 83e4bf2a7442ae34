//! A watch that survives broken connections and compaction.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::task_stream::task_stream;
use crate::{backoff, KeyValue, KvStore, RangeRequest, Revision, WatchBatch};

/// What a [`resilient_watch`] or a [`follow_prefix`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResilientWatchEvent {
    /// Changes, in order, with no gap since the previous item.
    Batch(WatchBatch),
    /// Every key under the prefix as of `revision`: the first item of a [`follow_prefix`], and
    /// again whenever history was compacted past what the watch had seen. Replace your state with
    /// it; changes continue from `revision + 1`.
    Snapshot {
        /// The whole prefix.
        kvs: Vec<KeyValue>,
        /// The revision it was read at.
        revision: Revision,
    },
}

/// Watches `prefix` from `start_revision` forever: when the watch breaks (a dead member, a lost
/// connection) it re-watches from the revision after the last change delivered, so no change is
/// missed or repeated; when that history is compacted it re-lists the prefix and delivers a
/// [`ResilientWatchEvent::Snapshot`]. The background task stops when the stream is dropped.
pub fn resilient_watch(
    store: Arc<dyn KvStore>,
    prefix: String,
    start_revision: Revision,
) -> Pin<Box<dyn Stream<Item = ResilientWatchEvent> + Send>> {
    task_stream(move |tx| watch_from(store, prefix, start_revision, tx))
}

/// Follows `prefix` from now on: lists it (retrying with backoff while the store is unreachable)
/// and delivers that listing as the first [`ResilientWatchEvent::Snapshot`], then every change
/// after it as a [`resilient_watch`] does. One way to read a prefix's state and keep it current,
/// so the initial listing is handled like any later snapshot. The background task stops when
/// the stream is dropped.
pub fn follow_prefix(
    store: Arc<dyn KvStore>,
    prefix: String,
) -> Pin<Box<dyn Stream<Item = ResilientWatchEvent> + Send>> {
    task_stream(move |tx| async move {
        let mut failures = 0u32;
        let (kvs, revision) = loop {
            match list_prefix(store.as_ref(), &prefix).await {
                Ok(listing) => break listing,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(%prefix, error = %e, attempt = failures, "cannot list the prefix; retrying");
                    tokio::time::sleep(backoff(failures, Duration::from_secs(2))).await;
                }
            }
        };
        if tx
            .send(ResilientWatchEvent::Snapshot { kvs, revision })
            .await
            .is_err()
        {
            return;
        }
        watch_from(store, prefix, revision + 1, tx).await;
    })
}

/// The loop of [`resilient_watch`]: watches `prefix` from `start_revision`, resuming and
/// re-listing as needed, until `tx` is closed.
async fn watch_from(
    store: Arc<dyn KvStore>,
    prefix: String,
    start_revision: Revision,
    tx: tokio::sync::mpsc::Sender<ResilientWatchEvent>,
) {
    let mut next = start_revision;
    let mut failures = 0u32;
    loop {
        let mut stream = match store.watch(&prefix, next).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                tracing::warn!(%prefix, error = %e, "watch failed to start; retrying");
                tokio::time::sleep(backoff(failures, Duration::from_secs(2))).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(batch) => {
                    failures = 0;
                    if let Some(last) = batch.events.last() {
                        next = last.kv.mod_revision + 1;
                    }
                    if tx.send(ResilientWatchEvent::Batch(batch)).await.is_err() {
                        return;
                    }
                }
                Err(crate::KvError::Compacted(_)) => {
                    match list_prefix(store.as_ref(), &prefix).await {
                        Ok((kvs, revision)) => {
                            next = revision + 1;
                            let resync = ResilientWatchEvent::Snapshot { kvs, revision };
                            if tx.send(resync).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%prefix, error = %e, "re-list after compaction failed");
                        }
                    }
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(%prefix, error = %e, next, "watch broke; resuming");
                    tokio::time::sleep(backoff(failures, Duration::from_secs(2))).await;
                    break;
                }
            }
        }
    }
}

/// Every key under `prefix` and the revision they were read at, paging through large prefixes
/// (every page read at the first page's revision, so the result is one snapshot).
pub async fn list_prefix(
    store: &dyn KvStore,
    prefix: &str,
) -> Result<(Vec<KeyValue>, Revision), crate::KvError> {
    list(store, prefix, false).await
}

/// Like [`list_prefix`], without the values.
pub async fn list_keys(
    store: &dyn KvStore,
    prefix: &str,
) -> Result<(Vec<KeyValue>, Revision), crate::KvError> {
    list(store, prefix, true).await
}

async fn list(
    store: &dyn KvStore,
    prefix: &str,
    keys_only: bool,
) -> Result<(Vec<KeyValue>, Revision), crate::KvError> {
    let mut kvs = Vec::new();
    let mut start_after = None;
    let mut revision = 0;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: prefix.to_owned(),
                start_after,
                limit: 1000,
                keys_only,
                at_revision: revision,
            })
            .await?;
        if revision == 0 {
            revision = page.revision;
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        kvs.extend(page.kvs);
        if !page.more {
            return Ok((kvs, revision));
        }
    }
}
