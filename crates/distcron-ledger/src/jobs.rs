//! Job definitions in the store: the transactions that save, delete, pause and resume a job, each
//! a compare-and-swap on the job key's revision.

use distcron_core::records::{DeletedJob, RunningRecord};
use distcron_core::{now_ms, FieldError, JobDefinition, Keys};
use distcron_kv::{Condition, KeyValue, KvError, KvStore, Op, Txn};

/// Read-modify-write attempts before a save without expected revision, or a pause or resume,
/// gives up.
const MAX_CAS_ATTEMPTS: usize = 16;

/// Why a job write (or the read before it) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job of that name is stored.
    #[error("job {name:?} not found")]
    NotFound {
        /// The job's name.
        name: String,
    },
    /// The stored definition cannot be read.
    #[error("stored job at {key} is not valid: {source}")]
    Unreadable {
        /// The job's key.
        key: String,
        /// Why it cannot be read.
        source: serde_json::Error,
    },
    /// The job is not at the revision the caller expected (0: absent); nothing was written.
    #[error("job {name:?} is at revision {actual}, not {expected}; reload and retry")]
    RevisionChanged {
        /// The job's name.
        name: String,
        /// The revision the caller expected.
        expected: i64,
        /// The job's revision now (0: absent).
        actual: i64,
    },
    /// Other writers changed the job on every attempt; nothing was written.
    #[error("job {name:?} is changing too fast; retry")]
    ChangingTooFast {
        /// The job's name.
        name: String,
    },
    /// The job changed between its read and the trigger's write; nothing was written.
    #[error("job {name:?} changed while triggering; retry")]
    ChangedWhileTriggering {
        /// The job's name.
        name: String,
    },
    /// The definition to store is not valid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A record to store could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The store call failed.
    #[error(transparent)]
    Store(#[from] KvError),
}

/// A job definition as stored, with its key's revision.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// The definition.
    pub job: JobDefinition,
    /// The job key's mod revision.
    pub revision: i64,
}

impl StoredJob {
    /// The job stored at `kv`.
    pub fn from_kv(kv: &KeyValue) -> Result<Self, JobError> {
        let job = JobDefinition::from_json(&kv.value).map_err(|source| JobError::Unreadable {
            key: kv.key.clone(),
            source,
        })?;
        Ok(Self {
            job,
            revision: kv.mod_revision,
        })
    }
}

/// Reads the job `name`.
pub async fn load_job(store: &dyn KvStore, keys: &Keys, name: &str) -> Result<StoredJob, JobError> {
    let kv = store
        .get(&keys.job(name))
        .await?
        .ok_or_else(|| JobError::NotFound {
            name: name.to_owned(),
        })?;
    StoredJob::from_kv(&kv)
}

/// A job definition to save, as a client sent it.
#[derive(Debug, Clone)]
pub struct JobSave {
    /// The definition sent; the save sets its creation and update times and its trace parent,
    /// and its `enabled` unless `enabled_sent`.
    pub job: JobDefinition,
    /// Whether the client said `enabled`; when it did not, a stored job keeps its state and a new
    /// one is enabled.
    pub enabled_sent: bool,
    /// Whether the client sent a secret environment ([`JobDefinition::resolve_secret_env`]).
    pub secret_env_sent: bool,
    /// The compare-and-swap: `None` replaces whatever is stored, `Some(0)` creates only,
    /// `Some(n)` replaces revision `n` only.
    pub expected_revision: Option<i64>,
    /// The W3C `traceparent` of the request, stored with the revision.
    pub trace_parent: String,
}

/// A saved job and the definition it replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedJob {
    /// The job as stored now.
    pub saved: StoredJob,
    /// The readable definition it replaced, if any.
    pub previous: Option<StoredJob>,
}

/// Saves `save.job` in one transaction conditional on the job's revision: with an expected
/// revision a conflict is [`JobError::RevisionChanged`]; without, the save reads and retries
/// until it replaces what it read ([`JobError::ChangingTooFast`] after 16 attempts). Each attempt
/// merges the definition with the stored one (creation time, `enabled`, kept secrets) and
/// validates the result as a save must ([`JobDefinition::validate_for_save`]: it must fire after
/// now).
pub async fn save_job(
    store: &dyn KvStore,
    keys: &Keys,
    save: &JobSave,
) -> Result<SavedJob, JobError> {
    save.job.validate_for_save(chrono::Utc::now())?;
    let name = &save.job.name;
    let key = keys.job(name);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let existing = store.get(&key).await?;
        let previous = existing
            .as_ref()
            .and_then(|kv| match JobDefinition::from_json(&kv.value) {
                Ok(job) => Some(StoredJob {
                    job,
                    revision: kv.mod_revision,
                }),
                Err(e) => {
                    tracing::warn!(job = %name, error = %e, "replacing an unreadable stored job");
                    None
                }
            });
        let condition = match (save.expected_revision, &existing) {
            (Some(0), _) | (None, None) => Condition::absent(&key),
            (Some(rev), _) => Condition::unchanged(&key, rev),
            (None, Some(kv)) => Condition::unchanged(&key, kv.mod_revision),
        };
        let job = merged(save, previous.as_ref().map(|p| &p.job))?;
        let txn = Txn {
            when: vec![condition],
            then: vec![Op::put(&key, job.to_json())],
            otherwise: vec![Op::get(&key)],
        };
        let resp = store.txn(txn).await?;
        if resp.succeeded {
            return Ok(SavedJob {
                saved: StoredJob {
                    job,
                    revision: resp.revision,
                },
                previous,
            });
        }
        if let Some(expected) = save.expected_revision {
            return Err(JobError::RevisionChanged {
                name: name.clone(),
                expected,
                actual: resp.got(0).first().map_or(0, |kv| kv.mod_revision),
            });
        }
    }
    Err(JobError::ChangingTooFast { name: name.clone() })
}

