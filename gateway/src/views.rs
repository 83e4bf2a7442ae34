//! JSON shapes of the HTTP API, and their conversion from and to the gRPC messages. Field names
//! follow the stored job JSON and the seed (`name`, `command`, `cronExpr`, `planTime`, ...).

use std::collections::BTreeMap;

use distcron_core::records::{RunStatus, RunTrigger};
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::logs::v1 as logs;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// Unique name.
    pub name: String,
    /// Shell command (`sh -c`).
    pub command: String,
    /// Schedule in the distcron cron dialect.
    pub cron_expr: String,
    /// IANA time zone; empty = UTC.
    pub time_zone: String,
    /// Whether slots are scheduled.
    pub enabled: bool,
    /// Run time limit in seconds; 0 = none.
    pub timeout_seconds: u32,
    /// `forbid`, `allow` or `replace`.
    pub overlap_policy: String,
    /// `skip`, `latest` or `all`.
    pub missed_policy: String,
    /// Look-back window of `all`, seconds.
    pub missed_window_seconds: u32,
    /// Working directory; empty = the worker's.
    pub working_dir: String,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Names of the secret environment variables, each with an empty value: a secret's value
    /// is never returned (sending this back unchanged keeps every value).
    pub secret_env: BTreeMap<String, String>,
    /// Unix user; empty = the worker's.
    pub user: String,
    /// First stored, ms since the epoch.
    pub created_at: i64,
    /// Last changed, ms since the epoch.
    pub updated_at: i64,
    /// Store revision (for `expectedRevision`).
    pub revision: i64,
    /// No slot before this, ms since the epoch; absent = no start bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<i64>,
    /// No slot after this, ms since the epoch; absent = no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<i64>,
    /// The job will never fire again: no slot after now, and its last slot was claimed or
    /// settled (an `@at` job after its run, a job past its `endAt`). Kept until deleted.
    #[serde(default)]
    pub done: bool,
}

fn overlap_name(v: i32) -> &'static str {
    match jobs::OverlapPolicy::try_from(v) {
        Ok(jobs::OverlapPolicy::Allow) => "allow",
        Ok(jobs::OverlapPolicy::Replace) => "replace",
        _ => "forbid",
    }
}

fn missed_name(v: i32) -> &'static str {
    match jobs::MissedPolicy::try_from(v) {
        Ok(jobs::MissedPolicy::Latest) => "latest",
        Ok(jobs::MissedPolicy::All) => "all",
        _ => "skip",
    }
}

impl From<jobs::Job> for JobView {
    fn from(j: jobs::Job) -> Self {
        Self {
            overlap_policy: overlap_name(j.overlap_policy).into(),
            missed_policy: missed_name(j.missed_policy).into(),
            enabled: j.enabled.unwrap_or(true),
            env: j.env.into_iter().collect(),
            secret_env: j
                .secret_env
                .map(|s| s.values.into_keys().map(|k| (k, String::new())).collect())
                .unwrap_or_default(),
            name: j.name,
            command: j.command,
            cron_expr: j.cron_expr,
            time_zone: j.time_zone,
            timeout_seconds: j.timeout_seconds,
            missed_window_seconds: j.missed_window_seconds,
            working_dir: j.working_dir,
            user: j.user,
            created_at: j.created_at_ms,
            updated_at: j.updated_at_ms,
            revision: j.revision,
            start_at: j.start_at_ms,
            end_at: j.end_at_ms,
            done: j.done,
        }
    }
}

/// A job to create or update. Unknown fields are ignored (the seed's clients send only `name`,
/// `command` and `cronExpr`); absent fields take their defaults.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct JobInput {
    /// Unique name, `[A-Za-z0-9._-]{1,128}` (taken from the path on PUT).
    pub name: String,
    /// Shell command.
    pub command: String,
    /// Schedule in the distcron cron dialect.
    pub cron_expr: String,
    /// IANA time zone; empty = UTC.
    pub time_zone: String,
    /// Whether slots are scheduled; absent keeps the stored value (true for a new job).
    pub enabled: Option<bool>,
    /// Run time limit in seconds; 0 = none.
    pub timeout_seconds: u32,
    /// `forbid` (default), `allow` or `replace`.
    pub overlap_policy: Option<String>,
    /// `skip` (default), `latest` or `all`.
    pub missed_policy: Option<String>,
    /// Look-back window of `all`, seconds.
    pub missed_window_seconds: u32,
    /// Working directory.
    pub working_dir: String,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Secret environment, never returned. Absent keeps the stored secrets; present is the new
    /// set, where an empty value keeps that variable's stored value and a name left out is
    /// removed.
    pub secret_env: Option<BTreeMap<String, String>>,
    /// Unix user.
    pub user: String,
    /// No slot before this, ms since the epoch; absent = no start bound.
    pub start_at: Option<i64>,
    /// No slot after this, ms since the epoch; absent = no end. Must be after `startAt`; an end
    /// in the past is refused.
    pub end_at: Option<i64>,
    /// Compare-and-swap: update only if the stored revision is this (0 = create only).
    pub expected_revision: Option<i64>,
}

