//! One claimed run: execute, ship `started` and the output as it comes (secrets masked, capped;
//! held back with the start for up to the start hold), ship `finished`, then release the running record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::records::RunningRecord;
use distcron_core::JobDefinition;
use distcron_proto::logs::v1 as pb;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::ctx::{Ctx, LocalRun};
use crate::exec::{arm, execute, Armed, Ending, ExecSpec};
use crate::mask::SecretMask;

/// Largest output chunk shipped.
const CHUNK_BYTES: usize = 32 * 1024;
/// Longest output waits before it is shipped.
const CHUNK_DELAY: Duration = Duration::from_millis(200);

/// Output of one run, as numbered chunks: the first `cap` bytes as they come, then only a rolling
/// tail of `cap / 2` bytes, shipped at the end; what fell out in between is counted as dropped.
#[derive(Debug)]
pub struct OutputChunker {
    cap: usize,
    seq: u64,
    head_left: usize,
    pending: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl OutputChunker {
    /// A chunker shipping at most `cap` bytes live.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seq: 0,
            head_left: cap,
            pending: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes output; returns a chunk when one is full.
    pub fn push(&mut self, mut data: &[u8]) -> Option<(u64, Vec<u8>)> {
        let take = data.len().min(self.head_left);
        self.pending.extend_from_slice(&data[..take]);
        self.head_left -= take;
        data = &data[take..];
        if !data.is_empty() {
            self.tail.extend(data);
            let limit = self.cap / 2;
            if self.tail.len() > limit {
                let excess = self.tail.len() - limit;
                self.tail.drain(..excess);
                self.dropped += excess as u64;
            }
        }
        (self.pending.len() >= CHUNK_BYTES)
            .then(|| self.flush(false))
            .flatten()
    }

    /// The pending output as a chunk, if any. Unless `all`, an incomplete UTF-8 character at
    /// the end waits for the next piece.
    pub fn flush(&mut self, all: bool) -> Option<(u64, Vec<u8>)> {
        let mut cut = self.pending.len();
        if !all {
            if let Err(e) = std::str::from_utf8(&self.pending) {
                if e.error_len().is_none() {
                    cut = e.valid_up_to();
                }
            }
        }
        if cut == 0 {
            return None;
        }
        let rest = self.pending.split_off(cut);
        let chunk = std::mem::replace(&mut self.pending, rest);
        let seq = self.seq;
        self.seq += 1;
        Some((seq, chunk))
    }

    /// The remaining chunks at the end of the run (pending head output, then the tail), and the
    /// number of bytes dropped.
    pub fn finish(mut self) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut out: Vec<(u64, Vec<u8>)> = self.flush(true).into_iter().collect();
        if !self.tail.is_empty() {
            let mut tail: Vec<u8> = self.tail.drain(..).collect();
            // Start the tail on a character boundary.
            let skip = tail
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            self.dropped += skip as u64;
            tail.drain(..skip);
            out.push((self.seq, tail));
        }
        (out, self.dropped)
    }
}

/// The events of one run, stamped with the run's trace and span ids.
struct RunEvents {
    run_id: String,
    trace_id: String,
    span_id: String,
}

impl RunEvents {
    fn event(&self, kind: pb::run_event::Kind) -> pb::RunEvent {
        pb::RunEvent {
            run_id: self.run_id.clone(),
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            kind: Some(kind),
        }
    }

    fn chunk(&self, seq: u64, data: Vec<u8>) -> pb::RunEvent {
        self.event(pb::run_event::Kind::Output(pb::OutputChunk { seq, data }))
    }
}

/// The metric label of a final run status.
fn status_label(status: pb::RunStatus) -> &'static str {
    match status {
        pb::RunStatus::Succeeded => "succeeded",
        pb::RunStatus::Failed => "failed",
        pb::RunStatus::Killed => "killed",
        pb::RunStatus::TimedOut => "timed_out",
        pb::RunStatus::Skipped => "skipped",
        pb::RunStatus::Lost => "lost",
        pb::RunStatus::Unspecified | pb::RunStatus::Running => "other",
    }
}

