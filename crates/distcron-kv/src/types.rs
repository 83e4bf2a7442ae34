//! Values, transactions and watch events.

/// A store revision: every write increments it once.
pub type Revision = i64;

/// A lease id.
pub type LeaseId = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty for delete events).
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for delete events: the delete).
    pub mod_revision: Revision,
    /// Writes since creation (1 after creation).
    pub version: i64,
    /// The lease the key is attached to, 0 if none.
    pub lease: LeaseId,
}

/// Which keys a range covers.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// Keys starting with this.
    pub prefix: String,
    /// Only keys strictly greater than this (paging).
    pub start_after: Option<String>,
    /// At most this many keys; 0 = all.
    pub limit: usize,
    /// Leave values out.
    pub keys_only: bool,
    /// Read as of this revision (0 = latest), so that several pages form one snapshot.
    pub at_revision: Revision,
}

/// The result of a range.
#[derive(Debug, Clone, Default)]
pub struct RangeResponse {
    /// Keys in order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys match beyond `limit`.
    pub more: bool,
    /// The store revision the range was read at.
    pub revision: Revision,
}

/// How a compare compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

/// What a compare looks at, and the operand. A missing key has create, mod revision and version 0
/// (a `Value` compare on a missing key is false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The create revision.
    CreateRevision(Revision),
    /// The last modification revision.
    ModRevision(Revision),
    /// The number of writes since creation.
    Version(i64),
    /// The value, compared bytewise.
    Value(Vec<u8>),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    /// Compare every key under `key` (true if there are none, for revision and version targets).
    pub prefix: bool,
    /// What to compare.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
}

impl Condition {
    /// `key`'s target compared with `op`.
    pub fn key(key: impl Into<String>, target: CompareTarget, op: CompareOp) -> Self {
        Self {
            key: key.into(),
            prefix: false,
            target,
            op,
        }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::key(key, CompareTarget::CreateRevision(0), CompareOp::Equal)
    }

    /// The key was last modified at `revision` (so it exists and is unchanged).
    pub fn unchanged(key: impl Into<String>, revision: Revision) -> Self {
        Self::key(key, CompareTarget::ModRevision(revision), CompareOp::Equal)
    }

    /// No key starts with `prefix`.
    pub fn no_keys_under(prefix: impl Into<String>) -> Self {
        Self {
            key: prefix.into(),
            prefix: true,
            target: CompareTarget::CreateRevision(0),
            op: CompareOp::Equal,
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key (returns the previous value).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Attach to this lease.
        lease: Option<LeaseId>,
    },
    /// Delete a key, or every key under a prefix (returns what was deleted).
    Delete {
        /// The key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
    /// Read a key, or every key under a prefix.
    Get {
        /// The key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
}

impl Op {
    /// A put without lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A get of one key.
    pub fn get(key: impl Into<String>) -> Self {
        Self::Get {
            key: key.into(),
            prefix: false,
        }
    }

    /// A get of every key under a prefix.
    pub fn get_prefix(prefix: impl Into<String>) -> Self {
        Self::Get {
            key: prefix.into(),
            prefix: true,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete {
            key: key.into(),
            prefix: false,
        }
    }
}

/// The result of one [`Op`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A put. (Not the value it replaced: etcd would read it for every put.)
    Put,
    /// A delete, with what it deleted.
    Delete(Vec<KeyValue>),
    /// A get.
    Get(Vec<KeyValue>),
}

/// A transaction: `if when { then } else { otherwise }`.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub when: Vec<Condition>,
    /// Operations when they hold.
    pub then: Vec<Op>,
    /// Operations when they do not.
    pub otherwise: Vec<Op>,
}

/// The result of a transaction.
#[derive(Debug, Clone, Default)]
pub struct TxnResponse {
    /// Whether the conditions held (and `then` ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One result per operation that ran.
    pub results: Vec<OpResult>,
}

impl TxnResponse {
    /// The keys read by the `i`-th operation if it was a get, else nothing.
    pub fn got(&self, i: usize) -> &[KeyValue] {
        match self.results.get(i) {
            Some(OpResult::Get(kvs)) => kvs,
            _ => &[],
        }
    }
}

/// Whether an event is a write or a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: WatchEventKind,
    /// The key after the change (for deletes: the key, an empty value and the delete revision).
    /// Not the value before it: etcd would read that for every event and every watcher.
    pub kv: KeyValue,
}

/// Changes delivered together. Every change of one revision is in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The store revision when the batch was sent.
    pub revision: Revision,
    /// The changes, in revision order.
    pub events: Vec<WatchEvent>,
}
