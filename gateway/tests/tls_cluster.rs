//! `scripts/cluster.sh up --tls`: the whole local cluster (etcd, MongoDB-protocol server, 2 jobsvc,
//! 2 logsvc, 3 workers, gateway; each its own process) with TLS on every hop and client
//! certificates required by etcd, jobsvc and logsvc, passes the seed-route checks of the plaintext
//! stack over HTTPS; and what lacks the CA's client certificate is refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use distcron_auth::hash_token;
use distcron_kv::{EtcdConfig, EtcdKv, EtcdTls, KvStore};
use distcron_testkit::workspace_binary;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "tls-admin-secret";
const WORKER: &str = "tls-worker-secret";

/// The cluster, brought down (and its processes stopped) when dropped.
struct TlsCluster {
    dir: tempfile::TempDir,
    base: u16,
    https: reqwest::Client,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl TlsCluster {
    fn script(&self, verb: &str) -> std::process::Output {
        let bin_dir = workspace_binary("distcron-gateway", "gateway")
            .parent()
            .unwrap()
            .to_owned();
        for (package, bin) in [
            ("distcron-jobsvc", "jobsvc"),
            ("distcron-logsvc", "logsvc"),
            ("distcron-worker", "worker"),
            ("distcron-testkit", "distcron-dev-certs"),
        ] {
            workspace_binary(package, bin);
        }
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/cluster.sh")).arg(verb);
        if verb == "up" {
            cmd.arg("--tls");
        }
        cmd.env("CLUSTER_DIR", self.dir.path())
            .env("PORT_BASE", self.base.to_string())
            .env("BIN_DIR", bin_dir)
            .env(
                "DISTCRON_TOKENS",
                format!(
                    "boss:admin:{},worker-*:worker:{}",
                    hash_token(ADMIN),
                    hash_token(WORKER)
                ),
            )
            .env("DISTCRON_TOKEN", WORKER)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn up() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // cluster.sh's ports are PORT_BASE + offsets up to 717, below the ephemeral range where
        // the other tests' servers take free ports.
        let base = 20_000 + u16::try_from(std::process::id() % 90).unwrap() * 100;
        let mut cluster = Self {
            dir,
            base,
            https: reqwest::Client::new(),
        };
        let out = cluster.script("up");
        assert!(
            out.status.success(),
            "cluster.sh up --tls failed: {}\n(logs in {})",
            String::from_utf8_lossy(&out.stderr),
            cluster.dir.path().display()
        );
        let ca = std::fs::read(cluster.tls("ca.pem")).unwrap();
        cluster.https = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        cluster
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.dir.path().join("tls").join(file)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.base + 70)
    }

