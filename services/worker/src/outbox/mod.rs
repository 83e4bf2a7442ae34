//! What goes out of this worker: run events to logsvc (through the [`shipper`]), slot claims
//! to the store (through the claim batcher, [`claims`]), and ended runs to the releaser
//! ([`crate::release`]). [`Outbox`] holds the three queues; their tasks own the other ends.

pub mod claims;
pub mod delivery;
pub mod shipper;
pub mod spool;

use distcron_core::records::RunningRecord;
use distcron_kv::KvError;
use distcron_ledger::{SlotClaim, SlotOutcome, UndeliveredMarker};
use distcron_proto::logs::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use self::claims::ClaimRequest;
use self::shipper::Shipment;

/// What the releaser is sent.
#[derive(Debug)]
pub enum Release {
    /// The running record of a run of this worker that ended, whose end was shipped.
    Ended(RunningRecord),
    /// A marker written outside the releaser: of another worker (or an earlier incarnation of
    /// this one) whose runs this worker has just shipped as `lost`, of the runs this worker's
    /// spool held at start, or of its finished runs released early for a claim. Deleted once
    /// logsvc has stored those runs' ends.
    Adopted(UndeliveredMarker),
}

/// The queues out of this worker.
#[derive(Debug)]
pub struct Outbox {
    /// Run events to ship.
    pub events: mpsc::Sender<Shipment>,
    /// Ended runs whose running records are to be released, and adopted markers.
    pub releases: mpsc::Sender<Release>,
    /// Slot claims to send, batched.
    pub claims: mpsc::Sender<ClaimRequest>,
}

impl Outbox {
    /// Queues an event for logsvc (waits while the shipper is busy).
    pub async fn ship(&self, event: pb::RunEvent) {
        if self.events.send(Shipment::event(event)).await.is_err() {
            tracing::error!("log shipper is gone; run event lost");
        }
    }

    /// Queues a run's last event for logsvc and waits until it is on disk in the spool, so the
    /// run's running record is released only once its end survives a crash of this worker.
    pub async fn ship_durably(&self, event: pb::RunEvent) {
        let (shipment, spooled) = Shipment::durable(event);
        if self.events.send(shipment).await.is_err() {
            tracing::error!("log shipper is gone; run event lost");
            return;
        }
        // Dropped unanswered when the spool could not take the batch (counted and logged there).
        let _ = spooled.await;
    }

    /// Hands `item` to the releaser; false if it is gone.
    pub async fn release(&self, item: Release) -> bool {
        self.releases.send(item).await.is_ok()
    }

    /// Claims one slot through the batcher: the store's answer, or a retryable error if the
    /// transaction timed out or the batcher has stopped.
    pub async fn claim_slot(
        &self,
        claim: SlotClaim,
        ledger_exists: bool,
    ) -> Result<SlotOutcome, KvError> {
        let (reply, answer) = oneshot::channel();
        let request = ClaimRequest {
            claim,
            ledger_exists,
            traceparent: distcron_telemetry::current_traceparent(),
            reply,
        };
        let stopped = || KvError::Unavailable("the claim batcher has stopped".into());
        self.claims.send(request).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
