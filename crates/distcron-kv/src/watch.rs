//! A watch that survives broken connections and compaction.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::task_stream::task_stream;
use crate::{backoff, KeyValue, KvStore, RangeRequest, Revision, WatchBatch};

/// What a [`resilient_watch`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResilientWatchEvent {
    /// Changes, in order, with no gap since the previous item.
    Batch(WatchBatch),
    /// History was compacted past what this watch had seen: here is every key under the prefix
    /// as of `revision`. Replace your state with it; changes continue from `revision + 1`.
    Resync {
        /// The whole prefix.
        kvs: Vec<KeyValue>,
        /// The revision it was read at.
        revision: Revision,
    },
}

/// Watches `prefix` from `start_revision` forever: when the watch breaks (a dead member, a lost
/// connection) it re-watches from the revision after the last change delivered, so no change is
/// missed or repeated; when that history is compacted it re-lists the prefix and delivers a
/// [`ResilientWatchEvent::Resync`]. The background task stops when the stream is dropped.
pub fn resilient_watch(
    store: Arc<dyn KvStore>,
    prefix: String,
    start_revision: Revision,
) -> Pin<Box<dyn Stream<Item = ResilientWatchEvent> + Send>> {
    task_stream(move |tx| async move {
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
                                let resync = ResilientWatchEvent::Resync { kvs, revision };
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
    })
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
