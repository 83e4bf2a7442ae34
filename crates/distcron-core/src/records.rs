//! Small JSON records kept in the store next to job definitions, and the two values every run
//! carries: its status and its trigger (converted to and from the wire in [`crate::wire`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The slot ledger: `ledger/<job>` holds the last claimed slot (ms since the epoch) as a
/// zero-padded decimal, so the store's bytewise value compare orders slots numerically and a claim
/// can be one transaction: "succeed only if the stored slot is less than mine".
pub mod ledger {
    /// The stored form of a slot.
    pub fn encode(slot_ms: i64) -> Vec<u8> {
        format!("{:020}", slot_ms.max(0)).into_bytes()
    }

    /// The slot of a stored value, if it is one.
    pub fn decode(value: &[u8]) -> Option<i64> {
        std::str::from_utf8(value).ok()?.parse().ok()
    }
}

/// Why a run exists. Its label ([`RunTrigger::as_str`]) is its JSON form here, in the run
/// store and in the HTTP API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// A slot of the schedule.
    #[default]
    Schedule,
    /// Run now.
    Manual,
    /// A missed slot run later.
    CatchUp,
}

impl RunTrigger {
    /// Every trigger.
    pub const ALL: [Self; 3] = [Self::Schedule, Self::Manual, Self::CatchUp];

    /// The label (`schedule`, `manual`, `catch_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::CatchUp => "catch_up",
        }
    }
}

/// The state of a run. Its label ([`RunStatus::as_str`], parsed back by [`str::parse`]) is its
/// stored form, its name in the HTTP API and its metric label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished.
    #[default]
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or could not start.
    Failed,
    /// Ended by its timeout.
    TimedOut,
    /// Ended by a kill request (or replaced, or the worker shut down).
    Killed,
    /// Its worker died while it ran.
    Lost,
    /// Not run: the overlap policy skipped the slot.
    Skipped,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [Self; 7] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Killed,
        Self::Lost,
        Self::Skipped,
    ];

    /// The statuses of runs that ended badly: a job's "last failure" is its newest run in one.
    pub const FAILURES: [Self; 4] = [Self::Failed, Self::TimedOut, Self::Killed, Self::Lost];

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }

    /// The label (`running`, `timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Killed => "killed",
            Self::Lost => "lost",
            Self::Skipped => "skipped",
        }
    }
}

/// A text that is not the label of a run status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status {0:?}")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for RunStatus {
    type Err = UnknownStatus;

    /// The status labelled `label` ([`RunStatus::as_str`]).
    fn from_str(label: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == label)
            .ok_or_else(|| UnknownStatus(label.to_owned()))
    }
}

/// A run in progress, at `running/<job>/<run-id>` under the worker's session lease: the key
/// disappears with the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningRecord {
    /// The run.
    pub run_id: String,
    /// The job.
    pub job_name: String,
    /// The worker running it.
    pub worker_id: String,
    /// The slot (plan time), ms.
    pub slot_ms: i64,
    /// When it was claimed, ms.
    pub claimed_at_ms: i64,
    /// Why it runs.
    #[serde(default)]
    pub trigger: RunTrigger,
    /// Earlier slots of the job that this claim moved the ledger past without their being
    /// claimed: whoever records this run records them `skipped` (see [`PassedOver`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_over: Option<PassedOver>,
}

/// Slots of a job that a claim of a later slot moved the ledger past, unclaimed. They are
/// recorded `skipped` with `reason` by whoever records the claimed run (its worker, or the worker
/// that records it `lost`), under run ids derived from the slot ([`PassedOver::run_id`]), so
/// recording them twice stores them once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassedOver {
    /// The slots, ms, oldest first: at most [`PassedOver::MAX_LISTED`], the most recent ones.
    pub slots: Vec<i64>,
    /// How many earlier slots are not listed: they are recorded as one `skipped` run at
    /// `earlier_from_ms` whose error counts them.
    #[serde(default)]
    pub earlier: u64,
    /// The first of the unlisted earlier slots, ms.
    #[serde(default)]
    pub earlier_from_ms: i64,
    /// Why they were not claimed in time.
    pub reason: String,
}

impl PassedOver {
    /// Most slots listed one by one (each becomes its own `skipped` run).
    pub const MAX_LISTED: usize = 100;

    /// The run id of the `skipped` record of `job`'s slot `slot_ms`: a name-based UUID (v5) of
    /// the job and the slot, the same on every worker and every version.
    pub fn run_id(job: &str, slot_ms: i64) -> String {
        let name = format!("distcron/passed-over/{job}/{slot_ms}");
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
    }
}

