//! [`KvStore`] embedded in the process, for the single-machine mode: etcd's semantics (one global
//! revision, multi-key transactions, leases that delete their keys in one revision, watches that
//! replay from a revision) over an in-memory map, written through to a SQLite file so jobs, the
//! slot ledger and kill requests survive restarts.
//!
//! - Every committed write is one revision and one batch: applied to the map, written to SQLite in
//!   one transaction, kept in a bounded history for watch replay and snapshot reads, and
//!   broadcast to watchers.
//! - Leases are kept in the file with their TTL, as etcd keeps them: after a restart each lease
//!   lives one more TTL from the moment the file is opened, so its keys are deleted (in one
//!   revision, seen by watchers) only then, unless it is kept alive. A worker of the same process
//!   thus sees its earlier incarnation's running records expire and records those runs `lost`.
//! - Calls run on the blocking pool: SQLite is synchronous.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusqlite::{params, Connection};
use tokio::sync::broadcast;

use crate::{
    CompareOp, CompareTarget, Condition, KeyValue, KvError, KvStore, LeaseId, Op, OpResult,
    RangeRequest, RangeResponse, Revision, Txn, TxnResponse, WatchBatch, WatchEvent,
    WatchEventKind, WatchStream,
};

/// Batches kept for watch replay and snapshot reads; older revisions are compacted.
const HISTORY: usize = 100_000;
/// How often expired leases are looked for.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// One change of a committed revision, with the key as it was before (for snapshot reads at older
/// revisions; watchers get the event only).
#[derive(Debug, Clone)]
struct Change {
    event: WatchEvent,
    prev: Option<KeyValue>,
}

/// The changes of one revision, as the history keeps them.
#[derive(Debug)]
struct Committed {
    revision: Revision,
    changes: Vec<Change>,
}

impl Committed {
    fn batch(&self) -> WatchBatch {
        WatchBatch {
            revision: self.revision,
            events: self.changes.iter().map(|c| c.event.clone()).collect(),
        }
    }
}

#[derive(Debug)]
struct State {
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    history: VecDeque<Committed>,
    /// Revisions up to this one are no longer in `history`.
    compacted: Revision,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    db: Connection,
}

/// The embedded store. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct EmbeddedKv {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchBatch>,
    writes: Arc<AtomicU64>,
    _expiry: Arc<ExpiryTask>,
}

#[derive(Debug)]
struct ExpiryTask(tokio::task::JoinHandle<()>);

impl Drop for ExpiryTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn db_err(e: rusqlite::Error) -> KvError {
    KvError::Other(format!("embedded store: {e}"))
}

