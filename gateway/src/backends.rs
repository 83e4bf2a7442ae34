//! The gRPC clients of jobsvc and logsvc: balanced over the registered (or configured) instances,
//! carrying the caller's token and trace context, retrying idempotent calls that failed before an
//! instance answered.

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
    /// The channels to jobsvc and logsvc, for their gRPC health.
    pub channels: [Channel; 2],
}

impl Backends {
    /// Clients over two balanced channels.
    pub fn new(jobs: Channel, logs: Channel) -> Self {
        Self {
            channels: [jobs.clone(), logs.clone()],
            jobs: JobServiceClient::with_interceptor(jobs, TracePropagation),
            // One run's output is at most logsvc's 8 MiB cap; pages of runs stay under 4 MiB.
            logs: LogServiceClient::with_interceptor(logs, TracePropagation)
                .max_decoding_message_size(MAX_LOGS_REPLY_BYTES),
        }
    }
}

/// Largest reply read from logsvc: a run with the largest output cap (8 MiB), with room to
/// spare.
pub const MAX_LOGS_REPLY_BYTES: usize = 16 * 1024 * 1024;

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

/// Most attempts of an idempotent call.
const MAX_ATTEMPTS: u32 = 5;

/// Whether a call failed before any instance answered it: none was reachable (`Unavailable`), the
/// instance died with the call in flight (`Cancelled`, or `Unknown` made here from a transport
/// error: a status an instance sent has no source), so another instance may answer it.
fn failed_in_transport(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Calls `f` until it succeeds, fails with an answer from an instance, or [`MAX_ATTEMPTS`]
/// attempts failed in transport, backing off 100, 200, 400, 800 ms: longer than discovery takes
/// to leave an unreachable instance out of the balancer (it probes every second). Only for
/// idempotent calls.
pub async fn retry<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(s) if failed_in_transport(&s) && attempt + 1 < MAX_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(attempt, error = %s.message(), "backend unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_an_instance_answered_are_retried() {
        assert!(failed_in_transport(&tonic::Status::unavailable(
            "tcp connect error"
        )));
        assert!(failed_in_transport(&tonic::Status::cancelled("gone")));
        let transport =
            tonic::Status::from_error(Box::new(std::io::Error::other("transport error")));
        assert_eq!(transport.code(), tonic::Code::Unknown);
        assert!(failed_in_transport(&transport));
        // An instance's own answers are final.
        assert!(!failed_in_transport(&tonic::Status::unknown(
            "from the server"
        )));
        assert!(!failed_in_transport(&tonic::Status::internal(
            "store failed"
        )));
        assert!(!failed_in_transport(&tonic::Status::not_found(
            "no such run"
        )));
    }
}
