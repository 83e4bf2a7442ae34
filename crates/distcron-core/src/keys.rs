//! The key layout in the store, under a configurable prefix (default `/cron/`, so the seed's keys
//! keep their meaning).
//!
//! | key | value | lease |
//! |---|---|---|
//! | `jobs/<name>` | [`JobDefinition`](crate::JobDefinition) JSON | none |
//! | `killer/<name>` | [`KillRequest`](crate::records::KillRequest) JSON, or empty (seed: kill all) | short |
//! | `ledger/<name>` | last claimed slot, [`ledger`](crate::records::ledger)-encoded | none |
//! | `deleted/<name>` | [`DeletedJob`](crate::records::DeletedJob) JSON: a job deleted with slots maybe unclaimed | none |
//! | `running/<name>/<run-id>` | [`RunningRecord`](crate::records::RunningRecord) JSON | the worker's session |
//! | `triggers/<name>/<run-id>` | [`TriggerRequest`](crate::records::TriggerRequest) JSON | none |
//! | `workers/<worker-id>` | [`WorkerRegistration`](crate::records::WorkerRegistration) JSON | the worker's session |
//! | `services/<service>/<instance-id>` | [`ServiceRegistration`](crate::records::ServiceRegistration) JSON | the instance's |

/// Builds keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("/cron/")
    }
}

impl Keys {
    /// Keys under `prefix`; a missing trailing `/` is added.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `jobs/`
    pub fn jobs(&self) -> String {
        format!("{}jobs/", self.prefix)
    }

    /// `jobs/<name>`
    pub fn job(&self, name: &str) -> String {
        format!("{}jobs/{name}", self.prefix)
    }

    /// `jobs/<name-prefix>`: the keys of the jobs whose names start with `name_prefix`.
    pub fn jobs_named(&self, name_prefix: &str) -> String {
        format!("{}jobs/{name_prefix}", self.prefix)
    }

    /// The job name of a `jobs/<name>` key.
    pub fn job_name<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("jobs/")
    }

    /// `killer/`
    pub fn killers(&self) -> String {
        format!("{}killer/", self.prefix)
    }

    /// `killer/<name>`
    pub fn killer(&self, name: &str) -> String {
        format!("{}killer/{name}", self.prefix)
    }

    /// `ledger/<name>`
    pub fn ledger(&self, name: &str) -> String {
        format!("{}ledger/{name}", self.prefix)
    }

    /// `deleted/`
    pub fn deleted_all(&self) -> String {
        format!("{}deleted/", self.prefix)
    }

    /// `deleted/<name>`
    pub fn deleted(&self, name: &str) -> String {
        format!("{}deleted/{name}", self.prefix)
    }

    /// `running/`: every running run of every job.
    pub fn running_all(&self) -> String {
        format!("{}running/", self.prefix)
    }

    /// `running/<name>/`: the running runs of one job.
    pub fn running_of(&self, name: &str) -> String {
        format!("{}running/{name}/", self.prefix)
    }

    /// `running/<name>/<run-id>`
    pub fn running(&self, name: &str, run_id: &str) -> String {
        format!("{}running/{name}/{run_id}", self.prefix)
    }

    /// `triggers/`
    pub fn triggers(&self) -> String {
        format!("{}triggers/", self.prefix)
    }

    /// `triggers/<name>/`: the pending manual triggers of one job.
    pub fn triggers_of(&self, name: &str) -> String {
        format!("{}triggers/{name}/", self.prefix)
    }

    /// `triggers/<name>/<run-id>`
    pub fn trigger(&self, name: &str, run_id: &str) -> String {
        format!("{}triggers/{name}/{run_id}", self.prefix)
    }

    /// `compaction`: the counter through which jobsvc instances take turns compacting the store's
    /// history.
    pub fn compaction(&self) -> String {
        format!("{}compaction", self.prefix)
    }

    /// `undelivered/`
    pub fn undelivered_all(&self) -> String {
        format!("{}undelivered/", self.prefix)
    }

    /// `undelivered/<worker-id>/`
    pub fn undelivered_of(&self, worker_id: &str) -> String {
        format!("{}undelivered/{worker_id}/", self.prefix)
    }

    /// `undelivered/<worker-id>/<marker>`: runs that ended on the worker and whose records logsvc
    /// has not acknowledged yet.
    pub fn undelivered(&self, worker_id: &str, marker: &str) -> String {
        format!("{}undelivered/{worker_id}/{marker}", self.prefix)
    }

    /// The worker id of an `undelivered/<worker-id>/<marker>` key.
    pub fn undelivered_worker<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key
            .strip_prefix(&self.prefix)?
            .strip_prefix("undelivered/")?;
        rest.split_once('/').map(|(worker, _)| worker)
    }

    /// `workers/`
    pub fn workers(&self) -> String {
        format!("{}workers/", self.prefix)
    }

    /// `workers/<worker-id>`
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{worker_id}", self.prefix)
    }

    /// `services/<service>/`
    pub fn services(&self, service: &str) -> String {
        format!("{}services/{service}/", self.prefix)
    }

    /// `services/<service>/<instance-id>`
    pub fn service(&self, service: &str, instance_id: &str) -> String {
        format!("{}services/{service}/{instance_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn seed_keys_keep_their_meaning() {
        let k = Keys::default();
        assert_eq!(k.job("backup"), "/cron/jobs/backup");
        assert_eq!(k.killer("backup"), "/cron/killer/backup");
        assert_eq!(k.workers(), "/cron/workers/");
        assert_eq!(k.job_name("/cron/jobs/backup"), Some("backup"));
        assert_eq!(k.job_name("/cron/killer/backup"), None);
        assert_eq!(Keys::new("/t1").running("j", "r"), "/t1/running/j/r");
        assert_eq!(k.jobs_named("back"), "/cron/jobs/back");
        assert_eq!(k.triggers_of("backup"), "/cron/triggers/backup/");
        assert!(k
            .trigger("backup", "r1")
            .starts_with(&k.triggers_of("backup")));
        let marker = k.undelivered("w1", "17-3");
        assert_eq!(marker, "/cron/undelivered/w1/17-3");
        assert_eq!(k.undelivered_worker(&marker), Some("w1"));
        assert_eq!(k.undelivered_worker("/cron/workers/w1"), None);
    }
}
