//! Real etcd servers (Debian `etcd-server`) on free loopback ports.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::net::{free_port, http_get, wait_until};
use crate::process::{spawn_tied, ChildGuard};
use crate::HarnessError;

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn etcd_binary() -> PathBuf {
    std::env::var_os("DISTCRON_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<ChildGuard>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn healthy(&self) -> bool {
        http_get(self.client_port, "/health").is_ok_and(|r| r.contains("\"health\":\"true\""))
    }
}

/// One etcd server or a cluster of several members, each a real `etcd` process with its own
/// data directory. Every member is stopped when this is dropped.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: TempDir,
    /// Further flags of every member.
    extra: Vec<String>,
}

impl Etcd {
    /// Starts a single-member etcd and waits until it is healthy.
    pub fn single() -> Result<Self, HarnessError> {
        Self::cluster(1)
    }

    /// Starts a single-member etcd with further flags (e.g. `--quota-backend-bytes`).
    pub fn single_with(extra: &[&str]) -> Result<Self, HarnessError> {
        Self::start(1, extra)
    }

    /// Starts an etcd cluster of `size` members and waits until every member is healthy.
    pub fn cluster(size: usize) -> Result<Self, HarnessError> {
        Self::start(size, &[])
    }

    fn start(size: usize, extra: &[&str]) -> Result<Self, HarnessError> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_cluster(size, extra) {
                Ok(e) => return Ok(e),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::Start("etcd: no attempt made".into())))
    }

    fn try_cluster(size: usize, extra: &[&str]) -> Result<Self, HarnessError> {
        let dir = crate::temp_dir("etcd")?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("distcron-test-{}", dir.path().display());
        let mut etcd = Self {
            members,
            initial_cluster,
            token,
            dir,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        for i in 0..size {
            etcd.spawn_member(i)?;
        }
        let all_healthy = wait_until(START_TIMEOUT, || etcd.members.iter().all(Member::healthy));
        if !all_healthy {
            return Err(HarnessError::Start(format!(
                "etcd did not become healthy within {START_TIMEOUT:?}; logs under {}",
                etcd.dir.path().display()
            )));
        }
        Ok(etcd)
    }

    fn spawn_member(&mut self, i: usize) -> Result<(), HarnessError> {
        let m = &self.members[i];
        let data_dir = self.dir.path().join(&m.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))?;
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd).map_err(|e| {
            HarnessError::Start(format!(
                "cannot run {:?} (install Debian's etcd-server): {e}",
                etcd_binary()
            ))
        })?;
        self.members[i].child = Some(ChildGuard::new(child));
        Ok(())
    }

    /// Client URLs of every member (stopped ones included), e.g. `http://127.0.0.1:23791`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Client URL of the first member.
    pub fn endpoint(&self) -> String {
        self.members
            .first()
            .map(Member::client_url)
            .unwrap_or_default()
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Stops member `i` (SIGTERM), keeping its data directory.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.stop(Duration::from_secs(5));
        }
    }

    /// Kills member `i` at once (SIGKILL), keeping its data directory.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill();
        }
    }

    /// Freezes member `i` (SIGSTOP): it keeps its connections but answers nothing, as during a
    /// long fsync or a stalled disk, until [`resume_member`](Self::resume_member).
    pub fn pause_member(&self, i: usize) {
        if let Some(c) = &self.members[i].child {
            c.signal(libc::SIGSTOP);
        }
    }

    /// Lets a member frozen by [`pause_member`](Self::pause_member) go on (SIGCONT).
    pub fn resume_member(&self, i: usize) {
        if let Some(c) = &self.members[i].child {
            c.signal(libc::SIGCONT);
        }
    }

    /// Restarts a stopped member `i` on its old ports and data and waits until it is healthy.
    pub fn start_member(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].child.is_none() {
            self.spawn_member(i)?;
        }
        if wait_until(START_TIMEOUT, || self.members[i].healthy()) {
            Ok(())
        } else {
            Err(HarnessError::Start(format!(
                "etcd member {i} did not become healthy again"
            )))
        }
    }
}
