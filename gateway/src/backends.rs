//! The gRPC clients of jobsvc and logsvc: balanced over the registered (or configured) instances,
//! carrying the caller's token and trace context, retrying idempotent calls on `Unavailable`.

use std::future::Future;
use std::time::Duration;

use distcron_proto::jobs::v1::job_service_client::JobServiceClient;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use distcron_telemetry::TracePropagation;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A jobsvc client.
pub type JobsClient = JobServiceClient<InterceptedService<Channel, TracePropagation>>;
/// A logsvc client.
pub type LogsClient = LogServiceClient<InterceptedService<Channel, TracePropagation>>;

/// The backends.
#[derive(Debug, Clone)]
pub struct Backends {
    /// jobsvc.
    pub jobs: JobsClient,
    /// logsvc.
    pub logs: LogsClient,
}

impl Backends {
    /// Clients over two balanced channels.
    pub fn new(jobs: Channel, logs: Channel) -> Self {
        Self {
            jobs: JobServiceClient::with_interceptor(jobs, TracePropagation),
            logs: LogServiceClient::with_interceptor(logs, TracePropagation),
        }
    }
}

/// How long one backend call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A request carrying the caller's bearer token (if any) and a deadline.
pub fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Some(token) = token {
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
    request
}

/// Calls `f` until it succeeds, fails with something other than `Unavailable` or `Cancelled`, or
/// three attempts were made. Only for idempotent calls.
pub async fn retry<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            // `Cancelled` is what a call in flight to an instance that just died gets.
            Err(s)
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
                    && attempt < 2 =>
            {
                attempt += 1;
                tracing::debug!(attempt, error = %s.message(), "backend unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}
