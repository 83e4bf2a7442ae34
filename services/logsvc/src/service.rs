//! The `distcron.logs.v1.LogService` implementation.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use distcron_core::job::validate_name;
use distcron_core::output::OutputCap;
use distcron_core::{FieldError, Keys};
use distcron_kv::KvStore;
use distcron_ledger::ClaimEvidence;
use distcron_proto::logs::v1 as pb;
use distcron_runstore::{
    append_events, PageCursor, RunQuery, RunStatus, RunStore, RunStoreError, StoredRun,
};
use distcron_server::invalid_argument;
use futures::{FutureExt, Stream};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::convert::{event_from_proto, run_to_proto, validate_run_id};
use crate::reporter::RunOwner;

/// Most events accepted in one AppendRunEvents call.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
const DEFAULT_LIMIT: u32 = 20;
/// Most output bytes one `ListRuns` reply carries: well under gRPC's default 4 MiB message limit,
/// so any client can read any page. A page that would carry more ends early, with a
/// `nextPageToken` (always at least one run, whose output is at most the 8 MiB cap,
/// [`OutputCap::MAX_BYTES`]).
pub const MAX_REPLY_OUTPUT_BYTES: usize = 3 * 1024 * 1024;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_STATS_WINDOW: u32 = 24 * 3600;
const MAX_STATS_WINDOW: u32 = 366 * 24 * 3600;
/// How long TailRun waits for a run that does not exist yet (it may be about to start).
const TAIL_WAIT_FOR_RUN: Duration = Duration::from_secs(30);
/// How long TailRun tolerates an unavailable store before giving up.
const TAIL_OUTAGE: Duration = Duration::from_secs(30);

/// The `InvalidArgument` status rejecting `field` for `reason`, naming the field in its metadata.
fn invalid(field: &str, reason: impl Into<String>) -> Status {
    invalid_argument(FieldError::new(field, reason))
}

/// How many of `runs`, from the first, fit a reply of `budget` output bytes (at least one).
fn fitting(runs: &[StoredRun], budget: usize) -> usize {
    let mut used = 0usize;
    runs.iter()
        .position(|r| {
            used = used.saturating_add(r.output.len());
            used > budget
        })
        .map_or(runs.len(), |i| i.max(1))
}

