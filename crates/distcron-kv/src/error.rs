//! Errors of the key-value store.

use crate::LeaseId;

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The store cannot be reached or has no quorum; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The watched history before this revision has been compacted away: re-list, then watch from
    /// the listing's revision.
    #[error("history compacted up to revision {0}")]
    Compacted(i64),
    /// The lease expired or was revoked.
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A value that should be UTF-8 or JSON is not.
    #[error("bad data at {key}: {reason}")]
    BadData {
        /// The key holding the bad value.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other store error.
    #[error("store error: {0}")]
    Other(String),
}

impl KvError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// etcd's refusals of one request (its gRPC code leads an `Other` message): they say nothing of
/// whether the store can write.
const REFUSALS: &[&str] = &[
    "InvalidArgument",
    "PermissionDenied",
    "Unauthenticated",
    "FailedPrecondition",
    "AlreadyExists",
    "NotFound",
    "OutOfRange",
];

impl distcron_metrics::StoreFailure for KvError {
    fn is_store_failure(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Other(message) => !REFUSALS.iter().any(|code| message.starts_with(code)),
            Self::Compacted(_) | Self::LeaseNotFound(_) | Self::BadData { .. } => false,
        }
    }
}
