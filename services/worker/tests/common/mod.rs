//! A real cluster for worker tests: etcd and a MongoDB-protocol server from the testkit, jobsvc
//! and logsvc in-process, and real `worker` processes. logsvc takes tokens: the workers report
//! with a worker token, so every test runs with logsvc's claim check on; the tests read runs
//! with a viewer token.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use distcron_core::Keys;
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::jobs::v1::job_service_client::JobServiceClient;
use distcron_proto::logs::v1 as logs;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use distcron_runstore::{MongoConfig, MongoRunStore, OutputCap};
use distcron_server::Instance;
use distcron_testkit::{shared_etcd, shared_mongo, unique_name};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The token every test worker reports with (role `worker`, covering every worker id).
pub const WORKER_TOKEN: &str = "test-worker-token";
/// The token the tests read runs with (role `viewer`).
const VIEWER_TOKEN: &str = "test-viewer-token";

/// The tokens logsvc takes.
fn logsvc_tokens() -> Arc<distcron_auth::TokenStore> {
    let spec = format!(
        "*:worker:{},tests:viewer:{}",
        distcron_auth::hash_token(WORKER_TOKEN),
        distcron_auth::hash_token(VIEWER_TOKEN)
    );
    Arc::new(distcron_auth::TokenStore::parse(&spec).unwrap())
}

/// A logsvc client presenting `token`.
pub type LogsClient =
    LogServiceClient<InterceptedService<Channel, distcron_discovery::BearerToken>>;

fn logs_client(channel: Channel, token: &str) -> LogsClient {
    LogServiceClient::with_interceptor(
        channel,
        distcron_discovery::BearerToken::new(Some(token)).unwrap(),
    )
}

/// Heavy scenarios run one at a time: they start several processes on a 2-core machine.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A worker process, killed when dropped.
pub struct WorkerProcess {
    pub id: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl WorkerProcess {
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map_or(0, |c| i32::try_from(c.id()).unwrap())
    }

    /// SIGKILL: a crash.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            tokio::task::spawn_blocking(move || c.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Starts it again with the same id and data dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.child = Some(spawn_worker(&self.args, &self.env));
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Starts a worker; its log goes to `<data-dir>.log` (level from `WORKER_LOG`, default info).
fn spawn_worker(args: &[String], env: &[(String, String)]) -> Child {
    let data_dir = args
        .iter()
        .skip_while(|a| *a != "--data-dir")
        .nth(1)
        .cloned()
        .unwrap_or_default();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{data_dir}.log"))
        .expect("worker log");
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .env(
            "DISTCRON_LOG",
            std::env::var("WORKER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start worker")
}

/// An in-process gRPC service that can be stopped and started again on the same port.
pub struct Service {
    pub addr: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub struct Cluster {
    pub endpoints: Vec<String>,
    pub store: Arc<dyn KvStore>,
    pub keys: Keys,
    pub mongo_uri: String,
    pub database: String,
    pub jobs: JobServiceClient<Channel>,
    pub logs: LogsClient,
    pub jobsvc: Option<Service>,
    pub logsvc: Option<Service>,
    pub logsvc_port: u16,
    pub workers: Vec<WorkerProcess>,
    pub dirs: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Keep the worker logs of a failed test for a post-mortem.
        if std::thread::panicking() {
            let kept = self.dirs.path().to_owned();
            eprintln!("worker logs kept under {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dirs,
                tempfile::tempdir().expect("tempdir"),
            ));
        }
    }
}

impl Cluster {
    /// On the shared etcd and Mongo server.
    pub async fn shared() -> Self {
        Self::on(shared_etcd().endpoints(), shared_mongo().uri()).await
    }

    /// On the shared servers, with a worker (default flags) per id, all registered.
    pub async fn shared_with_workers(ids: &[&str]) -> Self {
        let mut cluster = Self::shared().await;
        for id in ids {
            cluster.start_worker(id, &[]);
        }
        cluster.wait_for_workers(ids.len()).await;
        cluster
    }