fn store_error(e: RunStoreError) -> Status {
    match e {
        RunStoreError::Unavailable(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

/// The log service over a run store.
#[derive(Debug, Clone)]
pub struct LogService {
    store: Arc<dyn RunStore>,
    cap: OutputCap,
    tail_poll: Duration,
    cluster: Arc<dyn KvStore>,
    keys: Keys,
}

impl LogService {
    /// A log service keeping `cap` output bytes per run; TailRun polls every `tail_poll`. The
    /// runs that worker tokens report are checked against the cluster state in `cluster`, under
    /// `keys` (see [`crate::reporter`]).
    pub fn new(
        store: Arc<dyn RunStore>,
        cap: OutputCap,
        tail_poll: Duration,
        cluster: Arc<dyn KvStore>,
        keys: Keys,
    ) -> Self {
        Self {
            store,
            cap,
            tail_poll,
            cluster,
            keys,
        }
    }
}

/// The output a tailer has not seen, given that it has seen `seen` of the run's `output_bytes`.
fn unseen_output(run: &StoredRun, seen: u64) -> Vec<u8> {
    let total = u64::try_from(run.output_bytes).unwrap_or(0);
    let new = usize::try_from(total.saturating_sub(seen)).unwrap_or(usize::MAX);
    run.stored_output().last(new)
}

/// The metric label of an event's kind.
fn event_kind(e: &pb::RunEvent) -> &'static str {
    match e.kind {
        Some(pb::run_event::Kind::Started(_)) => "started",
        Some(pb::run_event::Kind::Output(_)) => "output",
        Some(pb::run_event::Kind::Finished(_)) => "finished",
        None => "none",
    }
}

async fn tail(
    store: Arc<dyn RunStore>,
    run_id: String,
    mut seen: u64,
    poll: Duration,
    tx: mpsc::Sender<Result<pb::TailRunResponse, Status>>,
) {
    let started = tokio::time::Instant::now();
    let mut outage_since: Option<tokio::time::Instant> = None;
    loop {
        match store.get(&run_id).await {
            Ok(Some(mut run)) => {
                outage_since = None;
                let data = unseen_output(&run, seen);
                seen = u64::try_from(run.output_bytes).unwrap_or(seen);
                let done = run.status.is_terminal();
                if !data.is_empty()
                    && tx
                        .send(Ok(pb::TailRunResponse {
                            data,
                            finished: None,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                if done {
                    // The output was streamed already; the final message carries the rest of the run.
                    run.output.clear();
                    let _ = tx
                        .send(Ok(pb::TailRunResponse {
                            data: Vec::new(),
                            finished: Some(run_to_proto(run)),
                        }))
                        .await;
                    return;
                }
            }
            Ok(None) if started.elapsed() > TAIL_WAIT_FOR_RUN => {
                let _ = tx
                    .send(Err(Status::not_found(format!("run {run_id:?} not found"))))
                    .await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let since = *outage_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > TAIL_OUTAGE {
                    let _ = tx.send(Err(store_error(e))).await;
                    return;
                }
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<pb::TailRunResponse, Status>> + Send>>;

impl LogService {
    /// The owner of each run of `events`: the stored run's worker and job, else (a run not
    /// stored yet) those its start in the batch names. The stored worker wins, so a start in the
    /// batch cannot claim someone else's run.
    async fn owners(&self, events: &[pb::RunEvent]) -> Result<HashMap<String, RunOwner>, Status> {
        let mut ids: Vec<String> = events.iter().map(|e| e.run_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut owners: HashMap<String, RunOwner> = self
            .store
            .get_many(&ids)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|run| !run.worker_id.is_empty())
            .map(|run| {
                let owner = RunOwner {
                    worker: run.worker_id,
                    job: run.job_name,
                    stored: true,
                };
                (run.run_id, owner)
            })
            .collect();
        for (run_id, owner) in crate::reporter::owners_in_batch(events) {
            owners.entry(run_id).or_insert(owner);
        }
        Ok(owners)
    }

    /// The cluster state's evidence for the runs of a batch that need it: those not stored yet,
    /// and those the batch reports lost.
    async fn evidence(
        &self,
        owners: &HashMap<String, RunOwner>,
        lost: &HashSet<String>,
    ) -> Result<ClaimEvidence, Status> {
        let asked: Vec<_> = owners
            .iter()
            .filter(|(run_id, owner)| !owner.stored || lost.contains(*run_id))
            .map(|(run_id, owner)| owner.reported(run_id))
            .collect();
        if asked.is_empty() {
            return Ok(ClaimEvidence::default());
        }
        ClaimEvidence::read(self.cluster.as_ref(), &self.keys, &asked)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the cluster state: {e}")))
    }
}

#[tonic::async_trait]
impl pb::log_service_server::LogService for LogService {
    async fn append_run_events(
        &self,
        request: Request<pb::AppendRunEventsRequest>,
    ) -> Result<Response<pb::AppendRunEventsResponse>, Status> {
        let reporter = crate::reporter::Reporter::of(request.extensions().get());
        let events = request.into_inner().events;
        if events.len() > MAX_EVENTS_PER_BATCH {
            return Err(invalid(
                "events",
                format!(
                    "{} in one batch; at most {MAX_EVENTS_PER_BATCH}",
                    events.len()
                ),
            ));
        }
        let (owners, lost, evidence) = match &reporter {
            Some(_) => {
                let owners = self.owners(&events).await?;
                let lost = crate::reporter::lost_in_batch(&events);
                let evidence = self.evidence(&owners, &lost).await?;
                (owners, lost, evidence)
            }
            None => Default::default(),
        };
        let metrics = distcron_metrics::logsvc();
        metrics.append_batch_events.observe(events.len() as f64);
        let mut valid = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        let mut counted = Vec::with_capacity(events.len());
        let mut output_bytes = 0u64;
        for (index, e) in events.iter().enumerate() {
            let kind = event_kind(e);
            let refused = reporter.as_ref().and_then(|r| {
                let owner = owners.get(&e.run_id);
                r.refusal(e, owner, lost.contains(&e.run_id), &evidence)
            });
            match refused.map_or_else(|| event_from_proto(e), Err) {
                Ok(ev) => {
                    if let Some(pb::run_event::Kind::Output(o)) = &e.kind {
                        output_bytes += o.data.len() as u64;
                    }
                    valid.push(ev);
                    counted.push((kind, true));
                }
                Err(reason) => {
                    counted.push((kind, false));
                    rejected.push(pb::RejectedEvent {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        run_id: e.run_id.clone(),
                        reason,
                    });
                }
            }
        }
        append_events(self.store.as_ref(), &valid, self.cap)
            .await
            .map_err(store_error)?;
        // Counted once stored: a batch that failed is sent again.
        for (kind, accepted) in counted {
            metrics.event(kind, accepted);
        }
        metrics.output_bytes.inc_by(output_bytes);
        if !rejected.is_empty() {
            tracing::warn!(rejected = rejected.len(), first = %rejected[0].reason, "rejected run events");
        }
        Ok(Response::new(pb::AppendRunEventsResponse {
            accepted: u32::try_from(valid.len()).unwrap_or(u32::MAX),
            rejected,
        }))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            n => return Err(invalid("limit", format!("{n} is more than {MAX_LIMIT}"))),
        };
        if !req.job_name.is_empty() {
            validate_name(&req.job_name).map_err(|e| invalid("jobName", e.message))?;
        }
        let statuses = req
            .statuses
            .iter()
            .map(|s| RunStatus::try_from(*s).map_err(|e| invalid("statuses", e.to_string())))
            .collect::<Result<Vec<RunStatus>, Status>>()?;
        if req.start_from_ms > 0
            && req.start_before_ms > 0
            && req.start_from_ms >= req.start_before_ms
        {
            return Err(invalid("startBeforeMs", "must be after startFromMs"));
        }
        let after = if req.page_token.is_empty() {
            None
        } else {
            if req.skip > 0 {
                return Err(invalid("pageToken", "cannot be combined with skip"));
            }
            Some(
                PageCursor::from_token(&req.page_token)
                    .ok_or_else(|| invalid("pageToken", "not a token from ListRuns"))?,
            )
        };
        let query = RunQuery {
            job_name: (!req.job_name.is_empty()).then_some(req.job_name),
            statuses,
            start_from: (req.start_from_ms > 0).then_some(req.start_from_ms),
            start_before: (req.start_before_ms > 0).then_some(req.start_before_ms),
            limit: limit + 1,
            skip: req.skip,
            after,
            with_output: !req.without_output,
        };
        let mut page = self.store.list(&query).await.map_err(store_error)?;
        let mut more = page.runs.len() > limit as usize;
        page.runs.truncate(limit as usize);
        let fits = fitting(&page.runs, MAX_REPLY_OUTPUT_BYTES);
        if fits < page.runs.len() {
            page.runs.truncate(fits);
            more = true;
        }
        let next_page_token = if more {
            page.runs
                .last()
                .map(|r| {
                    PageCursor {
                        start_time: r.start_time,
                        run_id: r.run_id.clone(),
                    }
                    .to_token()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: page.runs.into_iter().map(run_to_proto).collect(),
            total: page.total,
            next_page_token,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run_id = request.into_inner().run_id;
        validate_run_id(&run_id).map_err(invalid_argument)?;
        match self.store.get(&run_id).await.map_err(store_error)? {
            Some(run) => Ok(Response::new(run_to_proto(run))),
            None => Err(Status::not_found(format!("run {run_id:?} not found"))),
        }
    }

    type TailRunStream = TailStream;

    async fn tail_run(
        &self,
        request: Request<pb::TailRunRequest>,
    ) -> Result<Response<TailStream>, Status> {
        let req = request.into_inner();
        validate_run_id(&req.run_id).map_err(invalid_argument)?;
        let (tx, mut rx) = mpsc::channel(16);
        distcron_metrics::logsvc().tail_streams.inc();
        tokio::spawn(
            tail(
                self.store.clone(),
                req.run_id,
                req.from_offset,
                self.tail_poll,
                tx,
            )
            .map(|()| distcron_metrics::logsvc().tail_streams.dec()),
        );
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn job_stats(
        &self,
        request: Request<pb::JobStatsRequest>,
    ) -> Result<Response<pb::JobStatsResponse>, Status> {
        let req = request.into_inner();
        validate_name(&req.job_name).map_err(|e| invalid("jobName", e.message))?;
        let window = match req.window_seconds {
            0 => DEFAULT_STATS_WINDOW,
            n if n <= MAX_STATS_WINDOW => n,
            n => {
                return Err(invalid(
                    "windowSeconds",
                    format!("{n} is more than {MAX_STATS_WINDOW}"),
                ))
            }
        };
        let since = distcron_core::now_ms() - i64::from(window) * 1000;
        let raw = self
            .store
            .stats(&req.job_name, since)
            .await
            .map_err(store_error)?;
        let ended = [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Killed,
        ];
        let (n, dur) = raw
            .totals
            .iter()
            .filter(|t| ended.contains(&t.status))
            .fold((0u64, 0i64), |(n, d), t| (n + t.count, d + t.duration_ms));
        Ok(Response::new(pb::JobStatsResponse {
            job_name: req.job_name,
            last_run: raw.last_run.map(run_to_proto),
            counts: raw
                .totals
                .iter()
                .map(|t| pb::StatusCount {
                    status: t.status.into(),
                    count: t.count,
                })
                .collect(),
            last_success_ms: raw.last_success_ms,
            last_failure_ms: raw.last_failure_ms,
            avg_duration_ms: if n > 0 {
                dur / i64::try_from(n).unwrap_or(1)
            } else {
                0
            },
        }))
    }
}
