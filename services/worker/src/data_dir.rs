//! The worker's data directory: locking it for one process, and saying plainly why it cannot be
//! used (which directory, which user the worker runs as, who owns it, and how to fix it).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::WorkerError;

/// Locks the data directory for this process (one worker per directory: the process-group
/// records and the spool are its own), creating it if it does not exist; it is the owner's only
/// (0700: the spool holds run output, which jobs running as other users must not read).
pub(crate) fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, WorkerError> {
    let err = |e: io::Error| error(dir, &e);
    distcron_config::private::create_dir(dir).map_err(err)?;
    let lock_file = dir.join("worker.lock");
    distcron_config::private::create_file(&lock_file).map_err(err)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(lock_file)
        .map_err(err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        WorkerError::DataDir {
            path: dir.display().to_string(),
            reason: format!("in use by another worker ({e})"),
        }
    })
}

/// The error for an I/O failure on the data directory `dir` (or a file in it); a permission
/// failure also names the worker's user, the directory's owner and the fix.
pub(crate) fn error(dir: &Path, e: &io::Error) -> WorkerError {
    let reason = if e.kind() == io::ErrorKind::PermissionDenied {
        format!("{e}; {}", permission_hint(dir))
    } else {
        e.to_string()
    };
    WorkerError::DataDir {
        path: dir.display().to_string(),
        reason,
    }
}

/// Explains a permission failure on `dir`: who the worker runs as, who owns the nearest existing
/// directory on the way to `dir`, and how to make it writable.
fn permission_hint(dir: &Path) -> String {
    let uid = nix::unistd::Uid::effective();
    let user = user_name(uid.as_raw());
    let owner = dir
        .ancestors()
        .find_map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (p.to_path_buf(), m.uid()))
        })
        .map(|(path, owner)| {
            format!(
                "{} is owned by {} (uid {owner}); ",
                path.display(),
                user_name(owner)
            )
        })
        .unwrap_or_default();
    format!(
        "the worker runs as {user} (uid {uid}); {owner}make {dir} writable by {user} \
         (e.g. `chown -R {user} {dir}`), or point --data-dir / DISTCRON_WORKER_DATA_DIR at a \
         directory it owns; in a container, create the directory in the image owned by {user} \
         so that a fresh volume mounted on it inherits that owner",
        dir = dir.display(),
    )
}

/// The name of the user with `uid`, or `uid N` when the system has no entry for it.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_failure_names_the_user_the_owner_and_the_fix() {
        let dir = Path::new("/var/lib/distcron/worker");
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        let text = error(dir, &e).to_string();
        let me = user_name(nix::unistd::Uid::effective().as_raw());
        assert!(
            text.starts_with("data dir /var/lib/distcron/worker: "),
            "{text}"
        );
        assert!(text.contains(&format!("the worker runs as {me}")), "{text}");
        // The nearest existing ancestor is named with its owner ("/" at least exists).
        assert!(text.contains(" is owned by "), "{text}");
        assert!(
            text.contains(&format!("chown -R {me} /var/lib/distcron/worker")),
            "{text}"
        );
    }

    #[test]
    fn other_failures_keep_their_own_text() {
        let e = io::Error::new(io::ErrorKind::StorageFull, "no space left");
        let text = error(Path::new("/data"), &e).to_string();
        assert_eq!(text, "data dir /data: no space left");
    }

    #[test]
    fn a_second_lock_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err().to_string();
        assert!(second.contains("in use by another worker"), "{second}");
    }
}
