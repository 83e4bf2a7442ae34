//! `/api/v1`: resource-oriented JSON over jobsvc and logsvc, described by the OpenAPI document at
//! `/api/v1/openapi.json` (generated from these handlers by `utoipa`).

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use distcron_core::records::RunStatus;
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::logs::v1 as logs;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{session_cookie, session_id, Caller, Https};
use crate::call::request;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::views::{JobInput, JobView, RunView, WorkerView};
use crate::AppState;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "distcron API", version = "1", description = "Jobs, runs and workers of a distcron cluster."),
    paths(
        list_jobs, create_job, get_job, put_job, delete_job, trigger_job, kill_job, enable_job,
        disable_job, job_stats, list_runs, get_run, tail_run, list_workers, preview_schedule,
        session_mode, create_session
    ),
    components(schemas(
        JobView, JobInput, RunView, WorkerView, ErrorBody, JobPage, RunPage, WorkerList,
        TriggerAnswer, KillBody, KillAnswer, StatsView, StatusCountView, PreviewBody,
        PreviewAnswer, SessionBody, SessionAnswer, SessionMode
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the OpenAPI document.
pub async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// Jobs ordered by name.
    pub jobs: Vec<JobView>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

/// Paging of job lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", default)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// 1 to 1000 (default 100).
    pub page_size: Option<u32>,
    /// `nextPageToken` of the previous page.
    pub page_token: String,
    /// Only names starting with this.
    pub prefix: String,
}

/// Lists jobs by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/jobs", params(JobListParams), responses(
    (status = 200, body = JobPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(p): ApiQuery<JobListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let page_size = p.page_size.unwrap_or(100);
    if !(1..=1000).contains(&page_size) {
        return Err(ApiError::invalid("pageSize", "must be 1 to 1000"));
    }
    let req = jobs::ListJobsRequest {
        page_size,
        page_token: p.page_token,
        name_prefix: p.prefix,
    };
    let page = state.backends.list_jobs(&caller, req).await?;
    Ok(Json(JobPage {
        jobs: page.jobs.into_iter().map(JobView::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

async fn save(
    state: &AppState,
    caller: &Caller,
    input: &JobInput,
    expected_revision: Option<i64>,
) -> Result<(JobView, bool), ApiError> {
    let job = input.to_proto()?;
    let req = jobs::SaveJobRequest {
        job: Some(job),
        expected_revision,
    };
    let r = state.backends.save_job(caller, req).await?;
    let job = r.job.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "internal",
            "jobsvc answered no job",
        )
    })?;
    Ok((JobView::from(job), r.previous.is_none()))
}

/// Creates a job; 409 if one with that name exists.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = JobInput, responses(
    (status = 201, body = JobView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<JobInput>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let (job, _) = save(&state, &caller, &input, Some(0)).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Gets a job.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let req = jobs::GetJobRequest { name };
    let job = state.backends.get_job(&caller, req).await?;
    Ok(Json(JobView::from(job)))
}

/// Creates or replaces job `name` (the body's name must be empty or the same). With
/// `expectedRevision` it is compare-and-swap: 409 when the stored job changed meanwhile.
#[utoipa::path(put, path = "/api/v1/jobs/{name}", params(("name" = String, Path)), request_body = JobInput,
    responses((status = 200, body = JobView), (status = 201, body = JobView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn put_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(mut input): ApiJson<JobInput>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    if !input.name.is_empty() && input.name != name {
        return Err(ApiError::invalid(
            "name",
            "differs from the name in the path",
        ));
    }
    input.name = name;
    let expected = input.expected_revision;
    let (job, created) = save(&state, &caller, &input, expected).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)))
}

/// Deletion options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", default)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also kill its running runs.
    pub kill_running: bool,
}

/// Deletes a job (its running runs finish unless `killRunning`); answers the deleted job.
#[utoipa::path(delete, path = "/api/v1/jobs/{name}", params(("name" = String, Path), DeleteParams),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<Json<JobView>, ApiError> {
    let req = jobs::DeleteJobRequest {
        name,
        kill_running: p.kill_running,
        expected_revision: None,
    };
    let r = state.backends.delete_job(&caller, req).await?;
    r.job
        .map(|j| Json(JobView::from(j)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such job"))
}

/// A manual run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAnswer {
    /// The run's id.
    pub run_id: String,
    /// Its slot, ms.
    pub slot_ms: i64,
}