impl JobInput {
    /// The gRPC job; policy names are checked here, everything else by jobsvc.
    pub fn to_proto(&self) -> Result<jobs::Job, ApiError> {
        let overlap = match self.overlap_policy.as_deref() {
            None | Some("" | "forbid") => jobs::OverlapPolicy::Forbid,
            Some("allow") => jobs::OverlapPolicy::Allow,
            Some("replace") => jobs::OverlapPolicy::Replace,
            Some(other) => {
                return Err(ApiError::invalid(
                    "overlapPolicy",
                    format!("unknown value {other:?} (forbid, allow or replace)"),
                ))
            }
        };
        let missed = match self.missed_policy.as_deref() {
            None | Some("" | "skip") => jobs::MissedPolicy::Skip,
            Some("latest") => jobs::MissedPolicy::Latest,
            Some("all") => jobs::MissedPolicy::All,
            Some(other) => {
                return Err(ApiError::invalid(
                    "missedPolicy",
                    format!("unknown value {other:?} (skip, latest or all)"),
                ))
            }
        };
        Ok(jobs::Job {
            name: self.name.clone(),
            command: self.command.clone(),
            cron_expr: self.cron_expr.clone(),
            time_zone: self.time_zone.clone(),
            enabled: self.enabled,
            timeout_seconds: self.timeout_seconds,
            overlap_policy: overlap as i32,
            missed_policy: missed as i32,
            missed_window_seconds: self.missed_window_seconds,
            working_dir: self.working_dir.clone(),
            env: self.env.clone().into_iter().collect(),
            secret_env: self.secret_env.as_ref().map(|values| jobs::SecretEnv {
                values: values.clone().into_iter().collect(),
            }),
            user: self.user.clone(),
            start_at_ms: self.start_at,
            end_at_ms: self.end_at,
            ..Default::default()
        })
    }
}

/// A run: the seed's log fields (`jobName`, `command`, `err`, `output`, `planTime`,
/// `scheduleTime`, `startTime`, `endTime`, ms) and ours.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// Run id.
    pub run_id: String,
    /// Job name.
    pub job_name: String,
    /// Command as run.
    pub command: String,
    /// `running`, `succeeded`, `failed`, `timed_out`, `killed`, `lost` or `skipped`.
    pub status: String,
    /// `schedule`, `manual` or `catch_up`.
    pub trigger: String,
    /// The slot, ms.
    pub plan_time: i64,
    /// When it was claimed, ms.
    pub schedule_time: i64,
    /// When it started, ms.
    pub start_time: i64,
    /// When it ended, ms (0 while running).
    pub end_time: i64,
    /// The worker that ran it.
    pub worker_id: String,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    /// Error text; empty on success.
    pub err: String,
    /// Output (stdout and stderr interleaved), capped; invalid UTF-8 replaced.
    pub output: String,
    /// Whether output was cut (head and tail kept).
    pub output_truncated: bool,
    /// Output bytes produced in all.
    pub output_bytes: u64,
    /// W3C trace id.
    pub trace_id: String,
}

/// The API name of a run status (`unknown` for a value that is no status).
pub fn status_name(v: i32) -> &'static str {
    RunStatus::try_from(v).map_or("unknown", RunStatus::as_str)
}

impl From<logs::Run> for RunView {
    fn from(r: logs::Run) -> Self {
        // A trigger this version does not know shows as the default.
        let trigger = RunTrigger::try_from(r.trigger).unwrap_or_default();
        Self {
            status: status_name(r.status).into(),
            trigger: trigger.as_str().into(),
            output: String::from_utf8_lossy(&r.output).into_owned(),
            run_id: r.run_id,
            job_name: r.job_name,
            command: r.command,
            plan_time: r.plan_time_ms,
            schedule_time: r.schedule_time_ms,
            start_time: r.start_time_ms,
            end_time: r.end_time_ms,
            worker_id: r.worker_id,
            exit_code: r.exit_code,
            signal: r.signal,
            err: r.err,
            output_truncated: r.output_truncated,
            output_bytes: r.output_bytes,
            trace_id: r.trace_id,
        }
    }
}

/// A live worker.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// Worker id.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Version.
    pub version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Start time, ms.
    pub started_at: i64,
    /// Last heartbeat, ms.
    pub last_heartbeat: i64,
    /// Runs in progress.
    pub running: u32,
    /// Most runs at once.
    pub capacity: u32,
    /// Estimated clock offset from the cluster, ms.
    pub clock_offset_ms: i64,
    /// Whether it claims slots.
    pub claiming: bool,
    /// Why not, if not.
    pub status_reason: String,
}

impl From<jobs::Worker> for WorkerView {
    fn from(w: jobs::Worker) -> Self {
        Self {
            labels: w.labels.into_iter().collect(),
            worker_id: w.worker_id,
            host: w.host,
            addresses: w.addresses,
            version: w.version,
            started_at: w.started_at_ms,
            last_heartbeat: w.last_heartbeat_ms,
            running: w.running,
            capacity: w.capacity,
            clock_offset_ms: w.clock_offset_ms,
            claiming: w.claiming,
            status_reason: w.status_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_show_their_status_and_trigger_by_name() {
        let names = [
            (logs::RunStatus::Unspecified, "unknown"),
            (logs::RunStatus::Running, "running"),
            (logs::RunStatus::Succeeded, "succeeded"),
            (logs::RunStatus::Failed, "failed"),
            (logs::RunStatus::TimedOut, "timed_out"),
            (logs::RunStatus::Killed, "killed"),
            (logs::RunStatus::Lost, "lost"),
            (logs::RunStatus::Skipped, "skipped"),
        ];
        for (status, name) in names {
            let run = logs::Run {
                status: status.into(),
                ..Default::default()
            };
            assert_eq!(RunView::from(run).status, name);
        }
        assert_eq!(status_name(99), "unknown");
        let triggers = [
            (0, "schedule"),
            (logs::RunTrigger::Schedule.into(), "schedule"),
            (logs::RunTrigger::Manual.into(), "manual"),
            (logs::RunTrigger::CatchUp.into(), "catch_up"),
            (99, "schedule"),
        ];
        for (trigger, name) in triggers {
            let run = logs::Run {
                trigger,
                ..Default::default()
            };
            assert_eq!(RunView::from(run).trigger, name, "{trigger}");
        }
    }
}
