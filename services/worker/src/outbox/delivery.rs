//! Delivery of spooled batches to logsvc: oldest first, several merged into one request when a
//! backlog has built up, each deleted once acknowledged, and the runs whose ends logsvc stored
//! reported to the releaser.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use distcron_kv::backoff;
use distcron_proto::logs::v1 as pb;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use super::spool::{Shared, MAX_REQUEST_BYTES};

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

/// Most events in one delivery (logsvc takes up to 10,000): large enough to catch up on a
/// backlog in few requests, small enough that logsvc stores one well within its store timeout.
const MAX_DELIVERY_EVENTS: usize = 1_000;

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

/// When deliveries may begin: once `opened` is cancelled; none begin if `closed` (the shipper
/// finishing) comes first, and the spool stays as it is for the next start.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Cancelled when deliveries may begin.
    pub opened: CancellationToken,
    /// Cancelled when the shipper finishes.
    pub closed: CancellationToken,
}

impl Gate {
    /// Waits until deliveries may begin: true, or false if the shipper finished first.
    async fn opens(&self) -> bool {
        tokio::select! {
            biased;
            () = self.opened.cancelled() => true,
            () = self.closed.cancelled() => false,
        }
    }
}

/// Delivers the spool's batches once `gate` opens, until the shipper finishes and the spool is
/// empty or the flush timeout is over.
pub async fn deliver(
    shared: Arc<Shared>,
    mut client: LogsClient,
    acks: mpsc::Sender<Vec<String>>,
    flush_timeout: Duration,
    gate: Gate,
) {
    if !gate.opens().await {
        return;
    }
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
                count_answer(&resp.into_inner(), n);
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

/// Logs and counts logsvc's answer to a delivery of `n` events.
fn count_answer(resp: &pb::AppendRunEventsResponse, n: u64) {
    let metrics = distcron_metrics::worker();
    for r in &resp.rejected {
        tracing::error!(run_id = %r.run_id, reason = %r.reason, "logsvc rejected a run event");
    }
    let rejected = resp.rejected.len() as u64;
    metrics.dropped("rejected", rejected);
    metrics.delivered_events.inc_by(n.saturating_sub(rejected));
    metrics.log_batch_events.observe(n as f64);
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