/// Runs a job now, once, on one worker.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/trigger", params(("name" = String, Path)), responses(
    (status = 202, body = TriggerAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn trigger_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<TriggerAnswer>), ApiError> {
    let req = jobs::TriggerJobRequest { name };
    let r = state.backends.trigger_job(&caller, req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerAnswer {
            run_id: r.run_id,
            slot_ms: r.slot_ms,
        }),
    ))
}

/// What to kill.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KillBody {
    /// Only this run; empty kills every running run of the job.
    pub run_id: String,
}

/// The outcome of a kill request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillAnswer {
    /// Whether a matching run was running.
    pub was_running: bool,
    /// The runs targeted.
    pub run_ids: Vec<String>,
}

/// Kills the job's running runs (or one), whole process groups included.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/kill", params(("name" = String, Path)),
    request_body(content = KillBody, description = "optional"), responses(
    (status = 200, body = KillAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn kill_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Option<ApiJson<KillBody>>,
) -> Result<Json<KillAnswer>, ApiError> {
    let run_id = body.map(|ApiJson(b)| b.run_id).unwrap_or_default();
    let req = jobs::KillJobRequest { name, run_id };
    let r = state.backends.kill_job(&caller, req).await?;
    Ok(Json(KillAnswer {
        was_running: r.was_running,
        run_ids: r.run_ids,
    }))
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    name: String,
    enabled: bool,
) -> Result<Json<JobView>, ApiError> {
    let req = jobs::SetJobEnabledRequest { name, enabled };
    let job = state.backends.set_job_enabled(caller, req).await?;
    Ok(Json(JobView::from(job)))
}

/// Resumes scheduling a job.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/enable", params(("name" = String, Path)), responses(
    (status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn enable_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&state, &caller, name, true).await
}

/// Pauses a job's schedule, keeping its definition.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/disable", params(("name" = String, Path)), responses(
    (status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn disable_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&state, &caller, name, false).await
}

/// Runs of one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCountView {
    /// The status.
    pub status: String,
    /// How many runs in the window.
    pub count: u64,
}

/// A job's recent history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// The job.
    pub job_name: String,
    /// Its newest run.
    pub last_run: Option<RunView>,
    /// Runs by status in the window.
    pub counts: Vec<StatusCountView>,
    /// Start of the newest successful run, ms (0 = none).
    pub last_success: i64,
    /// Start of the newest failed run, ms (0 = none).
    pub last_failure: i64,
    /// Average duration of finished runs in the window, ms.
    pub avg_duration_ms: i64,
}

/// Stats window.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", default)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Window in seconds (default 86400).
    pub window_seconds: Option<u32>,
}

