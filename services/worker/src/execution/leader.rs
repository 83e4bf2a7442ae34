//! The group leader: a small process between the worker and `sh -c <command>` that makes sure
//! nothing a run started outlives a worker that died.
//!
//! `PR_SET_PDEATHSIG` only reaches the worker's direct child, so with `sh -c 'sleep 300 & wait'`
//! the background `sleep` would survive a crashed worker. The worker therefore starts a leader
//! of the run's process group ahead of the slot: `--group-leader`, else `distcron-group-leader`
//! next to the worker's executable, else its own executable in leader mode (`worker
//! __group-leader <worker-pid> <shell> <command>`). The leader asks for SIGTERM when the
//! worker dies, waits for the worker's go (one byte on stdin; end of input calls the run off),
//! starts the shell in the same group, with stdin from `/dev/null`, and:
//! - when the shell ends, ends the same way (the exit code, or the same signal), so the worker
//!   sees the shell's status;
//! - when its parent is no longer the worker (the worker died), SIGKILLs the whole group;
//! - is the run's child subreaper: a descendant that leaves the group (`setsid`, a double fork)
//!   is re-parented to the leader when its parent ends. SIGTERM/SIGINT/SIGHUP reach the group
//!   from the worker's timeout and kill handling, which the shell answers; the leader passes
//!   them on to those descendants outside the group, and once the shell has ended after such a
//!   signal it SIGKILLs every descendant left before it ends itself. (A shell that outlives the
//!   grace is SIGKILLed with the whole group, the leader included, by the worker.)
//!
//! The leader is synchronous and small: it runs before any runtime exists.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use nix::sys::signal::{
    killpg, raise, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, Pid};

/// The first argument that starts the worker executable in leader mode.
pub const LEADER_ARG: &str = "__group-leader";

/// Exit code when the leader cannot do its job (like a shell's "cannot execute").
const LEADER_FAILED: i32 = 126;

/// If the process was started in leader mode, runs as the group leader and never returns;
/// otherwise returns and the worker starts normally.
pub fn run_if_requested() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) != Some(LEADER_ARG) {
        return;
    }
    let code = match lead(&args[2..]) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("distcron group leader: {message}");
            LEADER_FAILED
        }
    };
    std::process::exit(code)
}

/// The `main` of a binary that runs workers: serves as a run's group leader if started as one
/// (never returning), else runs `serve` on a multi-threaded runtime.
pub fn block_on_unless_leader<F: std::future::Future>(serve: F) -> std::io::Result<F::Output> {
    run_if_requested();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve))
}

/// The name of the small leader program installed next to the worker.
pub const LEADER_PROGRAM: &str = "distcron-group-leader";

/// The leader program to start runs with: [`LEADER_PROGRAM`] next to the running executable if
/// it is there, else the running executable itself (every binary that runs a worker starts in
/// leader mode when asked to; see [`block_on_unless_leader`]).
pub fn default_program() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let small = me.with_file_name(LEADER_PROGRAM);
    Ok(if small.is_file() { small } else { me })
}

/// The arguments the worker passes to start a leader for `shell -c command`.
pub fn leader_args(shell: &std::path::Path, command: &str) -> Vec<OsString> {
    vec![
        LEADER_ARG.into(),
        std::process::id().to_string().into(),
        shell.as_os_str().to_owned(),
        command.into(),
    ]
}

fn lead(args: &[OsString]) -> Result<i32, String> {
    let [parent, shell, command] = args else {
        return Err("usage: __group-leader <worker-pid> <shell> <command>".into());
    };
    let parent: i32 = parent
        .to_str()
        .and_then(|p| p.parse().ok())
        .ok_or("the worker pid is not a number")?;
    let parent = Pid::from_raw(parent);
    let watched = watched_signals();
    watched
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| format!("cannot ask for the parent-death signal: {e}"))?;
    if getppid() != parent {
        // The worker died before the request above took effect.
        return Ok(LEADER_FAILED);
    }
    // Started ahead of the slot: the worker's go is one byte on stdin. The end of input
    // instead means the run was called off (or the worker died): nothing starts.
    let mut go = [0u8; 1];
    if !matches!(std::io::Read::read(&mut std::io::stdin(), &mut go), Ok(1)) {
        return Ok(LEADER_FAILED);
    }
    let mut shell_cmd = std::process::Command::new(shell);
    shell_cmd
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null());
    #[allow(unsafe_code)]
    // SAFETY: sigprocmask is async-signal-safe, as pre_exec requires.
    unsafe {
        shell_cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    // Descendants that leave the shell's group are re-parented here when their parents end.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become the run's subreaper: {e}"))?;
    let child = shell_cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shell.to_string_lossy()))?;
    let child = Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    let mut stopping = false;
    loop {
        let signal = watched
            .wait()
            .map_err(|e| format!("cannot wait for signals: {e}"))?;
        if signal == Signal::SIGCHLD {
            // The shell, or descendants re-parented here: reap them all.
            let mut ended = None;
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                        ended = Some(Ok(code));
                    }
                    Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                        ended = Some(Err(signal));
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if let Some(ended) = ended {
                if stopping {
                    end_descendants();
                }
                match ended {
                    Ok(code) => return Ok(code),
                    Err(signal) => end_by(signal),
                }
            }
        } else if getppid() != parent {
            // The worker is gone: nothing of this run may outlive it.
            let _ = killpg(Pid::from_raw(0), Signal::SIGKILL);
            end_descendants();
            return Ok(LEADER_FAILED);
        } else {
            // The run is being ended: the group got the signal; those that left it get it too.
            stopping = true;
            signal_children_outside_group(child, signal);
        }
    }
}

/// The pids whose parent is this process (from `/proc`).
fn children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1).map(|ppid| ppid == me)
                })
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect()
}

/// Passes `signal` on to this process's children outside its process group (the shell's group
/// got it already).
fn signal_children_outside_group(shell: Pid, signal: Signal) {
    let group = nix::unistd::getpgrp();
    for pid in children() {
        if pid != shell && nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g != group) {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

/// SIGKILLs every descendant still alive (they are all this process's children by now, or
/// become so when their parents die) and reaps them; gives up after a few rounds.
fn end_descendants() {
    for _ in 0..50 {
        let left = children();
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

fn watched_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// Ends this process by `signal`, as the shell ended, so the worker records the signal.
fn end_by(signal: Signal) -> ! {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    #[allow(unsafe_code)]
    // SAFETY: installing the default disposition has no handler to be unsafe about.
    let _ = unsafe { sigaction(signal, &default) };
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    // Core dumps of the leader would only confuse: the shell's own has been written already.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = raise(signal);
    std::process::exit(128 + signal as i32)
}
