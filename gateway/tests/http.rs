//! The gateway end to end: real etcd, Mongo-wire server, jobsvc, logsvc, a worker process, and the
//! gateway, driven over HTTP.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use distcron_auth::hash_token;
use distcron_core::Keys;
use distcron_discovery::{balanced_channel, Endpoints};
use distcron_gateway::{router, AppState, Backends, Limits};
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_runstore::{MongoConfig, MongoRunStore, OutputCap};
use distcron_server::Instance;
use distcron_testkit::{shared_etcd, shared_mongo, unique_name, workspace_binary};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-secret";
const OPERATOR: &str = "operator-secret";
const VIEWER: &str = "viewer-secret";
const WORKER: &str = "worker-secret";
/// The token of another worker, `other-worker`.
const OTHER_WORKER: &str = "other-worker-secret";
/// The test gateway's header-read timeout (short, so the slow-client test is quick).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

struct Stack {
    store: Arc<dyn KvStore>,
    keys: Keys,
    url: String,
    http: reqwest::Client,
    jobsvcs: Vec<(CancellationToken, JoinHandle<()>)>,
    worker: Option<Child>,
    dirs: tempfile::TempDir,
    stop: CancellationToken,
    /// The tokens every service accepts (empty: authentication off).
    tokens: Arc<distcron_auth::TokenStore>,
    /// jobsvc addresses.
    jobsvc_addrs: Vec<String>,
    /// The in-process logsvc's address.
    logsvc_addr: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.stop.cancel();
    }
}

