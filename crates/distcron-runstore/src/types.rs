//! Stored runs, events and queries.

use serde::{Deserialize, Serialize};

use distcron_core::output::StoredOutput;
use distcron_core::records::{RunStatus, RunTrigger};

/// A run as stored. Field names are the seed's where the seed had them (`jobName`, `command`,
/// `err`, `output`, `planTime`, `scheduleTime`, `startTime`, `endTime`: integer milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StoredRun {
    /// Unique run id.
    pub run_id: String,
    /// The job.
    pub job_name: String,
    /// The command as it was when the run started.
    pub command: String,
    /// Error text; empty on success.
    pub err: String,
    /// Output kept: the head, then [`TRUNCATION_MARKER`](crate::TRUNCATION_MARKER) and the tail
    /// when truncated.
    pub output: String,
    /// The slot, ms.
    pub plan_time: i64,
    /// When dispatched, ms.
    pub schedule_time: i64,
    /// When the command started, ms.
    pub start_time: i64,
    /// When it ended, ms (0 while running).
    pub end_time: i64,
    /// The worker.
    pub worker_id: String,
    /// State.
    pub status: RunStatus,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Terminating signal, when there was one.
    pub signal: Option<i32>,
    /// Why the run exists.
    pub trigger: RunTrigger,
    /// Whether output was dropped (by the cap here or the worker's).
    pub output_truncated: bool,
    /// Output bytes the run produced in total.
    pub output_bytes: i64,
    /// Bytes of `output` that are the head (the rest, after the marker, is the tail): see
    /// [`StoredRun::stored_output`].
    pub output_head_bytes: i64,
    /// The next output chunk sequence number expected; lower ones are re-deliveries.
    pub next_seq: i64,
    /// `end_time - start_time` once ended, ms.
    pub duration_ms: i64,
    /// W3C trace id of the run's span.
    pub trace_id: String,
    /// Incremented by every write; used for compare-and-replace.
    pub version: i64,
}

impl StoredRun {
    /// This run's output as stored: its text, head and whether output was dropped.
    pub fn stored_output(&self) -> StoredOutput<'_> {
        StoredOutput {
            text: &self.output,
            head_bytes: usize::try_from(self.output_head_bytes).unwrap_or(0),
            truncated: self.output_truncated,
        }
    }
}

/// The facts known when a run starts (or is decided without starting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStart {
    /// The job.
    pub job_name: String,
    /// The command.
    pub command: String,
    /// The slot, ms.
    pub plan_time: i64,
    /// When dispatched, ms.
    pub schedule_time: i64,
    /// When started, ms.
    pub start_time: i64,
    /// The worker.
    pub worker_id: String,
    /// Why.
    pub trigger: RunTrigger,
    /// `Running`, or a final status for runs that never start (`Skipped`).
    pub status: RunStatus,
    /// Why it never started, if it did not.
    pub err: String,
}

/// The facts known when a run ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFinish {
    /// Final status (not `Running`).
    pub status: RunStatus,
    /// When it ended, ms.
    pub end_time: i64,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Terminating signal.
    pub signal: Option<i32>,
    /// Error text.
    pub err: String,
    /// Output bytes the worker dropped before sending.
    pub output_bytes_dropped: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEventKind {
    /// The run started.
    Started(RunStart),
    /// A chunk of output, numbered from 0 per run.
    Output {
        /// Sequence number.
        seq: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The run ended.
    Finished(RunFinish),
}

/// One event of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    /// The run.
    pub run_id: String,
    /// W3C trace id, if traced.
    pub trace_id: String,
    /// What happened.
    pub kind: RunEventKind,
}

/// Where the previous page ended: the last run's start time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// Start time of the last run of the previous page.
    pub start_time: i64,
    /// Its id.
    pub run_id: String,
}

impl PageCursor {
    /// The opaque token form, `<startTime>_<runId>`.
    pub fn to_token(&self) -> String {
        format!("{}_{}", self.start_time, self.run_id)
    }

    /// Parses a token made by [`to_token`](Self::to_token).
    pub fn from_token(token: &str) -> Option<Self> {
        let (t, id) = token.split_once('_')?;
        (!id.is_empty()).then_some(())?;
        Some(Self {
            start_time: t.parse().ok()?,
            run_id: id.to_owned(),
        })
    }
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this job.
    pub job_name: Option<String>,
    /// Only these statuses (empty = any).
    pub statuses: Vec<RunStatus>,
    /// Start time >= this.
    pub start_from: Option<i64>,
    /// Start time < this.
    pub start_before: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Runs to skip (the seed's paging).
    pub skip: u32,
    /// Continue after this run (cursor paging).
    pub after: Option<PageCursor>,
    /// Include output.
    pub with_output: bool,
}

/// A page of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<StoredRun>,
    /// Runs matching the filter, all pages.
    pub total: u64,
}

/// Runs of one status in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTotals {
    /// The status.
    pub status: RunStatus,
    /// How many runs.
    pub count: u64,
    /// Sum of their durations, ms.
    pub duration_ms: i64,
}

/// Raw material for job statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStatsRaw {
    /// The newest run.
    pub last_run: Option<StoredRun>,
    /// Totals per status in the window (statuses with no runs left out).
    pub totals: Vec<StatusTotals>,
    /// Start of the newest succeeded run, ms (0 = none).
    pub last_success_ms: i64,
    /// Start of the newest failed, timed-out, killed or lost run, ms (0 = none).
    pub last_failure_ms: i64,
}
