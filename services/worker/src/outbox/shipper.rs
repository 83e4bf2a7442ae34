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

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::delivery::{deliver, Gate, LogsClient};
use super::spool::{Shared, Spool, MAX_REQUEST_BYTES};
use distcron_proto::logs::v1 as pb;

use prost::Message;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

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

/// A running shipper: send events into [`Shipper::sender`]; deliveries begin with
/// [`Shipper::open_delivery`]; [`Shipper::finish`] flushes.
pub struct Shipper {
    tx: mpsc::Sender<Shipment>,
    close: tokio_util::sync::CancellationToken,
    opened: tokio_util::sync::CancellationToken,
    collector: JoinHandle<()>,
    deliverer: JoinHandle<()>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").finish_non_exhaustive()
    }
}

impl Shipper {
    /// Opens the spool and starts spooling; deliveries to logsvc (first of what a previous run
    /// left in the spool, whose runs must be marked undelivered first, see
    /// [`crate::unrun::spooled`]) begin once [`Shipper::open_delivery`] is called. The ids of the
    /// runs whose ends logsvc stored go to `acks` after each delivery.
    pub fn start(
        config: ShipperConfig,
        client: LogsClient,
        acks: mpsc::Sender<Vec<String>>,
    ) -> std::io::Result<Self> {
        let spool = Spool::open(&config.dir, config.max_bytes)?;
        if !spool.is_empty() {
            tracing::info!(
                batches = spool.len(),
                bytes = spool.bytes(),
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
        let opened = tokio_util::sync::CancellationToken::new();
        let collector = tokio::spawn(collect(rx, shared.clone(), config.clone(), close.clone()));
        let gate = Gate {
            opened: opened.clone(),
            closed: close.clone(),
        };
        let deliverer = tokio::spawn(deliver(shared, client, acks, config.flush_timeout, gate));
        Ok(Self {
            tx,
            close,
            opened,
            collector,
            deliverer,
        })
    }

    /// Lets deliveries begin.
    pub fn open_delivery(&self) {
        self.opened.cancel();
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
