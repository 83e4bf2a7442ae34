//! Run history storage.
//!
//! [`RunStore`] is a thin, versioned document store for runs: insert, compare-and-replace by
//! version, lookups and queries. [`MongoRunStore`] implements it over MongoDB (the run document
//! keeps the seed's field names); [`SqliteRunStore`] over an embedded SQLite file.
//! Both pass the same behavioural suite (`conformance`, behind the `testsuite` feature).
//!
//! Above the trait, [`append_events`] turns run events (started, output chunk, finished) into
//! stored runs idempotently: a re-delivered batch changes nothing, output chunks carry sequence
//! numbers, output is capped keeping head and tail (the shape is
//! [`distcron_core::output`]'s).

mod apply;
mod mongo;
mod sqlite;
mod types;

#[cfg(feature = "testsuite")]
pub mod conformance;

pub use apply::{append_events, apply_event};
pub use distcron_core::output::{OutputCap, TRUNCATION_MARKER};
pub use distcron_core::records::{RunStatus, RunTrigger};
pub use mongo::{MongoConfig, MongoRunStore};
pub use sqlite::SqliteRunStore;
pub use types::{
    JobStatsRaw, PageCursor, RunEvent, RunEventKind, RunFinish, RunPage, RunQuery, RunStart,
    StatusTotals, StoredRun,
};

/// Why a run store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunStoreError {
    /// The database cannot be reached or did not answer in time; retrying later may work.
    #[error("run store unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be read.
    #[error("bad stored run {run_id}: {reason}")]
    BadData {
        /// The run.
        run_id: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other database error.
    #[error("run store error: {0}")]
    Other(String),
}

/// Versioned storage of runs.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates indexes (or tables) idempotently; `retention_days` 0 keeps runs forever.
    async fn init(&self, retention_days: u32) -> Result<(), RunStoreError>;

    /// The stored runs among `run_ids` (missing ones are left out).
    async fn get_many(&self, run_ids: &[String]) -> Result<Vec<StoredRun>, RunStoreError>;

    /// Inserts new runs (each with `version` 1) in one round trip. Returns the ids of the runs
    /// that already existed: those were left as they are, every other run was inserted.
    async fn insert_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError>;

    /// Replaces each run whose stored version is `run.version - 1`. Returns the ids of the runs
    /// that were not at that version (not written); every other run was replaced.
    async fn update_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError>;

    /// One run by id.
    async fn get(&self, run_id: &str) -> Result<Option<StoredRun>, RunStoreError>;

    /// Runs matching the query, newest first (start time, then run id), with the total count.
    async fn list(&self, query: &RunQuery) -> Result<RunPage, RunStoreError>;

    /// Per-status totals of a job's runs started at or after `since_ms`, and its newest runs.
    async fn stats(&self, job_name: &str, since_ms: i64) -> Result<JobStatsRaw, RunStoreError>;
}

impl distcron_metrics::StoreFailure for RunStoreError {
    fn is_store_failure(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Other(_))
    }
}