/// A kill request at `killer/<job>` (on a short lease). An empty value, as the seed wrote, means
/// "every run of the job".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    /// Only this run; empty = every running run of the job.
    #[serde(default)]
    pub run_id: String,
    /// When it was asked for, ms.
    #[serde(default)]
    pub requested_at_ms: i64,
    /// Only runs claimed before this time, ms (0 = no such limit); used by the `replace` policy
    /// to end the runs a new run replaces.
    #[serde(default)]
    pub claimed_before_ms: i64,
}

impl KillRequest {
    /// Parses a stored value; empty or unreadable values mean "kill every run".
    pub fn from_value(value: &[u8]) -> Self {
        serde_json::from_slice(value).unwrap_or_default()
    }

    /// Whether this request targets run `run_id`, claimed at `claimed_at_ms`.
    pub fn targets(&self, run_id: &str, claimed_at_ms: i64) -> bool {
        (self.run_id.is_empty() || self.run_id == run_id)
            && (self.claimed_before_ms == 0 || claimed_at_ms < self.claimed_before_ms)
    }
}

/// A job as it was when deleted, at `deleted/<job>`: its slots after its ledger and up to the
/// deletion were never claimed (a claim needs the job unchanged), so a worker records them
/// `skipped`, then removes this and the job's ledger (which no claim can move any more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedJob {
    /// The definition that was deleted.
    pub job: crate::JobDefinition,
    /// When jobsvc deleted it, ms.
    pub deleted_at_ms: i64,
}

/// A "run now" request at `triggers/<job>/<run-id>`: the worker that deletes it in its claim
/// transaction runs it, so exactly one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRequest {
    /// The run id the caller was given.
    pub run_id: String,
    /// The manual slot: when it was asked for, ms.
    pub slot_ms: i64,
    /// The job revision it was asked for.
    pub job_revision: i64,
    /// W3C `traceparent` of the request that asked for it; the run's span links to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent: String,
}

/// A live worker at `workers/<worker-id>`, on its session lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRegistration {
    /// Unique per worker process.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Addresses of the host.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// distcron version.
    #[serde(default)]
    pub version: String,
    /// Operator-given labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Process start, ms.
    #[serde(default)]
    pub started_at_ms: i64,
    /// Last refresh of this record, ms.
    #[serde(default)]
    pub heartbeat_at_ms: i64,
    /// Runs in progress.
    #[serde(default)]
    pub running: u32,
    /// Most runs at once.
    #[serde(default)]
    pub capacity: u32,
    /// Measured clock offset from the cluster, ms.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// Whether it claims slots.
    #[serde(default)]
    pub claiming: bool,
    /// Why not, when it does not.
    #[serde(default)]
    pub status_reason: String,
}

/// A live service instance at `services/<service>/<instance-id>`, on the instance's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistration {
    /// Unique per process.
    pub instance_id: String,
    /// Where its gRPC server is reached, `http://host:port`.
    pub addr: String,
    /// distcron version.
    pub version: String,
    /// Process start, ms.
    pub started_at_ms: i64,
    /// Host name.
    #[serde(default)]
    pub host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_encoding_orders_bytewise() {
        let a = ledger::encode(999);
        let b = ledger::encode(1_000);
        let c = ledger::encode(1_764_000_000_000);
        assert!(a < b && b < c);
        assert_eq!(ledger::decode(&c), Some(1_764_000_000_000));
        assert_eq!(ledger::decode(b"junk"), None);
    }

    #[test]
    fn labels_are_the_json_forms_and_parse_back() {
        let names = [
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "killed",
            "lost",
            "skipped",
        ];
        assert_eq!(RunStatus::ALL.len(), names.len());
        for (status, name) in RunStatus::ALL.into_iter().zip(names) {
            assert_eq!(status.as_str(), name);
            assert_eq!(name.parse::<RunStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).ok(), Some(name.into()));
        }
        assert_eq!(
            "Running".parse::<RunStatus>(),
            Err(UnknownStatus("Running".into()))
        );
        let names = ["schedule", "manual", "catch_up"];
        assert_eq!(RunTrigger::ALL.len(), names.len());
        for (trigger, name) in RunTrigger::ALL.into_iter().zip(names) {
            assert_eq!(trigger.as_str(), name);
            assert_eq!(serde_json::to_value(trigger).ok(), Some(name.into()));
        }
    }

    #[test]
    fn seed_kill_value_kills_everything() {
        let k = KillRequest::from_value(b"");
        assert!(k.targets("any", 0));
        let one = KillRequest::from_value(br#"{"runId":"r1","requestedAtMs":5}"#);
        assert!(one.targets("r1", 0));
        assert!(!one.targets("r2", 0));
        let older = KillRequest {
            claimed_before_ms: 100,
            ..KillRequest::default()
        };
        assert!(older.targets("a", 99) && !older.targets("b", 100));
    }
}
