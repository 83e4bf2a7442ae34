//! Shipping run events to logsvc without losing them.
//!
//! Events are batched (by count, size or delay), and every batch is first written to an on-disk
//! spool (one file per batch, written to a temporary name, fsynced, then renamed), then delivered
//! to logsvc oldest first (several batches merged into one request when a backlog has built up)
//! and deleted once acknowledged. While logsvc is unreachable batches pile up on disk and are
//! delivered in order when it returns; a worker restarted after a crash delivers what its spool
//! held. AppendRunEvents is idempotent, so a batch delivered twice (acknowledgement
//! lost) does no harm. When the spool is full, new batches are dropped, with an error log line and
//! a counter, never silently.
//!
//! A run's end is shipped durably ([`Shipment::durable`]): its batch leaves after at most
//! [`DURABLE_FLUSH_DELAY`] (ends arriving meanwhile join it, a group commit), and the sender is
//! told once the batch is on disk, so the worker releases a run's running record only after its
//! end would survive a crash of the worker (see [`crate::release`]).
//!
//! After each delivery the shipper reports the runs whose ends logsvc stored (so the releaser can
//! delete their markers, see [`crate::release`]).
//!
//! Each delivery is a `deliver` span: the child of the run's span when the batch holds one run's
//! events (so logsvc's handling joins the run's trace), else linked to each run's span.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distcron_kv::backoff;
use distcron_proto::logs::v1 as pb;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use tonic::service::interceptor::InterceptedService;

use prost::Message;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::Instrument;

/// The logsvc client the shipper uses.
pub type LogsClient = LogServiceClient<InterceptedService<Channel, CallMetadata>>;

/// What the worker adds to each logsvc call: its token and the current trace context.
#[derive(Debug, Clone)]
pub struct CallMetadata(pub distcron_discovery::BearerToken);

impl tonic::service::Interceptor for CallMetadata {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let request = self.0.call(request)?;
        distcron_telemetry::TracePropagation.call(request)
    }
}

/// Largest encoded size of one batch and of one delivery, well under gRPC's 4 MiB message
/// limit.
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Most events in one delivery (logsvc takes up to 10,000): large enough to catch up on a
/// backlog in few requests, small enough that logsvc stores one well within its store timeout.
const MAX_DELIVERY_EVENTS: usize = 1_000;

/// Longest a batch holding a durable event (a run's end) waits for more events before it is
/// spooled: ends arriving meanwhile share its write and fsync.
pub const DURABLE_FLUSH_DELAY: Duration = Duration::from_millis(5);

/// An event for logsvc and, for a durable one, who waits until it is on disk.
#[derive(Debug)]
pub struct Shipment {
    /// The event.
    pub event: pb::RunEvent,
    /// Told when the batch holding the event is spooled (written and synced), or dropped if it
    /// could not be (the spool is full or failing: counted and logged as dropped events).
    pub spooled: Option<oneshot::Sender<()>>,
}

impl Shipment {
    /// An event delivered in its batch's time.
    pub fn event(event: pb::RunEvent) -> Self {
        Self {
            event,
            spooled: None,
        }
    }

    /// An event whose sender waits (on the returned receiver) until it is on disk.
    pub fn durable(event: pb::RunEvent) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let shipment = Self {
            event,
            spooled: Some(tx),
        };
        (shipment, rx)
    }
}

/// How the shipper batches and spools.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// The spool directory.
    pub dir: PathBuf,
    /// Largest spool size.
    pub max_bytes: u64,
    /// Most events per batch.
    pub batch_events: usize,
    /// Longest an event waits for its batch.
    pub batch_delay: Duration,
    /// How long the final flush may try to deliver at shutdown (the rest stays spooled).
    pub flush_timeout: Duration,
}

struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    files: VecDeque<(u64, u64)>,
    next: u64,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        distcron_config::private::create_dir(dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            {
                files.push((seq, entry.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        files.sort_unstable();
        let bytes = files.iter().map(|(_, n)| n).sum();
        let next = files.last().map_or(0, |(s, _)| s + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            bytes,
            files: files.into(),
            next,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    /// Stores a batch durably; `Ok(false)` when the spool is full.
    fn push(&mut self, batch: &pb::AppendRunEventsRequest) -> std::io::Result<bool> {
        let data = batch.encode_to_vec();
        let len = data.len() as u64;
        if self.bytes + len > self.max_bytes {
            return Ok(false);
        }
        let seq = self.next;
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        {
            use std::io::Write;
            let mut f = distcron_config::private::write_file(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path(seq))?;
        self.next += 1;
        self.bytes += len;
        self.files.push_back((seq, len));
        Ok(true)
    }

    /// The oldest batches, oldest first, as many as fit in `max_bytes` (at least one).
    fn oldest(&self, max_bytes: u64) -> Vec<u64> {
        let mut total = 0;
        let mut seqs = Vec::new();
        for (seq, len) in &self.files {
            total += len;
            if total > max_bytes && !seqs.is_empty() {
                break;
            }
            seqs.push(*seq);
        }
        seqs
    }

    fn read(&self, seq: u64) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(seq))
    }

    fn pop(&mut self, seq: u64) {
        if self.files.front().map(|(s, _)| *s) == Some(seq) {
            if let Some((_, len)) = self.files.pop_front() {
                self.bytes -= len;
            }
            let _ = std::fs::remove_file(self.path(seq));
        }
    }
}

/// A running shipper: send events into [`Shipper::sender`]; [`Shipper::finish`] flushes.
pub struct Shipper {
    tx: mpsc::Sender<Shipment>,
    close: tokio_util::sync::CancellationToken,
    collector: JoinHandle<()>,
    deliverer: JoinHandle<()>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").finish_non_exhaustive()
    }
}

struct Shared {
    spool: Mutex<Spool>,
    wake: Notify,
    closing: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn update_gauges(&self, spool: &Spool) {
        let metrics = distcron_metrics::worker();
        metrics
            .spool_bytes
            .set(i64::try_from(spool.bytes).unwrap_or(i64::MAX));
        metrics
            .spool_batches
            .set(i64::try_from(spool.files.len()).unwrap_or(i64::MAX));
    }
}

impl Shipper {
    /// Opens the spool (delivering what a previous run left there) and starts shipping to logsvc;
    /// the ids of the runs whose ends logsvc stored go to `acks` after each delivery.
    pub fn start(
        config: ShipperConfig,
        client: LogsClient,
        acks: mpsc::Sender<Vec<String>>,
    ) -> std::io::Result<Self> {
        let spool = Spool::open(&config.dir, config.max_bytes)?;
        if !spool.files.is_empty() {
            tracing::info!(
                batches = spool.files.len(),
                bytes = spool.bytes,
                "delivering events spooled before a restart"
            );
        }
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            wake: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        if let Ok(s) = shared.spool.lock() {
            shared.update_gauges(&s);
        }
        let (tx, rx) = mpsc::channel(config.batch_events.max(1) * 8);
        let close = tokio_util::sync::CancellationToken::new();
        let collector = tokio::spawn(collect(rx, shared.clone(), config.clone(), close.clone()));
        let deliverer = tokio::spawn(deliver(shared, client, acks, config.flush_timeout));
        Ok(Self {
            tx,
            close,
            collector,
            deliverer,
        })
    }

    /// Where producers send events.
    pub fn sender(&self) -> mpsc::Sender<Shipment> {
        self.tx.clone()
    }

    /// Spools what was sent so far and tries to deliver it within the flush timeout; the rest
    /// stays spooled for the next start.
    pub async fn finish(self) {
        self.close.cancel();
        let _ = self.collector.await;
        let _ = self.deliverer.await;
    }
}

async fn spool_batch(shared: &Arc<Shared>, events: Vec<pb::RunEvent>) {
    let n = events.len() as u64;
    let shared2 = shared.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let batch = pb::AppendRunEventsRequest { events };
        let mut spool = shared2
            .spool
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        let stored = spool.push(&batch)?;
        shared2.update_gauges(&spool);
        Ok::<bool, std::io::Error>(stored)
    })
    .await;
    match stored {
        Ok(Ok(true)) => shared.wake.notify_one(),
        Ok(Ok(false)) => {
            distcron_metrics::worker().dropped_batches("spool_full", 1, n);
            tracing::error!(dropped = n, "log spool is full: run events DROPPED");
        }
        Ok(Err(e)) => {
            distcron_metrics::worker().dropped_batches("spool_error", 1, n);
            tracing::error!(error = %e, dropped = n, "cannot write the log spool: run events DROPPED");
        }
        Err(e) => {
            distcron_metrics::worker().dropped_batches("spool_error", 1, n);
            tracing::error!(error = %e, dropped = n, "spool task failed: run events DROPPED");
        }
    }
}

/// A batch being collected: its events, their encoded size, and who waits for it to be on disk.
#[derive(Default)]
struct Batch {
    events: Vec<pb::RunEvent>,
    bytes: usize,
    waiting: Vec<oneshot::Sender<()>>,
}

