//! Running one command: `<shell> -c <command>` in a process group of its own.
//!
//! - The group leader ([`crate::execution::leader`]: `distcron-group-leader`, or the worker's own
//!   executable in leader mode when that is not installed) kills the whole group when the worker
//!   dies. The group id is also recorded in the data dir
//!   (see [`ProcessRecords`]) so a restarted worker kills anything a crashed one left behind.
//! - Timeout and kill send SIGTERM to the whole group, then SIGKILL after the grace period, so
//!   grandchildren (`sh -c 'sleep 300 & wait'`) die too.
//! - stdout and stderr are read as they come and forwarded, interleaved, in bounded pieces.
//! - When the leader exits but something in its group still holds the output pipes, the group is
//!   killed after [`PIPE_LINGER`], so a run never hangs on a stray background process.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long output pipes may stay open after the group leader exited.
pub const PIPE_LINGER: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 16 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The executable started as the group leader (the worker's own, see [`crate::execution::leader`]).
    pub leader: PathBuf,
    /// The shell (`/bin/sh`).
    pub shell: PathBuf,
    /// The command line.
    pub command: String,
    /// Working directory, if not the worker's.
    pub working_dir: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Unix user to run as.
    pub user: Option<String>,
    /// Users other than the worker's own that runs may run as (`--allowed-users`; `*`: any).
    pub allowed_users: Vec<String>,
    /// Run time limit.
    pub timeout: Option<Duration>,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The process exited (by itself or by a signal it was not sent by us).
    Exited {
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Terminating signal, if any.
        signal: Option<i32>,
    },
    /// The timeout ended it.
    TimedOut {
        /// Terminating signal.
        signal: Option<i32>,
    },
    /// A kill request (or shutdown, or fencing) ended it.
    Killed {
        /// Terminating signal.
        signal: Option<i32>,
    },
    /// It could not be started.
    SpawnFailed(String),
}

/// Why a run was asked to stop; set before cancelling the run's token.
#[derive(Debug, Clone, Default)]
pub struct StopReason(pub std::sync::Arc<std::sync::Mutex<String>>);

impl StopReason {
    /// Records why.
    pub fn set(&self, why: &str) {
        if let Ok(mut r) = self.0.lock() {
            if r.is_empty() {
                *r = why.to_owned();
            }
        }
    }

    /// Why, if set.
    pub fn get(&self) -> String {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pgid), signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pgid, ?signal, error = %e, "cannot signal process group");
        }
    }
}

fn build_command(spec: &ExecSpec) -> Result<tokio::process::Command, String> {
    let mut cmd = tokio::process::Command::new(&spec.leader);
    cmd.args(super::leader::leader_args(&spec.shell, &spec.command))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    if let Some(name) = &spec.user {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
            .ok_or_else(|| format!("no such user {name:?}"))?;
        let me = nix::unistd::geteuid();
        if user.uid != me {
            user_allowed(name, &spec.allowed_users)?;
            if !me.is_root() {
                return Err(format!("cannot run as {name:?}: the worker is not root"));
            }
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("USER", name)
                .env("LOGNAME", name)
                .env("HOME", &user.dir);
        }
    }
    Ok(cmd)
}

/// Whether a run may run as `user` (not the worker's own) on this worker: only users its operator
/// listed in `--allowed-users` (`*` lists every user), so a job's author cannot pick root on a
/// root worker unless the worker's operator said so.
fn user_allowed(user: &str, allowed: &[String]) -> Result<(), String> {
    if allowed.iter().any(|a| a == "*" || a == user) {
        return Ok(());
    }
    let listed = if allowed.is_empty() {
        "none: the default allows only the worker's own user".to_owned()
    } else {
        allowed.join(", ")
    };
    Err(format!(
        "refused to run as {user:?}: not in this worker's --allowed-users ({listed})"
    ))
}

/// A run's group leader, started ahead of the slot and waiting for the go (one byte on its
/// stdin) before it starts the shell; dropped without the go, it is killed and nothing runs.
#[derive(Debug)]
pub struct Armed {
    child: tokio::process::Child,
    go: tokio::process::ChildStdin,
    /// The run's process group id.
    pub pgid: i32,
}

/// Starts the group leader for `spec`, waiting for [`execute`]'s go. Started during the claim
/// lead, so that at the slot only the leader's start of the shell remains.
pub fn arm(spec: &ExecSpec) -> Result<Armed, String> {
    let mut child = build_command(spec)?.spawn().map_err(|e| e.to_string())?;
    let go = child
        .stdin
        .take()
        .ok_or("the leader's stdin was not piped")?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or("the process exited before it could be tracked")?;
    Ok(Armed { child, go, pgid })
}

