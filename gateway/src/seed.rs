//! The seed's routes, wire-compatible with its console and scripts: form posts, query strings, and
//! the `{errno, msg, data}` envelope with HTTP 200 for answers the seed gave with errno -1. Fixed
//! on the way: wrong methods get 405, answers are `application/json`, errors name the field,
//! `limit` is bounded, and every route needs a token.
//!
//! A schedule saved here is read as the seed read it: six fields are `min hour dom month dow year`
//! ([`distcron_schedule::seed_to_stored`]), stored as the equivalent seven fields, and the save's
//! answer carries the stored job under `stored`, next to the seed's `data`.

use axum::extract::State;
use axum::{Extension, Form, Json};
use distcron_proto::jobs::v1 as jobs;
use distcron_proto::logs::v1 as logs;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::views::{JobInput, JobView, RunView};
use crate::AppState;

/// The seed's envelope, and after its keys the job as stored (`/job/save` only).
#[derive(Debug, Serialize)]
pub struct Envelope {
    errno: i32,
    msg: String,
    data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<JobView>,
}

fn ok(data: impl Serialize) -> Json<Envelope> {
    Json(Envelope {
        errno: 0,
        msg: "success".into(),
        data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        stored: None,
    })
}

fn fail(msg: impl Into<String>) -> Json<Envelope> {
    Json(Envelope {
        errno: -1,
        msg: msg.into(),
        data: serde_json::Value::Null,
        stored: None,
    })
}

fn status_text(s: &tonic::Status) -> String {
    s.message().to_owned()
}

/// `POST /job/save` form.
#[derive(Debug, Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    job: String,
}

/// Saves the job in form field `job` (a JSON string), its schedule read as the seed read it;
/// answers the previous definition or null, and the job as stored.
pub async fn save(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<SaveForm>,
) -> Json<Envelope> {
    let mut input: JobInput = match serde_json::from_str(&form.job) {
        Ok(j) => j,
        Err(e) => return fail(format!("job: not a JSON job object: {e}")),
    };
    input.cron_expr = distcron_schedule::seed_to_stored(&input.cron_expr);
    // The seed's job has no bounds: its routes keep its shape.
    input.start_at = None;
    input.end_at = None;
    let job = match input.to_proto() {
        Ok(j) => j,
        Err(e) => return fail(e.detail.message),
    };
    let req = jobs::SaveJobRequest {
        job: Some(job),
        expected_revision: None,
    };
    let saved = state.backends.save_job(&caller, req);
    match saved.await {
        Ok(r) => {
            let mut answer = ok(r.previous.map(JobView::from));
            answer.stored = r.job.map(JobView::from);
            answer
        }
        Err(e) => fail(status_text(&e)),
    }
}

/// `POST /job/delete` and `/job/kill` form.
#[derive(Debug, Deserialize)]
pub struct NameForm {
    #[serde(default)]
    name: String,
}

/// Deletes job `name`; answers the deleted definition, or null if there was none.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<NameForm>,
) -> Json<Envelope> {
    let req = jobs::DeleteJobRequest {
        name: form.name,
        kill_running: false,
        expected_revision: None,
    };
    let deleted = state.backends.delete_job(&caller, req);
    match deleted.await {
        Ok(r) => ok(r.job.map(JobView::from)),
        Err(e) if e.code() == tonic::Code::NotFound => ok(serde_json::Value::Null),
        Err(e) => fail(status_text(&e)),
    }
}

/// Lists every job, ordered by name.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Envelope> {
    let mut all: Vec<JobView> = Vec::new();
    let mut token = String::new();
    loop {
        let req = jobs::ListJobsRequest {
            page_size: 1000,
            page_token: token.clone(),
            name_prefix: String::new(),
        };
        let page = state.backends.list_jobs(&caller, req);
        match page.await {
            Ok(p) => {
                all.extend(p.jobs.into_iter().map(JobView::from));
                if p.next_page_token.is_empty() {
                    return ok(all);
                }
                token = p.next_page_token;
            }
            Err(e) => return fail(status_text(&e)),
        }
    }
}

/// Asks the workers to kill the running runs of job `name`.
pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<NameForm>,
) -> Json<Envelope> {
    let req = jobs::KillJobRequest {
        name: form.name,
        run_id: String::new(),
    };
    let killed = state.backends.kill_job(&caller, req);
    match killed.await {
        Ok(_) => ok(serde_json::Value::Null),
        Err(e) => fail(status_text(&e)),
    }
}

/// `GET /job/log` parameters (query string or form body), as loosely parsed as the seed did.
#[derive(Debug, Deserialize)]
pub struct LogParams {
    #[serde(default)]
    name: String,
    #[serde(default)]
    skip: String,
    #[serde(default)]
    limit: String,
}

/// Largest `limit` of `/job/log`.
pub const MAX_LOG_LIMIT: u32 = 1000;

/// Runs of job `name`, newest first: `skip` (bad → 0) and `limit` (bad or 0 → 20, at most 1000).
pub async fn log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(params): Form<LogParams>,
) -> Json<Envelope> {
    // `Form` reads the query string of a GET and the body of a POST, as the seed did.
    let name = params.name;
    let skip = params.skip.trim().parse::<i64>().unwrap_or(0);
    let limit = params.limit.trim().parse::<i64>().unwrap_or(20);
    let skip = u32::try_from(skip.max(0)).unwrap_or(u32::MAX);
    let limit = if limit <= 0 {
        20
    } else {
        u32::try_from(limit)
            .unwrap_or(MAX_LOG_LIMIT)
            .min(MAX_LOG_LIMIT)
    };
    if name.is_empty() {
        return ok(Vec::<RunView>::new());
    }
    // logsvc ends a page early when its outputs are large; the rest follows by page token, so
    // the seed's page is whole however big its runs' outputs are.
    let mut runs: Vec<RunView> = Vec::new();
    let mut page_token = String::new();
    loop {
        let want = limit.saturating_sub(u32::try_from(runs.len()).unwrap_or(u32::MAX));
        let req = logs::ListRunsRequest {
            job_name: name.clone(),
            limit: want,
            skip: if page_token.is_empty() { skip } else { 0 },
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = state.backends.list_runs(&caller, req);
        match page.await {
            Ok(p) => {
                runs.extend(p.runs.into_iter().map(RunView::from));
                if p.next_page_token.is_empty() || runs.len() >= limit as usize {
                    return ok(runs);
                }
                page_token = p.next_page_token;
            }
            Err(e) => return fail(status_text(&e)),
        }
    }
}

/// The live workers as the seed listed them: one address each.
pub async fn workers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Envelope> {
    let req = jobs::ListWorkersRequest {};
    let listed = state.backends.list_workers(&caller, req);
    match listed.await {
        Ok(r) => ok(r
            .workers
            .into_iter()
            .map(|w| w.addresses.into_iter().next().unwrap_or(w.host))
            .collect::<Vec<String>>()),
        Err(e) => fail(status_text(&e)),
    }
}
