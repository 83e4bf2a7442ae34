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

/// The compose file as `docker-compose config` resolves it (validated on the way).
fn compose_config() -> serde_yaml::Value {
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
    serde_yaml::from_slice(&out.stdout).unwrap()
}

/// The services of the compose file that run our image (the others, etcd and mongo, do not).
fn distcron_services(config: &serde_yaml::Value) -> Vec<(&str, &serde_yaml::Value)> {
    config["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, service)| service["image"].as_str() == Some("distcron:dev"))
        .map(|(name, service)| (name.as_str().unwrap(), service))
        .collect()
}

#[test]
fn compose_validates_and_sets_only_variables_the_binaries_read() {
    let config = compose_config();
    let helps = helps();
    let mut checked = BTreeSet::new();
    for (name, service) in distcron_services(&config) {
        let bin = service["command"][0].as_str().unwrap_or_default();
        let help = helps
            .get(bin)
            .unwrap_or_else(|| panic!("{name:?} runs unknown binary {bin:?}"));
        let mut set = 0;
        for (key, _) in service["environment"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap();
            if key.starts_with("DISTCRON_") {
                assert!(
                    variables(help).contains(key),
                    "service {name:?} sets {key}, which {bin} does not read"
                );
                set += 1;
            }
        }
        assert!(
            set > 0,
            "service {name:?}: no DISTCRON_ variable found to check in {:?}",
            service["environment"]
        );
        checked.insert(bin.to_owned());
    }
    assert_eq!(
        checked.len(),
        4,
        "every binary runs in the compose stack: {checked:?}"
    );
}

/// The final stage of `deploy/Dockerfile` (what runs), its continuation lines joined.
fn runtime_stage() -> String {
    let text = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let start = joined.rfind("\nFROM ").expect("a FROM line");
    joined[start..].to_owned()
}

/// The directories the runtime stage creates owned by `distcron` (`install -d -o distcron …`).
fn directories_owned_by_distcron(stage: &str) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for command in stage.split(['\n', ';']).flat_map(|l| l.split("&&")) {
        let mut words = command.split_whitespace();
        if !words.any(|w| w == "install") {
            continue;
        }
        let (mut directory, mut owner, mut paths) = (false, None, Vec::new());
        while let Some(word) = words.next() {
            match word {
                "-d" => directory = true,
                "-o" | "-g" | "-m" => {
                    let value = words.next();
                    if word == "-o" {
                        owner = value;
                    }
                }
                path if path.starts_with('/') => paths.push(path.to_owned()),
                _ => {}
            }
        }
        if directory && owner == Some("distcron") {
            dirs.extend(paths);
        }
    }
    dirs
}

#[test]
fn the_image_creates_every_directory_compose_mounts_owned_by_the_user_it_runs_as() {
    // A named volume mounted on a directory the image lacks is created owned by root, and the
    // services run as distcron: the workers then cannot write their data dir (issue 27).
    let stage = runtime_stage();
    assert!(
        stage.lines().any(|l| l.trim() == "USER distcron"),
        "the image runs as distcron"
    );
    let owned = directories_owned_by_distcron(&stage);
    let config = compose_config();
    let (mut mounts, mut data_dirs) = (Vec::new(), 0);
    for (name, service) in distcron_services(&config) {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let target = match volume {
                serde_yaml::Value::String(spec) => spec.split(':').nth(1).unwrap().to_owned(),
                other => other["target"].as_str().unwrap().to_owned(),
            };
            assert!(
                owned.contains(&target),
                "service {name:?} mounts a volume on {target}, which deploy/Dockerfile does not \
                 create owned by distcron (`install -d -o distcron -g distcron {target}`); it has {owned:?}"
            );
            mounts.push(target);
        }
        if let Some(dir) = service["environment"]["DISTCRON_WORKER_DATA_DIR"].as_str() {
            assert!(
                mounts.iter().any(|m| m == dir),
                "service {name:?}: its data dir {dir} is on a volume"
            );
            data_dirs += 1;
        }
    }
    assert!(
        mounts.len() >= 2,
        "the workers' data volumes were checked: {mounts:?}"
    );
    assert!(
        data_dirs >= 2,
        "the workers' data dirs were checked: {data_dirs}"
    );
}

#[test]
fn the_image_layout_check_sees_a_directory_the_dockerfile_does_not_create() {
    let today = "\nFROM debian:bookworm-slim\nRUN useradd --system --create-home \
                 --home-dir /var/lib/distcron distcron\nUSER distcron\n";
    assert!(directories_owned_by_distcron(today).is_empty());
    let fixed = "\nFROM x\nRUN apt-get update && install -d -o distcron -g distcron -m 0700 \
                 /var/lib/distcron/worker /srv/a; install -d /root-owned\n";
    assert_eq!(
        directories_owned_by_distcron(fixed),
        BTreeSet::from(["/var/lib/distcron/worker".to_owned(), "/srv/a".to_owned()])
    );
}

#[test]
fn example_configs_use_only_flags_the_binaries_have() {
    let helps = helps();
    for (bin, _) in BINARIES {
        let path = workspace_root().join(format!("deploy/config/{bin}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        assert!(!table.is_empty(), "{} sets no flag", path.display());
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

#[test]
fn the_cluster_script_brings_up_three_workers_and_stops_exactly_its_processes() {
    let bin_dir = workspace_binary("distcron-worker", "worker")
        .parent()
        .unwrap()
        .to_owned();
    for (bin, package) in BINARIES {
        workspace_binary(package, bin);
    }
    let dir = tempfile::tempdir().unwrap();
    // The script's ports run from base+70 to base+717; they stay below the kernel's ephemeral
    // range (from 32768), where an outgoing connection's local end could take one first.
    let base = 20_000 + (std::process::id() % 120) * 100;
    let script = |action: &str| {
        Command::new("scripts/cluster.sh")
            .arg(action)
            .current_dir(workspace_root())
            .env("CLUSTER_DIR", dir.path())
            .env("PORT_BASE", base.to_string())
            .env("BIN_DIR", &bin_dir)
            .output()
            .unwrap()
    };
    let up = script("up");
    let pids: Vec<i32> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    let gateway = u16::try_from(base + 70).unwrap();
    let listed = || -> Option<serde_json::Value> {
        let response = distcron_testkit::http_get(gateway, "/worker/list").ok()?;
        serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
    };
    let mut workers = serde_json::Value::Null;
    if up.status.success() {
        for _ in 0..100 {
            workers = listed().unwrap_or_default();
            if workers["data"].as_array().is_some_and(|a| a.len() >= 3) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let status = String::from_utf8_lossy(&script("status").stdout).into_owned();
    let down = script("down");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(down.status.success());
    assert_eq!(
        pids.len(),
        10,
        "etcd, mongo, 2 jobsvc, 2 logsvc, 3 workers, gateway: {status}"
    );
    assert!(status.matches("running").count() == 10, "{status}");
    assert_eq!(workers["errno"], 0, "{workers}");
    assert_eq!(
        workers["data"].as_array().map(Vec::len),
        Some(3),
        "{workers}"
    );
    for pid in pids {
        #[allow(unsafe_code)]
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "pid {pid} still runs after down");
    }
}
