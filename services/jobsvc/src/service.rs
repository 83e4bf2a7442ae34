//! The `distcron.jobs.v1.JobService` implementation.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use distcron_core::job::{instant, validate_name};
use distcron_core::records::{KillRequest, RunningRecord, WorkerRegistration};
use distcron_core::{now_ms, FieldError, JobDefinition, Keys};
use distcron_kv::{list_prefix, KvError, KvStore, RangeRequest};
use distcron_ledger::{JobError, JobSave, StoredJob};
use distcron_proto::jobs::v1 as pb;
use distcron_schedule::{Schedule, MAX_PREVIEW};
use distcron_server::invalid_argument;
use tonic::{Request, Response, Status};

use crate::done::job_with_done;

/// Default and maximum `page_size` of ListJobs.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The job service over a key-value store.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Arc<dyn KvStore>,
    keys: Keys,
}

fn store_error(e: KvError) -> Status {
    match e {
        KvError::Unavailable(m) => Status::unavailable(format!("job store unavailable: {m}")),
        other => Status::internal(other.to_string()),
    }
}

/// The status of a job read or write that did not happen.
fn job_error(e: JobError) -> Status {
    match e {
        JobError::Invalid(e) => invalid_argument(e),
        JobError::Store(e) => store_error(e),
        JobError::Encode(e) => Status::internal(e.to_string()),
        JobError::NotFound { .. } => Status::not_found(e.to_string()),
        JobError::Unreadable { .. } => Status::data_loss(e.to_string()),
        JobError::RevisionChanged { .. }
        | JobError::ChangingTooFast { .. }
        | JobError::ChangedWhileTriggering { .. } => Status::aborted(e.to_string()),
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    validate_name(name).map_err(invalid_argument)
}

impl JobService {
    /// A job service storing under `keys`.
    pub fn new(store: Arc<dyn KvStore>, keys: Keys) -> Self {
        Self { store, keys }
    }

    async fn running_runs(&self, name: &str) -> Result<Vec<RunningRecord>, Status> {
        let (kvs, _) = list_prefix(self.store.as_ref(), &self.keys.running_of(name))
            .await
            .map_err(store_error)?;
        Ok(kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// Publishes a kill request for `name` (every run, or one run id).
    async fn publish_kill(&self, name: &str, run_id: &str) -> Result<(), Status> {
        let request = KillRequest {
            run_id: run_id.to_owned(),
            requested_at_ms: now_ms(),
            claimed_before_ms: 0,
        };
        distcron_ledger::publish_kill(self.store.as_ref(), &self.keys, name, &request)
            .await
            .map_err(store_error)
    }
}

/// The schedule a preview asks for, within its bounds, checked to fire after `after`.
fn preview_schedule_of(
    req: &pb::PreviewScheduleRequest,
    after: chrono::DateTime<Utc>,
) -> Result<Schedule, Status> {
    let start = instant("startAt", req.start_at_ms).map_err(invalid_argument)?;
    let end = instant("endAt", req.end_at_ms).map_err(invalid_argument)?;
    let schedule = if req.name.is_empty() {
        Schedule::parse_stored(&req.cron_expr, &req.time_zone)
    } else {
        Schedule::parse_stored_for(&req.name, &req.cron_expr, &req.time_zone)
    };
    schedule
        .and_then(|s| s.with_bounds(start, end))
        .and_then(|s| s.check_fires_after(after).map(|()| s))
        .map_err(|e| invalid_argument(FieldError::new(e.field, e.message)))
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for JobService {
    async fn save_job(
        &self,
        request: Request<pb::SaveJobRequest>,
    ) -> Result<Response<pb::SaveJobResponse>, Status> {
        let req = request.into_inner();
        let proto = req
            .job
            .ok_or_else(|| invalid_argument(FieldError::new("job", "required")))?;
        let save = JobSave {
            job: JobDefinition::from_proto(&proto, true).map_err(invalid_argument)?,
            enabled_sent: proto.enabled.is_some(),
            secret_env_sent: proto.secret_env.is_some(),
            expected_revision: req.expected_revision,
            trace_parent: distcron_telemetry::current_traceparent(),
        };
        let saved = distcron_ledger::save_job(self.store.as_ref(), &self.keys, &save)
            .await
            .map_err(job_error)?;
        let StoredJob { job, revision } = saved.saved;
        tracing::info!(job = %job.name, revision, "job saved");
        Ok(Response::new(pb::SaveJobResponse {
            job: Some(job.to_proto(revision)),
            previous: saved.previous.map(|p| p.job.to_proto(p.revision)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let stored = distcron_ledger::load_job(self.store.as_ref(), &self.keys, &name)
            .await
            .map_err(job_error)?;
        let job = job_with_done(self.store.as_ref(), &self.keys, &stored, Utc::now())
            .await
            .map_err(store_error)?;
        Ok(Response::new(job))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => {
                return Err(invalid_argument(FieldError::new(
                    "pageSize",
                    format!("{n} is more than {MAX_PAGE}"),
                )))
            }
        };
        if !req.name_prefix.is_empty() {
            // A prefix is a partial name: the same characters are allowed.
            validate_name(&req.name_prefix)
                .map_err(|e| invalid_argument(FieldError::new("namePrefix", e.message)))?;
        }
        if !req.page_token.is_empty() {
            validate_name(&req.page_token).map_err(|_| {
                invalid_argument(FieldError::new("pageToken", "not a token from ListJobs"))
            })?;
        }
        let resp = self
            .store
            .range(RangeRequest {
                prefix: self.keys.jobs_named(&req.name_prefix),
                start_after: (!req.page_token.is_empty()).then(|| self.keys.job(&req.page_token)),
                limit: page_size as usize,
                keys_only: false,
                at_revision: 0,
            })
            .await
            .map_err(store_error)?;
        let now = Utc::now();
        let mut jobs = Vec::with_capacity(resp.kvs.len());
        for kv in &resp.kvs {
            match StoredJob::from_kv(kv) {
                Ok(stored) => jobs.push(
                    job_with_done(self.store.as_ref(), &self.keys, &stored, now)
                        .await
                        .map_err(store_error)?,
                ),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping unreadable job"),
            }
        }
        let next_page_token = if resp.more {
            resp.kvs
                .last()
                .and_then(|kv| self.keys.job_name(&kv.key))
                .unwrap_or_default()
                .to_owned()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let req = request.into_inner();
        check_name(&req.name)?;
        let deletion = distcron_ledger::delete_job(
            self.store.as_ref(),
            &self.keys,
            &req.name,
            req.expected_revision,
        )
        .await
        .map_err(job_error)?;
        let running = deletion.running_run_ids;
        if req.kill_running && !running.is_empty() {
            self.publish_kill(&req.name, "").await?;
        }
        tracing::info!(job = %req.name, running = running.len(), killed = req.kill_running, "job deleted");
        Ok(Response::new(pb::DeleteJobResponse {
            job: Some(deletion.deleted.job.to_proto(deletion.deleted.revision)),
            running_run_ids: running,
        }))
    }

    async fn kill_job(
        &self,
        request: Request<pb::KillJobRequest>,
    ) -> Result<Response<pb::KillJobResponse>, Status> {
        let req = request.into_inner();
        check_name(&req.name)?;
        let run_ids: Vec<String> = self
            .running_runs(&req.name)
            .await?
            .into_iter()
            .filter(|r| req.run_id.is_empty() || r.run_id == req.run_id)
            .map(|r| r.run_id)
            .collect();
        self.publish_kill(&req.name, &req.run_id).await?;
        tracing::info!(job = %req.name, run_id = %req.run_id, running = run_ids.len(), "kill published");
        Ok(Response::new(pb::KillJobResponse {
            was_running: !run_ids.is_empty(),
            run_ids,
        }))
    }

    async fn trigger_job(
        &self,
        request: Request<pb::TriggerJobRequest>,
    ) -> Result<Response<pb::TriggerJobResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let trigger = distcron_ledger::request_trigger(
            self.store.as_ref(),
            &self.keys,
            &name,
            &distcron_telemetry::current_traceparent(),
        )
        .await
        .map_err(job_error)?;
        tracing::info!(job = %name, run_id = %trigger.run_id, "manual run requested");
        Ok(Response::new(pb::TriggerJobResponse {
            run_id: trigger.run_id,
            slot_ms: trigger.slot_ms,
        }))
    }

    async fn set_job_enabled(
        &self,
        request: Request<pb::SetJobEnabledRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let req = request.into_inner();
        check_name(&req.name)?;
        let change = distcron_ledger::set_job_enabled(
            self.store.as_ref(),
            &self.keys,
            &req.name,
            req.enabled,
            &distcron_telemetry::current_traceparent(),
        )
        .await
        .map_err(job_error)?;
        if change.written {
            tracing::info!(job = %req.name, enabled = req.enabled, "job enabled state changed");
        }
        let job = job_with_done(self.store.as_ref(), &self.keys, &change.stored, Utc::now())
            .await
            .map_err(store_error)?;
        Ok(Response::new(job))
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<Response<pb::PreviewScheduleResponse>, Status> {
        let req = request.into_inner();
        let count = match req.count {
            0 => 5,
            n if n as usize <= MAX_PREVIEW => n as usize,
            n => {
                return Err(invalid_argument(FieldError::new(
                    "count",
                    format!("{n} is more than {MAX_PREVIEW}"),
                )))
            }
        };
        let after = if req.after_ms == 0 {
            Utc::now()
        } else {
            Utc.timestamp_millis_opt(req.after_ms)
                .single()
                .ok_or_else(|| invalid_argument(FieldError::new("afterMs", "out of range")))?
        };
        let schedule = preview_schedule_of(&req, after)?;
        let times = schedule.upcoming(after, count);
        Ok(Response::new(pb::PreviewScheduleResponse {
            fire_times_ms: times.iter().map(|t| t.timestamp_millis()).collect(),
            fire_times: times.iter().map(chrono::DateTime::to_rfc3339).collect(),
            description: schedule.describe(),
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let (kvs, _) = list_prefix(self.store.as_ref(), &self.keys.workers())
            .await
            .map_err(store_error)?;
        let workers = kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice::<WorkerRegistration>(&kv.value) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "skipping unreadable worker registration");
                    None
                }
            })
            .map(|w| pb::Worker {
                worker_id: w.worker_id,
                host: w.host,
                addresses: w.addresses,
                version: w.version,
                labels: w.labels.into_iter().collect(),
                started_at_ms: w.started_at_ms,
                last_heartbeat_ms: w.heartbeat_at_ms,
                running: w.running,
                capacity: w.capacity,
                clock_offset_ms: w.clock_offset_ms,
                claiming: w.claiming,
                status_reason: w.status_reason,
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}