fn under(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

impl State {
    /// Applies `changes` (all at `revision`) to SQLite, the history and the broadcast.
    fn commit(
        &mut self,
        changes: Vec<Change>,
        sender: &broadcast::Sender<WatchBatch>,
    ) -> Result<(), KvError> {
        let tx = self.db.transaction().map_err(db_err)?;
        for e in changes.iter().map(|c| &c.event) {
            match e.kind {
                WatchEventKind::Put => {
                    tx.execute(
                        "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision, version, lease)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![e.kv.key, e.kv.value, e.kv.create_revision, e.kv.mod_revision, e.kv.version, e.kv.lease],
                    )
                    .map_err(db_err)?;
                }
                WatchEventKind::Delete => {
                    tx.execute("DELETE FROM kv WHERE key = ?1", params![e.kv.key])
                        .map_err(db_err)?;
                }
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?1)",
            params![self.revision],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        let committed = Committed {
            revision: self.revision,
            changes,
        };
        let batch = committed.batch();
        self.history.push_back(committed);
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
            }
        }
        // No watcher is not an error.
        let _ = sender.send(batch);
        Ok(())
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: LeaseId, rev: Revision) -> Change {
        let prev = self.kvs.get(key).cloned();
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != lease {
                if let Some(l) = self.leases.get_mut(&p.lease) {
                    l.keys.remove(key);
                }
            }
        }
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key.to_owned());
            }
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        self.kvs.insert(key.to_owned(), kv.clone());
        Change {
            event: WatchEvent {
                kind: WatchEventKind::Put,
                kv,
            },
            prev,
        }
    }

    fn delete(&mut self, key: &str, rev: Revision) -> Option<Change> {
        let prev = self.kvs.remove(key)?;
        if prev.lease != 0 {
            if let Some(l) = self.leases.get_mut(&prev.lease) {
                l.keys.remove(key);
            }
        }
        Some(Change {
            event: WatchEvent {
                kind: WatchEventKind::Delete,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    version: 0,
                    lease: 0,
                },
            },
            prev: Some(prev),
        })
    }

    fn keys_in(&self, key: &str, prefix: bool) -> Vec<String> {
        if prefix {
            self.kvs
                .range(key.to_owned()..)
                .take_while(|(k, _)| under(k, key))
                .map(|(k, _)| k.clone())
                .collect()
        } else if self.kvs.contains_key(key) {
            vec![key.to_owned()]
        } else {
            Vec::new()
        }
    }

    fn holds(&self, c: &Condition) -> bool {
        let keys = self.keys_in(&c.key, c.prefix);
        if keys.is_empty() {
            // As etcd: a missing key compares as zero revisions and version, and no value.
            return match &c.target {
                CompareTarget::Value(_) => false,
                CompareTarget::CreateRevision(x)
                | CompareTarget::ModRevision(x)
                | CompareTarget::Version(x) => compare(&0, x, c.op),
            };
        }
        keys.iter().all(|k| {
            let Some(kv) = self.kvs.get(k) else {
                return false;
            };
            match &c.target {
                CompareTarget::CreateRevision(x) => compare(&kv.create_revision, x, c.op),
                CompareTarget::ModRevision(x) => compare(&kv.mod_revision, x, c.op),
                CompareTarget::Version(x) => compare(&kv.version, x, c.op),
                CompareTarget::Value(x) => compare(&kv.value, x, c.op),
            }
        })
    }

    /// The keys under `prefix` as of `revision` (0 = now).
    fn snapshot(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<BTreeMap<String, KeyValue>, KvError> {
        let mut view: BTreeMap<String, KeyValue> = self
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| under(k, prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if revision == 0 || revision >= self.revision {
            return Ok(view);
        }
        if revision < self.compacted {
            return Err(KvError::Compacted(self.compacted));
        }
        for batch in self
            .history
            .iter()
            .rev()
            .take_while(|b| b.revision > revision)
        {
            for c in batch
                .changes
                .iter()
                .rev()
                .filter(|c| under(&c.event.kv.key, prefix))
            {
                match &c.prev {
                    Some(p) => view.insert(p.key.clone(), p.clone()),
                    None => view.remove(&c.event.kv.key),
                };
            }
        }
        Ok(view)
    }

    fn revoke(
        &mut self,
        lease: LeaseId,
        sender: &broadcast::Sender<WatchBatch>,
    ) -> Result<(), KvError> {
        let Some(l) = self.leases.remove(&lease) else {
            return Ok(());
        };
        self.db
            .execute("DELETE FROM leases WHERE id = ?1", params![lease])
            .map_err(db_err)?;
        if l.keys.is_empty() {
            return Ok(());
        }
        self.revision += 1;
        let rev = self.revision;
        let changes: Vec<Change> = l.keys.iter().filter_map(|k| self.delete(k, rev)).collect();
        self.commit(changes, sender)
    }

    /// Applies `ops` at the next revision (if any of them writes); a put on a missing lease fails
    /// the whole list before anything is applied.
    fn apply(
        &mut self,
        ops: Vec<Op>,
        sender: &broadcast::Sender<WatchBatch>,
    ) -> Result<Vec<OpResult>, KvError> {
        for op in &ops {
            if let Op::Put { lease: Some(l), .. } = op {
                if *l != 0 && !self.leases.contains_key(l) {
                    return Err(KvError::LeaseNotFound(*l));
                }
            }
        }
        let rev = self.revision + 1;
        let mut changes = Vec::new();
        let mut results = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    changes.push(self.put(&key, value, lease.unwrap_or(0), rev));
                    results.push(OpResult::Put);
                }
                Op::Delete { key, prefix } => {
                    let gone: Vec<Change> = self
                        .keys_in(&key, prefix)
                        .iter()
                        .filter_map(|k| self.delete(k, rev))
                        .collect();
                    results.push(OpResult::Delete(
                        gone.iter().filter_map(|c| c.prev.clone()).collect(),
                    ));
                    changes.extend(gone);
                }
                Op::Get { key, prefix } => {
                    let kvs = self
                        .keys_in(&key, prefix)
                        .iter()
                        .filter_map(|k| self.kvs.get(k).cloned())
                        .collect();
                    results.push(OpResult::Get(kvs));
                }
            }
        }
        if !changes.is_empty() {
            self.revision = rev;
            self.commit(changes, sender)?;
        }
        Ok(results)
    }
}

fn compare<T: PartialOrd + ?Sized>(have: &T, want: &T, op: CompareOp) -> bool {
    match op {
        CompareOp::Equal => have == want,
        CompareOp::NotEqual => have != want,
        CompareOp::Less => have < want,
        CompareOp::Greater => have > want,
    }
}

