//! The distcron gateway: HTTP in front of the gRPC services.
//!
//! - the seed's routes (`/job/*`, `/worker/list`), wire-compatible ([`seed`]);
//! - `/api/v1`, resource-oriented JSON with an OpenAPI document ([`api`]);
//! - `/healthz` (process up), `/readyz` (both backends serve: reachable, and their stores write) and `/metrics` (Prometheus);
//! - the web console at `/` ([`console`]).
//!
//! Every request gets a span joined to the caller's trace and is counted (module `observe`).
//! Every route but `/healthz`, `/readyz` (load-balancer probes; they reveal only whether the
//! backends answer), `/metrics` (counts and latencies; no job names), the console's static files and its login needs a token with the route's role ([`auth`]). jobsvc and logsvc are reached over channels balanced
//! across their registered instances ([`backends`]); each handler's call to them is one [`call`].

pub mod api;
pub mod auth;
pub mod backends;
pub mod call;
mod config;
pub mod console;
pub mod error;
pub mod json;
mod observe;
pub mod seed;
mod serve;
pub mod sessions;
pub mod streams;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use distcron_auth::{Role, TokenStore};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use backends::Backends;
pub use config::GatewayConfig;
pub use serve::{serve, ConnectionLimits};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// jobsvc and logsvc clients.
    pub backends: Backends,
    /// The configured tokens (empty: authentication off).
    pub tokens: Arc<TokenStore>,
    /// The console's sessions.
    pub sessions: Arc<sessions::Sessions>,
    /// How many live-output streams may be open.
    pub streams: Arc<streams::StreamLimits>,
}

/// Limits of HTTP requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Time limit of a request (output streams excepted).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn gated(state: &AppState, role: Role, routes: Router<AppState>) -> Router<AppState> {
    let gate = auth::Gate {
        tokens: state.tokens.clone(),
        sessions: state.sessions.clone(),
        role,
    };
    routes.route_layer(middleware::from_fn_with_state(gate, auth::authorize))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Whether the backend behind `channel` reports `service` SERVING in gRPC health (open, no
/// token), within 2 s. A backend does not while a store of its process cannot write.
async fn serving(channel: tonic::transport::Channel, service: &'static str) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = health.check(tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    });
    tokio::time::timeout(Duration::from_secs(2), check)
        .await
        .is_ok_and(|r| {
            r.is_ok_and(|r| {
                r.into_inner().status()
                    == tonic_health::pb::health_check_response::ServingStatus::Serving
            })
        })
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let [jobs, logs] = state.backends.channels.clone();
    let (jobs_ok, logs_ok) = tokio::join!(
        serving(jobs, "distcron.jobs.v1.JobService"),
        serving(logs, "distcron.logs.v1.LogService"),
    );
    let body = serde_json::json!({ "jobsvc": jobs_ok, "logsvc": logs_ok });
    let status = if jobs_ok && logs_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// The gateway's routes.
pub fn router(state: AppState, limits: Limits) -> Router {
    let viewer = Router::new()
        .route("/job/list", get(seed::list))
        .route("/job/log", get(seed::log).post(seed::log))
        .route("/worker/list", get(seed::workers))
        .route("/api/v1/jobs", get(api::list_jobs))
        .route("/api/v1/jobs/{name}", get(api::get_job))
        .route("/api/v1/jobs/{name}/stats", get(api::job_stats))
        .route("/api/v1/jobs/{name}/runs", get(api::list_runs))
        .route("/api/v1/runs/{run_id}", get(api::get_run))
        .route("/api/v1/runs/{run_id}/output", get(api::tail_run))
        .route("/api/v1/workers", get(api::list_workers))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/schedule/preview", post(api::preview_schedule));
    let operator = Router::new()
        .route("/job/kill", post(seed::kill))
        .route("/api/v1/jobs/{name}/trigger", post(api::trigger_job))
        .route("/api/v1/jobs/{name}/kill", post(api::kill_job))
        .route("/api/v1/jobs/{name}/enable", post(api::enable_job))
        .route("/api/v1/jobs/{name}/disable", post(api::disable_job));
    let admin = Router::new()
        .route("/job/save", post(seed::save))
        .route("/job/delete", post(seed::delete))
        .route("/api/v1/jobs", post(api::create_job))
        .route(
            "/api/v1/jobs/{name}",
            axum::routing::put(api::put_job).delete(api::delete_job),
        );
    let open = Router::new()
        .route("/", get(console::index))
        .route("/assets/app.js", get(console::app_js))
        .route("/assets/style.css", get(console::style_css))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(distcron_metrics::metrics_handler))
        .route(
            "/api/v1/session",
            get(api::session_mode)
                .post(api::create_session)
                .delete(api::delete_session),
        );
    // The timeout bounds the time to the response head, so output streams may last longer.
    gated(&state, Role::Viewer, viewer)
        .merge(gated(&state, Role::Operator, operator))
        .merge(gated(&state, Role::Admin, admin))
        .merge(open)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(middleware::map_response(json::envelope_too_large))
        .layer(middleware::from_fn(observe::observe))
        .with_state(state)
}

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}