    /// The JSON answer to `request`, sent with the admin token.
    async fn json(request: reqwest::RequestBuilder) -> Value {
        request
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        Self::json(self.https.get(self.url(path))).await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Value {
        Self::json(self.https.post(self.url(path)).form(form)).await
    }

    /// Polls `path` (seed envelope) until `check` holds for its `data`.
    async fn wait_data(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..150 {
            let body = self.get(path).await;
            if check(&body["data"]) {
                return body["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{path} never satisfied the check (logs in {})",
            self.dir.path().display()
        );
    }
}

#[tokio::test]
async fn a_cluster_with_tls_and_client_certificates_on_every_hop_works_end_to_end() {
    let c = TlsCluster::up();

    // Save, run (output kept), kill and list workers, through the seed's routes over HTTPS.
    let job = json!({"name": "tls-hello", "command": "echo over-tls", "cronExpr": "* * * * * * *"})
        .to_string();
    let saved = c.post_form("/job/save", &[("job", job.as_str())]).await;
    assert_eq!(saved["errno"], 0, "{saved}");
    let logs = c
        .wait_data("/job/log?name=tls-hello&skip=0&limit=5", |d| {
            d.as_array()
                .is_some_and(|a| a.iter().any(|r| r["status"] == "succeeded"))
        })
        .await;
    let done = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "succeeded")
        .unwrap();
    assert_eq!(done["output"], "over-tls\n");
    let sleeper =
        json!({"name": "tls-sleeper", "command": "sleep 3052", "cronExpr": "0 0 1 1 * *"})
            .to_string();
    assert_eq!(
        c.post_form("/job/save", &[("job", sleeper.as_str())]).await["errno"],
        0
    );
    let triggered = c
        .https
        .post(c.url("/api/v1/jobs/tls-sleeper/trigger"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(triggered.status(), StatusCode::ACCEPTED);
    c.wait_data("/job/log?name=tls-sleeper", |d| {
        d.as_array()
            .is_some_and(|a| a.iter().any(|r| r["status"] == "running"))
    })
    .await;
    assert_eq!(
        c.post_form("/job/kill", &[("name", "tls-sleeper")]).await["errno"],
        0
    );
    c.wait_data("/job/log?name=tls-sleeper", |d| {
        d.as_array()
            .is_some_and(|a| a.iter().any(|r| r["status"] == "killed"))
    })
    .await;
    let workers = c
        .wait_data("/worker/list", |d| {
            d.as_array().is_some_and(|a| a.len() == 3)
        })
        .await;
    assert_eq!(workers.as_array().unwrap().len(), 3);

    // HTTPS answers carry HSTS; the console's session cookie is __Host- and Secure.
    let session = c
        .https
        .post(c.url("/api/v1/session"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    assert_eq!(
        session.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let cookie = session.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-distcron_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/job/list", c.base + 70))
        .bearer_auth(ADMIN)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // jobsvc requires a client certificate of the CA.
    let jobsvc = format!("https://127.0.0.1:{}", c.base + 71);
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(c.tls("ca.pem")).unwrap());
    let node = tonic::transport::Identity::from_pem(
        std::fs::read(c.tls("node.pem")).unwrap(),
        std::fs::read(c.tls("node-key.pem")).unwrap(),
    );
    let health = |config: tonic::transport::ClientTlsConfig| {
        let jobsvc = jobsvc.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(jobsvc)
                .unwrap()
                .tls_config(config)
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let with_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(node);
    health(with_cert)
        .await
        .expect("jobsvc serves a client of the CA");
    let without = tonic::transport::ClientTlsConfig::new().ca_certificate(ca);
    assert!(
        health(without).await.is_err(),
        "jobsvc served a client without a certificate"
    );

    // etcd, too, requires one: the same CA without the client certificate cannot read.
    let etcd_url = format!("https://127.0.0.1:{}", c.base + 379);
    let mut no_cert = EtcdConfig::new([etcd_url.clone()]);
    no_cert.max_retries = 0;
    no_cert.tls = Some(EtcdTls {
        ca: c.tls("ca.pem"),
        identity: None,
    });
    let refused = match EtcdKv::connect(no_cert).await {
        Ok(kv) => kv.get("/cron/").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "etcd served a client without a certificate");
    let mut with_cert = EtcdConfig::new([etcd_url]);
    with_cert.tls = Some(EtcdTls {
        ca: c.tls("ca.pem"),
        identity: Some((c.tls("node.pem"), c.tls("node-key.pem"))),
    });
    let kv = EtcdKv::connect(with_cert).await.unwrap();
    // The etcd client reloads its TLS files: with a CA file that does not verify etcd it cannot
    // read; once the right CA is written over that file, it can, without a new client.
    let other_ca = distcron_testkit::TestCa::new(&c.dir.path().join("other-ca"), "other").unwrap();
    let live_ca = c.dir.path().join("live-ca.pem");
    std::fs::copy(other_ca.ca_pem(), &live_ca).unwrap();
    let mut reloading = EtcdConfig::new([format!("https://127.0.0.1:{}", c.base + 379)]);
    reloading.max_retries = 0;
    reloading.tls = Some(EtcdTls {
        ca: live_ca.clone(),
        identity: Some((c.tls("node.pem"), c.tls("node-key.pem"))),
    });
    let reloading = EtcdKv::connect(reloading).await.unwrap();
    assert!(
        reloading.get("/cron/").await.is_err(),
        "a wrong CA verified etcd"
    );
    std::fs::copy(c.tls("ca.pem"), &live_ca).unwrap();
    let mut reads = false;
    for _ in 0..40 {
        if reloading.get("/cron/").await.is_ok() {
            reads = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(reads, "the etcd client never took the replaced CA file");
    // Every service registered itself with an https:// address.
    let registrations = distcron_kv::list_prefix(&kv, "/cron/services/")
        .await
        .unwrap()
        .0;
    assert_eq!(registrations.len(), 4, "2 jobsvc + 2 logsvc");
    for r in registrations {
        let value = String::from_utf8(r.value).unwrap();
        assert!(value.contains("\"addr\":\"https://"), "{value}");
    }
}