impl Batch {
    /// Adds a shipment; returns whether it is durable (its sender waits).
    fn push(&mut self, shipment: Shipment) -> bool {
        self.bytes += shipment.event.encoded_len();
        self.events.push(shipment.event);
        match shipment.spooled {
            Some(waiter) => {
                self.waiting.push(waiter);
                true
            }
            None => false,
        }
    }

    /// Spools the batch, then tells those waiting for it.
    async fn spool(self, shared: &Arc<Shared>) {
        if !self.events.is_empty() {
            spool_batch(shared, self.events).await;
        }
        for waiter in self.waiting {
            let _ = waiter.send(());
        }
    }
}

async fn collect(
    mut rx: mpsc::Receiver<Shipment>,
    shared: Arc<Shared>,
    config: ShipperConfig,
    close: tokio_util::sync::CancellationToken,
) {
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            () = close.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        let mut deadline = tokio::time::Instant::now() + config.batch_delay;
        let durable_deadline =
            |d: tokio::time::Instant| d.min(tokio::time::Instant::now() + DURABLE_FLUSH_DELAY);
        if batch.push(first) {
            deadline = durable_deadline(deadline);
        }
        while batch.events.len() < config.batch_events && batch.bytes < MAX_REQUEST_BYTES {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => {
                        if batch.push(e) {
                            deadline = durable_deadline(deadline);
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = close.cancelled() => break,
            }
        }
        batch.spool(&shared).await;
    }
    // Whatever was sent before closing is spooled too.
    let mut batch = Batch::default();
    while let Ok(e) = rx.try_recv() {
        batch.push(e);
        if batch.events.len() >= config.batch_events.max(1) {
            std::mem::take(&mut batch).spool(&shared).await;
        }
    }
    batch.spool(&shared).await;
    shared.closing.store(true, Ordering::Relaxed);
    shared.wake.notify_one();
}

/// Reads the spooled batches `seqs` (oldest first) and merges them into one request of at most
/// [`MAX_DELIVERY_EVENTS`] events. Returns the request and the batches it holds; a batch that
/// cannot be read is dropped (logged) when it is the oldest, else left for the next delivery.
async fn read_merged(
    shared: &Arc<Shared>,
    seqs: Vec<u64>,
) -> (pb::AppendRunEventsRequest, Vec<u64>) {
    let shared2 = shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        let spool = shared2.spool.lock().map_err(|_| "spool lock poisoned")?;
        Ok::<_, &str>(
            seqs.into_iter()
                .map(|seq| (seq, spool.read(seq)))
                .collect::<Vec<_>>(),
        )
    })
    .await;
    let batches = match read {
        Ok(Ok(batches)) => batches,
        other => {
            tracing::error!(result = ?other.err(), "cannot read the log spool");
            return (pb::AppendRunEventsRequest::default(), Vec::new());
        }
    };
    let mut merged = pb::AppendRunEventsRequest::default();
    let mut taken = Vec::new();
    for (seq, bytes) in batches {
        let decoded = bytes.map_err(|e| e.to_string()).and_then(|b| {
            pb::AppendRunEventsRequest::decode(b.as_slice()).map_err(|e| e.to_string())
        });
        match decoded {
            Ok(batch) => {
                if !taken.is_empty()
                    && merged.events.len() + batch.events.len() > MAX_DELIVERY_EVENTS
                {
                    break;
                }
                merged.events.extend(batch.events);
                taken.push(seq);
            }
            Err(error) if taken.is_empty() => {
                tracing::error!(seq, %error, "unreadable spooled batch DROPPED");
                distcron_metrics::worker().dropped_batches("unreadable", 1, 0);
                pop(shared, &[seq]).await;
            }
            Err(_) => break,
        }
    }
    (merged, taken)
}

/// The runs whose end is in `batch`: a `finished` event, or a `started` one that already ends
/// the run (a skipped slot).
fn ended_runs(batch: &pb::AppendRunEventsRequest) -> Vec<String> {
    batch
        .events
        .iter()
        .filter(|e| match &e.kind {
            Some(pb::run_event::Kind::Finished(_)) => true,
            Some(pb::run_event::Kind::Started(s)) => ![
                pb::RunStatus::Unspecified as i32,
                pb::RunStatus::Running as i32,
            ]
            .contains(&s.status),
            _ => false,
        })
        .map(|e| e.run_id.clone())
        .collect()
}

