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
/// names the settings in logs.
///
/// # Panics
///
/// Outside a tokio runtime (the checks run on it).
pub fn watch_files<T, F>(
    what: &'static str,
    files: Vec<PathBuf>,
    load: F,
) -> Result<watch::Receiver<Arc<T>>, TlsError>
where
    T: Send + Sync + 'static,
    F: Fn() -> Result<T, TlsError> + Send + Sync + 'static,
{
    let mut seen = fingerprint(&files);
    let (tx, rx) = watch::channel(Arc::new(load()?));
    let (load, files) = (Arc::new(load), Arc::new(files));
    tokio::spawn(async move {
        // The last fingerprint that failed to load (warned about once, tried again each check).
        let mut failed: Option<Fingerprint> = None;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            // File reads and parsing stay off the runtime's threads.
            let (load, files_now, seen_before) = (load.clone(), files.clone(), seen.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let now = fingerprint(&files_now);
                let loaded = (now != seen_before).then(|| load());
                (now, loaded)
            })
            .await;
            let Ok((now, loaded)) = checked else { continue };
            match loaded {
                None => {}
                Some(Ok(settings)) => {
                    seen = now;
                    failed = None;
                    tracing::info!(settings = what, files = ?files, "files changed; reloaded");
                    let _ = tx.send(Arc::new(settings));
                }
                // Not marked as seen: tried again at the next check, e.g. once the certificate
                // and its key have both been replaced; warned about once per version.
                Some(Err(e)) if failed.as_ref() != Some(&now) => {
                    tracing::warn!(
                        settings = what,
                        error = %e,
                        "files changed but do not load; keeping the previous settings"
                    );
                    failed = Some(now);
                }
                Some(Err(_)) => {}
            }
        }
    });
    Ok(rx)
}
