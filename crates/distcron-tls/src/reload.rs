//! Settings loaded from files and loaded again when the files change.
//!
//! [`watch_files`] loads once (an error then is returned), then checks the files every
//! [`RELOAD_EVERY`]: when one's modification time or size changed, it loads again and publishes
//! the result; a load that fails is logged and the previous settings stay. The checking task ends
//! when every receiver is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::TlsError;

/// How often watched files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// What identifies a file's version: modification time and size (`None`: cannot be read).
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Loads `load` now and again whenever one of `files` changes (see the module docs). `what`
/// names the settings in logs. Must be called within a tokio runtime.
pub fn watch_files<T, F>(
    what: &'static str,
    files: Vec<PathBuf>,
    load: F,
) -> Result<watch::Receiver<Arc<T>>, TlsError>
where
    T: Send + Sync + 'static,
    F: Fn() -> Result<T, TlsError> + Send + 'static,
{
    let mut seen = fingerprint(&files);
    let (tx, rx) = watch::channel(Arc::new(load()?));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let now = fingerprint(&files);
            if now == seen {
                continue;
            }
            match load() {
                Ok(settings) => {
                    seen = now;
                    tracing::info!(settings = what, ?files, "files changed; reloaded");
                    let _ = tx.send(Arc::new(settings));
                }
                // Not marked as seen: tried again at the next check, e.g. once the certificate
                // and its key have both been replaced.
                Err(e) => tracing::warn!(
                    settings = what,
                    error = %e,
                    "files changed but do not load; keeping the previous settings"
                ),
            }
        }
    });
    Ok(rx)
}
