//! A real MongoDB-protocol server on a free loopback port: `mongod` when it is on PATH, otherwise
//! the PyPI package `nx-27017` pinned in `tools/requirements-test.txt` and installed in the
//! workspace's `.venv` by `scripts/test.sh`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::net::{free_port, port_open, wait_until};
use crate::process::{spawn_tied, ChildGuard};
use crate::HarnessError;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server implementation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoKind {
    /// A real `mongod`.
    Mongod,
    /// The nx-27017 wire-protocol server (SQLite underneath).
    Nx27017,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn nx_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DISTCRON_NX27017_BIN") {
        return Some(PathBuf::from(p));
    }
    let venv = crate::workspace_root().join(".venv/bin/nx-27017");
    if venv.is_file() {
        return Some(venv);
    }
    on_path("nx-27017")
}

/// A MongoDB-protocol server with its own data directory; stopped when dropped.
#[derive(Debug)]
pub struct MongoServer {
    kind: MongoKind,
    port: u16,
    dir: TempDir,
    child: Option<ChildGuard>,
}

impl MongoServer {
    /// Starts `mongod` if it is on PATH, else nx-27017, and waits until it accepts connections.
    pub fn start() -> Result<Self, HarnessError> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start() {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::Start("mongo: no attempt made".into())))
    }

    fn try_start() -> Result<Self, HarnessError> {
        let dir = crate::temp_dir("mongo")?;
        let kind = if on_path("mongod").is_some() {
            MongoKind::Mongod
        } else {
            MongoKind::Nx27017
        };
        let mut server = Self {
            kind,
            port: free_port()?,
            dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn command(&self) -> Result<Command, HarnessError> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let port = self.port.to_string();
        match self.kind {
            MongoKind::Mongod => {
                let mut c = Command::new("mongod");
                c.args([
                    "--bind_ip",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--quiet",
                    "--dbpath",
                ])
                .arg(&data);
                Ok(c)
            }
            MongoKind::Nx27017 => {
                let bin = nx_binary().ok_or_else(|| {
                    HarnessError::Start(
                        "no mongod on PATH and no nx-27017 in .venv: run scripts/test.sh once"
                            .into(),
                    )
                })?;
                let mut c = Command::new(bin);
                c.args(["--host", "127.0.0.1", "--port", &port, "--data-dir"])
                    .arg(&data)
                    .arg("--pid-file")
                    .arg(self.dir.path().join("nx.pid"))
                    .arg("--log-file")
                    .arg(self.dir.path().join("nx.log"));
                Ok(c)
            }
        }
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let mut cmd = self.command()?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = ChildGuard::new(spawn_tied(cmd)?);
        let port = self.port;
        if !wait_until(START_TIMEOUT, || port_open(port) || child.has_exited())
            || child.has_exited()
        {
            return Err(HarnessError::Start(format!(
                "{:?} did not accept connections on port {port}; see {}",
                self.kind,
                self.log_path().display()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Which implementation runs.
    pub fn kind(&self) -> MongoKind {
        self.kind
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for this server, with short timeouts suited to tests.
    pub fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000&connectTimeoutMS=2000",
            self.port
        )
    }

    /// The data directory (kept across [`stop`](Self::stop) and [`restart`](Self::restart)).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
        let port = self.port;
        wait_until(Duration::from_secs(5), || !port_open(port));
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }
}
