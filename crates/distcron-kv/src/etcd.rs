//! [`KvStore`] over a real etcd cluster (`etcd-client`).
//!
//! Two things etcd-client does not do by itself, done here:
//! - Calls that fail with `Unavailable` (a dead member, no leader, a broken connection) are retried
//!   with backoff, because tonic's balancer keeps routing to a member that is down.
//! - A probe task checks every endpoint once a second and takes dead members out of the balancer
//!   (and puts them back when they answer), so a dead member costs at most one probe period of
//!   retries instead of half of all calls.
//!
//! Retrying a transaction whose reply was lost may re-run it; callers make transactions
//! idempotent through their compares (a claim that already applied fails its compare and the
//! caller recognises its own record in the `otherwise` reads).

use std::future::Future;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp as EtcdCompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::task_stream::task_stream;
use crate::{
    backoff, prefix_end, CompareOp, CompareTarget, Condition, KeyValue, KvError, KvStore, LeaseId,
    Op, OpResult, RangeRequest, RangeResponse, Revision, Txn, TxnResponse, WatchBatch, WatchEvent,
    WatchEventKind, WatchStream,
};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`; a bare `host:port` gets `http://`, or `https://` with
    /// TLS).
    pub endpoints: Vec<String>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// How many times an `Unavailable` call is retried before the error reaches the caller.
    pub max_retries: u32,
    /// User name and password, when etcd has authentication enabled.
    pub credentials: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints); when its files change, the client reconnects with
    /// them.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA that verifies its members and, for etcd's `--client-cert-auth`, the client
/// certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// CA bundle.
    pub ca: std::path::PathBuf,
    /// Client certificate and its key.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdTls {
    /// The settings, watched for changes of their files.
    fn watched(&self) -> Result<distcron_tls::ClientTls, KvError> {
        let identity = self
            .identity
            .clone()
            .map(|(cert, key)| distcron_tls::Identity { cert, key });
        distcron_tls::ClientTls::load(self.ca.clone(), identity)
            .map_err(|e| KvError::Other(format!("etcd TLS: {e}")))
    }
}

impl EtcdConfig {
    /// Defaults for the given endpoints: 5 s requests, 2 s connects, 6 retries (about 3 s).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_retries: 6,
            credentials: None,
            tls: None,
        }
    }
}

fn normalize(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

fn map_err(e: etcd_client::Error) -> KvError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message().to_owned();
            match s.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled => KvError::Unavailable(msg),
                tonic::Code::NotFound if msg.contains("lease not found") => {
                    KvError::LeaseNotFound(0)
                }
                tonic::Code::OutOfRange if msg.contains("compacted") => KvError::Compacted(0),
                _ => KvError::Other(format!("{:?}: {msg}", s.code())),
            }
        }
        E::TransportError(t) => KvError::Unavailable(t.to_string()),
        E::IoError(io) => KvError::Unavailable(io.to_string()),
        E::WatchError(w) => KvError::Unavailable(w),
        E::LeaseKeepAliveError(m) if m.contains("lease not found") => KvError::LeaseNotFound(0),
        other => KvError::Other(other.to_string()),
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, KvError> {
    let key = String::from_utf8(kv.key().to_vec()).map_err(|_| KvError::BadData {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: "key is not UTF-8".into(),
    })?;
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    })
}

fn convert_kvs(kvs: &[etcd_client::KeyValue]) -> Result<Vec<KeyValue>, KvError> {
    kvs.iter().map(convert_kv).collect()
}

fn convert_condition(c: &Condition) -> Compare {
    let op = match c.op {
        CompareOp::Equal => EtcdCompareOp::Equal,
        CompareOp::NotEqual => EtcdCompareOp::NotEqual,
        CompareOp::Less => EtcdCompareOp::Less,
        CompareOp::Greater => EtcdCompareOp::Greater,
    };
    let key = c.key.as_bytes().to_vec();
    let cmp = match &c.target {
        CompareTarget::CreateRevision(r) => Compare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => Compare::mod_revision(key, op, *r),
        CompareTarget::Version(v) => Compare::version(key, op, *v),
        CompareTarget::Value(v) => Compare::value(key, op, v.clone()),
    };
    if c.prefix {
        cmp.with_range(prefix_end(&c.key))
    } else {
        cmp
    }
}

fn convert_op(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            TxnOp::put(key.as_bytes(), value.clone(), opts)
        }
        Op::Delete { key, prefix } => {
            let mut opts = DeleteOptions::new().with_prev_key();
            if *prefix {
                opts = opts.with_range(prefix_end(key));
            }
            TxnOp::delete(key.as_bytes(), Some(opts))
        }
        Op::Get { key, prefix } => {
            let opts = prefix.then(|| GetOptions::new().with_range(prefix_end(key)));
            TxnOp::get(key.as_bytes(), opts)
        }
    }
}

