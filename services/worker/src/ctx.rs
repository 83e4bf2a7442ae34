//! What the worker's tasks share, in three parts by owner: [`Cluster`] (what the cluster looks
//! like), [`Local`] (what runs here) and [`Outbox`] (what goes out), beside this worker's
//! identity, store and settings.

use std::sync::Arc;

use distcron_core::records::RunningRecord;
use distcron_core::Keys;
use distcron_kv::KvStore;

use crate::cluster::clock::Clock;
use crate::cluster::Cluster;
use crate::local::Local;
use crate::outbox::{Outbox, Release};
use crate::settings::Settings;

/// Everything the worker's tasks share.
pub struct Ctx {
    /// This worker's id.
    pub id: String,
    /// Key layout.
    pub keys: Keys,
    /// The store.
    pub store: Arc<dyn KvStore>,
    /// This worker's clock.
    pub clock: Clock,
    /// When this incarnation started, ms (in its registration; it begins its marker names).
    pub started_at_ms: i64,
    /// Settings.
    pub settings: Settings,
    /// What the cluster looks like.
    pub cluster: Cluster,
    /// What runs here.
    pub local: Local,
    /// What goes out.
    pub out: Outbox,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("id", &self.id).finish()
    }
}

impl Ctx {
    /// Queues the running record of an ended run, whose end was shipped, for release.
    pub async fn release_record(&self, record: RunningRecord) {
        if let Ok(mut ending) = self.local.ending.lock() {
            ending.insert(record.run_id.clone());
        }
        if !self.out.release(Release::Ended(record)).await {
            tracing::warn!("releaser is gone; the running record stays until the session ends");
        }
    }
}
