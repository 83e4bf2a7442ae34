//! Whether each store of this process can write: the outcome of its last write.
//!
//! [`crate::store_call`] records the outcome of every write operation ([`is_write`]); an error
//! that is a failure of the store ([`StoreFailure`]: unreachable, full, failing I/O), not a
//! refusal of that one call (an expired lease, say), marks the store unwritable until a later
//! write succeeds. [`unwritable`] lists the stores so marked, for readiness; the
//! `distcron_store_writable{store}` gauge shows the same.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use prometheus::IntGaugeVec;

/// Whether a store call's error is a failure of the store itself.
pub trait StoreFailure {
    /// True for an unreachable, full or failing store; false for a refusal of this one call.
    fn is_store_failure(&self) -> bool;
}

/// The operations that write, by their names in [`crate::store_call`] across the backends.
const WRITE_OPS: &[&str] = &[
    // etcd
    "put",
    "delete",
    "txn",
    "lease_grant",
    "lease_keep_alive",
    "lease_revoke",
    // embedded
    "grant_lease",
    "keep_alive",
    "revoke_lease",
    "compact",
    // MongoDB and SQLite
    "replace_one",
    "insert_many",
    "update_many",
];

/// Whether operation `op` writes.
pub fn is_write(op: &str) -> bool {
    WRITE_OPS.contains(&op)
}

/// Store → the error of its last write, if that write failed.
static LAST_FAILURE: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

static WRITABLE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::catalog::gauge_vec(
        "distcron_store_writable",
        "1 while the store's last write succeeded, 0 after one failed (until one succeeds).",
        &["store"],
    )
});

/// Records the outcome of a write on `store`: `None` succeeded, `Some(error)` failed.
pub fn record(store: &'static str, failure: Option<String>) {
    WRITABLE
        .with_label_values(&[store])
        .set(i64::from(failure.is_none()));
    if let Ok(mut last) = LAST_FAILURE.lock() {
        match failure {
            Some(error) => {
                if !last.contains_key(store) {
                    tracing::error!(store, %error, "store cannot write: not ready until a write succeeds");
                }
                last.insert(store, error);
            }
            None => {
                if last.remove(store).is_some() {
                    tracing::info!(store, "store writes again");
                }
            }
        }
    }
}

/// The stores whose last write failed, with its error.
pub fn unwritable() -> Vec<(&'static str, String)> {
    LAST_FAILURE
        .lock()
        .map(|last| last.iter().map(|(k, v)| (*k, v.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_marks_the_store_until_one_succeeds() {
        record("test-store", None);
        assert!(!unwritable().iter().any(|(s, _)| *s == "test-store"));
        record("test-store", Some("no space left on device".into()));
        assert!(unwritable().contains(&("test-store", "no space left on device".into())));
        record("test-store", None);
        assert!(!unwritable().iter().any(|(s, _)| *s == "test-store"));
        assert!(is_write("txn") && is_write("insert_many") && !is_write("range"));
    }
}
