//! A tonic channel balanced over the instances registered under a prefix.

use std::sync::Arc;

use distcron_core::records::ServiceRegistration;
use distcron_kv::{list_prefix, resilient_watch, KvStore, ResilientWatchEvent, WatchEventKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::DiscoveryError;

/// Where a client finds a service.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// Fixed addresses (`http://host:port`), no discovery.
    Static(Vec<String>),
    /// Instances registered under `prefix` (`<key-prefix>services/<service>/`).
    Discovered {
        /// The store.
        store: Arc<dyn KvStore>,
        /// The registration prefix.
        prefix: String,
    },
}

fn endpoint(addr: &str) -> Result<Endpoint, DiscoveryError> {
    Endpoint::from_shared(addr.to_owned())
        .map(|e| {
            e.connect_timeout(std::time::Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        })
        .map_err(|e| DiscoveryError::BadEndpoint {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

fn registration_addr(value: &[u8]) -> Option<String> {
    serde_json::from_slice::<ServiceRegistration>(value)
        .ok()
        .map(|r| r.addr)
}

/// A channel that balances over the endpoints, following registrations as instances come and go
/// until `stop` is cancelled.
pub async fn balanced_channel(
    endpoints: Endpoints,
    stop: CancellationToken,
) -> Result<Channel, DiscoveryError> {
    let (channel, tx) = Channel::balance_channel::<String>(64);
    match endpoints {
        Endpoints::Static(addrs) => {
            for addr in addrs {
                let ep = endpoint(&addr)?;
                let _ = tx.send(Change::Insert(addr, ep)).await;
            }
        }
        Endpoints::Discovered { store, prefix } => {
            // Listed in the background, retried while etcd is unreachable: calls on the channel
            // wait (and time out) until an instance is known, instead of the caller failing to
            // start.
            tokio::spawn(async move {
                let mut attempt = 0;
                let (kvs, revision) = loop {
                    match list_prefix(store.as_ref(), &prefix).await {
                        Ok(listed) => break listed,
                        Err(e) => {
                            attempt += 1;
                            tracing::warn!(%prefix, error = %e, attempt, "cannot list service instances; retrying");
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(distcron_kv::backoff(attempt, std::time::Duration::from_secs(2))) => {}
                            }
                        }
                    }
                };
                let mut live = std::collections::HashSet::new();
                for kv in kvs {
                    if let Some(addr) = registration_addr(&kv.value) {
                        if let Ok(ep) = endpoint(&addr) {
                            live.insert(kv.key.clone());
                            let _ = tx.send(Change::Insert(kv.key, ep)).await;
                        }
                    }
                }
                let mut watch = resilient_watch(store, prefix, revision + 1);
                loop {
                    let event = tokio::select! {
                        () = stop.cancelled() => return,
                        e = watch.next() => e,
                    };
                    let Some(event) = event else { return };
                    let changes: Vec<(String, Option<Vec<u8>>)> = match event {
                        ResilientWatchEvent::Batch(b) => b
                            .events
                            .into_iter()
                            .map(|e| {
                                (
                                    e.kv.key,
                                    (e.kind == WatchEventKind::Put).then_some(e.kv.value),
                                )
                            })
                            .collect(),
                        ResilientWatchEvent::Resync { kvs, .. } => {
                            let now: std::collections::HashSet<String> =
                                kvs.iter().map(|kv| kv.key.clone()).collect();
                            let mut c: Vec<_> = live
                                .iter()
                                .filter(|k| !now.contains(*k))
                                .map(|k| (k.clone(), None))
                                .collect();
                            c.extend(kvs.into_iter().map(|kv| (kv.key, Some(kv.value))));
                            c
                        }
                    };
                    for (key, value) in changes {
                        let change = match value.as_deref().and_then(registration_addr) {
                            Some(addr) => match endpoint(&addr) {
                                Ok(ep) => {
                                    tracing::info!(instance = %key, %addr, "instance added");
                                    live.insert(key.clone());
                                    Change::Insert(key, ep)
                                }
                                Err(e) => {
                                    tracing::warn!(instance = %key, error = %e, "ignoring registration");
                                    continue;
                                }
                            },
                            None => {
                                tracing::info!(instance = %key, "instance removed");
                                live.remove(&key);
                                Change::Remove(key)
                            }
                        };
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    Ok(channel)
}
