//! A tonic channel balanced over the instances registered under a prefix.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::ServiceRegistration;
use distcron_kv::{follow_prefix, KvStore, ResilientWatchEvent, WatchEventKind};
use futures::StreamExt;
use tokio::sync::mpsc;
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

/// How a client dials: plaintext, or TLS with these settings (then only `https://` addresses).
type Tls = Option<distcron_tls::ClientTls>;

fn endpoint(addr: &str, tls: &Tls) -> Result<Endpoint, DiscoveryError> {
    let bad = |reason: String| DiscoveryError::BadEndpoint {
        addr: addr.to_owned(),
        reason,
    };
    let mut ep = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10));
    if let Some(tls) = tls {
        // No plaintext fallback: under TLS a `http://` address is refused, not dialled in clear.
        if ep.uri().scheme_str() != Some("https") {
            return Err(bad(
                "TLS is configured but the address is not https://".into()
            ));
        }
        ep = ep
            .tls_config(tls.config())
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(ep)
}

fn registration_addr(value: &[u8]) -> Option<String> {
    serde_json::from_slice::<ServiceRegistration>(value)
        .ok()
        .map(|r| r.addr)
}

/// A channel that balances over the endpoints, following registrations as instances come and go
/// until `stop` is cancelled. With `tls`, every connection uses it (reloaded settings apply to the
/// connections made after the change).
pub async fn balanced_channel(
    endpoints: Endpoints,
    tls: Tls,
    stop: CancellationToken,
) -> Result<Channel, DiscoveryError> {
    let (channel, tx) = Channel::balance_channel::<String>(64);
    match endpoints {
        Endpoints::Static(addrs) => {
            let mut instances = Instances::new(tls);
            for addr in addrs {
                let ep = endpoint(&addr, &instances.tls)?;
                instances.registered.insert(addr.clone(), ep.clone());
                let _ = tx.send(Change::Insert(addr, ep)).await;
            }
            if instances.tls.is_some() {
                tokio::spawn(async move {
                    while let Some(changes) = instances.tls_changed(&stop).await {
                        for change in changes {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        }
        Endpoints::Discovered { store, prefix } => {
            // Listed in the background, retried while etcd is unreachable: calls on the channel
            // wait (and time out) until an instance is known, instead of the caller failing to
            // start.
            tokio::spawn(follow(store, prefix, Instances::new(tls), tx, stop));
        }
    }
    Ok(channel)
}

/// How often the registered instances are probed (a TCP connect each).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe's connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The registered instances of a service, and which of them the balancer leaves out because
/// they do not accept connections: a killed instance stays registered until its lease expires
/// (`--registration-ttl`), and the balancer would keep sending calls to it meanwhile.
struct Instances {
    /// Registration key → its endpoint.
    registered: HashMap<String, Endpoint>,
    /// Registered but unreachable at the last probe: not in the balancer.
    down: HashSet<String>,
    /// TLS of the endpoints.
    tls: Tls,
}

impl Instances {
    fn new(tls: Tls) -> Self {
        Self {
            registered: HashMap::new(),
            down: HashSet::new(),
            tls,
        }
    }

    /// Waits for the TLS settings to change, then rebuilds every endpoint with them; `None` when
    /// they cannot change any more (plaintext) or at `stop`.
    async fn tls_changed(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<Vec<Change<String, Endpoint>>> {
        let tls = self.tls.as_mut()?;
        tokio::select! {
            () = stop.cancelled() => return None,
            changed = tls.changed() => if !changed { return None },
        }
        let mut changes = Vec::new();
        for (key, ep) in &mut self.registered {
            match endpoint(&ep.uri().to_string(), &self.tls) {
                Ok(rebuilt) => {
                    *ep = rebuilt.clone();
                    if !self.down.contains(key) {
                        changes.push(Change::Insert(key.clone(), rebuilt));
                    }
                }
                Err(e) => tracing::warn!(instance = %key, error = %e, "cannot rebuild endpoint"),
            }
        }
        tracing::info!(
            endpoints = changes.len(),
            "TLS settings changed; endpoints rebuilt"
        );
        Some(changes)
    }

    /// The balancer change for a registration put (`Some`) or deleted (`None`) at `key`.
    fn apply(&mut self, key: String, value: Option<&[u8]>) -> Option<Change<String, Endpoint>> {
        self.down.remove(&key);
        match value.and_then(registration_addr) {
            Some(addr) => match endpoint(&addr, &self.tls) {
                Ok(ep) => {
                    tracing::info!(instance = %key, %addr, "instance added");
                    self.registered.insert(key.clone(), ep.clone());
                    Some(Change::Insert(key, ep))
                }
                Err(e) => {
                    tracing::warn!(instance = %key, error = %e, "ignoring registration");
                    None
                }
            },
            None => {
                tracing::info!(instance = %key, "instance removed");
                self.registered.remove(&key);
                Some(Change::Remove(key))
            }
        }
    }

    /// Probes every registered instance; returns the changes: an unreachable one leaves the
    /// balancer, one reachable again comes back.
    async fn probe(&mut self) -> Vec<Change<String, Endpoint>> {
        let probes = self.registered.iter().map(|(key, ep)| async move {
            let reachable = match ep.uri().authority() {
                Some(authority) => matches!(
                    tokio::time::timeout(
                        PROBE_TIMEOUT,
                        tokio::net::TcpStream::connect(authority.as_str())
                    )
                    .await,
                    Ok(Ok(_))
                ),
                None => true,
            };
            (key.clone(), reachable)
        });
        let mut changes = Vec::new();
        for (key, reachable) in futures::future::join_all(probes).await {
            if !reachable && self.down.insert(key.clone()) {
                tracing::warn!(instance = %key, "instance unreachable; calls go to the others");
                changes.push(Change::Remove(key));
            } else if reachable && self.down.remove(&key) {
                if let Some(ep) = self.registered.get(&key) {
                    tracing::info!(instance = %key, "instance reachable again");
                    changes.push(Change::Insert(key, ep.clone()));
                }
            }
        }
        changes
    }
}

/// Lists the instances under `prefix` (retrying while the store is unreachable), then follows
/// their registrations and probes them, sending each change to the balancer, until `stop`.
async fn follow(
    store: Arc<dyn KvStore>,
    prefix: String,
    mut instances: Instances,
    tx: mpsc::Sender<Change<String, Endpoint>>,
    stop: CancellationToken,
) {
    // The first snapshot is the listing; a later one (after a compaction) replaces what it lacks.
    let mut watch = follow_prefix(store, prefix);
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changes: Vec<(String, Option<Vec<u8>>)> = tokio::select! {
            () = stop.cancelled() => return,
            _ = probe.tick() => {
                for change in instances.probe().await {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Some(changes) = instances.tls_changed(&stop) => {
                for change in changes {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            event = watch.next() => match event {
                None => return,
                Some(ResilientWatchEvent::Batch(b)) => b
                    .events
                    .into_iter()
                    .map(|e| (e.kv.key, (e.kind == WatchEventKind::Put).then_some(e.kv.value)))
                    .collect(),
                Some(ResilientWatchEvent::Snapshot { kvs, .. }) => {
                    let now: HashSet<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
                    let mut c: Vec<_> = instances
                        .registered
                        .keys()
                        .filter(|k| !now.contains(*k))
                        .map(|k| (k.clone(), None))
                        .collect();
                    c.extend(kvs.into_iter().map(|kv| (kv.key, Some(kv.value))));
                    c
                }
            },
        };
        for (key, value) in changes {
            if let Some(change) = instances.apply(key, value.as_deref()) {
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
}
