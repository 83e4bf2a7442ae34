//! The `distcron.jobs.v1.JobService` implementation.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use distcron_core::job::validate_name;
use distcron_core::records::{
    DeletedJob, KillRequest, RunningRecord, TriggerRequest, WorkerRegistration,
};
use distcron_core::{now_ms, FieldError, JobDefinition, Keys};
use distcron_kv::{list_prefix, Condition, KeyValue, KvError, KvStore, Op, RangeRequest, Txn};
use distcron_proto::jobs::v1 as pb;
use distcron_schedule::{Schedule, MAX_PREVIEW};
use tonic::{Request, Response, Status};

/// Default and maximum `page_size` of ListJobs.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Read-modify-write attempts before a save without expected revision gives up.
const MAX_CAS_ATTEMPTS: usize = 16;
pub use distcron_proto::FIELD_METADATA;

/// The job service over a key-value store.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Arc<dyn KvStore>,
    keys: Keys,
}

fn invalid(e: FieldError) -> Status {
    let mut status = Status::invalid_argument(e.to_string());
    if let Ok(v) = e.field.escape_default().to_string().parse() {
        status.metadata_mut().insert(FIELD_METADATA, v);
    }
    status
}

fn store_error(e: KvError) -> Status {
    match e {
        KvError::Unavailable(m) => Status::unavailable(format!("job store unavailable: {m}")),
        other => Status::internal(other.to_string()),
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    validate_name(name).map_err(invalid)
}

fn decode_job(kv: &KeyValue) -> Result<JobDefinition, Status> {
    JobDefinition::from_json(&kv.value)
        .map_err(|e| Status::data_loss(format!("stored job at {} is not valid: {e}", kv.key)))
}

impl JobService {
    /// A job service storing under `keys`.
    pub fn new(store: Arc<dyn KvStore>, keys: Keys) -> Self {
        Self { store, keys }
    }

    async fn load(&self, name: &str) -> Result<(JobDefinition, KeyValue), Status> {
        let kv = self
            .store
            .get(&self.keys.job(name))
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("job {name:?} not found")))?;
        Ok((decode_job(&kv)?, kv))
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

#[tonic::async_trait]
impl pb::job_service_server::JobService for JobService {
    async fn save_job(
        &self,
        request: Request<pb::SaveJobRequest>,
    ) -> Result<Response<pb::SaveJobResponse>, Status> {
        let req = request.into_inner();
        let proto = req
            .job
            .ok_or_else(|| invalid(FieldError::new("job", "required")))?;
        let mut job = JobDefinition::from_proto(&proto, true).map_err(invalid)?;
        let sent_secrets = job.secret_env.clone();
        job.validate().map_err(invalid)?;
        let key = self.keys.job(&job.name);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let existing = self.store.get(&key).await.map_err(store_error)?;
            let previous = match &existing {
                Some(kv) => match JobDefinition::from_json(&kv.value) {
                    Ok(p) => Some((p, kv.mod_revision)),
                    Err(e) => {
                        tracing::warn!(job = %job.name, error = %e, "replacing an unreadable stored job");
                        None
                    }
                },
                None => None,
            };
            let condition = match (req.expected_revision, &existing) {
                (Some(0), _) => Condition::absent(&key),
                (Some(rev), _) => Condition::unchanged(&key, rev),
                (None, Some(kv)) => Condition::unchanged(&key, kv.mod_revision),
                (None, None) => Condition::absent(&key),
            };
            let now = now_ms();
            job.updated_at = now;
            job.trace_parent = distcron_telemetry::current_traceparent();
            job.created_at = match &previous {
                Some((p, _)) if p.created_at > 0 => p.created_at,
                _ => now,
            };
            if proto.enabled.is_none() {
                job.enabled = previous.as_ref().is_none_or(|(p, _)| p.enabled);
            }
            // Resolved afresh on every attempt: a retry keeps what is stored by then.
            job.secret_env.clone_from(&sent_secrets);
            job.resolve_secret_env(
                proto.secret_env.is_some(),
                previous.as_ref().map(|(p, _)| p),
            )
            .map_err(invalid)?;
            job.validate().map_err(invalid)?;
            let txn = Txn {
                when: vec![condition],
                then: vec![Op::put(&key, job.to_json())],
                otherwise: vec![Op::get(&key)],
            };
            let resp = self.store.txn(txn).await.map_err(store_error)?;
            if resp.succeeded {
                tracing::info!(job = %job.name, revision = resp.revision, "job saved");
                return Ok(Response::new(pb::SaveJobResponse {
                    job: Some(job.to_proto(resp.revision)),
                    previous: previous.map(|(p, rev)| p.to_proto(rev)),
                }));
            }
            if let Some(expected) = req.expected_revision {
                let actual = resp.got(0).first().map_or(0, |kv| kv.mod_revision);
                return Err(Status::aborted(format!(
                    "job {:?} is at revision {actual}, not {expected}; reload and retry",
                    job.name
                )));
            }
        }
        Err(Status::aborted(format!(
            "job {:?} is changing too fast; retry",
            job.name
        )))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let (job, kv) = self.load(&name).await?;
        Ok(Response::new(job.to_proto(kv.mod_revision)))
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
                return Err(invalid(FieldError::new(
                    "pageSize",
                    format!("{n} is more than {MAX_PAGE}"),
                )))
            }
        };
        if !req.name_prefix.is_empty() {
            // A prefix is a partial name: the same characters are allowed.
            validate_name(&req.name_prefix)
                .map_err(|e| invalid(FieldError::new("namePrefix", e.message)))?;
        }
        if !req.page_token.is_empty() {
            validate_name(&req.page_token)
                .map_err(|_| invalid(FieldError::new("pageToken", "not a token from ListJobs")))?;
        }
        let resp = self
            .store
            .range(RangeRequest {
                prefix: format!("{}{}", self.keys.jobs(), req.name_prefix),
                start_after: (!req.page_token.is_empty()).then(|| self.keys.job(&req.page_token)),
                limit: page_size as usize,
                keys_only: false,
                at_revision: 0,
            })
            .await
            .map_err(store_error)?;
        let mut jobs = Vec::with_capacity(resp.kvs.len());
        for kv in &resp.kvs {
            match decode_job(kv) {
                Ok(job) => jobs.push(job.to_proto(kv.mod_revision)),
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e.message(), "skipping unreadable job")
                }
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
        let (job, kv) = self.load(&req.name).await?;
        let revision = req.expected_revision.unwrap_or(kv.mod_revision);
        let key = self.keys.job(&req.name);
        // The slots due before the delete that no claim has reached yet are recorded `skipped`
        // by a worker, from this tombstone and the job's ledger (which stays until then: no claim
        // can move it once the job is gone).
        let tombstone = DeletedJob {
            job: job.clone(),
            deleted_at_ms: now_ms(),
        };
        let tombstone =
            serde_json::to_vec(&tombstone).map_err(|e| Status::internal(e.to_string()))?;
        let txn = Txn {
            when: vec![Condition::unchanged(&key, revision)],
            then: vec![
                Op::delete(&key),
                Op::put(self.keys.deleted(&req.name), tombstone),
                Op::Delete {
                    key: format!("{}{}/", self.keys.triggers(), req.name),
                    prefix: true,
                },
                Op::get_prefix(self.keys.running_of(&req.name)),
            ],
            otherwise: vec![Op::get(&key)],
        };
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if !resp.succeeded {
            return Err(match resp.got(0).first() {
                None => Status::not_found(format!("job {:?} not found", req.name)),
                Some(now) => Status::aborted(format!(
                    "job {:?} is at revision {}, not {revision}; reload and retry",
                    req.name, now.mod_revision
                )),
            });
        }
        let running: Vec<String> = resp
            .got(3)
            .iter()
            .filter_map(|kv| serde_json::from_slice::<RunningRecord>(&kv.value).ok())
            .map(|r| r.run_id)
            .collect();
        if req.kill_running && !running.is_empty() {
            self.publish_kill(&req.name, "").await?;
        }
        tracing::info!(job = %req.name, running = running.len(), killed = req.kill_running, "job deleted");
        Ok(Response::new(pb::DeleteJobResponse {
            job: Some(job.to_proto(kv.mod_revision)),
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
        let (_, kv) = self.load(&name).await?;
        let trigger = TriggerRequest {
            run_id: distcron_core::new_run_id(),
            slot_ms: now_ms(),
            job_revision: kv.mod_revision,
            trace_parent: distcron_telemetry::current_traceparent(),
        };
        let value = serde_json::to_vec(&trigger).map_err(|e| Status::internal(e.to_string()))?;
        let txn = Txn {
            // Only while the job still exists as read.
            when: vec![Condition::unchanged(self.keys.job(&name), kv.mod_revision)],
            then: vec![Op::put(self.keys.trigger(&name, &trigger.run_id), value)],
            otherwise: vec![],
        };
        if !self.store.txn(txn).await.map_err(store_error)?.succeeded {
            return Err(Status::aborted(format!(
                "job {name:?} changed while triggering; retry"
            )));
        }
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
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut job, kv) = self.load(&req.name).await?;
            if job.enabled == req.enabled {
                return Ok(Response::new(job.to_proto(kv.mod_revision)));
            }
            job.enabled = req.enabled;
            job.updated_at = now_ms();
            job.trace_parent = distcron_telemetry::current_traceparent();
            let key = self.keys.job(&req.name);
            let txn = Txn {
                when: vec![Condition::unchanged(&key, kv.mod_revision)],
                then: vec![Op::put(&key, job.to_json())],
                otherwise: vec![],
            };
            let resp = self.store.txn(txn).await.map_err(store_error)?;
            if resp.succeeded {
                tracing::info!(job = %req.name, enabled = req.enabled, "job enabled state changed");
                return Ok(Response::new(job.to_proto(resp.revision)));
            }
        }
        Err(Status::aborted(format!(
            "job {:?} is changing too fast; retry",
            req.name
        )))
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
                return Err(invalid(FieldError::new(
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
                .ok_or_else(|| invalid(FieldError::new("afterMs", "out of range")))?
        };
        let schedule = Schedule::parse_at(&req.cron_expr, &req.time_zone, after)
            .map_err(|e| invalid(FieldError::new(e.field, e.message)))?;
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
