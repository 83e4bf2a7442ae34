//! The distributed stack on loopback: an etcd cluster, a MongoDB-protocol server, logsvc, jobsvc,
//! N workers and the gateway, each a real process started from the release binaries next to the
//! benchmark's own, and every one stopped when the [`Stack`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use distcron_testkit::{free_port, port_open, spawn_guarded, ChildGuard, Etcd, MongoServer};

/// The run store's database (logsvc's default).
pub const RUN_DATABASE: &str = "cron";
/// The run store's collection (logsvc's default).
pub const RUN_COLLECTION: &str = "log";

/// How many of what to start.
#[derive(Debug, Clone, Copy)]
pub struct StackShape {
    /// etcd members.
    pub etcd_members: usize,
    /// Workers.
    pub workers: usize,
    /// Runs at once per worker (`--capacity`).
    pub worker_capacity: u32,
}

/// One worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// Its `--worker-id`.
    pub id: String,
    /// Its process.
    pub process: ChildGuard,
    /// Port of its `/metrics`.
    pub metrics_port: u16,
}

/// Every process of the stack.
#[derive(Debug)]
pub struct Stack {
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
    /// The etcd cluster.
    pub etcd: Etcd,
    /// The MongoDB-protocol server.
    pub mongo: MongoServer,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub gateway_url: String,
    /// `http://127.0.0.1:<port>` of logsvc.
    pub logsvc_url: String,
    /// The workers, in start order.
    pub workers: Vec<WorkerProcess>,
    /// Runs at once per worker.
    worker_capacity: u32,
    /// The services, by binary name.
    services: Vec<(String, ChildGuard)>,
}

fn wait_port(port: u16, what: &str, log: &Path) -> anyhow::Result<()> {
    if distcron_testkit::wait_until(Duration::from_secs(30), || port_open(port)) {
        Ok(())
    } else {
        bail!("{what} did not listen on {port} (log: {})", log.display())
    }
}

impl Stack {
    /// Starts the stack: etcd and Mongo first, then logsvc and jobsvc, the workers, the gateway.
    /// Binaries are taken from `bin_dir` (the release directory the benchmark runs from).
    pub fn start(bin_dir: &Path, shape: StackShape) -> anyhow::Result<Self> {
        for bin in ["jobsvc", "logsvc", "worker", "gateway"] {
            if !bin_dir.join(bin).is_file() {
                bail!(
                    "{} is missing: build with `cargo build --release --bins` (scripts/bench.sh does)",
                    bin_dir.join(bin).display()
                );
            }
        }
        let etcd = Etcd::cluster(shape.etcd_members).context("starting etcd")?;
        let mongo = MongoServer::start().context("starting the Mongo-wire server")?;
        let dir = tempfile::Builder::new()
            .prefix("distcron-bench-")
            .tempdir()?;
        let mut stack = Self {
            bin_dir: bin_dir.to_path_buf(),
            dir,
            etcd,
            mongo,
            gateway_url: String::new(),
            logsvc_url: String::new(),
            workers: Vec::new(),
            worker_capacity: shape.worker_capacity,
            services: Vec::new(),
        };
        let logsvc_port = free_port()?;
        let mongo_uri = stack.mongo.uri();
        stack.spawn_service(
            "logsvc",
            logsvc_port,
            &["--mongo-uri", &mongo_uri, "--instance-id", "logsvc-1"],
        )?;
        stack.logsvc_url = format!("http://127.0.0.1:{logsvc_port}");
        let jobsvc_port = free_port()?;
        stack.spawn_service("jobsvc", jobsvc_port, &["--instance-id", "jobsvc-1"])?;
        for i in 1..=shape.workers {
            stack.start_worker(&format!("worker-{i}"))?;
        }
        let gateway_port = free_port()?;
        // Every benchmark client is anonymous: let the streams scenario open the total cap.
        stack.spawn_service(
            "gateway",
            gateway_port,
            &["--max-output-streams-per-token", "256"],
        )?;
        stack.gateway_url = format!("http://127.0.0.1:{gateway_port}");
        Ok(stack)
    }

    fn command(&self, bin: &str, log_name: &str) -> anyhow::Result<(Command, PathBuf)> {
        let log = self.dir.path().join(format!("{log_name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(self.bin_dir.join(bin));
        cmd.arg("--etcd-endpoints")
            .arg(self.etcd.endpoints().join(","))
            .env("DISTCRON_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if bin == "jobsvc" || bin == "logsvc" {
            // The gateway serves /metrics on its own listener; workers get a known port.
            cmd.arg("--metrics-listen").arg("127.0.0.1:0");
        }
        Ok((cmd, log))
    }

    fn spawn_service(&mut self, bin: &str, port: u16, args: &[&str]) -> anyhow::Result<()> {
        let (mut cmd, log) = self.command(bin, bin)?;
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args);
        let child = spawn_guarded(cmd).with_context(|| format!("starting {bin}"))?;
        self.services.push((bin.to_owned(), child));
        wait_port(port, bin, &log)
    }

    /// Starts a worker with its own data directory.
    pub fn start_worker(&mut self, id: &str) -> anyhow::Result<()> {
        let process = self.spawn_worker(id, free_port()?, &[])?;
        self.workers.push(process);
        Ok(())
    }

    /// Stops worker `i` (as an operator would: SIGTERM, it drains) and starts it again on its
    /// data directory with extra environment variables `env`.
    pub fn restart_worker_with_env(
        &mut self,
        i: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let Some(w) = self.workers.get_mut(i) else {
            bail!("no worker {i}");
        };
        w.process.stop(Duration::from_secs(10));
        let (id, port) = (w.id.clone(), w.metrics_port);
        let process = self.spawn_worker(&id, port, env)?;
        self.workers[i] = process;
        Ok(())
    }

    fn spawn_worker(
        &self,
        id: &str,
        metrics_port: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let (mut cmd, _) = self.command("worker", id)?;
        cmd.arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--worker-id")
            .arg(id)
            .arg("--capacity")
            .arg(self.worker_capacity.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(id))
            .envs(env.iter().copied());
        let process = spawn_guarded(cmd).with_context(|| format!("starting {id}"))?;
        Ok(WorkerProcess {
            id: id.to_owned(),
            process,
            metrics_port,
        })
    }

    /// The process id of service `bin` ("gateway", "logsvc", "jobsvc").
    pub fn service_pid(&self, bin: &str) -> Option<u32> {
        self.services
            .iter()
            .find(|(name, _)| name == bin)
            .and_then(|(_, child)| child.pid())
    }

    /// Process ids of the running workers.
    pub fn worker_pids(&self) -> Vec<(String, u32)> {
        self.workers
            .iter()
            .filter_map(|w| w.process.pid().map(|p| (w.id.clone(), p)))
            .collect()
    }

    /// Kills worker `i` at once (SIGKILL): a crash.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(w) = self.workers.get_mut(i) {
            w.process.kill();
        }
    }

    /// A file in the stack's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the processes' logs are.
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Leaves the log directory in place when the stack stops (for a failed run's post-mortem).
    pub fn keep_logs(&mut self) {
        self.dir.disable_cleanup(true);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Workers first (they drain and flush), then the services; etcd and Mongo drop last.
        for w in &mut self.workers {
            w.process.stop(Duration::from_secs(10));
        }
        for (_, s) in self.services.iter_mut().rev() {
            s.stop(Duration::from_secs(5));
        }
    }
}
