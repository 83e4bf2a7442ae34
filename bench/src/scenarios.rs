//! The scenarios. Each returns what it measured and the goals it checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distcron_proto::logs::v1 as pb;
use serde::Serialize;
use tokio::sync::watch;

use crate::gateway::{Gateway, JobSpec};
use crate::limits::MachineLimits;
use crate::measure::{
    cpu_ms, etcd_writes, rss_mib, EtcdWrites, Summary, WorkerGauges, WorkerWindow,
};
use crate::report::Check;
use crate::stack::Stack;
use crate::truth::{account, runs_in_window, SlotAccount};

/// Jobs whose runs the steady scenario follows through the API to time their visibility.
const VISIBILITY_PROBES: usize = 2;
/// How often those probes poll: often enough to resolve the 1 s goal, rarely enough that their
/// list queries (with a total count each) do not become the Mongo-wire server's main load.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for the run store to hold every run of a window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the run store may make no progress before the drain stops waiting.
const DRAIN_STALL: Duration = Duration::from_secs(15);

/// What the scenarios share.
pub struct Bench {
    /// The processes.
    pub stack: Stack,
    /// The API client.
    pub gateway: Gateway,
    /// A plain HTTP client (etcd metrics).
    pub http: reqwest::Client,
    /// The machine's limits, measured at the start.
    pub limits: MachineLimits,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn sleep_until_ms(at_ms: i64) {
    let wait = at_ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
    }
}

/// `n` jobs named `<tag>-00000`, … running `true` on schedule `cron`.
fn jobs_named(tag: &str, n: usize, cron: &str) -> Vec<JobSpec> {
    (0..n)
        .map(|i| JobSpec {
            name: format!("{tag}-{i:05}"),
            cron: cron.to_owned(),
            command: "true".into(),
        })
        .collect()
}

/// An hourly schedule not due while the benchmark runs: its minute is 50 minutes ahead.
fn hourly_not_due() -> String {
    format!("0 {} * * * *", (now_ms() / 60_000 + 50) % 60)
}

/// Write counters of each etcd member, `None` where a member does not answer.
async fn etcd_per_member(bench: &Bench) -> Vec<Option<EtcdWrites>> {
    let mut out = Vec::new();
    for e in bench.stack.etcd.endpoints() {
        out.push(etcd_writes(&bench.http, &e).await);
    }
    out
}

fn etcd_delta(before: &[Option<EtcdWrites>], after: &[Option<EtcdWrites>]) -> EtcdWrites {
    let mut total = EtcdWrites::default();
    for (b, a) in before.iter().zip(after) {
        if let (Some(b), Some(a)) = (b, a) {
            total.add_delta(a, b);
        }
    }
    total
}

fn workers_cpu_ms(stack: &Stack) -> HashMap<String, f64> {
    stack
        .worker_pids()
        .into_iter()
        .filter_map(|(id, pid)| cpu_ms(pid).map(|c| (id, c)))
        .collect()
}

/// Each running worker's own metrics.
async fn worker_gauges(bench: &Bench) -> HashMap<String, WorkerGauges> {
    let mut out = HashMap::new();
    for w in &bench.stack.workers {
        if w.process.pid().is_none() {
            continue;
        }
        let url = format!("http://127.0.0.1:{}/metrics", w.metrics_port);
        if let Ok(resp) = bench.http.get(url).send().await {
            if let Ok(text) = resp.text().await {
                out.insert(w.id.clone(), WorkerGauges::parse(&text));
            }
        }
    }
    out
}

/// Debian's libfaketime (package `faketime`, which scripts/test.sh installs).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Faults injected during a steady run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Faults {
    /// Freeze every etcd member (SIGSTOP) this long after the window opens: a stall.
    pub stall_etcd_at: Duration,
    /// For this long (then SIGCONT).
    pub stall_etcd_for: Duration,
    /// SIGKILL the last worker this long after the window opens.
    pub kill_worker_at: Duration,
    /// Step the first worker's wall clock forward this long after the window opens (libfaketime
    /// reading a time file; its monotonic clock stays true), as an NTP step or a VM resume would.
    pub step_clock_at: Duration,
    /// By this much, seconds.
    pub step_clock_by_s: u32,
    /// Then back, this long later.
    pub step_clock_for: Duration,
    /// Stop the first etcd member this long after the window opens.
    pub stop_etcd_member_at: Duration,
}