impl EmbeddedKv {
    /// Opens (or creates) the store in the SQLite file at `path` (`:memory:` for none). Leases
    /// kept in the file live one more TTL from now; keys on a lease it does not know are deleted.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = Connection::open(path).map_err(db_err)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                key TEXT PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
                mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL);",
        )
        .map_err(db_err)?;
        let revision: Revision = db
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        let mut kvs = BTreeMap::new();
        {
            let mut stmt = db
                .prepare("SELECT key, value, create_revision, mod_revision, version, lease FROM kv")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(KeyValue {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        create_revision: r.get(2)?,
                        mod_revision: r.get(3)?,
                        version: r.get(4)?,
                        lease: r.get(5)?,
                    })
                })
                .map_err(db_err)?;
            for kv in rows {
                let kv = kv.map_err(db_err)?;
                kvs.insert(kv.key.clone(), kv);
            }
        }
        let mut leases: HashMap<LeaseId, Lease> = HashMap::new();
        {
            let mut stmt = db
                .prepare("SELECT id, ttl_ms FROM leases")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, LeaseId>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err)?;
            let opened = Instant::now();
            for row in rows {
                let (id, ttl_ms) = row.map_err(db_err)?;
                let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
                leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline: opened + ttl,
                        keys: BTreeSet::new(),
                    },
                );
            }
        }
        for kv in kvs.values().filter(|kv| kv.lease != 0) {
            if let Some(l) = leases.get_mut(&kv.lease) {
                l.keys.insert(kv.key.clone());
            }
        }
        let next_lease = leases
            .keys()
            .copied()
            .max()
            .unwrap_or(0)
            .max(lease_id_base());
        let (events, _) = broadcast::channel(4096);
        let mut state = State {
            revision,
            kvs,
            history: VecDeque::new(),
            compacted: revision,
            leases,
            next_lease,
            db,
        };
        // Keys on a lease the file does not know (written before leases were kept) are deleted.
        let leased: Vec<String> = state
            .kvs
            .values()
            .filter(|kv| kv.lease != 0 && !state.leases.contains_key(&kv.lease))
            .map(|kv| kv.key.clone())
            .collect();
        if !leased.is_empty() {
            state.revision += 1;
            let rev = state.revision;
            let gone: Vec<Change> = leased.iter().filter_map(|k| state.delete(k, rev)).collect();
            state.commit(gone, &events)?;
        }
        let state = Arc::new(Mutex::new(state));
        let expiry = tokio::spawn(expire_leases(Arc::downgrade(&state), events.clone()));
        Ok(Self {
            state,
            events,
            writes: Arc::new(AtomicU64::new(0)),
            _expiry: Arc::new(ExpiryTask(expiry)),
        })
    }

    /// Runs `f` (operation `op`) on the state, on the blocking pool.
    async fn with<T, F>(&self, op: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State, &broadcast::Sender<WatchBatch>) -> Result<T, KvError>
            + Send
            + 'static,
    {
        let state = self.state.clone();
        let sender = self.events.clone();
        distcron_metrics::store_call("embedded", op, async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = state
                    .lock()
                    .map_err(|_| KvError::Other("embedded store lock poisoned".into()))?;
                f(&mut guard, &sender)
            })
            .await
            .map_err(|e| KvError::Other(e.to_string()))?
        })
        .await
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lease ids start from the clock, so ids from an earlier run of the process are not reused.
fn lease_id_base() -> LeaseId {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(1))
        .unwrap_or(1)
}

async fn expire_leases(
    state: std::sync::Weak<Mutex<State>>,
    sender: broadcast::Sender<WatchBatch>,
) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let sender = sender.clone();
        let done = tokio::task::spawn_blocking(move || {
            let Ok(mut s) = state.lock() else { return };
            let now = Instant::now();
            let expired: Vec<LeaseId> = s
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Err(e) = s.revoke(id, &sender) {
                    tracing::error!(lease = id, error = %e, "cannot expire a lease");
                }
            }
        })
        .await;
        if done.is_err() {
            return;
        }
    }
}