/// A job's last run and counts by status over a window.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/stats", params(("name" = String, Path), StatsParams), responses(
    (status = 200, body = StatsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn job_stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(p): ApiQuery<StatsParams>,
) -> Result<Json<StatsView>, ApiError> {
    let req = logs::JobStatsRequest {
        job_name: name,
        window_seconds: p.window_seconds.unwrap_or(0),
    };
    let r = state.backends.job_stats(&caller, req).await?;
    Ok(Json(StatsView {
        job_name: r.job_name,
        last_run: r.last_run.map(RunView::from),
        counts: r
            .counts
            .into_iter()
            .map(|c| StatusCountView {
                status: crate::views::status_name(c.status).into(),
                count: c.count,
            })
            .collect(),
        last_success: r.last_success_ms,
        last_failure: r.last_failure_ms,
        avg_duration_ms: r.avg_duration_ms,
    }))
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Runs matching the filter in all.
    pub total: u64,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

/// Run filters and paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", default)]
#[into_params(parameter_in = Query)]
pub struct RunListParams {
    /// Only this status (`running`, `succeeded`, `failed`, `timed_out`, `killed`, `lost`, `skipped`).
    pub status: Option<String>,
    /// Only runs started at or after this, ms.
    pub from: Option<i64>,
    /// Only runs started before this, ms.
    pub to: Option<i64>,
    /// 1 to 1000 (default 20).
    pub limit: Option<u32>,
    /// `nextPageToken` of the previous page.
    pub page_token: String,
    /// Leave out output (default true: a page of runs near the output cap is large; read one
    /// run's output with `GET /api/v1/runs/{runId}`).
    pub without_output: Option<bool>,
}

/// A job's runs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/runs", params(("name" = String, Path), RunListParams), responses(
    (status = 200, body = RunPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(p): ApiQuery<RunListParams>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let statuses = match p.status.as_deref() {
        None | Some("") => Vec::new(),
        Some(s) => vec![s
            .parse::<RunStatus>()
            .map(i32::from)
            .map_err(|_| ApiError::invalid("status", format!("unknown status {s:?}")))?],
    };
    let (from, to) = (p.from.unwrap_or(0), p.to.unwrap_or(0));
    if from < 0 || to < 0 {
        return Err(ApiError::invalid(
            "from",
            "times are ms since the epoch, not negative",
        ));
    }
    let req = logs::ListRunsRequest {
        job_name: name,
        statuses,
        start_from_ms: from,
        start_before_ms: to,
        limit,
        skip: 0,
        page_token: p.page_token,
        without_output: p.without_output.unwrap_or(true),
    };
    let page = state.backends.list_runs(&caller, req).await?;
    Ok(Json(RunPage {
        runs: page.runs.into_iter().map(RunView::from).collect(),
        total: page.total,
        next_page_token: page.next_page_token,
    }))
}

/// Gets a run.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", params(("run_id" = String, Path)), responses(
    (status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let req = logs::GetRunRequest { run_id };
    let run = state.backends.get_run(&caller, req).await?;
    Ok(Json(RunView::from(run)))
}

/// Streams a run's output as server-sent events: `output` events carry text as it arrives, one
/// `end` event carries the finished run (JSON), an `error` event a failure.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}/output", params(("run_id" = String, Path)), responses(
    (status = 200, content_type = "text/event-stream", description = "output, then the finished run"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn tail_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let who = caller
        .identity
        .as_ref()
        .map_or("anonymous", |i| i.name.as_str());
    let permit = state.streams.open(who)?;
    // An unknown run is a 404 now, not an error event after logsvc's wait for a starting run.
    let req = logs::GetRunRequest {
        run_id: run_id.clone(),
    };
    state.backends.get_run(&caller, req).await?;
    let mut req = request(
        logs::TailRunRequest {
            run_id,
            from_offset: 0,
        },
        caller.token.as_deref(),
    );
    // A tail lasts as long as the run.
    req.set_timeout(std::time::Duration::from_secs(7 * 24 * 3600));
    let stream = state
        .backends
        .logs
        .clone()
        .tail_run(req)
        .await?
        .into_inner();
    // The place is held as long as the stream is (dropped with it).
    let events = stream.map(move |item| {
        let _held = &permit;
        Ok(match item {
            Ok(msg) => match msg.finished {
                Some(run) => Event::default()
                    .event("end")
                    .data(serde_json::to_string(&RunView::from(run)).unwrap_or_default()),
                None => Event::default()
                    .event("output")
                    .data(String::from_utf8_lossy(&msg.data)),
            },
            Err(status) => Event::default().event("error").data(status.message()),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The live workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// By id.
    pub workers: Vec<WorkerView>,
}

/// Lists the live workers.
#[utoipa::path(get, path = "/api/v1/workers", responses(
    (status = 200, body = WorkerList), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_workers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<WorkerList>, ApiError> {
    let req = jobs::ListWorkersRequest {};
    let r = state.backends.list_workers(&caller, req).await?;
    Ok(Json(WorkerList {
        workers: r.workers.into_iter().map(WorkerView::from).collect(),
    }))
}

/// A schedule to preview.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PreviewBody {
    /// The expression.
    pub cron_expr: String,
    /// IANA time zone; empty = UTC.
    pub time_zone: String,
    /// How many fire times (1 to 100, default 10).
    pub count: Option<u32>,
    /// The job's name, which `H` fields are hashed from; empty refuses `H`.
    pub name: String,
    /// The job's `startAt`, ms since the epoch: no fire time before it.
    pub start_at: Option<i64>,
    /// The job's `endAt`, ms since the epoch: no fire time after it.
    pub end_at: Option<i64>,
}

/// Next fire times.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewAnswer {
    /// ms since the epoch.
    pub fire_times_ms: Vec<i64>,
    /// RFC 3339 in the schedule's zone.
    pub fire_times: Vec<String>,
    /// The schedule in plain words.
    pub description: String,
}

/// The next fire times of an expression, or why it does not parse.
#[utoipa::path(post, path = "/api/v1/schedule/preview", request_body = PreviewBody, responses(
    (status = 200, body = PreviewAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn preview_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    let count = body.count.unwrap_or(10);
    if !(1..=100).contains(&count) {
        return Err(ApiError::invalid("count", "must be 1 to 100"));
    }
    let req = jobs::PreviewScheduleRequest {
        cron_expr: body.cron_expr,
        time_zone: body.time_zone,
        count,
        after_ms: 0,
        name: body.name,
        start_at_ms: body.start_at,
        end_at_ms: body.end_at,
    };
    let r = state.backends.preview_schedule(&caller, req).await?;
    Ok(Json(PreviewAnswer {
        fire_times_ms: r.fire_times_ms,
        fire_times: r.fire_times,
        description: r.description,
    }))
}

/// A console login.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SessionBody {
    /// The bearer token.
    pub token: String,
}

/// Who is logged in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionAnswer {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: String,
}

/// Whether the console needs a login.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionMode {
    /// False when no tokens are configured (allowed on loopback only): every request acts as
    /// admin, and the console opens without a login.
    pub authentication: bool,
}

