//! The gRPC clients of jobsvc and logsvc: balanced over the registered (or configured) instances,
//! carrying the trace context. Handlers call one typed method per RPC, which says once whether the
//! RPC may be sent again after a failure in transport.

use distcron_proto::jobs::v1 as jobs;
use distcron_proto::jobs::v1::job_service_client::JobServiceClient;
use distcron_proto::logs::v1 as logs;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use distcron_telemetry::TracePropagation;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::Caller;
use crate::call::{call, Attempts};

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

/// Defines one method of [`Backends`] per unary RPC: it sends the message as the caller to the
/// named client, at most as often as the attempts say, and answers the reply's message.
macro_rules! rpcs {
    ($($(#[$doc:meta])* $method:ident: $client:ident, $req:ty => $reply:ty, $attempts:ident;)*) => {
        impl Backends {
            $(
                $(#[$doc])*
                pub async fn $method(
                    &self,
                    caller: &Caller,
                    message: $req,
                ) -> Result<$reply, tonic::Status> {
                    call(&self.$client, caller, Attempts::$attempts, message, |mut c, r| async move {
                        c.$method(r).await
                    })
                    .await
                }
            )*
        }
    };
}

rpcs! {
    /// Saves a job (sent once: it writes).
    save_job: jobs, jobs::SaveJobRequest => jobs::SaveJobResponse, Once;
    /// Reads a job.
    get_job: jobs, jobs::GetJobRequest => jobs::Job, Retried;
    /// Lists a page of jobs.
    list_jobs: jobs, jobs::ListJobsRequest => jobs::ListJobsResponse, Retried;
    /// Deletes a job (sent once).
    delete_job: jobs, jobs::DeleteJobRequest => jobs::DeleteJobResponse, Once;
    /// Kills a job's running runs (sent once).
    kill_job: jobs, jobs::KillJobRequest => jobs::KillJobResponse, Once;
    /// Starts a manual run (sent once: a second send would start a second run).
    trigger_job: jobs, jobs::TriggerJobRequest => jobs::TriggerJobResponse, Once;
    /// Enables or disables a job (sent once).
    set_job_enabled: jobs, jobs::SetJobEnabledRequest => jobs::Job, Once;
    /// Previews a schedule's next fire times.
    preview_schedule: jobs, jobs::PreviewScheduleRequest => jobs::PreviewScheduleResponse, Retried;
    /// Lists the workers.
    list_workers: jobs, jobs::ListWorkersRequest => jobs::ListWorkersResponse, Retried;
    /// Lists a page of runs.
    list_runs: logs, logs::ListRunsRequest => logs::ListRunsResponse, Retried;
    /// Reads one run.
    get_run: logs, logs::GetRunRequest => logs::Run, Retried;
    /// Reads a job's statistics.
    job_stats: logs, logs::JobStatsRequest => logs::JobStatsResponse, Retried;
}