/// The definition `save` stores over `previous`, validated. Resolved afresh on every attempt: a
/// retry keeps what is stored by then.
fn merged(save: &JobSave, previous: Option<&JobDefinition>) -> Result<JobDefinition, JobError> {
    let mut job = save.job.clone();
    let now = now_ms();
    job.updated_at = now;
    job.trace_parent.clone_from(&save.trace_parent);
    job.created_at = match previous {
        Some(p) if p.created_at > 0 => p.created_at,
        _ => now,
    };
    if !save.enabled_sent {
        job.enabled = previous.is_none_or(|p| p.enabled);
    }
    job.resolve_secret_env(save.secret_env_sent, previous)?;
    job.validate_for_save(chrono::Utc::now())?;
    Ok(job)
}

/// A deleted job and the runs of it still running when it went.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDeletion {
    /// The job as it was stored.
    pub deleted: StoredJob,
    /// The run ids of its running records at the delete.
    pub running_run_ids: Vec<String>,
}

/// Deletes the job `name` (only at `expected_revision`, or at the revision read when `None`) in
/// one transaction that also drops its pending manual triggers and leaves a [`DeletedJob`]
/// tombstone, from which a worker records `skipped` the slots due before the delete that no claim
/// reached; the job's ledger stays until then (no claim can move it once the job is gone).
pub async fn delete_job(
    store: &dyn KvStore,
    keys: &Keys,
    name: &str,
    expected_revision: Option<i64>,
) -> Result<JobDeletion, JobError> {
    let stored = load_job(store, keys, name).await?;
    let revision = expected_revision.unwrap_or(stored.revision);
    let key = keys.job(name);
    let tombstone = serde_json::to_vec(&DeletedJob {
        job: stored.job.clone(),
        deleted_at_ms: now_ms(),
    })?;
    let txn = Txn {
        when: vec![Condition::unchanged(&key, revision)],
        then: vec![
            Op::delete(&key),
            Op::put(keys.deleted(name), tombstone),
            Op::Delete {
                key: keys.triggers_of(name),
                prefix: true,
            },
            Op::get_prefix(keys.running_of(name)),
        ],
        otherwise: vec![Op::get(&key)],
    };
    let resp = store.txn(txn).await?;
    if !resp.succeeded {
        return Err(match resp.got(0).first() {
            None => JobError::NotFound {
                name: name.to_owned(),
            },
            Some(now) => JobError::RevisionChanged {
                name: name.to_owned(),
                expected: revision,
                actual: now.mod_revision,
            },
        });
    }
    let running_run_ids = resp
        .got(3)
        .iter()
        .filter_map(|kv| serde_json::from_slice::<RunningRecord>(&kv.value).ok())
        .map(|r| r.run_id)
        .collect();
    Ok(JobDeletion {
        deleted: stored,
        running_run_ids,
    })
}

/// A job after a pause or resume.
#[derive(Debug, Clone, PartialEq)]
pub struct EnabledChange {
    /// The job as stored now.
    pub stored: StoredJob,
    /// Whether this call wrote it (false: it already was in that state).
    pub written: bool,
}

/// Pauses (`enabled` false) or resumes the job `name`, keeping the rest of its definition: reads
/// and replaces what it read, retrying while other writers change the job
/// ([`JobError::ChangingTooFast`] after 16 attempts). A job already in that state is returned
/// as stored, without a write.
pub async fn set_job_enabled(
    store: &dyn KvStore,
    keys: &Keys,
    name: &str,
    enabled: bool,
    trace_parent: &str,
) -> Result<EnabledChange, JobError> {
    let key = keys.job(name);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let StoredJob { mut job, revision } = load_job(store, keys, name).await?;
        if job.enabled == enabled {
            return Ok(EnabledChange {
                stored: StoredJob { job, revision },
                written: false,
            });
        }
        job.enabled = enabled;
        job.updated_at = now_ms();
        trace_parent.clone_into(&mut job.trace_parent);
        let txn = Txn {
            when: vec![Condition::unchanged(&key, revision)],
            then: vec![Op::put(&key, job.to_json())],
            otherwise: vec![],
        };
        let resp = store.txn(txn).await?;
        if resp.succeeded {
            return Ok(EnabledChange {
                stored: StoredJob {
                    job,
                    revision: resp.revision,
                },
                written: true,
            });
        }
    }
    Err(JobError::ChangingTooFast {
        name: name.to_owned(),
    })
}