    pub async fn on(endpoints: Vec<String>, mongo_uri: String) -> Self {
        let store: Arc<dyn KvStore> = Arc::new(
            EtcdKv::connect(EtcdConfig::new(endpoints.clone()))
                .await
                .unwrap(),
        );
        let keys = Keys::new(&format!("/{}/", unique_name("w")));
        let database = unique_name("runs");
        let jobs_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jobs_addr = format!("http://{}", jobs_listener.local_addr().unwrap());
        let jobsvc = {
            let (store, keys, stop) = (store.clone(), keys.clone(), CancellationToken::new());
            let instance = Instance {
                id: unique_name("jobsvc"),
                advertise: jobs_addr.clone(),
                registration_ttl: Duration::from_secs(5),
                tokens: Default::default(),
                tls: None,
            };
            let s = stop.clone();
            let task = tokio::spawn(async move {
                distcron_jobsvc::serve(store, keys, instance, jobs_listener, s)
                    .await
                    .expect("jobsvc");
            });
            Service {
                addr: jobs_addr.clone(),
                stop,
                task,
            }
        };
        let logs_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let logsvc_port = logs_listener.local_addr().unwrap().port();
        let mut cluster = Self {
            endpoints,
            store,
            keys,
            mongo_uri,
            database,
            jobs: JobServiceClient::connect(jobs_addr).await.unwrap(),
            logs: logs_client(
                Channel::from_static("http://127.0.0.1:1").connect_lazy(),
                VIEWER_TOKEN,
            ),
            jobsvc: Some(jobsvc),
            logsvc: None,
            logsvc_port,
            workers: Vec::new(),
            dirs: tempfile::tempdir().unwrap(),
        };
        cluster.start_logsvc(Some(logs_listener)).await;
        cluster
    }

    /// Starts logsvc (again) on its port, registered in etcd.
    pub async fn start_logsvc(&mut self, listener: Option<TcpListener>) {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(("127.0.0.1", self.logsvc_port))
                .await
                .unwrap(),
        };
        let addr = format!("http://127.0.0.1:{}", self.logsvc_port);
        let mut config = MongoConfig::new(&self.mongo_uri);
        config.database = self.database.clone();
        config.timeout = Duration::from_secs(3);
        let runs = Arc::new(MongoRunStore::connect(&config).await.unwrap());
        let storage = distcron_logsvc::Storage {
            runs,
            retention_days: 1,
            cap: OutputCap { bytes: 4096 },
        };
        let (store, keys, stop) = (
            self.store.clone(),
            self.keys.clone(),
            CancellationToken::new(),
        );
        let instance = Instance {
            id: unique_name("logsvc"),
            advertise: addr.clone(),
            registration_ttl: Duration::from_secs(5),
            tokens: logsvc_tokens(),
            tls: None,
        };
        let s = stop.clone();
        let task = tokio::spawn(async move {
            distcron_logsvc::serve(storage, store, keys, instance, listener, s)
                .await
                .expect("logsvc");
        });
        let channel = Channel::from_shared(addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        self.logs = logs_client(channel, VIEWER_TOKEN);
        self.logsvc = Some(Service { addr, stop, task });
    }

    pub async fn stop_logsvc(&mut self) {
        if let Some(s) = self.logsvc.take() {
            s.stop().await;
        }
    }

    /// What worker `id` has logged so far.
    pub fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dirs.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Starts a worker process with extra flags.
    pub fn start_worker(&mut self, id: &str, extra: &[&str]) -> usize {
        self.start_worker_with_env(id, extra, &[])
    }

    /// [`Cluster::start_worker`] with extra environment variables.
    pub fn start_worker_with_env(
        &mut self,
        id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let data_dir = self.dirs.path().join(id);
        let mut args: Vec<String> = vec![
            "--worker-id".into(),
            id.into(),
            "--key-prefix".into(),
            self.keys.prefix().into(),
            "--etcd-endpoints".into(),
            self.endpoints.join(","),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--session-ttl".into(),
            "2s".into(),
            "--kill-grace".into(),
            "2s".into(),
            "--drain-timeout".into(),
            "5s".into(),
            "--output-cap-bytes".into(),
            "4096".into(),
            "--log-batch-delay".into(),
            "50ms".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--token".into(),
            WORKER_TOKEN.into(),
        ];
        // A flag given in `extra` replaces the default above.
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args.drain(i..i + 2);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = spawn_worker(&args, &env);
        self.workers.push(WorkerProcess {
            id: id.into(),
            data_dir,
            child: Some(child),
            args,
            env,
        });
        self.workers.len() - 1
    }

