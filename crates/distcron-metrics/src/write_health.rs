//! Whether each store of this process can write: the outcome of its last data write.
//!
//! [`crate::store_call`] records the outcome of every data write ([`is_data_write`]: puts,
//! transactions, inserts and replacements; not lease keep-alives, deletes or compactions, which
//! etcd still takes when it is out of space). An error that is a failure of the store
//! ([`StoreFailure`]: unreachable, full, failing I/O), not a refusal of that one call, marks the
//! store unwritable until a later data write succeeds, or until [`FORGET_AFTER`] passes with no
//! data write at all (an idle store is not held unready by one old failure; its next write
//! decides again). [`unwritable`] lists the stores so marked, for readiness; the
//! `distcron_store_writable{store}` gauge shows the same.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntGaugeVec;

/// Whether a store call's error is a failure of the store itself.
pub trait StoreFailure {
    /// True for an unreachable, full or failing store; false for a refusal of this one call.
    fn is_store_failure(&self) -> bool;
}

/// The data writes, by their names in [`crate::store_call`] across the backends (etcd and
/// embedded: `put`, `txn`; MongoDB and SQLite: `replace_one`, `insert_many`, `update_many`).
const DATA_WRITES: &[&str] = &["put", "txn", "replace_one", "insert_many", "update_many"];

/// How long a failed data write keeps its store unwritable when no data write follows.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Whether operation `op` is a data write.
pub fn is_data_write(op: &str) -> bool {
    DATA_WRITES.contains(&op)
}

/// Store → the error of its last data write and when, if that write failed.
static LAST_FAILURE: Mutex<BTreeMap<&'static str, (String, Instant)>> = Mutex::new(BTreeMap::new());

static WRITABLE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    crate::catalog::gauge_vec(
        "distcron_store_writable",
        "1 while the store's last write succeeded, 0 after one failed (until one succeeds).",
        &["store"],
    )
});

/// Records the outcome of a data write on `store`: `None` succeeded, `Some(error)` failed.
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
                last.insert(store, (error, Instant::now()));
            }
            None => {
                if last.remove(store).is_some() {
                    tracing::info!(store, "store writes again");
                }
            }
        }
    }
}

/// The stores whose last data write failed (within [`FORGET_AFTER`]), with its error.
pub fn unwritable() -> Vec<(&'static str, String)> {
    unwritable_within(FORGET_AFTER)
}

fn unwritable_within(window: Duration) -> Vec<(&'static str, String)> {
    let Ok(mut last) = LAST_FAILURE.lock() else {
        return Vec::new();
    };
    last.retain(|store, (_, at)| {
        let recent = at.elapsed() < window;
        if !recent {
            WRITABLE.with_label_values(&[store]).set(1);
        }
        recent
    });
    last.iter().map(|(k, (e, _))| (*k, e.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_marks_the_store_until_one_succeeds_or_it_is_forgotten() {
        record("test-store", None);
        assert!(!unwritable().iter().any(|(s, _)| *s == "test-store"));
        record("test-store", Some("no space left on device".into()));
        assert!(unwritable().contains(&("test-store", "no space left on device".into())));
        record("test-store", None);
        assert!(!unwritable().iter().any(|(s, _)| *s == "test-store"));
        record("test-store", Some("no space left on device".into()));
        assert!(!unwritable_within(Duration::ZERO)
            .iter()
            .any(|(s, _)| *s == "test-store"));
        assert!(is_data_write("txn") && is_data_write("insert_many"));
        assert!(!is_data_write("range") && !is_data_write("lease_keep_alive"));
    }
}
