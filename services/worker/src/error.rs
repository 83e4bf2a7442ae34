//! Why the worker could not start or stopped with an error.

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The data directory could not be prepared or is in use by another worker.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The worker's own executable (the runs' group leader) cannot be found.
    #[error("cannot find the worker executable to lead run process groups: {0}")]
    Executable(String),
    /// logsvc discovery failed.
    #[error(transparent)]
    Discovery(#[from] distcron_discovery::DiscoveryError),
}
