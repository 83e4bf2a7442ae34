//! Data directories only their owner can read: job definitions (with their environment, secrets
//! included), run output and process records live there, while the commands distcron runs may run
//! as other users of the same machine.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a private directory: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a private file: the owner only, no execute.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) mode 0700; an existing directory that others may enter
/// is narrowed to 0700.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    narrow(path, DIR_MODE)
}

/// Creates the file `path` mode 0600 if it does not exist (empty), or narrows an existing one to
/// 0600; for files another library opens afterwards (SQLite gives its `-wal` and `-shm` files
/// the database file's mode).
pub fn create_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    narrow(path, FILE_MODE)
}

/// Opens `path` for writing, created (or truncated) mode 0600.
pub fn write_file(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
    }

    #[test]
    fn directories_and_files_are_the_owners_only_and_wide_ones_are_narrowed() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("a/b");
        create_dir(&dir)?;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755))?;
        create_dir(&dir)?;
        assert_eq!(mode(&dir), 0o700, "an existing 0755 directory is narrowed");
        let file = dir.join("store.sqlite");
        create_file(&file)?;
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, b"kept")?;
        std::fs::set_permissions(&file, Permissions::from_mode(0o644))?;
        create_file(&file)?;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(
            std::fs::read(&file)?,
            b"kept",
            "an existing file keeps its content"
        );
        let written = dir.join("spool");
        drop(write_file(&written)?);
        assert_eq!(mode(&written), 0o600);
        Ok(())
    }
}
