//! The stores every ledger test runs against: a real etcd and the embedded store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use distcron_kv::{EmbeddedKv, EtcdConfig, EtcdKv, KvStore};
use distcron_testkit::shared_etcd;

/// A client of the shared etcd.
pub async fn etcd_store() -> Arc<dyn KvStore> {
    Arc::new(
        EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
            .await
            .unwrap(),
    )
}

/// A fresh in-memory embedded store.
pub fn embedded_store() -> Arc<dyn KvStore> {
    Arc::new(EmbeddedKv::open(std::path::Path::new(":memory:")).unwrap())
}

/// Runs each named test (an `async fn(Arc<dyn KvStore>)` of the test crate's root) once per
/// store implementation.
macro_rules! on_both_stores {
    ($($name:ident),*) => {
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name($crate::common::etcd_store().await).await })*
        }
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name($crate::common::embedded_store()).await })*
        }
    };
}
pub(crate) use on_both_stores;
