//! distcron's domain types, free of I/O.
//!
//! - [`job`]: job definitions as stored (JSON with the seed's field names), their validation, and
//!   conversion to and from the gRPC messages.
//! - [`keys`]: where everything lives in the key-value store.
//! - [`records`]: the small JSON records workers and services keep in the store (running runs,
//!   kill requests, manual triggers, registrations) and the slot ledger's encoding.

pub mod job;
pub mod keys;
pub mod records;

pub use job::{FieldError, JobDefinition, MissedPolicy, OverlapPolicy};
pub use keys::Keys;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new run id: a UUIDv7, so ids sort by creation time.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
