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

/// What a key under the prefix names, as [`Keys::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `jobs/<name>`: a job definition.
    Job(&'a str),
    /// `killer/<name>`: a kill request of a job.
    Killer(&'a str),
    /// `ledger/<name>`: the last claimed slot of a job.
    Ledger(&'a str),
    /// `deleted/<name>`: the tombstone of a deleted job.
    Deleted(&'a str),
    /// `running/<name>/<run-id>`: a run in progress.
    Running {
        /// The job.
        job: &'a str,
        /// The run.
        run_id: &'a str,
    },
    /// `triggers/<name>/<run-id>`: a manual trigger not yet claimed.
    Trigger {
        /// The job.
        job: &'a str,
        /// The run it asks for.
        run_id: &'a str,
    },
    /// `workers/<worker-id>`: a worker's registration.
    Worker(&'a str),
    /// `undelivered/<worker-id>/<marker>`: runs of a worker not yet acknowledged by logsvc.
    Undelivered {
        /// The worker.
        worker_id: &'a str,
        /// The marker's name.
        marker: &'a str,
    },
    /// `services/<service>/<instance-id>`: a service instance's registration.
    Service {
        /// The service.
        service: &'a str,
        /// The instance.
        instance_id: &'a str,
    },
    /// `compaction`: the compaction turn counter.
    Compaction,
    /// Anything else: outside the prefix, or not of the layout.
    Other,
}

/// Builds keys under one prefix, and reads them back ([`Keys::parse`]).
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

    /// Reads what `key` names: the inverse of the key builders below.
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return Key::Other;
        };
        if rest == "compaction" {
            return Key::Compaction;
        }
        let Some((kind, name)) = rest.split_once('/') else {
            return Key::Other;
        };
        let pair = || name.split_once('/');
        match kind {
            "jobs" => Key::Job(name),
            "killer" => Key::Killer(name),
            "ledger" => Key::Ledger(name),
            "deleted" => Key::Deleted(name),
            "workers" => Key::Worker(name),
            "running" => pair().map_or(Key::Other, |(job, run_id)| Key::Running { job, run_id }),
            "triggers" => pair().map_or(Key::Other, |(job, run_id)| Key::Trigger { job, run_id }),
            "undelivered" => pair().map_or(Key::Other, |(worker_id, marker)| Key::Undelivered {
                worker_id,
                marker,
            }),
            "services" => pair().map_or(Key::Other, |(service, instance_id)| Key::Service {
                service,
                instance_id,
            }),
            _ => Key::Other,
        }
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
        match self.parse(key) {
            Key::Job(name) => Some(name),
            _ => None,
        }
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
        match self.parse(key) {
            Key::Undelivered { worker_id, .. } => Some(worker_id),
            _ => None,
        }
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
    use super::{Key, Keys};

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

    #[test]
    fn every_built_key_parses_back_to_what_it_names() {
        let k = Keys::new("/t/");
        let cases = [
            (k.job("a"), Key::Job("a")),
            (k.killer("a"), Key::Killer("a")),
            (k.ledger("a"), Key::Ledger("a")),
            (k.deleted("a"), Key::Deleted("a")),
            (k.worker("w"), Key::Worker("w")),
            (
                k.running("a", "r"),
                Key::Running {
                    job: "a",
                    run_id: "r",
                },
            ),
            (
                k.trigger("a", "r"),
                Key::Trigger {
                    job: "a",
                    run_id: "r",
                },
            ),
            (
                k.undelivered("w", "m"),
                Key::Undelivered {
                    worker_id: "w",
                    marker: "m",
                },
            ),
            (
                k.service("jobsvc", "i"),
                Key::Service {
                    service: "jobsvc",
                    instance_id: "i",
                },
            ),
            (k.compaction(), Key::Compaction),
        ];
        for (key, kind) in cases {
            assert_eq!(k.parse(&key), kind, "{key}");
        }
        for other in [
            "/u/jobs/a",
            "/t/running/a",
            "/t/unknown/x",
            "/t/jobs",
            "/t/",
        ] {
            assert_eq!(k.parse(other), Key::Other, "{other}");
        }
    }
}
