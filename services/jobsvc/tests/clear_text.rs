//! A server that checks tokens but has no TLS warns at start when it listens beyond loopback,
//! and not on loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use distcron_testkit::{free_port, shared_etcd, unique_name};

/// The log lines jobsvc writes up to "serving", when listening on `ip` with tokens.
fn start_up_log(ip: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobsvc"))
        .args(["--listen", &format!("{ip}:{}", free_port().unwrap())])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--key-prefix", &format!("/{}/", unique_name("clear"))])
        .args(["--etcd-endpoints", &shared_etcd().endpoints().join(",")])
        .args(["--tokens", &format!("ops:admin:{HASH}")])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let serving = line.contains("serving");
        lines.push(line);
        if serving || lines.len() > 200 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("serving")),
        "jobsvc did not start: {lines:#?}"
    );
    lines
}

/// A token hash (64 hex digits; no token needs to match it here).
const HASH: &str = "1f9ff0ca4d9fd57ac7fb0a0f3c4e40cae4a5a3b7bdb1bd7d0bb6b2fa1b8c16e6";

#[test]
fn tokens_without_tls_beyond_loopback_are_warned_about() {
    let warned = |lines: &[String]| lines.iter().any(|l| l.contains("clear text"));
    let everywhere = start_up_log("0.0.0.0");
    assert!(warned(&everywhere), "{everywhere:#?}");
    let loopback = start_up_log("127.0.0.1");
    assert!(!warned(&loopback), "{loopback:#?}");
}