#[async_trait::async_trait]
impl KvStore for EmbeddedKv {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let key = key.to_owned();
        self.with("get", move |s, _| Ok(s.kvs.get(&key).cloned()))
            .await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, KvError> {
        self.with("range", move |s, _| {
            let view = s.snapshot(&request.prefix, request.at_revision)?;
            let revision = if request.at_revision > 0 {
                request.at_revision.min(s.revision)
            } else {
                s.revision
            };
            let mut kvs: Vec<KeyValue> = view
                .into_values()
                .filter(|kv| request.start_after.as_ref().is_none_or(|a| kv.key > *a))
                .collect();
            let more = request.limit > 0 && kvs.len() > request.limit;
            if request.limit > 0 {
                kvs.truncate(request.limit);
            }
            if request.keys_only {
                for kv in &mut kvs {
                    kv.value.clear();
                }
            }
            Ok(RangeResponse {
                kvs,
                more,
                revision,
            })
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Option<KeyValue>, KvError> {
        self.count_write();
        let key = key.to_owned();
        self.with("put", move |s, sender| {
            let prev = s.kvs.get(&key).cloned();
            s.apply(vec![Op::Put { key, value, lease }], sender)?;
            Ok(prev)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let resp = self
            .txn(Txn {
                when: Vec::new(),
                then: vec![Op::delete(key)],
                otherwise: Vec::new(),
            })
            .await?;
        Ok(match resp.results.into_iter().next() {
            Some(OpResult::Delete(mut gone)) => gone.pop(),
            _ => None,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, KvError> {
        let ops = txn.when.len().max(txn.then.len()).max(txn.otherwise.len());
        if ops > crate::MAX_TXN_OPS {
            return Err(KvError::Other(format!(
                "InvalidArgument: too many operations in txn request ({ops}; at most {})",
                crate::MAX_TXN_OPS
            )));
        }
        let writes = txn
            .then
            .iter()
            .chain(&txn.otherwise)
            .any(|op| !matches!(op, Op::Get { .. }));
        if writes {
            self.count_write();
        }
        self.with("txn", move |s, sender| {
            let succeeded = txn.when.iter().all(|c| s.holds(c));
            let results = s.apply(if succeeded { txn.then } else { txn.otherwise }, sender)?;
            Ok(TxnResponse {
                succeeded,
                revision: s.revision,
                results,
            })
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.count_write();
        self.with("grant_lease", move |s, _| {
            s.next_lease += 1;
            let id = s.next_lease;
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            s.db.execute(
                "INSERT INTO leases (id, ttl_ms) VALUES (?1, ?2)",
                params![id, ttl_ms],
            )
            .map_err(db_err)?;
            s.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            Ok(id)
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, KvError> {
        self.with("keep_alive", move |s, _| match s.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(l.ttl)
            }
            None => Err(KvError::LeaseNotFound(lease)),
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.count_write();
        self.with("revoke_lease", move |s, sender| s.revoke(lease, sender))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.count_write();
        self.with("compact", move |s, _| {
            if revision > s.revision {
                return Err(KvError::Other(format!(
                    "cannot compact to revision {revision}: the store is at {}",
                    s.revision
                )));
            }
            // Reads at `revision` need no batch; a watch from it (which etcd would still replay)
            // is refused too.
            while s.history.front().is_some_and(|b| b.revision <= revision) {
                s.history.pop_front();
            }
            s.compacted = s.compacted.max(revision);
            Ok(())
        })
        .await
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, KvError> {
        let filter_prefix = prefix.to_owned();
        let (rx, replay, last) = self
            .with("watch", move |s, sender| {
                // Subscribe before reading the history, under the lock: nothing falls between.
                let rx = sender.subscribe();
                if start_revision > 0 && start_revision <= s.compacted {
                    return Err(KvError::Compacted(s.compacted));
                }
                let replay: Vec<WatchBatch> = if start_revision > 0 {
                    s.history
                        .iter()
                        .filter(|b| b.revision >= start_revision)
                        .map(Committed::batch)
                        .collect()
                } else {
                    Vec::new()
                };
                Ok((rx, replay, s.revision))
            })
            .await?;
        let only_prefix = move |b: WatchBatch| {
            let events: Vec<WatchEvent> = b
                .events
                .into_iter()
                .filter(|e| under(&e.kv.key, &filter_prefix))
                .collect();
            (!events.is_empty()).then_some(WatchBatch {
                revision: b.revision,
                events,
            })
        };
        let only_prefix_live = only_prefix.clone();
        let replayed = futures::stream::iter(replay.into_iter().filter_map(only_prefix).map(Ok));
        let live = futures::stream::unfold(Some(rx), move |rx| {
            let keep = only_prefix_live.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(b) if b.revision <= last => continue,
                        Ok(b) => match keep(b) {
                            Some(b) => return Some((Ok(b), Some(rx))),
                            None => continue,
                        },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Some((
                                Err(KvError::Unavailable(format!(
                                    "watch fell {n} batches behind"
                                ))),
                                None,
                            ))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(replayed.chain(live).boxed())
    }

    fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
