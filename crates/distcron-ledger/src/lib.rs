//! The store transactions of distcron: the slot ledger's, that make every slot and every manual
//! trigger run exactly once, cluster-wide, and the job writes they depend on (saves, deletes with
//! their tombstones, pauses, trigger requests), so services only map their requests to these
//! calls.
//!
//! A claim is one transaction that both decides the winner and records the run as running under
//! the claiming worker's session lease, so a claimed run is never invisible and disappears with
//! its worker.

mod claimed;
mod deletions;
mod jobs;
mod kills;
mod release;
mod slots;
mod triggers;

pub use claimed::{ClaimEvidence, ReportedRun};
pub use deletions::{forget_deletion, pending_deletions, pending_ledger, PendingDeletion};
pub use jobs::{
    delete_job, load_job, save_job, set_job_enabled, EnabledChange, JobDeletion, JobError, JobSave,
    SavedJob, StoredJob,
};
pub use kills::{publish_kill, KILL_REQUEST_TTL};
pub use release::{
    mark_undelivered, release, undelivered_of, workers_with_undelivered, MarkerChanges,
    UndeliveredMarker,
};
pub use slots::{
    claim_slot, claim_slots, record_skip, LedgerExpect, SlotAction, SlotClaim, SlotOutcome,
    MAX_CLAIMS_PER_TXN,
};
pub use triggers::{claim_trigger, request_trigger, Claim};

pub use distcron_kv::MAX_TXN_OPS;