/// Aborts the background tasks (endpoint probe, TLS reload) when the last handle to the store
/// is dropped.
#[derive(Debug)]
struct BackgroundTasks(Vec<JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The client calls use; replaced when the TLS files change.
type SharedClient = Arc<std::sync::RwLock<Client>>;

fn current(client: &SharedClient) -> Option<Client> {
    client.read().ok().map(|c| c.clone())
}

/// [`KvStore`] over etcd.
#[derive(Clone)]
pub struct EtcdKv {
    client: SharedClient,
    config: EtcdConfig,
    writes: Arc<AtomicU64>,
    _tasks: Arc<BackgroundTasks>,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.config.endpoints)
            .finish()
    }
}

impl EtcdKv {
    /// Connects to etcd. Succeeds even when no member answers yet: calls then fail with
    /// [`KvError::Unavailable`] until one does.
    pub async fn connect(mut config: EtcdConfig) -> Result<Self, KvError> {
        if config.endpoints.is_empty() {
            return Err(KvError::Other("no etcd endpoints configured".into()));
        }
        let tls = config.tls.is_some();
        config.endpoints = config.endpoints.iter().map(|e| normalize(e, tls)).collect();
        if tls {
            if let Some(plain) = config.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(KvError::Other(format!(
                    "etcd endpoint {plain} is plaintext but etcd TLS is configured (use https://)"
                )));
            }
        }
        let mut options = ConnectOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some((user, password)) = &config.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let tls = config.tls.as_ref().map(EtcdTls::watched).transpose()?;
        let first = match &tls {
            Some(tls) => options.clone().with_tls(tls.config()),
            None => options.clone(),
        };
        let client = Client::connect(&config.endpoints, Some(first))
            .await
            .map_err(map_err)?;
        let client: SharedClient = Arc::new(std::sync::RwLock::new(client));
        let mut tasks = vec![tokio::spawn(probe_endpoints(
            client.clone(),
            config.endpoints.clone(),
        ))];
        if let Some(tls) = tls {
            tasks.push(tokio::spawn(reconnect_on_tls_change(
                client.clone(),
                config.endpoints.clone(),
                options,
                tls,
            )));
        }
        Ok(Self {
            client,
            config,
            writes: Arc::new(AtomicU64::new(0)),
            _tasks: Arc::new(BackgroundTasks(tasks)),
        })
    }

    async fn call<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T, KvError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            let result = distcron_metrics::store_call("etcd", what, async {
                let client = current(&self.client)
                    .ok_or_else(|| KvError::Other("etcd client lock poisoned".into()))?;
                f(client).await.map_err(map_err)
            })
            .await;
            match result {
                Err(e) if e.is_retryable() && attempt < self.config.max_retries => {
                    attempt += 1;
                    distcron_metrics::store().retry("etcd", what);
                    tracing::debug!(call = what, attempt, error = %e, "etcd call failed, retrying");
                    tokio::time::sleep(backoff(attempt, Duration::from_secs(1))).await;
                }
                other => return other,
            }
        }
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connects again with the new TLS settings whenever their files change, and puts the new
/// client in place for the next calls (calls in flight finish on the old one).
async fn reconnect_on_tls_change(
    client: SharedClient,
    endpoints: Vec<String>,
    options: ConnectOptions,
    mut tls: distcron_tls::ClientTls,
) {
    while tls.changed().await {
        let options = options.clone().with_tls(tls.config());
        match Client::connect(&endpoints, Some(options)).await {
            Ok(fresh) => {
                if let Ok(mut c) = client.write() {
                    *c = fresh;
                }
                tracing::info!("etcd TLS files changed; reconnected with them");
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd TLS files changed but reconnecting failed; keeping the previous connection")
            }
        }
    }
}

/// Takes endpoints that refuse TCP connections out of the balancer and puts them back when they
/// accept again. Never removes the last one.
async fn probe_endpoints(client: SharedClient, endpoints: Vec<String>) {
    if endpoints.len() < 2 {
        return;
    }
    let mut removed = vec![false; endpoints.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(client) = current(&client) else {
            return;
        };
        for (i, ep) in endpoints.iter().enumerate() {
            let up = tcp_reachable(ep).await;
            if !up && !removed[i] && removed.iter().filter(|r| !**r).count() > 1 {
                if client.remove_endpoint(ep).await.is_ok() {
                    removed[i] = true;
                    tracing::warn!(endpoint = %ep, "etcd endpoint unreachable; taken out of rotation");
                }
            } else if up && removed[i] && client.add_endpoint(ep).await.is_ok() {
                removed[i] = false;
                tracing::info!(endpoint = %ep, "etcd endpoint reachable again; back in rotation");
            }
        }
    }
}

