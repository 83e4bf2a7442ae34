//! The gRPC clients of jobsvc and logsvc: balanced over the registered (or configured) instances,
//! carrying the trace context. Handlers call through them with [`crate::call`].

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