/// Says whether the console needs a login (reveals nothing else).
#[utoipa::path(get, path = "/api/v1/session", security(()), responses((status = 200, body = SessionMode)))]
pub async fn session_mode(State(state): State<AppState>) -> Json<SessionMode> {
    Json(SessionMode {
        authentication: !state.tokens.is_empty(),
    })
}

/// Logs the console in: checks the token, opens a session for it and sets the session's id (not
/// the token) as an HttpOnly, SameSite=Strict cookie that expires with the session.
#[utoipa::path(post, path = "/api/v1/session", request_body = SessionBody, security(()), responses(
    (status = 200, body = SessionAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_session(
    State(state): State<AppState>,
    https: Option<Extension<Https>>,
    ApiJson(body): ApiJson<SessionBody>,
) -> Result<Response, ApiError> {
    if state.tokens.is_empty() {
        let answer = SessionAnswer {
            name: "anonymous".into(),
            role: "admin".into(),
        };
        return Ok(Json(answer).into_response());
    }
    if body.token.is_empty() || body.token.contains([';', ',', ' ', '\n', '\r']) {
        return Err(ApiError::invalid("token", "must be a non-empty token"));
    }
    let identity = state.tokens.verify(&body.token).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "unknown token")
    })?;
    if !identity.role.grants(distcron_auth::Role::Viewer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!(
                "token {:?} has role {}, which may only ship run events",
                identity.name, identity.role
            ),
        ));
    }
    let id = state.sessions.open(&body.token);
    let cookie = session_cookie(&id, https.is_some(), crate::sessions::SESSION_TTL.as_secs());
    let answer = SessionAnswer {
        name: identity.name,
        role: identity.role.to_string(),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(answer)).into_response())
}

/// Logs the console out: the session ends here at once (its id is useless from then on), and
/// the cookie is cleared.
pub async fn delete_session(
    State(state): State<AppState>,
    https: Option<Extension<Https>>,
    headers: header::HeaderMap,
) -> Response {
    if let Some(id) = session_id(&headers, https.is_some()) {
        state.sessions.close(id);
    }
    let cookie = session_cookie("", https.is_some(), 0);
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}