async fn tcp_reachable(endpoint: &str) -> bool {
    let host_port = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let Ok(mut addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    let Some(addr) = addrs.next() else {
        return false;
    };
    matches!(
        timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

#[async_trait::async_trait]
impl KvStore for EtcdKv {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let resp = self
            .call("get", |mut c| async move { c.get(key, None).await })
            .await?;
        resp.kvs().first().map(convert_kv).transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, KvError> {
        let start = match &request.start_after {
            Some(after) => format!("{after}\0"),
            None => request.prefix.clone(),
        };
        let end = prefix_end(&request.prefix);
        let resp = self
            .call("range", |mut c| {
                let mut opts = GetOptions::new().with_range(end.clone());
                if request.limit > 0 {
                    opts = opts.with_limit(i64::try_from(request.limit).unwrap_or(i64::MAX));
                }
                if request.keys_only {
                    opts = opts.with_keys_only();
                }
                if request.at_revision > 0 {
                    opts = opts.with_revision(request.at_revision);
                }
                let start = start.clone();
                async move { c.get(start, Some(opts)).await }
            })
            .await?;
        Ok(RangeResponse {
            kvs: convert_kvs(resp.kvs())?,
            more: resp.more(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Option<KeyValue>, KvError> {
        self.count_write();
        let resp = self
            .call("put", |mut c| {
                let mut opts = PutOptions::new().with_prev_key();
                if let Some(l) = lease {
                    opts = opts.with_lease(l);
                }
                let value = value.clone();
                async move { c.put(key, value, Some(opts)).await }
            })
            .await
            .map_err(|e| match e {
                KvError::LeaseNotFound(_) => KvError::LeaseNotFound(lease.unwrap_or(0)),
                e => e,
            })?;
        resp.prev_key().map(convert_kv).transpose()
    }

    async fn delete(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.count_write();
        let resp = self
            .call("delete", |mut c| async move {
                c.delete(key, Some(DeleteOptions::new().with_prev_key()))
                    .await
            })
            .await?;
        resp.prev_kvs().first().map(convert_kv).transpose()
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, KvError> {
        self.count_write();
        let compares: Vec<Compare> = txn.when.iter().map(convert_condition).collect();
        let then: Vec<TxnOp> = txn.then.iter().map(convert_op).collect();
        let otherwise: Vec<TxnOp> = txn.otherwise.iter().map(convert_op).collect();
        let resp = self
            .call("txn", |mut c| {
                let t = etcd_client::Txn::new()
                    .when(compares.clone())
                    .and_then(then.clone())
                    .or_else(otherwise.clone());
                async move { c.txn(t).await }
            })
            .await?;
        let mut results = Vec::new();
        for r in resp.op_responses() {
            results.push(match r {
                TxnOpResponse::Put(_) => OpResult::Put,
                TxnOpResponse::Delete(d) => OpResult::Delete(convert_kvs(d.prev_kvs())?),
                TxnOpResponse::Get(g) => OpResult::Get(convert_kvs(g.kvs())?),
                TxnOpResponse::Txn(_) => {
                    return Err(KvError::Other("nested transactions are not used".into()))
                }
            });
        }
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            results,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.count_write();
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let resp = self
            .call("lease_grant", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, KvError> {
        let resp = self
            .call("lease_keep_alive", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await
            .map_err(|e| match e {
                KvError::LeaseNotFound(_) => KvError::LeaseNotFound(lease),
                e => e,
            })?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl().unsigned_abs())),
            Some(_) => Err(KvError::LeaseNotFound(lease)),
            None => Err(KvError::Unavailable(
                "lease keep-alive stream closed".into(),
            )),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.count_write();
        match self
            .call("lease_revoke", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) | Err(KvError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.count_write();
        match self
            .call(
                "compact",
                |mut c| async move { c.compact(revision, None).await },
            )
            .await
        {
            Ok(_) | Err(KvError::Compacted(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, KvError> {
        let end = prefix_end(prefix);
        let mut stream = self
            .call("watch", |mut c| {
                let mut opts = WatchOptions::new().with_range(end.clone());
                if start_revision > 0 {
                    opts = opts.with_start_revision(start_revision);
                }
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        // The first message confirms creation, or reports that the start revision is compacted.
        let out = task_stream(move |tx| async move {
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(KvError::Unavailable("watch stream ended".into())))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(map_err(e))).await;
                        return;
                    }
                };
                if msg.canceled() {
                    let err = if msg.compact_revision() > 0 {
                        KvError::Compacted(msg.compact_revision())
                    } else {
                        KvError::Unavailable(format!("watch canceled: {}", msg.cancel_reason()))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                if msg.events().is_empty() {
                    continue;
                }
                let mut events = Vec::with_capacity(msg.events().len());
                for ev in msg.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let converted = convert_kv(kv).map(|kv| WatchEvent {
                        kind: match ev.event_type() {
                            EventType::Put => WatchEventKind::Put,
                            EventType::Delete => WatchEventKind::Delete,
                        },
                        kv,
                    });
                    match converted {
                        Ok(e) => events.push(e),
                        Err(e) => tracing::warn!(error = %e, "skipping undecodable watch event"),
                    }
                }
                let batch = WatchBatch {
                    revision: msg.header().map_or(0, |h| h.revision()),
                    events,
                };
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }

    fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