    /// The registered workers, as jobsvc lists them.
    pub async fn list_workers(&mut self) -> Vec<jobs::Worker> {
        self.jobs
            .list_workers(jobs::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    /// Waits until `n` workers are registered and claiming.
    pub async fn wait_for_workers(&mut self, n: usize) {
        for _ in 0..200 {
            let ws = self.list_workers().await;
            if ws.iter().filter(|w| w.claiming).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} workers did not register");
    }

    pub async fn save(&mut self, job: jobs::Job) -> jobs::Job {
        self.jobs
            .save_job(jobs::SaveJobRequest {
                job: Some(job),
                expected_revision: None,
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    /// Asks jobsvc to kill every run of `job`.
    pub async fn kill_all(&mut self, job: &str) -> jobs::KillJobResponse {
        self.jobs
            .kill_job(jobs::KillJobRequest {
                name: job.into(),
                run_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Every run of `job` (all pages).
    pub async fn runs(&mut self, job: &str) -> Vec<logs::Run> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .logs
                .list_runs(logs::ListRunsRequest {
                    job_name: job.into(),
                    limit: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            out.extend(page.runs);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }

    /// Waits until `check` holds for the runs of `job`, returning them.
    pub async fn wait_runs(
        &mut self,
        job: &str,
        timeout: Duration,
        check: impl Fn(&[logs::Run]) -> bool,
    ) -> Vec<logs::Run> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let runs = self.runs(job).await;
            if check(&runs) {
                return runs;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "condition on runs of {job} not met in {timeout:?}: {:#?}",
                    summary(&runs)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Triggers `name` and waits up to `timeout` until its run satisfies `done`; returns the run.
    pub async fn trigger_until(
        &mut self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&logs::Run) -> bool,
    ) -> logs::Run {
        let run_id = self
            .jobs
            .trigger_job(jobs::TriggerJobRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
            .run_id;
        let runs = self
            .wait_runs(name, timeout, |runs| {
                runs.iter().any(|r| r.run_id == run_id && done(r))
            })
            .await;
        runs.into_iter().find(|r| r.run_id == run_id).unwrap()
    }

    pub async fn shutdown(mut self) {
        for w in &mut self.workers {
            w.stop().await;
        }
        self.stop_logsvc().await;
        if let Some(s) = self.jobsvc.take() {
            s.stop().await;
        }
    }
}

pub fn job(name: &str, command: &str, expr: &str) -> jobs::Job {
    jobs::Job {
        name: name.into(),
        command: command.into(),
        cron_expr: expr.into(),
        ..Default::default()
    }
}

pub fn status(run: &logs::Run) -> logs::RunStatus {
    logs::RunStatus::try_from(run.status).unwrap_or(logs::RunStatus::Unspecified)
}

/// The runs with status `want`.
pub fn with_status(runs: &[logs::Run], want: logs::RunStatus) -> Vec<&logs::Run> {
    runs.iter().filter(|r| status(r) == want).collect()
}

pub fn summary(runs: &[logs::Run]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            format!(
                "{} plan={} status={:?} worker={} trigger={} err={}",
                r.run_id,
                r.plan_time_ms,
                status(r),
                r.worker_id,
                r.trigger,
                r.err
            )
        })
        .collect()
}

/// Runs per slot of the schedule trigger.
pub fn per_slot(runs: &[logs::Run]) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for r in runs
        .iter()
        .filter(|r| r.trigger == logs::RunTrigger::Schedule as i32)
    {
        *m.entry(r.plan_time_ms).or_insert(0) += 1;
    }
    m
}

/// Whether a process whose command line contains `marker` runs.
pub fn process_running(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Checks that every slot of `job` in the run history ran once, that there is no gap between
/// the first and the last, and that every run succeeded; returns the number of slots.
pub async fn assert_exactly_once(cluster: &mut Cluster, job: &str) -> usize {
    let runs = assert_each_slot_once(cluster, job).await;
    let failed: Vec<_> = runs
        .iter()
        .filter(|r| status(r) != logs::RunStatus::Succeeded)
        .collect();
    assert!(
        failed.is_empty(),
        "{job}: runs that did not succeed: {:#?}",
        summary(&runs)
    );
    per_slot(&runs).len()
}

/// Checks that `job` has a record of at least one slot, that every slot of it in the run history
/// has one record and that there is no gap between the first and the last; returns the runs.
pub async fn assert_each_slot_once(cluster: &mut Cluster, job: &str) -> Vec<logs::Run> {
    let runs = cluster.runs(job).await;
    let slots = per_slot(&runs);
    assert!(
        !slots.is_empty(),
        "{job}: no slot has a record\n{:#?}",
        summary(&runs)
    );
    let dups: Vec<_> = slots.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{job}: duplicate slots {dups:?}\n{:#?}",
        summary(&runs)
    );
    let mut times: Vec<i64> = slots.keys().copied().collect();
    times.sort_unstable();
    let gaps: Vec<_> = times.windows(2).filter(|w| w[1] - w[0] != 1000).collect();
    assert!(
        gaps.is_empty(),
        "{job}: missing slots between {gaps:?}\n{:#?}",
        summary(&runs)
    );
    runs
}

pub async fn disable(cluster: &mut Cluster, names: &[String]) {
    for name in names {
        cluster
            .jobs
            .set_job_enabled(jobs::SetJobEnabledRequest {
                name: name.clone(),
                enabled: false,
            })
            .await
            .unwrap();
    }
}

/// Waits until no run of these jobs is running any more (all shipped).
pub async fn settle(cluster: &mut Cluster, names: &[String]) {
    for name in names {
        cluster
            .wait_runs(name, Duration::from_secs(20), |runs| {
                runs.iter().all(|r| status(r) != logs::RunStatus::Running)
            })
            .await;
    }
}
