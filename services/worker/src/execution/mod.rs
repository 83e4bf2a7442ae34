//! Execution: one claimed run, from its group leader started ahead of the slot to its end
//! shipped and its running record released. Its start and output are shipped as they come
//! (secrets masked, capped and cut by an [`OutputChunker`], stamped as the run's [`output`];
//! held back with the start for up to the start hold), its end durably, then the record goes to
//! the releaser. The process itself is [`exec`]'s, the group leader [`leader`]'s.

pub mod exec;
pub mod leader;
pub mod mask;
pub mod output;

use std::sync::Arc;
use std::time::Duration;

use distcron_core::output::OutputChunker;
use distcron_core::records::{RunStatus, RunTrigger, RunningRecord};
use distcron_core::JobDefinition;
use distcron_proto::logs::v1 as pb;
use tokio::sync::mpsc;
use tracing::Instrument;

use self::exec::{arm, execute, Armed, Ending, ExecSpec};
use self::mask::SecretMask;
use self::output::RunEvents;
use crate::ctx::Ctx;
use crate::local::LocalRun;

/// Longest output waits before it is shipped.
const CHUNK_DELAY: Duration = Duration::from_millis(200);

/// A claimed run whose group leader is started and waits for the slot.
#[derive(Debug)]
pub struct Prepared {
    spec: ExecSpec,
    armed: Result<Armed, String>,
}

/// Starts the group leader of a claimed run ahead of its slot (during the claim lead), so the
/// start at the slot is only the leader's start of the shell; the process group is recorded at
/// once, so a worker that dies before the slot leaves nothing behind.
pub fn prepare(ctx: &Ctx, record: &RunningRecord, def: &JobDefinition) -> Prepared {
    let mut env: Vec<(String, String)> = def
        .env
        .iter()
        .chain(&def.secret_env)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("DISTCRON_JOB".into(), record.job_name.clone()));
    env.push(("DISTCRON_RUN_ID".into(), record.run_id.clone()));
    env.push(("DISTCRON_SLOT_MS".into(), record.slot_ms.to_string()));
    let spec = ExecSpec {
        leader: ctx.settings.group_leader.clone(),
        shell: ctx.settings.shell.clone(),
        command: def.command.clone(),
        working_dir: (!def.working_dir.is_empty()).then(|| def.working_dir.clone().into()),
        env,
        user: (!def.user.is_empty()).then(|| def.user.clone()),
        allowed_users: ctx.settings.allowed_users.clone(),
        timeout: (def.timeout_seconds > 0)
            .then(|| Duration::from_secs(u64::from(def.timeout_seconds))),
        kill_grace: ctx.settings.kill_grace,
    };
    let armed = arm(&spec);
    if let Ok(a) = &armed {
        ctx.local.processes.record(&record.run_id, a.pgid);
    }
    Prepared { spec, armed }
}

/// Runs a claimed run to its end, in the span of its fire (see [`crate::fire::span::run_span`]);
/// `local` is how it is ended early (kill requests, shutdown).
pub async fn run(
    ctx: Arc<Ctx>,
    record: RunningRecord,
    def: Arc<JobDefinition>,
    prepared: Prepared,
    local: LocalRun,
) {
    let metrics = distcron_metrics::worker();
    metrics.running.inc();
    let (trace_id, span_id) = distcron_telemetry::ids_of(&tracing::Span::current());
    let events = RunEvents {
        run_id: record.run_id.clone(),
        trace_id,
        span_id,
    };
    let (stop, reason) = (local.stop.clone(), local.reason.clone());
    if let Ok(mut runs) = ctx.local.runs.lock() {
        runs.insert(record.run_id.clone(), local);
    }
    let start = ctx.clock.now_ms();
    tracing::info!(lag_ms = start - record.slot_ms, "run starting");
    if record.trigger == RunTrigger::Schedule {
        let lag_ms = (ctx.cluster.now_ms() - record.slot_ms).max(0);
        metrics.trigger_lag.observe(lag_ms as f64 / 1000.0);
    }
    let exec_span = tracing::info_span!(
        "exec",
        exit_code = tracing::field::Empty,
        signal = tracing::field::Empty
    );
    let Prepared { spec, armed } = prepared;
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(64);
    let shipping = Shipping {
        ctx: &ctx,
        events: &events,
        held_start: Some(started_event(&ctx, &record, &def, &events, start)),
        chunker: OutputChunker::new(ctx.settings.output_cap_bytes),
        secrets: SecretMask::new(def.secret_env.values().map(String::as_str)),
    };
    let exec = execute(armed, &spec, &stop, out_tx);
    let (ending, dropped) = shipping
        .follow(exec, out_rx)
        .instrument(exec_span.clone())
        .await;
    let end = Ended::of(ending, &reason.get(), def.timeout_seconds);
    if let Some(code) = end.exit_code {
        exec_span.record("exit_code", code);
    }
    if let Some(signal) = end.signal {
        exec_span.record("signal", signal);
    }
    finish(&ctx, &record, &events, end, start, dropped).await;
    metrics.running.dec();
}

/// The `started` event of a run that starts at `start_ms`.
fn started_event(
    ctx: &Ctx,
    record: &RunningRecord,
    def: &JobDefinition,
    events: &RunEvents,
    start_ms: i64,
) -> pb::RunEvent {
    events.event(pb::run_event::Kind::Started(pb::RunStarted {
        job_name: record.job_name.clone(),
        command: def.command.clone(),
        plan_time_ms: record.slot_ms,
        schedule_time_ms: record.claimed_at_ms,
        start_time_ms: start_ms,
        worker_id: ctx.id.clone(),
        trigger: record.trigger.into(),
        status: RunStatus::Running.into(),
        err: String::new(),
    }))
}

