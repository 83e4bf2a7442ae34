//! Keeping the store's history bounded.
//!
//! Every write leaves a revision in the store's history (etcd keeps every old version of a key, and
//! the tombstone of every deleted key, until the history is compacted): without compaction etcd's
//! database grows until it reaches its space quota and refuses writes, and every range over keys
//! that come and go (a job's running records) walks their tombstones. Every interval, one of the
//! processes that run a [`Compactor`] compacts the history up to the revision seen one interval
//! earlier, so a watcher that fell less than an interval behind resumes without a re-list. The
//! processes agree through a counter key, as Kubernetes' API servers do: a round compacts only if
//! the counter is still at the value this process last saw, and bumps it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{CompareOp, CompareTarget, Condition, KvError, KvStore, Op, Revision, Txn};

/// One process's side of the compaction rounds.
#[derive(Debug)]
pub struct Compactor {
    key: String,
    /// The counter key's version when this process last looked.
    seen_version: i64,
    /// The store revision when this process last looked: the next compaction's target.
    target: Revision,
}

impl Compactor {
    /// A compactor agreeing with its peers through the counter at `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            seen_version: 0,
            target: 0,
        }
    }

    /// One round: if no peer has taken a round since this process last looked, takes this one and
    /// compacts to the revision seen then. Returns the revision compacted to, if this round did.
    pub async fn round(&mut self, store: &dyn KvStore) -> Result<Option<Revision>, KvError> {
        let resp = store
            .txn(Txn {
                when: vec![Condition::key(
                    &self.key,
                    CompareTarget::Version(self.seen_version),
                    CompareOp::Equal,
                )],
                then: vec![Op::put(&self.key, self.target.to_string().into_bytes())],
                otherwise: vec![Op::get(&self.key)],
            })
            .await?;
        if !resp.succeeded {
            // A peer took the round; compact next time, if none does, to what is current now.
            self.seen_version = resp.got(0).first().map_or(0, |kv| kv.version);
            self.target = resp.revision;
            return Ok(None);
        }
        self.seen_version += 1;
        let target = std::mem::replace(&mut self.target, resp.revision);
        if target == 0 {
            return Ok(None);
        }
        store.compact(target).await?;
        Ok(Some(target))
    }
}

/// Runs compaction rounds every `interval` until `stop` is cancelled. A failed round is logged and
/// retried at the next tick.
pub async fn run_compactor(
    store: Arc<dyn KvStore>,
    key: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut compactor = Compactor::new(key);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match compactor.round(store.as_ref()).await {
            Ok(Some(revision)) => tracing::info!(revision, "store history compacted"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "store history compaction failed; retrying next interval")
            }
        }
    }
}