/// Runs the armed leader of `spec`: gives it the go, then follows it to the end. Output goes to
/// `output` in pieces of at most 16 KiB. Cancelling `stop` ends the run (SIGTERM, then SIGKILL
/// after the grace period).
pub async fn execute(
    armed: Result<Armed, String>,
    spec: &ExecSpec,
    stop: &CancellationToken,
    output: mpsc::Sender<Vec<u8>>,
) -> Ending {
    let Armed {
        mut child,
        mut go,
        pgid,
    } = match armed {
        Ok(a) => a,
        Err(e) => return Ending::SpawnFailed(e),
    };
    // A leader that died meanwhile cannot read it; its exit status below says why.
    let _ = go.write_all(b"g").await;
    drop(go);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut status: Option<ExitStatus> = None;
    let mut cause: Option<&'static str> = None; // "timeout" or "kill"
    let mut escalate_at: Option<tokio::time::Instant> = None;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            n = async { match stdout.as_mut() { Some(s) => s.read(&mut out_buf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => stdout = None,
                    Ok(n) => { let _ = output.send(out_buf[..n].to_vec()).await; }
                }
            }
            n = async { match stderr.as_mut() { Some(s) => s.read(&mut err_buf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(n) => { let _ = output.send(err_buf[..n].to_vec()).await; }
                }
            }
            s = child.wait(), if status.is_none() => {
                status = Some(s.unwrap_or_else(|_| ExitStatus::from_raw(0)));
                linger_until = Some(tokio::time::Instant::now() + PIPE_LINGER);
            }
            () = stop.cancelled(), if cause.is_none() => {
                cause = Some("kill");
                signal_group(pgid, Signal::SIGTERM);
                escalate_at = Some(tokio::time::Instant::now() + spec.kill_grace);
            }
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && cause.is_none() => {
                cause = Some("timeout");
                signal_group(pgid, Signal::SIGTERM);
                escalate_at = Some(tokio::time::Instant::now() + spec.kill_grace);
            }
            () = tokio::time::sleep_until(escalate_at.unwrap_or(far)), if escalate_at.is_some() => {
                signal_group(pgid, Signal::SIGKILL);
                escalate_at = None;
            }
            () = tokio::time::sleep_until(linger_until.unwrap_or(far)), if linger_until.is_some() => {
                // The leader is gone but its group still holds the pipes: end the group.
                signal_group(pgid, Signal::SIGKILL);
                stdout = None;
                stderr = None;
                linger_until = None;
            }
        }
    }
    // Nothing of the group may outlive the run.
    signal_group(pgid, Signal::SIGKILL);
    let status = status.unwrap_or_else(|| ExitStatus::from_raw(0));
    let (code, signal) = (status.code(), status.signal());
    match cause {
        Some("timeout") => Ending::TimedOut { signal },
        Some(_) => Ending::Killed { signal },
        None => Ending::Exited { code, signal },
    }
}

/// Records of the process groups this worker started, one file per run under
/// `<data-dir>/processes/`: the group id and the leader's start time (so a reused pid that now
/// leads another group is never mistaken for ours).
#[derive(Debug, Clone)]
pub struct ProcessRecords {
    dir: PathBuf,
}

fn start_time_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime); fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

impl ProcessRecords {
    /// Records under `data_dir/processes` (created if missing).
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("processes");
        distcron_config::private::create_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Remembers that `run_id` runs as process group `pgid`.
    pub fn record(&self, run_id: &str, pgid: i32) {
        let start = start_time_of(pgid).unwrap_or(0);
        if let Err(e) = std::fs::write(self.dir.join(run_id), format!("{pgid} {start}\n")) {
            tracing::warn!(run_id, error = %e, "cannot record process group");
        }
    }

    /// Forgets `run_id`.
    pub fn forget(&self, run_id: &str) {
        let _ = std::fs::remove_file(self.dir.join(run_id));
    }

    /// Kills every recorded group whose leader is still the process we started, and forgets
    /// them all. Returns the run ids that were still running.
    pub fn reap_leftovers(&self) -> Vec<String> {
        let mut killed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return killed;
        };
        for entry in entries.flatten() {
            let run_id = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut parts = text.split_whitespace();
            let pgid: Option<i32> = parts.next().and_then(|p| p.parse().ok());
            let start: Option<u64> = parts.next().and_then(|s| s.parse().ok());
            if let (Some(pgid), Some(start)) = (pgid, start) {
                // Ours if the leader is the process we started, or if the leader is gone: Linux
                // never reuses a pid that is still some process group's id, so a leaderless group
                // with this id is what is left of ours (the leader died with the worker before it could kill the group).
                let ours = match start_time_of(pgid) {
                    Some(now) => now == start,
                    None => true,
                };
                if ours && killpg(Pid::from_raw(pgid), None::<Signal>).is_ok() {
                    tracing::warn!(run_id = %run_id, pgid, "killing a process group left by a previous worker");
                    signal_group(pgid, Signal::SIGKILL);
                    killed.push(run_id.clone());
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_users_are_allowed_and_the_refusal_says_how_to_allow_them() {
        let listed = |users: &[&str]| users.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        assert!(user_allowed("nobody", &listed(&["nobody"])).is_ok());
        assert!(user_allowed("root", &listed(&["*"])).is_ok());
        let refused = user_allowed("root", &listed(&["nobody", "backup"]));
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("\"root\"") && e.contains("nobody, backup")),
            "{refused:?}"
        );
        let default = user_allowed("root", &[]);
        assert!(
            default.is_err_and(|e| e.contains("--allowed-users") && e.contains("worker's own")),
        );
    }
}