/// What ships a running run's start and output.
struct Shipping<'a> {
    ctx: &'a Ctx,
    events: &'a RunEvents,
    /// The start, while it waits (with the output) for the end, up to the start hold: a short
    /// run is then stored with one write.
    held_start: Option<pb::RunEvent>,
    chunker: OutputChunker,
    secrets: Option<SecretMask>,
}

impl Shipping<'_> {
    /// Ships the output of `exec` as it comes (from `output`) until the process has ended and its
    /// output is drained, then the rest. Returns how it ended and the bytes of output dropped.
    async fn follow(
        mut self,
        exec: impl std::future::Future<Output = Ending>,
        mut output: mpsc::Receiver<Vec<u8>>,
    ) -> (Ending, u64) {
        tokio::pin!(exec);
        let start_hold = tokio::time::sleep(self.ctx.settings.start_hold);
        tokio::pin!(start_hold);
        let mut ending = None;
        let mut flush_tick = tokio::time::interval(CHUNK_DELAY);
        loop {
            tokio::select! {
                e = &mut exec, if ending.is_none() => ending = Some(e),
                data = output.recv() => match data {
                    Some(data) => self.output(data).await,
                    None => break,
                },
                () = &mut start_hold, if self.held_start.is_some() => self.ship_held().await,
                _ = flush_tick.tick(), if self.held_start.is_none() => {
                    if let Some((seq, chunk)) = self.chunker.flush(false) {
                        self.ctx.out.ship(self.events.chunk(seq, chunk)).await;
                    }
                }
            }
        }
        let ending = match ending {
            Some(e) => e,
            None => exec.await,
        };
        (ending, self.finish().await)
    }

    /// Takes a piece of output: masked, then shipped once a chunk is full.
    async fn output(&mut self, data: Vec<u8>) {
        let data = match self.secrets.as_mut() {
            Some(mask) => mask.push(&data),
            None => data,
        };
        if let Some((seq, chunk)) = self.chunker.push(&data) {
            self.ship_held().await;
            self.ctx.out.ship(self.events.chunk(seq, chunk)).await;
        }
    }

    /// Ships the held start event, if it is still held.
    async fn ship_held(&mut self) {
        if let Some(event) = self.held_start.take() {
            self.ctx.out.ship(event).await;
        }
    }

    /// Ships the start if still held, then what the mask and the chunker still hold; returns the
    /// bytes dropped.
    async fn finish(mut self) -> u64 {
        self.ship_held().await;
        if let Some(held) = self.secrets.as_mut().map(SecretMask::finish) {
            if let Some((seq, chunk)) = self.chunker.push(&held) {
                self.ctx.out.ship(self.events.chunk(seq, chunk)).await;
            }
        }
        let (rest, dropped) = self.chunker.finish();
        for (seq, chunk) in rest {
            self.ctx.out.ship(self.events.chunk(seq, chunk)).await;
        }
        dropped
    }
}

/// How a run ended, as recorded.
struct Ended {
    status: RunStatus,
    exit_code: Option<i32>,
    signal: Option<i32>,
    err: String,
}

impl Ended {
    /// The record of `ending`; `why` is the reason a kill was asked for, `timeout_seconds` the
    /// job's timeout.
    fn of(ending: Ending, why: &str, timeout_seconds: u32) -> Self {
        let (status, exit_code, signal, err) = match ending {
            Ending::Exited { code: Some(0), .. } => {
                (RunStatus::Succeeded, Some(0), None, String::new())
            }
            Ending::Exited { code: Some(c), .. } => {
                (RunStatus::Failed, Some(c), None, format!("exit status {c}"))
            }
            Ending::Exited { code: None, signal } => (
                RunStatus::Failed,
                None,
                signal,
                format!("terminated by signal {}", signal.unwrap_or(0)),
            ),
            Ending::TimedOut { signal } => (
                RunStatus::TimedOut,
                None,
                signal,
                format!("timed out after {timeout_seconds}s"),
            ),
            Ending::Killed { signal } => (
                RunStatus::Killed,
                None,
                signal,
                if why.is_empty() {
                    "killed".into()
                } else {
                    why.to_owned()
                },
            ),
            Ending::SpawnFailed(e) => (RunStatus::Failed, None, None, format!("cannot start: {e}")),
        };
        Self {
            status,
            exit_code,
            signal,
            err,
        }
    }
}

/// Records the end of the run of `record`, started at `start_ms`: metrics, the `finished` event
/// on disk, then the run forgotten here and its running record queued for release.
async fn finish(
    ctx: &Ctx,
    record: &RunningRecord,
    events: &RunEvents,
    end: Ended,
    start_ms: i64,
    dropped: u64,
) {
    let metrics = distcron_metrics::worker();
    let end_ms = ctx.clock.now_ms();
    metrics.run_finished(end.status.as_str());
    metrics
        .run_duration
        .observe((end_ms - start_ms).max(0) as f64 / 1000.0);
    let Ended {
        status,
        exit_code,
        signal,
        err,
    } = end;
    // On disk before the running record is released: a crash from here on leaves the real end in
    // the spool, delivered by the worker restarted on its data dir.
    ctx.out
        .ship_durably(events.event(pb::run_event::Kind::Finished(pb::RunFinished {
            status: status.into(),
            end_time_ms: end_ms,
            exit_code,
            signal,
            err,
            output_bytes_dropped: dropped,
        })))
        .await;
    // Logged once the end is spooled, so the line says the end survives a crash.
    tracing::info!(status = ?status, exit_code, signal, duration_ms = end_ms - start_ms, "run finished");
    ctx.local.processes.forget(&record.run_id);
    if let Ok(mut runs) = ctx.local.runs.lock() {
        runs.remove(&record.run_id);
    }
    ctx.release_record(record.clone()).await;
}