impl Stack {
    async fn start(with_auth: bool) -> Self {
        let endpoints = shared_etcd().endpoints();
        let store: Arc<dyn KvStore> =
            Arc::new(EtcdKv::connect(EtcdConfig::new(endpoints)).await.unwrap());
        let keys = Keys::new(&format!("/{}/", unique_name("gw")));
        let tokens = if with_auth {
            distcron_auth::TokenStore::parse(&format!(
                "boss:admin:{},oncall:operator:{},dash:viewer:{},gw-worker:worker:{},other-worker:worker:{}",
                hash_token(ADMIN),
                hash_token(OPERATOR),
                hash_token(VIEWER),
                hash_token(WORKER),
                hash_token(OTHER_WORKER)
            ))
            .unwrap()
        } else {
            distcron_auth::TokenStore::default()
        };
        let stop = CancellationToken::new();
        let mut stack = Self {
            store,
            keys,
            url: String::new(),
            http: reqwest::Client::new(),
            jobsvcs: Vec::new(),
            worker: None,
            dirs: tempfile::tempdir().unwrap(),
            stop,
            tokens: Arc::new(tokens),
            jobsvc_addrs: Vec::new(),
            logsvc_addr: String::new(),
        };
        stack.start_jobsvc().await;
        stack.start_logsvc().await;
        let discovered = |service: &str| Endpoints::Discovered {
            store: stack.store.clone(),
            prefix: stack.keys.services(service),
        };
        let jobs = balanced_channel(discovered("jobsvc"), None, stack.stop.clone())
            .await
            .unwrap();
        let logs = balanced_channel(discovered("logsvc"), None, stack.stop.clone())
            .await
            .unwrap();
        let state = AppState {
            backends: Backends::new(jobs, logs),
            tokens: stack.tokens.clone(),
            sessions: Arc::default(),
            streams: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        stack.url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(state, Limits::default());
        tokio::spawn(distcron_gateway::serve(
            app,
            listener,
            stack.stop.clone(),
            distcron_gateway::ConnectionLimits {
                header_read_timeout: HEADER_READ_TIMEOUT,
                ..Default::default()
            },
            None,
        ));
        stack
    }

    async fn start_jobsvc(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        self.jobsvc_addrs.push(addr.clone());
        let instance = Instance {
            id: unique_name("jobsvc"),
            advertise: addr,
            registration_ttl: Duration::from_secs(3),
            tokens: self.tokens.clone(),
            tls: None,
        };
        let stop = self.stop.child_token();
        let task = tokio::spawn(distcron_jobsvc_serve(
            self.store.clone(),
            self.keys.clone(),
            instance,
            listener,
            stop.clone(),
        ));
        self.jobsvcs.push((stop, task));
    }

    async fn start_logsvc(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        self.logsvc_addr = addr.clone();
        let mut config = MongoConfig::new(shared_mongo().uri());
        config.database = unique_name("gwruns");
        let runs = Arc::new(MongoRunStore::connect(&config).await.unwrap());
        let storage = distcron_logsvc::Storage {
            runs,
            retention_days: 1,
            cap: OutputCap { bytes: 64 * 1024 },
        };
        let instance = Instance {
            id: unique_name("logsvc"),
            advertise: addr,
            registration_ttl: Duration::from_secs(3),
            tokens: self.tokens.clone(),
            tls: None,
        };
        let (store, keys, stop) = (self.store.clone(), self.keys.clone(), self.stop.clone());
        tokio::spawn(async move {
            distcron_logsvc::serve(storage, store, keys, instance, listener, stop)
                .await
                .unwrap();
        });
    }

    /// Starts a logsvc process (on the same run database as the in-process one), registered in
    /// etcd; returns it for the test to kill.
    fn start_logsvc_process(&self, database: &str) -> Child {
        let log = std::fs::File::create(
            self.dirs
                .path()
                .join(format!("{}.log", unique_name("logsvc"))),
        )
        .unwrap();
        Command::new(workspace_binary("distcron-logsvc", "logsvc"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--etcd-endpoints", &shared_etcd().endpoints().join(",")])
            .args(["--key-prefix", self.keys.prefix()])
            .args([
                "--mongo-uri",
                &shared_mongo().uri(),
                "--mongo-database",
                database,
            ])
            .args(["--registration-ttl", "3s"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn start_worker(&mut self) {
        let data_dir = self.dirs.path().join("worker");
        let log = std::fs::File::create(self.dirs.path().join("worker.log")).unwrap();
        let child = Command::new(workspace_binary("distcron-worker", "worker"))
            .args([
                "--worker-id",
                "gw-worker",
                "--key-prefix",
                self.keys.prefix(),
            ])
            .args(["--etcd-endpoints", &shared_etcd().endpoints().join(",")])
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--session-ttl",
                "2s",
                "--kill-grace",
                "1s",
                "--log-batch-delay",
                "50ms",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--token", WORKER])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.worker = Some(child);
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        with_token(self.http.get(format!("{}{path}", self.url)), token)
    }

    fn post(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        with_token(self.http.post(format!("{}{path}", self.url)), token)
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        with_token(
            self.http.request(method, format!("{}{path}", self.url)),
            token,
        )
    }

    /// Polls `path` (seed envelope) until `check` holds for its `data`.
    async fn wait_data(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let body: Value = self.get(path, Some(VIEWER)).value().await;
            if check(&body["data"]) {
                return body["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{path} never satisfied the check");
    }
}

async fn distcron_jobsvc_serve(
    store: Arc<dyn KvStore>,
    keys: Keys,
    instance: Instance,
    listener: TcpListener,
    stop: CancellationToken,
) {
    distcron_jobsvc::serve(store, keys, instance, listener, stop)
        .await
        .unwrap();
}

/// Sending a request and reading its answer, for brevity.
trait Call {
    /// The JSON body.
    async fn value(self) -> Value;
    /// The status.
    async fn code(self) -> StatusCode;
}

impl Call for reqwest::RequestBuilder {
    async fn value(self) -> Value {
        self.send().await.unwrap().json().await.unwrap()
    }

    async fn code(self) -> StatusCode {
        self.send().await.unwrap().status()
    }
}

fn with_token(b: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => b.bearer_auth(t),
        None => b,
    }
}

#[tokio::test]
async fn seed_routes_work_end_to_end() {
    let mut s = Stack::start(true).await;
    s.start_worker();
    // Save through the seed's form post: the seed answered the previous job (null when new).
    let job =
        json!({"name": "hello", "command": "echo hi", "cronExpr": "* * * * * * *"}).to_string();
    let r = s
        .post("/job/save", Some(ADMIN))
        .form(&[("job", job.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (&body["errno"], &body["msg"], &body["data"]),
        (&json!(0), &json!("success"), &Value::Null),
        "{body}"
    );
    assert_eq!(body["stored"]["cronExpr"], "* * * * * * *", "{body}");
    let list = s
        .wait_data("/job/list", |d| d.as_array().is_some_and(|a| !a.is_empty()))
        .await;
    assert_eq!(list[0]["name"], "hello");
    assert_eq!(list[0]["cronExpr"], "* * * * * * *");
    // Six fields are read as the seed read them (min hour dom month dow year) and stored as the
    // seven-field equivalent, which the answer and every read show.
    let every_5m =
        json!({"name": "every-5m", "command": "true", "cronExpr": "*/5 * * * * *"}).to_string();
    let r: Value = s
        .post("/job/save", Some(ADMIN))
        .form(&[("job", every_5m.as_str())])
        .value()
        .await;
    assert_eq!(r["stored"]["cronExpr"], "0 */5 * * * * *", "{r}");
    let shown: Value = s.get("/api/v1/jobs/every-5m", Some(VIEWER)).value().await;
    assert_eq!(shown["cronExpr"], "0 */5 * * * * *", "{shown}");
    // Runs appear in the seed's log route within seconds, with the seed's fields.
    let logs = s
        .wait_data("/job/log?name=hello&skip=0&limit=5", |d| {
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
    assert_eq!(done["output"], "hi\n");
    assert_eq!(done["err"], "");
    for field in ["planTime", "scheduleTime", "startTime", "endTime"] {
        assert!(done[field].as_i64().unwrap() > 0, "{field}");
    }
    // Bad values of skip/limit are read as the seed did; limit is bounded.
    let r: Value = s
        .get("/job/log?name=hello&skip=x&limit=1000000", Some(VIEWER))
        .value()
        .await;
    assert_eq!(r["errno"], 0);
    // Kill a sleeping run through /job/kill.
    let sleeper =
        json!({"name": "sleeper", "command": "sleep 3051", "cronExpr": "0 0 1 1 * *"}).to_string();
    s.post("/job/save", Some(ADMIN))
        .form(&[("job", sleeper.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.post("/api/v1/jobs/sleeper/trigger", Some(OPERATOR))
            .code()
            .await,
        StatusCode::ACCEPTED
    );
    s.wait_data("/job/log?name=sleeper", |d| {
        d.as_array()
            .is_some_and(|a| a.iter().any(|r| r["status"] == "running"))
    })
    .await;
    let r: Value = s
        .post("/job/kill", Some(OPERATOR))
        .form(&[("name", "sleeper")])
        .value()
        .await;
    assert_eq!(r, json!({"errno": 0, "msg": "success", "data": null}));
    let killed = s
        .wait_data("/job/log?name=sleeper", |d| {
            d.as_array()
                .is_some_and(|a| a.iter().any(|r| r["status"] == "killed"))
        })
        .await;
    assert_eq!(killed[0]["status"], "killed");
    // Workers are listed as the seed did: strings.
    let workers = s
        .wait_data("/worker/list", |d| {
            d.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert!(workers[0].is_string());
    // Validation errors keep the envelope and name the field; wrong methods get 405.
    let bad = json!({"name": "bad", "command": "true", "cronExpr": "61 * * * * *"}).to_string();
    let r: Value = s
        .post("/job/save", Some(ADMIN))
        .form(&[("job", bad.as_str())])
        .value()
        .await;
    assert_eq!(r["errno"], -1);
    assert!(r["msg"].as_str().unwrap().contains("cronExpr"), "{r}");
    let r: Value = s
        .post("/job/save", Some(ADMIN))
        .form(&[("job", "not json")])
        .value()
        .await;
    assert_eq!(r["errno"], -1);
    assert!(r["msg"].as_str().unwrap().starts_with("job:"), "{r}");
    assert_eq!(
        s.get("/job/save", Some(ADMIN)).code().await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Deleting answers the deleted job, then null.
    let r: Value = s
        .post("/job/delete", Some(ADMIN))
        .form(&[("name", "hello")])
        .value()
        .await;
    assert_eq!(r["data"]["name"], "hello");
    let r: Value = s
        .post("/job/delete", Some(ADMIN))
        .form(&[("name", "hello")])
        .value()
        .await;
    assert_eq!(r, json!({"errno": 0, "msg": "success", "data": null}));
}

#[tokio::test]
async fn api_v1_speaks_resources_and_status_codes() {
    let mut s = Stack::start(true).await;
    s.start_worker();
    let job = json!({"name": "api-job", "command": "echo api", "cronExpr": "0 0 0 1 1 *", "timeZone": "Europe/Berlin"});
    let r = s
        .post("/api/v1/jobs", Some(ADMIN))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["timeZone"], "Europe/Berlin");
    assert_eq!(created["overlapPolicy"], "forbid");
    let revision = created["revision"].as_i64().unwrap();
    // Creating it again conflicts; a stale revision conflicts; a fresh one updates.
    assert_eq!(
        s.post("/api/v1/jobs", Some(ADMIN)).json(&job).code().await,
        StatusCode::CONFLICT
    );
    let mut update = job.clone();
    update["command"] = json!("echo updated");
    update["expectedRevision"] = json!(revision + 1000);
    assert_eq!(
        s.request(reqwest::Method::PUT, "/api/v1/jobs/api-job", Some(ADMIN))
            .json(&update)
            .code()
            .await,
        StatusCode::CONFLICT
    );
    update["expectedRevision"] = json!(revision);
    assert_eq!(
        s.request(reqwest::Method::PUT, "/api/v1/jobs/api-job", Some(ADMIN))
            .json(&update)
            .code()
            .await,
        StatusCode::OK
    );
    let got: Value = s.get("/api/v1/jobs/api-job", Some(VIEWER)).value().await;
    assert_eq!(got["command"], "echo updated");
    // Bad input: 400 naming the field; nothing stored.
    let r = s
        .post("/api/v1/jobs", Some(ADMIN))
        .json(&json!({"name": "x y", "command": "true", "cronExpr": "* * * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["field"], "name", "{e}");
    // logsvc's answers to bad input name the field too (in their metadata, which is where the
    // gateway reads it).
    for (path, field) in [
        (
            "/api/v1/jobs/api-job/stats?windowSeconds=4000000000",
            "windowSeconds",
        ),
        ("/api/v1/jobs/api-job/runs?pageToken=garbage", "pageToken"),
        ("/api/v1/jobs/a%20b/runs", "jobName"),
        ("/api/v1/runs/not%20a%20run", "runId"),
    ] {
        let r = s.get(path, Some(VIEWER)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_argument", "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    assert_eq!(s.post("/api/v1/jobs", Some(ADMIN)).json(&json!({"name": "p", "command": "true", "cronExpr": "* * * * *", "overlapPolicy": "sometimes"})).code().await, StatusCode::BAD_REQUEST);
    let r = s
        .post("/api/v1/jobs", Some(ADMIN))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(
        s.get("/api/v1/jobs/p", Some(VIEWER)).code().await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/api/v1/jobs?pageSize=0", Some(VIEWER)).code().await,
        StatusCode::BAD_REQUEST
    );
    // Run now, then see the run, its output stream and the stats.
    let t: Value = s
        .post("/api/v1/jobs/api-job/trigger", Some(OPERATOR))
        .value()
        .await;
    let run_id = t["runId"].as_str().unwrap().to_owned();
    let mut run = Value::Null;
    for _ in 0..100 {
        let r = s
            .get(&format!("/api/v1/runs/{run_id}"), Some(VIEWER))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            run = r.json().await.unwrap();
            if run["status"] == "succeeded" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "updated\n");
    let sse = s
        .get(&format!("/api/v1/runs/{run_id}/output"), Some(VIEWER))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    assert!(
        text.contains("event: output") && text.contains("data: updated"),
        "{text}"
    );
    assert!(text.contains("event: end"), "{text}");
    let page: Value = s
        .get("/api/v1/jobs/api-job/runs?limit=10", Some(VIEWER))
        .value()
        .await;
    assert_eq!(page["total"], 1);
    // Lists leave output out unless asked (a page of runs at the output cap is large).
    assert_eq!(page["runs"][0]["output"], "");
    assert_eq!(page["runs"][0]["outputBytes"], 8, "{page}");
    let with: Value = s
        .get(
            "/api/v1/jobs/api-job/runs?withoutOutput=false",
            Some(VIEWER),
        )
        .value()
        .await;
    assert_eq!(with["runs"][0]["output"], "updated\n");
    assert_eq!(
        s.get("/api/v1/jobs/api-job/runs?status=weird", Some(VIEWER))
            .code()
            .await,
        StatusCode::BAD_REQUEST
    );
    let stats: Value = s
        .get("/api/v1/jobs/api-job/stats", Some(VIEWER))
        .value()
        .await;
    assert_eq!(stats["lastRun"]["runId"], run_id.as_str());
    // Disable / enable, preview, workers.
    let j: Value = s
        .post("/api/v1/jobs/api-job/disable", Some(OPERATOR))
        .value()
        .await;
    assert_eq!(j["enabled"], false);
    let j: Value = s
        .post("/api/v1/jobs/api-job/enable", Some(OPERATOR))
        .value()
        .await;
    assert_eq!(j["enabled"], true);
    let p: Value = s
        .post("/api/v1/schedule/preview", Some(VIEWER))
        .json(
            &json!({"cronExpr": "0 30 9 * * MON-FRI", "timeZone": "America/New_York", "count": 3}),
        )
        .value()
        .await;
    assert_eq!(p["fireTimesMs"].as_array().unwrap().len(), 3);
    assert_eq!(
        s.post("/api/v1/schedule/preview", Some(VIEWER))
            .json(&json!({"cronExpr": "* * 25 * * *"}))
            .code()
            .await,
        StatusCode::BAD_REQUEST
    );
    // H is hashed from the job's name (minute 29, hour 5 for this one): the preview shows the
    // concrete times; without a name it is refused, naming the field.
    let p: Value = s
        .post("/api/v1/schedule/preview", Some(VIEWER))
        .json(&json!({"cronExpr": "H H(2-5) * * *", "name": "backup.daily", "count": 2}))
        .value()
        .await;
    let times = p["fireTimes"].as_array().unwrap();
    assert_eq!(times.len(), 2, "{p}");
    assert!(
        times
            .iter()
            .all(|t| t.as_str().unwrap().ends_with("T05:29:00+00:00")),
        "{p}"
    );
    let unnamed = s
        .post("/api/v1/schedule/preview", Some(VIEWER))
        .json(&json!({"cronExpr": "H * * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unnamed.status(), StatusCode::BAD_REQUEST);
    let unnamed: Value = unnamed.json().await.unwrap();
    assert_eq!(unnamed["error"]["field"], "name", "{unnamed}");
    let w: Value = s.get("/api/v1/workers", Some(VIEWER)).value().await;
    assert_eq!(w["workers"][0]["workerId"], "gw-worker");
    // Kill with nothing running says so; delete answers the job, then 404.
    let k: Value = s
        .post("/api/v1/jobs/api-job/kill", Some(OPERATOR))
        .value()
        .await;
    assert_eq!(k["wasRunning"], false);
    assert_eq!(
        s.request(reqwest::Method::DELETE, "/api/v1/jobs/api-job", Some(ADMIN))
            .code()
            .await,
        StatusCode::OK
    );
    assert_eq!(
        s.request(reqwest::Method::DELETE, "/api/v1/jobs/api-job", Some(ADMIN))
            .code()
            .await,
        StatusCode::NOT_FOUND
    );
    // The OpenAPI document is served and lists the routes.
    let doc: Value = s.get("/api/v1/openapi.json", Some(VIEWER)).value().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/jobs/{name}/trigger"]["post"].is_object());
    // Health and readiness need no token.
    assert_eq!(s.get("/healthz", None).code().await, StatusCode::OK);
    assert_eq!(s.get("/readyz", None).code().await, StatusCode::OK);
}

#[tokio::test]
async fn every_route_checks_the_token_and_its_role() {
    let s = Stack::start(true).await;
    use reqwest::Method;
    // (method, path, least role) for every gated route.
    let routes: &[(Method, &str, &str)] = &[
        (Method::GET, "/job/list", VIEWER),
        (Method::GET, "/job/log?name=x", VIEWER),
        (Method::GET, "/worker/list", VIEWER),
        (Method::GET, "/api/v1/jobs", VIEWER),
        (Method::GET, "/api/v1/jobs/x", VIEWER),
        (Method::GET, "/api/v1/jobs/x/runs", VIEWER),
        (Method::GET, "/api/v1/jobs/x/stats", VIEWER),
        (Method::GET, "/api/v1/runs/x", VIEWER),
        (Method::GET, "/api/v1/workers", VIEWER),
        (Method::POST, "/job/kill", OPERATOR),
        (Method::POST, "/api/v1/jobs/x/trigger", OPERATOR),
        (Method::POST, "/api/v1/jobs/x/kill", OPERATOR),
        (Method::POST, "/api/v1/jobs/x/enable", OPERATOR),
        (Method::POST, "/api/v1/jobs/x/disable", OPERATOR),
        (Method::POST, "/job/save", ADMIN),
        (Method::POST, "/job/delete", ADMIN),
        (Method::POST, "/api/v1/jobs", ADMIN),
        (Method::PUT, "/api/v1/jobs/x", ADMIN),
        (Method::DELETE, "/api/v1/jobs/x", ADMIN),
    ];
    let rank = |t: &str| {
        [VIEWER, OPERATOR, ADMIN]
            .iter()
            .position(|x| *x == t)
            .unwrap()
    };
    for (method, path, least) in routes {
        let no_token = s.request(method.clone(), path, None).send().await.unwrap();
        assert_eq!(
            no_token.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert!(no_token.headers().contains_key("www-authenticate"));
        let wrong = s
            .request(method.clone(), path, Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        for token in [VIEWER, OPERATOR, ADMIN] {
            let r = s.request(method.clone(), path, Some(token)).code().await;
            if rank(token) < rank(least) {
                assert_eq!(r, StatusCode::FORBIDDEN, "{method} {path} as {token}");
            } else {
                assert!(
                    r != StatusCode::FORBIDDEN && r != StatusCode::UNAUTHORIZED,
                    "{method} {path} as {token}: {r}"
                );
            }
        }
    }
    // The console's cookie works for reads, and for changes only with X-Requested-With.
    assert_eq!(
        s.post("/api/v1/session", None)
            .json(&json!({"token": "nope"}))
            .code()
            .await,
        StatusCode::UNAUTHORIZED
    );
    let r = s
        .post("/api/v1/session", None)
        .json(&json!({"token": OPERATOR}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        s.get("/api/v1/jobs", None)
            .header("cookie", &pair)
            .code()
            .await,
        StatusCode::OK
    );
    assert_eq!(
        s.post("/job/kill", None)
            .header("cookie", &pair)
            .form(&[("name", "x")])
            .code()
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.post("/job/kill", None)
            .header("cookie", &pair)
            .header("x-requested-with", "XMLHttpRequest")
            .form(&[("name", "x")])
            .code()
            .await,
        StatusCode::OK
    );
    // The cookie holds a session id, never the token, and expires with the session.
    assert!(!cookie.contains(OPERATOR), "{cookie}");
    assert!(pair.starts_with("distcron_session="), "{pair}");
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    // The token itself is no cookie.
    assert_eq!(
        s.get("/api/v1/jobs", None)
            .header("cookie", format!("distcron_session={OPERATOR}"))
            .code()
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Logout ends the session here: the same cookie no longer works.
    let out = s
        .request(reqwest::Method::DELETE, "/api/v1/session", None)
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        s.get("/api/v1/jobs", None)
            .header("cookie", &pair)
            .code()
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Open routes: the probes. The API document needs a token like the API.
    assert_eq!(s.get("/healthz", None).code().await, StatusCode::OK);
    assert_eq!(s.get("/readyz", None).code().await, StatusCode::OK);
    assert_eq!(
        s.get("/api/v1/openapi.json", None).code().await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn requests_keep_succeeding_when_a_jobsvc_instance_dies() {
    let mut s = Stack::start(false).await;
    s.start_jobsvc().await;
    // Both instances registered and in the balancer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut failures = Vec::new();
    for i in 0..60 {
        if i == 10 {
            // Killed, not shut down: its registration lingers until the lease expires.
            let (_, task) = s.jobsvcs.remove(0);
            task.abort();
        }
        let r = s.get("/api/v1/jobs", None).send().await.unwrap();
        if r.status() != StatusCode::OK {
            failures.push((i, r.status(), r.text().await.unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let s = Stack::start(false).await;
    let huge = "x".repeat(2 * 1024 * 1024);
    assert_eq!(
        s.post("/job/save", None)
            .form(&[("job", huge.as_str())])
            .code()
            .await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn bad_bodies_get_the_error_envelope_with_the_field_and_a_short_quote() {
    let s = Stack::start(false).await;
    let post = |body: reqwest::Body| {
        s.post("/api/v1/jobs", None)
            .header("content-type", "application/json")
            .body(body)
    };
    let job = |extra: Value| {
        let mut j =
            serde_json::json!({"name": "bad-body", "command": "true", "cronExpr": "0 0 0 1 1 *"});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        reqwest::Body::from(j.to_string())
    };
    // (body, status, field): wrong types, negative numbers, null and array bodies, huge inputs
    // that the error would echo.
    let cases: Vec<(reqwest::Body, StatusCode, &str)> = vec![
        (
            job(serde_json::json!({"timeoutSeconds": -1})),
            StatusCode::BAD_REQUEST,
            "timeoutSeconds",
        ),
        (
            job(serde_json::json!({"name": 5})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            job(serde_json::json!({"enabled": "yes"})),
            StatusCode::BAD_REQUEST,
            "enabled",
        ),
        ("null".into(), StatusCode::BAD_REQUEST, "body"),
        ("[]".into(), StatusCode::BAD_REQUEST, "body"),
        ("{\"name\":".into(), StatusCode::BAD_REQUEST, "name"),
        ("{".into(), StatusCode::BAD_REQUEST, "body"),
        (
            job(serde_json::json!({"timeZone": "Z".repeat(16 * 1024)})),
            StatusCode::BAD_REQUEST,
            "timeZone",
        ),
        (
            job(serde_json::json!({"cronExpr": "1 ".repeat(150 * 1024)})),
            StatusCode::BAD_REQUEST,
            "cronExpr",
        ),
        (
            job(serde_json::json!({"env": {"BAD KEY": "v"}})),
            StatusCode::BAD_REQUEST,
            "env.BAD KEY",
        ),
        (
            "x".repeat(2 * 1024 * 1024).into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    let mut checked = 0;
    for (body, want, field) in cases {
        let resp = post(body).send().await.unwrap();
        assert_eq!(resp.status(), want, "{field}");
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{field}: not JSON: {e}"));
        let error = &v["error"];
        assert!(error["code"].is_string(), "{field}: {v}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.len() <= 1_000,
            "{field}: a {} byte message",
            message.len()
        );
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{v}");
        }
        checked += 1;
    }
    assert_eq!(checked, 11);
    // A 20 KB env name that is not valid: the field names it, clipped.
    let resp = post(job(
        serde_json::json!({"env": {format!("{} x", "K".repeat(20 * 1024)): "v"}}),
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    let field = v["error"]["field"].as_str().unwrap();
    assert!(field.starts_with("env.KKK") && field.len() < 300, "{field}");
    // Not JSON at all.
    let resp = s
        .post("/api/v1/jobs", None)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn clients_that_send_nothing_are_cut_off_and_others_still_served() {
    use tokio::io::AsyncReadExt;
    let s = Stack::start(false).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Served meanwhile.
    assert_eq!(s.get("/healthz", None).code().await, StatusCode::OK);
    // Each silent connection is closed once the header-read timeout has passed.
    let deadline = HEADER_READ_TIMEOUT * 3;
    for c in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(deadline, c.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open after {deadline:?}"
        );
    }
}

#[tokio::test]
async fn live_output_streams_are_capped_per_token() {
    let mut s = Stack::start(true).await;
    s.start_worker();
    let job = json!({"name": "tail-cap", "command": "sleep 30", "cronExpr": "0 0 0 1 1 *"});
    assert_eq!(
        s.post("/api/v1/jobs", Some(ADMIN)).json(&job).code().await,
        StatusCode::CREATED
    );
    let triggered: Value = s
        .post("/api/v1/jobs/tail-cap/trigger", Some(OPERATOR))
        .value()
        .await;
    let run_id = triggered["runId"].as_str().unwrap().to_owned();
    let mut started = false;
    for _ in 0..100 {
        let run: Value = s
            .get(&format!("/api/v1/runs/{run_id}"), Some(VIEWER))
            .value()
            .await;
        if run["status"] == "running" {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started, "the run never started");
    let output = format!("/api/v1/runs/{run_id}/output");
    let mut open = Vec::new();
    for i in 0..16 {
        let r = s.get(&output, Some(VIEWER)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "stream {i}");
        open.push(r);
    }
    // The 17th of one token is refused, in the envelope; another token still gets one.
    let over = s.get(&output, Some(VIEWER)).send().await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = over.json().await.unwrap();
    assert_eq!(v["error"]["code"], "resource_exhausted", "{v}");
    let other = s.get(&output, Some(OPERATOR)).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    drop(open);
    assert_eq!(
        s.post("/api/v1/jobs/tail-cap/kill", Some(OPERATOR))
            .code()
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn grpc_services_enforce_the_same_tokens() {
    use distcron_proto::jobs::v1 as jobs;
    use distcron_proto::jobs::v1::job_service_client::JobServiceClient;
    use distcron_proto::logs::v1 as logs;
    use distcron_proto::logs::v1::log_service_client::LogServiceClient;
    let s = Stack::start(true).await;
    let mut client = JobServiceClient::connect(s.jobsvc_addrs[0].clone())
        .await
        .unwrap();
    let call = |token: Option<&str>| {
        let job = jobs::Job {
            name: "grpc-auth".into(),
            command: "true".into(),
            cron_expr: "0 0 0 1 1 *".into(),
            ..Default::default()
        };
        let mut r = tonic::Request::new(jobs::SaveJobRequest {
            job: Some(job),
            expected_revision: None,
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    fn code<T>(r: Result<T, tonic::Status>) -> Option<tonic::Code> {
        r.err().map(|s| s.code())
    }
    assert_eq!(
        code(client.save_job(call(None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(client.save_job(call(Some("guess"))).await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(client.save_job(call(Some(OPERATOR))).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(code(client.save_job(call(Some(ADMIN))).await), None);
    // A worker's token does nothing but ship run events; nobody else's token may.
    assert_eq!(
        code(client.save_job(call(Some(WORKER))).await),
        Some(tonic::Code::PermissionDenied)
    );
    let mut logs = LogServiceClient::connect(s.logsvc_addr.clone())
        .await
        .unwrap();
    let append = |token: &str| {
        let mut r = tonic::Request::new(logs::AppendRunEventsRequest { events: Vec::new() });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    for person in [VIEWER, OPERATOR, ADMIN] {
        assert_eq!(
            code(logs.append_run_events(append(person)).await),
            Some(tonic::Code::PermissionDenied),
            "{person}"
        );
    }
    assert_eq!(code(logs.append_run_events(append(WORKER)).await), None);
    let mut list = tonic::Request::new(logs::ListRunsRequest {
        job_name: "grpc-auth".into(),
        ..Default::default()
    });
    list.metadata_mut()
        .insert("authorization", format!("Bearer {WORKER}").parse().unwrap());
    assert_eq!(
        code(logs.list_runs(list).await),
        Some(tonic::Code::PermissionDenied)
    );
    // Health checks need no token.
    let channel = tonic::transport::Channel::from_shared(s.jobsvc_addrs[0].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(status.is_ok(), "{status:?}");
}

#[tokio::test]
async fn every_route_needs_a_token_and_a_worker_token_opens_none() {
    let s = Stack::start(true).await;
    let doc: Value = s.get("/api/v1/openapi.json", Some(VIEWER)).value().await;
    // Every route of the API document, plus the seed's routes (not in the document).
    let mut routes: Vec<(reqwest::Method, String)> = [
        ("GET", "/job/list"),
        ("GET", "/job/log"),
        ("POST", "/job/log"),
        ("GET", "/worker/list"),
        ("POST", "/job/kill"),
        ("POST", "/job/save"),
        ("POST", "/job/delete"),
    ]
    .into_iter()
    .map(|(m, p)| (m.parse().unwrap(), p.to_owned()))
    .collect();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path.replace("{name}", "walk").replace("{run_id}", "walk");
            routes.push((method.to_uppercase().parse().unwrap(), concrete));
        }
    }
    assert!(routes.len() > 20, "{} routes", routes.len());
    // Only the console's login takes no token: it is how one is presented.
    let open = ["/api/v1/session"];
    let mut checked = 0;
    for (method, path) in &routes {
        if open.contains(&path.as_str()) {
            continue;
        }
        let anonymous = s.request(method.clone(), path, None).code().await;
        assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
        let worker = s.request(method.clone(), path, Some(WORKER)).code().await;
        assert_eq!(
            worker,
            StatusCode::FORBIDDEN,
            "{method} {path} with a worker token"
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} routes checked");
    // Nor does a worker token open a console session.
    let session = s
        .post("/api/v1/session", None)
        .json(&serde_json::json!({ "token": WORKER }))
        .code()
        .await;
    assert_eq!(session, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let bin = distcron_testkit::workspace_root().join(".venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis missing: run scripts/test.sh (installs tools/requirements-test.txt)"
    );
    // No worker: fuzzed jobs must not run commands on this machine.
    let s = Stack::start(true).await;
    let url = s.url.clone();
    let work = s.dirs.path().to_owned();
    // The document needs a token too: hand schemathesis a copy.
    let doc = s.get("/api/v1/openapi.json", Some(VIEWER)).value().await;
    let doc_path = work.join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("run")
            .arg(&doc_path)
            .args(["--url", &url])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--max-examples", "15", "--seed", "1"])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            .current_dir(work)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[test]
fn the_binary_refuses_an_open_non_loopback_listener_and_hashes_tokens() {
    let gateway = env!("CARGO_BIN_EXE_gateway");
    let out = Command::new(gateway)
        .args(["--listen", "0.0.0.0:0"])
        .args(["--jobsvc-endpoints", "http://127.0.0.1:1"])
        .args(["--logsvc-endpoints", "http://127.0.0.1:1"])
        .env_remove("DISTCRON_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve"), "{err}");
    let out = Command::new(gateway)
        .args(["hash-token", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        hash_token("s3cret")
    );
}

#[tokio::test]
async fn the_console_opens_without_a_login_when_authentication_is_off() {
    let tests = distcron_testkit::workspace_root().join("console-tests");
    assert!(
        tests.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium missing: run scripts/test.sh (installs both)"
    );
    let s = Stack::start(false).await;
    let mode = s.get("/api/v1/session", None).value().await;
    assert_eq!(mode["authentication"], false);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-no-auth");
    std::fs::create_dir_all(&shots).unwrap();
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(tests.join("no-auth.mjs"))
            .current_dir(&tests)
            .env("CONSOLE_URL", url)
            .env("SHOTS_DIR", &shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // With tokens, the console must log in.
    let s = Stack::start(true).await;
    let mode = s.get("/api/v1/session", None).value().await;
    assert_eq!(mode["authentication"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = distcron_testkit::workspace_root();
    let tests = root.join("console-tests");
    assert!(
        tests.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium missing: run scripts/test.sh (installs both)"
    );
    let mut s = Stack::start(true).await;
    s.start_worker();
    let xss = json!({"name": "xss", "command": "<img src=x onerror=alert(1)>", "cronExpr": "0 0 0 1 1 *"});
    assert_eq!(
        s.post("/api/v1/jobs", Some(ADMIN)).json(&xss).code().await,
        StatusCode::CREATED
    );
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let url = s.url.clone();
    let shots_env = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(tests.join("console.mjs"))
            .current_dir(&tests)
            .env("CONSOLE_URL", url)
            .env("CONSOLE_TOKEN", ADMIN)
            .env("SHOTS_DIR", &shots_env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let log = format!(
        "{}\n{}\nscreenshots: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shots.display()
    );
    assert!(out.status.success(), "{log}");
    for page in [
        "login",
        "jobs",
        "editor-valid",
        "runs",
        "output-live",
        "output-killed",
        "workers",
        "jobs-phone",
        "editor-secret",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "{page}.png missing\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_runs_keeps_succeeding_when_a_logsvc_instance_is_killed() {
    let s = Stack::start(false).await;
    let database = unique_name("gwkill");
    let mut victim = s.start_logsvc_process(&database);
    let _survivor = KillOnDrop(s.start_logsvc_process(&database));
    // Three instances registered: the in-process one and two processes.
    let mut registered = 0;
    for _ in 0..100 {
        registered = distcron_kv::list_keys(s.store.as_ref(), &s.keys.services("logsvc"))
            .await
            .unwrap()
            .0
            .len();
        if registered == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registered, 3, "logsvc instances registered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/api/v1/jobs/kill-target/runs?limit=5", s.url);
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (s.http.clone(), url.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while tokio::time::Instant::now() < stop_at {
                    let r = http.get(&url).send().await.unwrap();
                    if r.status() == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push((r.status(), r.text().await.unwrap_or_default()));
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (mut ok, mut failed) = (0, Vec::new());
    for client in clients {
        let (o, f) = client.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 100, "{ok} requests answered");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
}

/// A child process killed when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Triggers `job` and waits for its run to end; returns the run (with output) by the API.
async fn trigger_and_wait(s: &Stack, job: &str) -> Value {
    let r: Value = s
        .post(&format!("/api/v1/jobs/{job}/trigger"), Some(OPERATOR))
        .value()
        .await;
    let run_id = r["runId"].as_str().expect("a run id").to_owned();
    let mut run = Value::Null;
    for _ in 0..150 {
        run = s
            .get(&format!("/api/v1/runs/{run_id}"), Some(VIEWER))
            .value()
            .await;
        if run["status"] == "succeeded" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("run {run_id} of {job} did not succeed: {run}");
}

#[tokio::test]
async fn secret_env_reaches_the_command_masked_and_is_never_returned() {
    let mut s = Stack::start(true).await;
    s.start_worker();
    s.wait_data("/worker/list", |d| {
        d.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let job = json!({
        "name": "secretive",
        "command": "echo len=${#DB_PASSWORD}; echo \"pw=$DB_PASSWORD\"",
        "cronExpr": "0 0 0 1 1 *",
        "env": {"PLAIN": "visible"},
        "secretEnv": {"DB_PASSWORD": "hunter22-secret"},
    });
    let created = s
        .post("/api/v1/jobs", Some(ADMIN))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = created.text().await.unwrap();
    assert!(!created.contains("hunter22"), "{created}");
    // No read shows the value: the job, the list, the seed's list; the name is shown, empty.
    for path in ["/api/v1/jobs/secretive", "/api/v1/jobs", "/job/list"] {
        let body = s
            .get(path, Some(ADMIN))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains("hunter22"), "{path}: {body}");
        assert!(
            body.contains("\"secretEnv\":{\"DB_PASSWORD\":\"\"}"),
            "{path}: {body}"
        );
    }
    // The command has the value; its output has it masked.
    let run = trigger_and_wait(&s, "secretive").await;
    assert_eq!(run["output"], "len=15\npw=***\n", "{run}");

    // Saving what a read returned keeps the value; so does a seed save, which has no secretEnv.
    let shown: Value = s.get("/api/v1/jobs/secretive", Some(ADMIN)).value().await;
    let put = s
        .request(reqwest::Method::PUT, "/api/v1/jobs/secretive", Some(ADMIN))
        .json(&shown)
        .code()
        .await;
    assert_eq!(put, StatusCode::OK);
    let seed = json!({"name": "secretive", "command": job["command"], "cronExpr": "0 0 1 1 * *"})
        .to_string();
    let saved: Value = s
        .post("/job/save", Some(ADMIN))
        .form(&[("job", seed.as_str())])
        .value()
        .await;
    assert_eq!(saved["errno"], 0, "{saved}");
    let run = trigger_and_wait(&s, "secretive").await;
    assert_eq!(run["output"], "len=15\npw=***\n", "{run}");

    // An empty value for a name with nothing stored is refused, naming it; nothing changes.
    let bad = s
        .request(reqwest::Method::PUT, "/api/v1/jobs/secretive", Some(ADMIN))
        .json(&json!({"command": "true", "cronExpr": "0 0 0 1 1 *", "secretEnv": {"DB_PASSWORD": "", "NEW_ONE": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["field"], "secretEnv.NEW_ONE", "{bad}");
    // An empty set removes the secrets.
    let cleared = s
        .request(reqwest::Method::PUT, "/api/v1/jobs/secretive", Some(ADMIN))
        .json(&json!({"command": job["command"], "cronExpr": "0 0 0 1 1 *", "secretEnv": {}}))
        .code()
        .await;
    assert_eq!(cleared, StatusCode::OK);
    let run = trigger_and_wait(&s, "secretive").await;
    assert_eq!(run["output"], "len=0\npw=\n", "{run}");
}

#[tokio::test]
async fn a_worker_token_reports_only_the_runs_of_its_own_worker() {
    use distcron_proto::logs::v1 as logs;
    use distcron_proto::logs::v1::log_service_client::LogServiceClient;
    let s = Stack::start(true).await;
    let mut client = LogServiceClient::connect(s.logsvc_addr.clone())
        .await
        .unwrap();
    let now = distcron_core::now_ms();
    let event = |run_id: &str, kind: logs::run_event::Kind| logs::RunEvent {
        run_id: run_id.into(),
        kind: Some(kind),
        ..Default::default()
    };
    let started = |run_id: &str, status: logs::RunStatus| {
        event(
            run_id,
            logs::run_event::Kind::Started(logs::RunStarted {
                job_name: "bound".into(),
                command: "deploy".into(),
                plan_time_ms: now,
                schedule_time_ms: now,
                start_time_ms: now,
                worker_id: "gw-worker".into(),
                status: status as i32,
                ..Default::default()
            }),
        )
    };
    let finished = |run_id: &str, status: logs::RunStatus, exit_code: Option<i32>| {
        event(
            run_id,
            logs::run_event::Kind::Finished(logs::RunFinished {
                status: status as i32,
                end_time_ms: now + 1,
                exit_code,
                ..Default::default()
            }),
        )
    };
    let output = |run_id: &str, seq: u64, data: &str| {
        event(
            run_id,
            logs::run_event::Kind::Output(logs::OutputChunk {
                seq,
                data: data.as_bytes().to_vec(),
            }),
        )
    };
    let mut send = async |token: &str, events: Vec<logs::RunEvent>| {
        let mut r = tonic::Request::new(logs::AppendRunEventsRequest { events });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.append_run_events(r).await.unwrap().into_inner()
    };
    // The job exists, and gw-worker claimed `live` and `gone`: their running records name it.
    let saved = s
        .request(reqwest::Method::PUT, "/api/v1/jobs/bound", Some(ADMIN))
        .json(&json!({"command": "deploy", "cronExpr": "0 0 0 1 1 *"}))
        .code()
        .await;
    assert_eq!(saved, StatusCode::CREATED);
    let (live, gone) = (unique_name("live"), unique_name("gone"));
    let record = |run_id: &str| distcron_core::records::RunningRecord {
        run_id: run_id.into(),
        job_name: "bound".into(),
        worker_id: "gw-worker".into(),
        slot_ms: now,
        claimed_at_ms: now,
        trigger: distcron_core::records::RunTrigger::Manual,
        passed_over: None,
    };
    for run in [&live, &gone] {
        let value = serde_json::to_vec(&record(run)).unwrap();
        s.store
            .put(&s.keys.running("bound", run), value, None)
            .await
            .unwrap();
    }
    // A run nobody claimed is refused even from the worker its start names.
    let unclaimed = unique_name("unclaimed");
    let refused = send(
        WORKER,
        vec![
            started(&unclaimed, logs::RunStatus::Running),
            finished(&unclaimed, logs::RunStatus::Succeeded, Some(0)),
        ],
    )
    .await;
    assert_eq!(refused.accepted, 0, "{refused:?}");
    assert!(
        refused.rejected[0].reason.contains("not claimed"),
        "{refused:?}"
    );
    let own = send(
        WORKER,
        vec![
            started(&live, logs::RunStatus::Running),
            output(&live, 0, "real output\n"),
            started(&gone, logs::RunStatus::Running),
        ],
    )
    .await;
    assert_eq!((own.accepted, own.rejected.len()), (3, 0), "{own:?}");
    // Another worker's token cannot start, continue or end gw-worker's runs...
    let forged = send(
        OTHER_WORKER,
        vec![
            finished(&live, logs::RunStatus::Succeeded, Some(0)),
            output(&live, 1, "FORGED: deploy ok"),
            started(&unique_name("new"), logs::RunStatus::Running),
        ],
    )
    .await;
    assert_eq!(forged.accepted, 0, "{forged:?}");
    assert_eq!(forged.rejected.len(), 3);
    assert!(
        forged.rejected[0].reason.contains("\"gw-worker\""),
        "{:?}",
        forged.rejected[0]
    );
    // A start naming itself does not make another worker's run its own: the stored run's
    // worker wins.
    let claimed = send(
        OTHER_WORKER,
        vec![
            {
                let mut s = started(&live, logs::RunStatus::Running);
                let Some(logs::run_event::Kind::Started(st)) = &mut s.kind else {
                    panic!("a start event: {s:?}");
                };
                st.worker_id = "other-worker".into();
                s
            },
            output(&live, 1, "FORGED: deploy ok"),
            finished(&live, logs::RunStatus::Succeeded, Some(0)),
        ],
    )
    .await;
    assert_eq!(claimed.accepted, 0, "{claimed:?}");
    // ...nor say it was lost while gw-worker's session still holds it...
    let early = send(
        OTHER_WORKER,
        vec![finished(&gone, logs::RunStatus::Lost, None)],
    )
    .await;
    assert_eq!(early.accepted, 0, "{early:?}");
    assert!(
        early.rejected[0].reason.contains("still claimed"),
        "{early:?}"
    );
    // ...but may once the session is gone (the orphan sweep runs on any worker).
    s.store
        .delete(&s.keys.running("bound", &gone))
        .await
        .unwrap();
    let sweep = send(
        OTHER_WORKER,
        vec![finished(&gone, logs::RunStatus::Lost, None)],
    )
    .await;
    assert_eq!((sweep.accepted, sweep.rejected.len()), (1, 0), "{sweep:?}");
    // A run released before its start was delivered is proven by gw-worker's marker.
    let released = unique_name("released");
    let marker = serde_json::to_vec(&[record(&released)]).unwrap();
    s.store
        .put(
            &s.keys.undelivered("gw-worker", "1-0000000001"),
            marker,
            None,
        )
        .await
        .unwrap();
    let late = send(
        WORKER,
        vec![
            started(&released, logs::RunStatus::Running),
            finished(&released, logs::RunStatus::Succeeded, Some(0)),
        ],
    )
    .await;
    assert_eq!((late.accepted, late.rejected.len()), (2, 0), "{late:?}");
    // A run lost before its start reached logsvc: the worker recording the loss sends the lost
    // worker's claim with it, and may send nothing more of that run.
    let unseen = unique_name("unseen");
    let report = send(
        OTHER_WORKER,
        vec![
            started(&unseen, logs::RunStatus::Running),
            output(&unseen, 0, "FORGED"),
            finished(&unseen, logs::RunStatus::Lost, None),
        ],
    )
    .await;
    assert_eq!(
        (report.accepted, report.rejected.len()),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(report.rejected[0].index, 1, "{report:?}");
    let unseen: Value = s
        .get(&format!("/api/v1/runs/{unseen}"), Some(VIEWER))
        .value()
        .await;
    assert_eq!(
        (
            &unseen["status"],
            &unseen["jobName"],
            &unseen["workerId"],
            &unseen["output"]
        ),
        (
            &Value::from("lost"),
            &Value::from("bound"),
            &Value::from("gw-worker"),
            &Value::from("")
        ),
        "{unseen}"
    );
    let run: Value = s
        .get(&format!("/api/v1/runs/{live}"), Some(VIEWER))
        .value()
        .await;
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["output"], "real output\n");
    let lost: Value = s
        .get(&format!("/api/v1/runs/{gone}"), Some(VIEWER))
        .value()
        .await;
    assert_eq!(lost["status"], "lost", "{lost}");
}
