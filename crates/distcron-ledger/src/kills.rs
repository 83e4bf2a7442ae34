//! Kill requests: published on a short lease for every worker to see.

use distcron_core::Keys;
use distcron_kv::{KvError, KvStore};

/// How long a kill request stays visible to workers that are reconnecting.
pub const KILL_REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Publishes a kill request at `killer/<job>` on a short lease; every worker watching sees it.
pub async fn publish_kill(
    store: &dyn KvStore,
    keys: &Keys,
    job: &str,
    request: &distcron_core::records::KillRequest,
) -> Result<(), KvError> {
    let lease = store.grant_lease(KILL_REQUEST_TTL).await?;
    let value = serde_json::to_vec(request).map_err(|e| KvError::Other(e.to_string()))?;
    store.put(&keys.killer(job), value, Some(lease)).await?;
    Ok(())
}
