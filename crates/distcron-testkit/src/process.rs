//! Child processes that die with the test process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// All children are spawned from one thread that lives as long as the process, because
/// `PR_SET_PDEATHSIG` fires when the spawning *thread* exits: a server shared by many tests must
/// not die when the test that happened to start it finishes.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map_or_else(
                |e| panic!("cannot start the testkit spawner thread: {e}"),
                drop,
            );
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that the child is killed if this process dies, even by SIGKILL.
pub(crate) fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    #[allow(unsafe_code)]
    // SAFETY: prctl and getppid are async-signal-safe, as pre_exec requires.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("testkit spawner lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?
}

/// Spawns `cmd` tied to this process (see [`spawn_tied`]) and guards it: the child is stopped
/// when the guard is dropped and killed if this process dies.
pub fn spawn_guarded(cmd: Command) -> io::Result<ChildGuard> {
    spawn_tied(cmd).map(ChildGuard::new)
}

/// A running child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub(crate) fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Asks the process to stop (SIGTERM), kills it after `grace`, and waits for it.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            #[allow(unsafe_code)]
            // SAFETY: sending a signal to our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` to the process (e.g. `SIGSTOP` to freeze it as a stall would, `SIGCONT`
    /// to let it go on); nothing when it has exited.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) with a pid of our own child and a valid signal number.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Kills the process at once (SIGKILL) and waits for it: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