/// What a steady run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyResult {
    /// Every-second jobs.
    pub jobs: usize,
    /// Window length, s.
    pub window_s: u64,
    /// Slots per (job, slot) in the window.
    pub slots: SlotAccount,
    /// Runs started in the window per second.
    pub fires_per_s: f64,
    /// etcd requests during the window, all members.
    pub etcd: EtcdWrites,
    /// (txns + puts) / runs started.
    pub etcd_writes_per_fire: f64,
    /// Worker CPU (their own, not the children's) per run started, ms.
    pub worker_cpu_ms_per_fire: f64,
    /// Run end → visible in `/api/v1/jobs/{name}/runs`, for the probed jobs.
    pub visibility: Summary,
    /// Each worker's clock offset, claim duration and lag by its own metrics.
    pub workers: Vec<WorkerWindow>,
    /// The faults injected, if any.
    pub faults: Option<Faults>,
    /// Whether every worker's spool was empty when the runs were counted.
    pub spools_empty: bool,
}

/// Polls the runs of `jobs` through the API until `stop`; returns when each run id was first
/// seen in a final state, ms.
async fn probe_visibility(
    gateway: Gateway,
    jobs: Vec<String>,
    mut stop: watch::Receiver<bool>,
) -> HashMap<String, i64> {
    let mut seen = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return seen,
        }
        for job in &jobs {
            if let Ok(runs) = gateway.runs(job, 10).await {
                let at = now_ms();
                for r in runs.into_iter().filter(|r| r.status != "running") {
                    seen.entry(r.run_id).or_insert(at);
                }
            }
        }
    }
}

/// Runs read from the run store at the end of a window.
pub struct Drained {
    /// The window's runs.
    pub runs: Vec<crate::truth::StoredRun>,
    /// Whether every running worker's spool was empty when they were read, so a slot without a
    /// record was not merely late (waiting in a spool).
    pub spools_empty: bool,
}