/// Ships the held start event, if it is still held.
async fn ship_held(ctx: &Ctx, held: &mut Option<pb::RunEvent>) {
    if let Some(event) = held.take() {
        ctx.ship(event).await;
    }
}

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
        ctx.processes.record(&record.run_id, a.pgid);
    }
    Prepared { spec, armed }
}

/// Runs a claimed run to its end, in the span of its fire (see `fire::run_span`); `local` is how
/// it is ended early (kill requests, shutdown).
pub async fn run(
    ctx: Arc<Ctx>,
    record: RunningRecord,
    def: Arc<JobDefinition>,
    prepared: Prepared,
    local: LocalRun,
) {
    let metrics = distcron_metrics::worker();
    metrics.running.inc();
    run_inner(ctx, record, def, prepared, local).await;
    metrics.running.dec();
}

async fn run_inner(
    ctx: Arc<Ctx>,
    record: RunningRecord,
    def: Arc<JobDefinition>,
    prepared: Prepared,
    local: LocalRun,
) {
    let (trace_id, span_id) = distcron_telemetry::ids_of(&tracing::Span::current());
    let events = RunEvents {
        run_id: record.run_id.clone(),
        trace_id,
        span_id,
    };
    let metrics = distcron_metrics::worker();
    let (stop, reason) = (local.stop.clone(), local.reason.clone());
    if let Ok(mut runs) = ctx.runs.lock() {
        runs.insert(record.run_id.clone(), local);
    }
    let start = ctx.clock.now_ms();
    tracing::info!(lag_ms = start - record.slot_ms, "run starting");
    if record.trigger == distcron_core::records::RunTrigger::Schedule {
        let lag_ms = (ctx.cluster_now_ms() - record.slot_ms).max(0);
        metrics.trigger_lag.observe(lag_ms as f64 / 1000.0);
    }
    // The start waits (with the output) for the end, up to the start hold: a short run is then
    // stored with one write.
    let mut held_start = Some(events.event(pb::run_event::Kind::Started(pb::RunStarted {
        job_name: record.job_name.clone(),
        command: def.command.clone(),
        plan_time_ms: record.slot_ms,
        schedule_time_ms: record.claimed_at_ms,
        start_time_ms: start,
        worker_id: ctx.id.clone(),
        trigger: crate::fire::trigger_to_proto(record.trigger),
        status: pb::RunStatus::Running as i32,
        err: String::new(),
    })));
    let start_hold = tokio::time::sleep(ctx.settings.start_hold);
    tokio::pin!(start_hold);
    let Prepared { spec, armed } = prepared;
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let exec = execute(armed, &spec, &stop, out_tx);
    tokio::pin!(exec);
    let mut chunker = OutputChunker::new(ctx.settings.output_cap_bytes);
    let mut secrets = SecretMask::new(def.secret_env.values().map(String::as_str));
    let exec_span = tracing::info_span!(
        "exec",
        exit_code = tracing::field::Empty,
        signal = tracing::field::Empty
    );
    let ending = async {
        let mut ending = None;
        let mut flush_tick = tokio::time::interval(CHUNK_DELAY);
        loop {
            tokio::select! {
                e = &mut exec, if ending.is_none() => ending = Some(e),
                data = out_rx.recv() => match data {
                    Some(data) => {
                        let data = match secrets.as_mut() {
                            Some(mask) => mask.push(&data),
                            None => data,
                        };
                        if let Some((seq, chunk)) = chunker.push(&data) {
                            ship_held(&ctx, &mut held_start).await;
                            ctx.ship(events.chunk(seq, chunk)).await;
                        }
                    }
                    None => break,
                },
                () = &mut start_hold, if held_start.is_some() => {
                    ship_held(&ctx, &mut held_start).await;
                }
                _ = flush_tick.tick(), if held_start.is_none() => {
                    if let Some((seq, chunk)) = chunker.flush(false) {
                        ctx.ship(events.chunk(seq, chunk)).await;
                    }
                }
            }
        }
        match ending {
            Some(e) => e,
            None => exec.await,
        }
    }
    .instrument(exec_span.clone())
    .await;
    ship_held(&ctx, &mut held_start).await;
    if let Some(held) = secrets.as_mut().map(SecretMask::finish) {
        if let Some((seq, chunk)) = chunker.push(&held) {
            ctx.ship(events.chunk(seq, chunk)).await;
        }
    }
    let (rest, dropped) = chunker.finish();
    for (seq, chunk) in rest {
        ctx.ship(events.chunk(seq, chunk)).await;
    }
    let why = reason.get();
    let (status, exit_code, signal, err) = match ending {
        Ending::Exited { code: Some(0), .. } => {
            (pb::RunStatus::Succeeded, Some(0), None, String::new())
        }
        Ending::Exited { code: Some(c), .. } => (
            pb::RunStatus::Failed,
            Some(c),
            None,
            format!("exit status {c}"),
        ),
        Ending::Exited { code: None, signal } => (
            pb::RunStatus::Failed,
            None,
            signal,
            format!("terminated by signal {}", signal.unwrap_or(0)),
        ),
        Ending::TimedOut { signal } => (
            pb::RunStatus::TimedOut,
            None,
            signal,
            format!("timed out after {}s", def.timeout_seconds),
        ),
        Ending::Killed { signal } => (
            pb::RunStatus::Killed,
            None,
            signal,
            if why.is_empty() { "killed".into() } else { why },
        ),
        Ending::SpawnFailed(e) => (
            pb::RunStatus::Failed,
            None,
            None,
            format!("cannot start: {e}"),
        ),
    };
    let end = ctx.clock.now_ms();
    if let Some(code) = exit_code {
        exec_span.record("exit_code", code);
    }
    if let Some(signal) = signal {
        exec_span.record("signal", signal);
    }
    metrics.run_finished(status_label(status));
    metrics
        .run_duration
        .observe((end - start).max(0) as f64 / 1000.0);
    // On disk before the running record is released: a crash from here on leaves the real end in
    // the spool, delivered by the worker restarted on its data dir.
    ctx.ship_durably(events.event(pb::run_event::Kind::Finished(pb::RunFinished {
        status: status as i32,
        end_time_ms: end,
        exit_code,
        signal,
        err,
        output_bytes_dropped: dropped,
    })))
    .await;
    // Logged once the end is spooled, so the line says the end survives a crash.
    tracing::info!(status = ?status, exit_code, signal, duration_ms = end - start, "run finished");
    ctx.processes.forget(&record.run_id);
    if let Ok(mut runs) = ctx.runs.lock() {
        runs.remove(&record.run_id);
    }
    ctx.release_record(record).await;
}

#[cfg(test)]
mod tests {
    use super::OutputChunker;

    #[test]
    fn head_then_tail_with_drops_counted() {
        let mut c = OutputChunker::new(8);
        assert_eq!(c.push(b"0123"), None);
        assert_eq!(c.push(b"4567ABCDEFGH"), None);
        let (rest, dropped) = c.finish();
        assert_eq!(rest, vec![(0, b"01234567".to_vec()), (1, b"EFGH".to_vec())]);
        assert_eq!(dropped, 4);
    }

    #[test]
    fn utf8_characters_are_not_split_between_chunks() {
        let mut c = OutputChunker::new(1 << 20);
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), None);
        assert_eq!(c.flush(false), Some((0, b"a".to_vec())));
        assert_eq!(c.push(&[e[1]]), None);
        assert_eq!(c.flush(false), Some((1, "é".as_bytes().to_vec())));
    }
}