async fn deliver(
    shared: Arc<Shared>,
    mut client: LogsClient,
    acks: mpsc::Sender<Vec<String>>,
    flush_timeout: Duration,
) {
    let mut failures = 0u32;
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        let oldest = shared
            .spool
            .lock()
            .map(|s| s.oldest(MAX_REQUEST_BYTES as u64))
            .unwrap_or_default();
        let closing = shared.closing.load(Ordering::Relaxed);
        if closing && flush_deadline.is_none() {
            flush_deadline = Some(tokio::time::Instant::now() + flush_timeout);
        }
        if oldest.is_empty() {
            if closing {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        if flush_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!(
                "log shipping stopped at shutdown; the rest stays spooled for the next start"
            );
            return;
        }
        let (batch, seqs) = read_merged(&shared, oldest).await;
        if seqs.is_empty() {
            continue;
        }
        let n = batch.events.len() as u64;
        let ended = ended_runs(&batch);
        let metrics = distcron_metrics::worker();
        let span = delivery_span(&batch);
        let delivered = tokio::time::timeout(
            Duration::from_secs(10),
            client.append_run_events(batch).instrument(span),
        )
        .await;
        match delivered {
            Ok(Ok(resp)) => {
                failures = 0;
                let resp = resp.into_inner();
                for r in &resp.rejected {
                    tracing::error!(run_id = %r.run_id, reason = %r.reason, "logsvc rejected a run event");
                }
                let rejected = resp.rejected.len() as u64;
                metrics.dropped("rejected", rejected);
                metrics.delivered_events.inc_by(n.saturating_sub(rejected));
                metrics.log_batch_events.observe(n as f64);
                pop(&shared, &seqs).await;
                if !ended.is_empty() {
                    // Fails only once the releaser has ended (shutdown); nothing is left to do.
                    let _ = acks.send(ended).await;
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                tracing::error!(error = %status, events = n, "logsvc refused a whole batch; DROPPED");
                metrics.dropped_batches("rejected", seqs.len() as u64, n);
                pop(&shared, &seqs).await;
            }
            failed => {
                failures += 1;
                metrics.delivery_failures.inc();
                let error = match failed {
                    Ok(Err(status)) => status.to_string(),
                    _ => "timed out".to_owned(),
                };
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %error, failures, "logsvc unreachable; events stay spooled");
                }
                let pause = backoff(failures, Duration::from_secs(2));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.wake.notified() => {}
                }
            }
        }
    }
}

/// The span of one delivery: a child of the run's span when the batch holds the events of one
/// run, else linked to the span of each run in it.
fn delivery_span(batch: &pb::AppendRunEventsRequest) -> tracing::Span {
    let runs: Vec<String> = batch
        .events
        .iter()
        .map(|e| distcron_telemetry::traceparent_of(&e.trace_id, &e.span_id))
        .collect();
    let span = tracing::info_span!("deliver", events = batch.events.len());
    distcron_telemetry::join_or_link(&span, runs);
    span
}

/// Deletes delivered (or dropped) batches, oldest first.
async fn pop(shared: &Arc<Shared>, seqs: &[u64]) {
    let shared = shared.clone();
    let seqs = seqs.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut s) = shared.spool.lock() {
            for seq in seqs {
                s.pop(seq);
            }
            shared.update_gauges(&s);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(run: &str) -> pb::AppendRunEventsRequest {
        pb::AppendRunEventsRequest {
            events: vec![pb::RunEvent {
                run_id: run.into(),
                trace_id: String::new(),
                span_id: String::new(),
                kind: None,
            }],
        }
    }

    #[test]
    fn spool_survives_reopen_in_order_and_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), 1_000).expect("open");
        assert!(s.push(&batch("a")).expect("push"));
        assert!(s.push(&batch("b")).expect("push"));
        drop(s);
        let mut s = Spool::open(dir.path(), 1_000).expect("reopen");
        let first = s.oldest(u64::MAX)[0];
        let got = pb::AppendRunEventsRequest::decode(s.read(first).expect("read").as_slice())
            .expect("decode");
        assert_eq!(got.events[0].run_id, "a");
        s.pop(first);
        assert!(s.push(&batch("c")).expect("push"));
        let order: Vec<u64> = s.files.iter().map(|(q, _)| *q).collect();
        assert_eq!(order, [1, 2]);
        // Deliveries take the oldest batches that fit the byte budget, at least one.
        let one = s.files[0].1;
        assert_eq!(s.oldest(2 * one), [1, 2]);
        assert_eq!(s.oldest(2 * one - 1), [1]);
        assert_eq!(s.oldest(1), [1]);
        let mut tiny = Spool::open(&dir.path().join("tiny"), 5).expect("open");
        assert!(
            !tiny.push(&batch("too-big")).expect("push"),
            "full spool refuses"
        );
    }
}
