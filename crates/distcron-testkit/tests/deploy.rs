//! The deployment files tell the truth about the binaries: every `DISTCRON_*` variable the
//! compose file sets, and every key of the example configs, is one the binary accepts; the compose
//! file validates (`docker-compose config`); the systemd units start the right binaries.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use distcron_testkit::{workspace_binary, workspace_root};

const BINARIES: [(&str, &str); 4] = [
    ("jobsvc", "distcron-jobsvc"),
    ("logsvc", "distcron-logsvc"),
    ("worker", "distcron-worker"),
    ("gateway", "distcron-gateway"),
];

/// `<bin> --help` of every binary.
fn helps() -> BTreeMap<&'static str, String> {
    BINARIES
        .iter()
        .map(|(bin, package)| {
            let out = Command::new(workspace_binary(package, bin))
                .arg("--help")
                .output()
                .unwrap();
            assert!(out.status.success(), "{bin} --help");
            (*bin, String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .collect()
}

/// The `DISTCRON_*` variables a help text names.
fn variables(help: &str) -> BTreeSet<&str> {
    help.split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("DISTCRON_"))
        .collect()
}

#[test]
fn compose_validates_and_sets_only_variables_the_binaries_read() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(workspace_root())
        .output()
        .expect("docker-compose (Debian package docker-compose; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let helps = helps();
    let mut checked = BTreeSet::new();
    for (name, service) in config["services"].as_mapping().unwrap() {
        // Services built from our image run one of our binaries; the others (etcd, mongo) not.
        if service["image"].as_str() != Some("distcron:dev") {
            continue;
        }
        let bin = service["command"][0].as_str().unwrap_or_default();
        let help = helps
            .get(bin)
            .unwrap_or_else(|| panic!("{name:?} runs unknown binary {bin:?}"));
        for (key, _) in service["environment"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap();
            if key.starts_with("DISTCRON_") {
                assert!(
                    variables(help).contains(key),
                    "service {name:?} sets {key}, which {bin} does not read"
                );
            }
        }
        checked.insert(bin.to_owned());
    }
    assert_eq!(
        checked.len(),
        4,
        "every binary runs in the compose stack: {checked:?}"
    );
}

#[test]
fn example_configs_use_only_flags_the_binaries_have() {
    let helps = helps();
    for (bin, _) in BINARIES {
        let path = workspace_root().join(format!("deploy/config/{bin}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        for key in table.keys() {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(
                helps[bin].contains(&flag),
                "{}: {key} is not a {bin} flag",
                path.display()
            );
        }
    }
}

#[test]
fn systemd_units_start_each_binary_with_its_config() {
    for (bin, _) in BINARIES {
        let path = workspace_root().join(format!("deploy/systemd/distcron-{bin}.service"));
        let unit = std::fs::read_to_string(&path).unwrap();
        let exec = format!("ExecStart=/usr/local/bin/{bin} --config /etc/distcron/{bin}.toml");
        assert!(unit.contains(&exec), "{}: {exec}", path.display());
        assert!(unit.contains("Restart=always"));
    }
}
