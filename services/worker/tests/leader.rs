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
