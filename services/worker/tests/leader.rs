//! The group leader program on its own: it starts the shell only on the worker's go.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn leader(command: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_distcron-group-leader"))
        .arg(distcron_worker::leader::LEADER_ARG)
        .arg(std::process::id().to_string())
        .arg("/bin/sh")
        .arg(command)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_shell_starts_on_the_go_and_never_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let called_off = dir.path().join("called-off");
    let mut child = leader(&format!("touch {}", called_off.display()));
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(126),
        "called off: the leader's own failure code"
    );
    assert!(!called_off.exists(), "nothing ran without the go");

    let ran = dir.path().join("ran");
    let mut child = leader(&format!("touch {} && exit 7", ran.display()));
    let mut go = child.stdin.take().unwrap();
    go.write_all(b"g").unwrap();
    drop(go);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "the shell's status is the leader's");
    assert!(ran.exists());
}

/// Pids whose command line is `sleep <arg>`.
fn sleeping(arg: &str) -> Vec<u32> {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what}");
}

#[test]
fn a_descendant_that_left_the_group_ends_with_a_killed_run() {
    use std::os::unix::process::CommandExt;
    // A sleep of an odd length, so no other process matches it.
    let arg = format!("62.{}", 100 + std::process::id() % 900);
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcron-group-leader"))
        .arg(distcron_worker::leader::LEADER_ARG)
        .arg(std::process::id().to_string())
        .arg("/bin/sh")
        .arg(format!("(setsid sleep {arg} &); sleep 30"))
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut go = child.stdin.take().unwrap();
    go.write_all(b"g").unwrap();
    wait_for("the setsid'd sleep never started", || {
        !sleeping(&arg).is_empty()
    });
    // What the worker does to end a run: SIGTERM to the run's process group.
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    wait_for("the sleep that left the group outlived its run", || {
        sleeping(&arg).is_empty()
    });
}