/// Waits until the run store holds a final record for `expected` runs of the window, or the count
/// of final records makes no progress for [`DRAIN_STALL`] while every running worker's spool is
/// empty (a slot that never ran never arrives; one still in a spool is waited for), or
/// [`DRAIN_TIMEOUT`] passes; then reads them. A slow log path therefore shows as visibility
/// latency, not as missing slots.
async fn drain(
    bench: &Bench,
    prefix: &str,
    from_ms: i64,
    to_ms: i64,
    expected: usize,
) -> anyhow::Result<Drained> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut progress = (0, Instant::now());
    loop {
        let polled = Instant::now();
        // The Mongo-wire server may miss its client's heartbeats while it stores a backlog: a
        // failed poll is retried (until the deadline), not the end of the scenario.
        let runs = match runs_in_window(&bench.stack.mongo.uri(), prefix, from_ms, to_ms).await {
            Ok(runs) => runs,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "reading the run store failed; polling again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        // The Mongo-wire server also stores the runs being waited for: polling takes at most a
        // third of its time.
        let pause = Duration::from_secs(1).max(polled.elapsed() * 2);
        let done = runs.iter().filter(|r| r.status != "running").count();
        if done != progress.0 {
            progress = (done, Instant::now());
        }
        let spooled: f64 = worker_gauges(bench)
            .await
            .values()
            .map(|g| g.spool_batches)
            .sum();
        let stalled = progress.1.elapsed() > DRAIN_STALL && spooled == 0.0;
        if done >= expected || Instant::now() > deadline || stalled {
            if done < expected {
                tracing::warn!(
                    done,
                    expected,
                    spooled_batches = spooled,
                    "run store drain ended short"
                );
            }
            return Ok(Drained {
                runs,
                spools_empty: spooled == 0.0,
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// Runs `jobs` every-second jobs for `window` and accounts every slot of the window.
pub async fn steady(
    bench: &mut Bench,
    tag: &str,
    jobs: usize,
    window: Duration,
    faults: Option<Faults>,
) -> anyhow::Result<SteadyResult> {
    let specs = jobs_named(tag, jobs, "* * * * * *");
    let names: Vec<String> = specs.iter().map(|j| j.name.clone()).collect();
    let time_file = bench.stack.file("faketime");
    if faults.is_some() {
        // The first worker's wall clock follows a time file from now on.
        std::fs::write(&time_file, "+0\n")?;
        let time_file = time_file.display().to_string();
        tracing::info!("restarting worker 0 under libfaketime");
        tokio::task::block_in_place(|| {
            bench.stack.restart_worker_with_env(
                0,
                &[
                    ("LD_PRELOAD", LIBFAKETIME),
                    ("FAKETIME_TIMESTAMP_FILE", &time_file),
                    ("FAKETIME_NO_CACHE", "1"),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
            )
        })?;
        // Registered, and its offset judged from its peers' heartbeats.
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    tracing::info!(jobs, tag, "saving every-second jobs");
    bench.gateway.save_all(&specs).await?;
    // Every worker has seen every job well before the window opens.
    let t0 = (now_ms() / 1000 + 4) * 1000;
    let t1 = t0 + i64::try_from(window.as_millis())?;
    sleep_until_ms(t0).await;
    let etcd_before = etcd_per_member(bench).await;
    let cpu_before = workers_cpu_ms(&bench.stack);
    let gauges_before = worker_gauges(bench).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let probes = tokio::spawn(probe_visibility(
        bench.gateway.clone(),
        names.iter().take(VISIBILITY_PROBES).cloned().collect(),
        stop_rx,
    ));
    let mut etcd_at_stop: Option<(usize, Option<EtcdWrites>)> = None;
    let mut cpu_at_kill = HashMap::new();
    if let Some(f) = faults {
        sleep_until_ms(t0 + i64::try_from(f.stall_etcd_at.as_millis())?).await;
        tracing::warn!(
            seconds = f.stall_etcd_for.as_secs(),
            "SIGSTOP every etcd member"
        );
        for i in 0..bench.stack.etcd.size() {
            bench.stack.etcd.pause_member(i);
        }
        tokio::time::sleep(f.stall_etcd_for).await;
        for i in 0..bench.stack.etcd.size() {
            bench.stack.etcd.resume_member(i);
        }
        tracing::warn!("SIGCONT every etcd member");
        sleep_until_ms(t0 + i64::try_from(f.kill_worker_at.as_millis())?).await;
        let last = bench.stack.workers.len().saturating_sub(1);
        cpu_at_kill = workers_cpu_ms(&bench.stack);
        tracing::warn!(worker = %bench.stack.workers[last].id, "SIGKILL");
        bench.stack.kill_worker(last);
        sleep_until_ms(t0 + i64::try_from(f.step_clock_at.as_millis())?).await;
        tracing::warn!(seconds = f.step_clock_by_s, worker = %bench.stack.workers[0].id, "wall clock steps forward");
        std::fs::write(&time_file, format!("+{}\n", f.step_clock_by_s))?;
        tokio::time::sleep(f.step_clock_for).await;
        tracing::warn!(worker = %bench.stack.workers[0].id, "wall clock steps back");
        std::fs::write(&time_file, "+0\n")?;
        sleep_until_ms(t0 + i64::try_from(f.stop_etcd_member_at.as_millis())?).await;
        let before_stop = etcd_per_member(bench).await;
        etcd_at_stop = Some((0, before_stop.first().copied().flatten()));
        tracing::warn!("stopping etcd member 0");
        tokio::task::block_in_place(|| bench.stack.etcd.stop_member(0));
    }
    sleep_until_ms(t1).await;
    let mut etcd_after = etcd_per_member(bench).await;
    if let Some((i, w)) = etcd_at_stop {
        etcd_after[i] = w;
    }
    let mut cpu_after = workers_cpu_ms(&bench.stack);
    let gauges_after = worker_gauges(bench).await;
    let mut workers: Vec<WorkerWindow> = gauges_after
        .iter()
        .filter_map(|(id, after)| {
            gauges_before
                .get(id)
                .map(|before| WorkerWindow::between(id, before, after))
        })
        .collect();
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    for (id, c) in cpu_at_kill {
        cpu_after.entry(id).or_insert(c);
    }
    tracing::info!(tag, "window closed; removing the jobs");
    bench.gateway.delete_all(&names).await?;
    let expected: Vec<(String, i64)> = names
        .iter()
        .flat_map(|n| (t0..t1).step_by(1000).map(move |s| (n.clone(), s)))
        .collect();
    let Drained { runs, spools_empty } =
        drain(bench, &format!("{tag}-"), t0, t1, expected.len()).await?;
    let _ = stop_tx.send(true);
    let seen = probes.await.unwrap_or_default();
    let slots = account(&expected, &runs);
    let started = runs
        .iter()
        .filter(|r| r.status != "skipped" && r.status != "lost")
        .count();
    let etcd = etcd_delta(&etcd_before, &etcd_after);
    let cpu: f64 = cpu_after
        .iter()
        .map(|(id, after)| after - cpu_before.get(id).copied().unwrap_or(*after))
        .sum();
    let visibility = Summary::of_ms(
        runs.iter()
            .filter(|r| r.end_ms > 0)
            .filter_map(|r| seen.get(&r.run_id).map(|at| (at - r.end_ms) as f64))
            .collect(),
    );
    let per_fire = |x: f64| {
        if started == 0 {
            0.0
        } else {
            x / started as f64
        }
    };
    Ok(SteadyResult {
        jobs,
        window_s: window.as_secs(),
        slots,
        fires_per_s: started as f64 / window.as_secs_f64(),
        etcd,
        etcd_writes_per_fire: per_fire(etcd.txns_and_puts()),
        worker_cpu_ms_per_fire: per_fire(cpu),
        visibility,
        workers,
        faults,
        spools_empty,
    })
}

/// Checks of scenarios 1, 2, 5 and 6 (visibility) on a steady result.
pub fn steady_checks(r: &SteadyResult) -> Vec<Check> {
    vec![
        Check::at_most("duplicates", 0.0, r.slots.duplicates as f64, ""),
        Check::at_most("missing slots", 0.0, r.slots.missing as f64, ""),
        Check::at_most("lag p50", 5.0, r.slots.lag.p50_ms, "ms"),
        Check::at_most("lag p99", 25.0, r.slots.lag.p99_ms, "ms"),
        Check::at_most("lag max", 100.0, r.slots.lag.max_ms, "ms"),
        Check::at_most("etcd writes per fire", 1.2, r.etcd_writes_per_fire, ""),
        Check::info("worker CPU per fire", r.worker_cpu_ms_per_fire, "ms"),
        Check::at_most(
            "run end → visible in API, p99",
            1000.0,
            r.visibility.p99_ms,
            "ms",
        ),
        Check::info("fires/s", r.fires_per_s, ""),
        spools_check(r.spools_empty),
    ]
}

/// Whether the runs were counted with every worker's spool empty (else a slot without a record
/// may only be late).
fn spools_check(empty: bool) -> Check {
    Check::at_most(
        "worker spools non-empty when counted",
        0.0,
        if empty { 0.0 } else { 1.0 },
        "",
    )
}

/// Checks of scenario 8 on a steady result with faults.
pub fn failover_checks(r: &SteadyResult) -> Vec<Check> {
    vec![
        Check::at_most("duplicates", 0.0, r.slots.duplicates as f64, ""),
        Check::at_most(
            "missing slots (no record at all)",
            0.0,
            r.slots.missing as f64,
            "",
        ),
        Check::info("slots recorded lost", r.slots.lost as f64, ""),
        Check::info("slots recorded skipped", r.slots.skipped as f64, ""),
        Check::info("lag p99", r.slots.lag.p99_ms, "ms"),
        Check::info("lag max", r.slots.lag.max_ms, "ms"),
        spools_check(r.spools_empty),
    ]
}

/// Saves `n` hourly jobs that are not due during the benchmark (their minute is 50 minutes
/// ahead).
pub async fn load_hourly(bench: &Bench, n: usize) -> anyhow::Result<()> {
    let specs = jobs_named("hourly", n, &hourly_not_due());
    let start = Instant::now();
    bench.gateway.save_all(&specs).await?;
    tracing::info!(n, took = ?start.elapsed(), "hourly jobs saved");
    Ok(())
}

/// Idle cost per worker.
#[derive(Debug, Clone, Serialize)]
pub struct IdleWorker {
    /// Worker id.
    pub worker: String,
    /// CPU used while idle, % of one core.
    pub cpu_percent: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
}

/// Measures each worker's CPU and memory for `length` with nothing due.
pub async fn idle(bench: &Bench, length: Duration) -> anyhow::Result<Vec<IdleWorker>> {
    let before = workers_cpu_ms(&bench.stack);
    tokio::time::sleep(length).await;
    let after = workers_cpu_ms(&bench.stack);
    Ok(bench
        .stack
        .worker_pids()
        .into_iter()
        .map(|(id, pid)| IdleWorker {
            cpu_percent: (after.get(&id).copied().unwrap_or(0.0)
                - before.get(&id).copied().unwrap_or(0.0))
                / length.as_secs_f64()
                / 10.0,
            rss_mib: rss_mib(pid).unwrap_or(0.0),
            worker: id,
        })
        .collect())
}

/// Checks of the idle part of scenario 5.
pub fn idle_checks(r: &[IdleWorker]) -> Vec<Check> {
    r.iter()
        .flat_map(|w| {
            [
                Check::below(&format!("{} CPU", w.worker), 1.0, w.cpu_percent, "% core"),
                Check::at_most(&format!("{} RSS", w.worker), 64.0, w.rss_mib, "MiB"),
            ]
        })
        .collect()
}

/// Latency of one API operation under concurrent clients.
#[derive(Debug, Clone, Serialize)]
pub struct ApiResult {
    /// The operation.
    pub operation: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per second completed.
    pub requests_per_s: f64,
    /// Latency.
    pub latency: Summary,
    /// Failed requests.
    pub errors: usize,
}

async fn api_load<F, Fut>(operation: &str, clients: usize, length: Duration, op: F) -> ApiResult
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Duration>> + Send,
{
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (op, samples, errors) = (op.clone(), samples.clone(), errors.clone());
        tasks.spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                match op(c, n).await {
                    Ok(took) => samples.lock().map(|mut s| s.push(took)).unwrap_or(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "API request failed");
                        errors.lock().map(|mut x| *x += 1).unwrap_or(());
                    }
                }
                n += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    ApiResult {
        operation: operation.to_owned(),
        clients,
        requests_per_s: samples.len() as f64 / elapsed,
        latency: Summary::of(&samples),
        errors: errors.lock().map(|e| *e).unwrap_or(0),
    }
}

/// Scenario 7: list and save under `clients` concurrent clients.
pub async fn api(bench: &Bench, clients: usize, length: Duration) -> Vec<ApiResult> {
    let gw = bench.gateway.clone();
    let list = api_load(
        "GET /api/v1/jobs?limit=100",
        clients,
        length,
        move |_, _| {
            let gw = gw.clone();
            async move { gw.list_jobs(100).await }
        },
    )
    .await;
    let gw = bench.gateway.clone();
    let hourly = hourly_not_due();
    let save = api_load("PUT /api/v1/jobs/{name}", clients, length, move |c, n| {
        let gw = gw.clone();
        let job = JobSpec {
            name: format!("api-{c:02}-{:02}", n % 20),
            cron: hourly.clone(),
            command: format!("echo {n}"),
        };
        async move { gw.save(&job).await }
    })
    .await;
    let names: Vec<String> = (0..clients)
        .flat_map(|c| (0..20).map(move |i| format!("api-{c:02}-{i:02}")))
        .collect();
    if let Err(e) = bench.gateway.delete_all(&names).await {
        tracing::warn!(error = %e, "removing the API scenario's jobs");
    }
    vec![list, save]
}

/// Checks of scenario 7.
pub fn api_checks(r: &[ApiResult]) -> Vec<Check> {
    r.iter()
        .flat_map(|a| {
            [
                Check::info(&format!("{} p50", a.operation), a.latency.p50_ms, "ms"),
                Check::info(&format!("{} p99", a.operation), a.latency.p99_ms, "ms"),
                Check::info(&format!("{} req/s", a.operation), a.requests_per_s, ""),
                Check::at_most(&format!("{} errors", a.operation), 0.0, a.errors as f64, ""),
            ]
        })
        .collect()
}

/// What the burst scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct BurstResult {
    /// Jobs due in the same second.
    pub jobs: usize,
    /// Their runs of that slot.
    pub slots: SlotAccount,
    /// Last start − slot, ms.
    pub last_start_after_slot_ms: i64,
    /// Whether every worker's spool was empty when the runs were counted.
    pub spools_empty: bool,
}

/// Scenario 4: `jobs` jobs all due at the same second.
pub async fn burst(bench: &Bench, jobs: usize) -> anyhow::Result<BurstResult> {
    // Far enough ahead to save every job first.
    let slot_ms = (now_ms() / 1000 + 40) * 1000;
    let secs = slot_ms / 1000;
    let (s, m, h) = (secs % 60, (secs / 60) % 60, (secs / 3600) % 24);
    let specs = jobs_named("burst", jobs, &format!("{s} {m} {h} * * *"));
    bench.gateway.save_all(&specs).await?;
    anyhow::ensure!(
        now_ms() < slot_ms - 2000,
        "saving {jobs} jobs took too long: the slot is too near"
    );
    sleep_until_ms(slot_ms + 5000).await;
    let names: Vec<String> = specs.into_iter().map(|j| j.name).collect();
    let expected: Vec<(String, i64)> = names.iter().map(|n| (n.clone(), slot_ms)).collect();
    let Drained { runs, spools_empty } = drain(bench, "burst-", slot_ms, slot_ms + 1, jobs).await?;
    bench.gateway.delete_all(&names).await?;
    let last = runs.iter().map(|r| r.start_ms).max().unwrap_or(0);
    Ok(BurstResult {
        jobs,
        slots: account(&expected, &runs),
        last_start_after_slot_ms: last - slot_ms,
        spools_empty,
    })
}

/// Checks of scenario 4.
pub fn burst_checks(r: &BurstResult) -> Vec<Check> {
    vec![
        Check::at_most("duplicates", 0.0, r.slots.duplicates as f64, ""),
        Check::at_most("missing", 0.0, r.slots.missing as f64, ""),
        Check::at_most(
            "last start after slot",
            2000.0,
            r.last_start_after_slot_ms as f64,
            "ms",
        ),
        Check::info("lag p50", r.slots.lag.p50_ms, "ms"),
        Check::info("lag p99", r.slots.lag.p99_ms, "ms"),
        spools_check(r.spools_empty),
    ]
}

/// What the log-path scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct LogPathResult {
    /// Run events per second logsvc accepted.
    pub events_per_s: f64,
    /// Runs per second (two events each: started, finished in the same batch).
    pub runs_per_s: f64,
    /// Raw `insert_many` documents per second measured in the same run.
    pub raw_insert_docs_per_s: f64,
    /// events_per_s / raw_insert_docs_per_s.
    pub ratio: f64,
}

fn run_events(batch: u64, runs: u64, now: i64) -> Vec<pb::RunEvent> {
    (0..runs)
        .flat_map(|i| {
            let run_id = format!("logpath-{batch}-{i}");
            [
                pb::RunEvent {
                    run_id: run_id.clone(),
                    kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
                        job_name: format!("logpath-{:03}", i % 500),
                        command: "true".into(),
                        plan_time_ms: now,
                        schedule_time_ms: now,
                        start_time_ms: now,
                        worker_id: "bench".into(),
                        trigger: pb::RunTrigger::Schedule.into(),
                        status: pb::RunStatus::Running.into(),
                        err: String::new(),
                    })),
                    ..Default::default()
                },
                pb::RunEvent {
                    run_id,
                    kind: Some(pb::run_event::Kind::Finished(pb::RunFinished {
                        status: pb::RunStatus::Succeeded.into(),
                        end_time_ms: now + 2,
                        exit_code: Some(0),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ]
        })
        .collect()
}

/// Scenario 6: run events through logsvc, as 3 workers would deliver them (batches of 500
/// events, each run's start and end in the same batch).
pub async fn log_path(bench: &Bench, length: Duration) -> anyhow::Result<LogPathResult> {
    let channel = tonic::transport::Endpoint::from_shared(bench.stack.logsvc_url.clone())?
        .connect()
        .await?;
    let events_per_s = crate::limits::rate(3, length, move |batch| {
        let mut client = pb::log_service_client::LogServiceClient::new(channel.clone());
        async move {
            let events = run_events(batch, 250, now_ms());
            let resp = client
                .append_run_events(pb::AppendRunEventsRequest { events })
                .await?
                .into_inner();
            anyhow::ensure!(resp.rejected.is_empty(), "rejected: {:?}", resp.rejected);
            Ok(u64::from(resp.accepted))
        }
    })
    .await?;
    Ok(LogPathResult {
        events_per_s,
        runs_per_s: events_per_s / 2.0,
        raw_insert_docs_per_s: bench.limits.insert_docs_per_s,
        ratio: events_per_s / bench.limits.insert_docs_per_s,
    })
}

/// Checks of scenario 6 (throughput; visibility is checked in the steady run).
pub fn log_path_checks(r: &LogPathResult) -> Vec<Check> {
    vec![
        Check::info("run events/s through logsvc", r.events_per_s, ""),
        Check::info("raw insert_many docs/s", r.raw_insert_docs_per_s, ""),
        Check::at_least("events/s ÷ raw docs/s", 0.5, r.ratio, ""),
    ]
}

/// One step of the ceiling search.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingStep {
    /// Every-second jobs.
    pub jobs: usize,
    /// The steady run.
    pub result: SteadyResult,
    /// No slot missed or duplicated and p99 lag ≤ 100 ms.
    pub held: bool,
}

/// What the ceiling search found.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingResult {
    /// Each step.
    pub steps: Vec<CeilingStep>,
    /// Highest fires/s sustained over a whole window.
    pub sustained_fires_per_s: f64,
    /// That, as a fraction of the same-run spawn limit.
    pub fraction_of_spawn_limit: f64,
}

/// Scenario 3: raises the every-second job count from `start` by `step` until a step fails (or
/// `max_steps` held).
pub async fn ceiling(
    bench: &mut Bench,
    start: usize,
    step: usize,
    max_steps: usize,
    window: Duration,
) -> anyhow::Result<CeilingResult> {
    let mut steps = Vec::new();
    let mut sustained: f64 = 0.0;
    for i in 0..max_steps {
        let jobs = start + i * step;
        let result = steady(bench, &format!("ceil{jobs}"), jobs, window, None).await?;
        let held = result.slots.missing == 0
            && result.slots.duplicates == 0
            && result.slots.lag.p99_ms <= 100.0;
        tracing::info!(
            jobs,
            held,
            fires_per_s = result.fires_per_s,
            p99 = result.slots.lag.p99_ms,
            "ceiling step"
        );
        if held {
            sustained = sustained.max(result.fires_per_s);
        }
        steps.push(CeilingStep { jobs, result, held });
        if !held {
            break;
        }
    }
    Ok(CeilingResult {
        steps,
        sustained_fires_per_s: sustained,
        fraction_of_spawn_limit: sustained / bench.limits.spawns_per_s,
    })
}

/// Checks of scenario 3.
pub fn ceiling_checks(r: &CeilingResult) -> Vec<Check> {
    let mut checks = vec![
        Check::at_least("sustained fires/s", 800.0, r.sustained_fires_per_s, ""),
        Check::info("of the spawn limit", r.fraction_of_spawn_limit, ""),
    ];
    for s in &r.steps {
        checks.push(Check::info(
            &format!("{} jobs: p99 lag", s.jobs),
            s.result.slots.lag.p99_ms,
            "ms",
        ));
        checks.push(Check::info(
            &format!("{} jobs: missing + duplicates", s.jobs),
            (s.result.slots.missing + s.result.slots.duplicates) as f64,
            "",
        ));
    }
    checks
}
