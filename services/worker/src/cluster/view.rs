//! What this worker knows of the cluster, from its watch of the whole key prefix: a [`View`]
//! that takes a snapshot or a batch of changes and answers what they mean for this worker
//! ([`Effects`]). Pure: the follower ([`crate::follow`]) acts on the effects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use distcron_core::records::{RunningRecord, TriggerRequest, WorkerRegistration};
use distcron_core::{JobDefinition, Key, Keys};
use distcron_kv::{KeyValue, WatchEvent, WatchEventKind};

use crate::plan::JobEvent;

/// The cluster as watched.
#[derive(Debug, Default)]
pub struct View {
    /// Job definitions and their revisions (undecodable ones left out).
    pub jobs: HashMap<String, (Arc<JobDefinition>, i64)>,
    /// Live workers.
    pub workers: BTreeMap<String, WorkerRegistration>,
    /// Last claimed slot per job.
    pub ledger: HashMap<String, i64>,
    /// Runs in progress cluster-wide, by run id.
    pub running: HashMap<String, RunningRecord>,
    /// Manual triggers not yet claimed, by run id: (job, request).
    pub triggers: HashMap<String, (String, TriggerRequest)>,
}

/// What a snapshot or a batch of changes asks of this worker.
#[derive(Debug, Default)]
pub struct Effects {
    /// Changes for the scheduler.
    pub jobs: Vec<JobEvent>,
    /// Kill requests: (job, request value).
    pub kills: Vec<(String, Vec<u8>)>,
    /// New manual triggers: (job, run id, request).
    pub triggers: Vec<(String, String, TriggerRequest)>,
    /// Runs whose worker died during them.
    pub lost: Vec<RunningRecord>,
    /// Workers gone (their registration deleted, no later incarnation registered).
    pub gone: Vec<String>,
    /// Registrations, in order, for the clock offset estimate: (worker, its heartbeat ms when
    /// written, `None` when deleted).
    pub registrations: Vec<(String, Option<i64>)>,
    /// Whether a job was deleted (a tombstone written).
    pub deleted: bool,
}

fn decode_job(kv: &KeyValue, name: &str) -> Option<Arc<JobDefinition>> {
    match JobDefinition::from_json(&kv.value) {
        Ok(def) if def.name == name => Some(Arc::new(def)),
        Ok(def) => {
            tracing::error!(key = %kv.key, stored_name = %def.name, "job name does not match its key; ignored");
            None
        }
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "stored job is not valid JSON; ignored");
            None
        }
    }
}

impl View {
    /// Replaces the view with a full listing of the prefix. The effects: the scheduler's new
    /// set of jobs, every pending trigger and every kill request still stored.
    pub fn replace(&mut self, keys: &Keys, kvs: &[KeyValue]) -> Effects {
        *self = View::default();
        let mut effects = Effects::default();
        for kv in kvs {
            self.put(keys, kv, &mut effects);
        }
        let jobs = self.jobs.values().cloned().collect();
        effects.jobs = vec![JobEvent::Reset(jobs)];
        effects.registrations.clear();
        effects.deleted = false;
        effects
    }

    /// Applies a batch of changes, in order.
    pub fn apply(&mut self, keys: &Keys, events: &[WatchEvent]) -> Effects {
        let mut effects = Effects::default();
        let mut deleted_runs = Vec::new();
        for e in events {
            if e.kind == WatchEventKind::Put {
                self.put(keys, &e.kv, &mut effects);
            } else {
                self.delete(keys, &e.kv.key, &mut effects, &mut deleted_runs);
            }
        }
        // A running record deleted while its worker is gone (the session lease expired and took
        // both keys in one revision), or while a later incarnation of that worker is registered
        // (it restarted within the lease), is a lost run. Other deletions are releases of
        // finished runs.
        effects.lost = deleted_runs
            .into_iter()
            .filter(|r: &RunningRecord| {
                self.workers
                    .get(&r.worker_id)
                    .is_none_or(|w| w.started_at_ms > r.claimed_at_ms)
            })
            .collect();
        effects.gone.retain(|id| !self.workers.contains_key(id));
        effects
    }

    /// Takes a key written.
    fn put(&mut self, keys: &Keys, kv: &KeyValue, effects: &mut Effects) {
        match keys.parse(&kv.key) {
            Key::Job(name) => match decode_job(kv, name) {
                Some(def) => {
                    self.jobs
                        .insert(name.to_owned(), (def.clone(), kv.mod_revision));
                    effects.jobs.push(JobEvent::Upsert(def, kv.mod_revision));
                }
                None => {
                    self.jobs.remove(name);
                    effects.jobs.push(JobEvent::Remove(name.to_owned()));
                }
            },
            Key::Ledger(job) => match distcron_core::records::ledger::decode(&kv.value) {
                Some(slot) => {
                    self.ledger.insert(job.to_owned(), slot);
                }
                None => {
                    self.ledger.remove(job);
                }
            },
            Key::Running { run_id, .. } => {
                if let Ok(r) = serde_json::from_slice::<RunningRecord>(&kv.value) {
                    self.running.insert(run_id.to_owned(), r);
                }
            }
            Key::Trigger { job, run_id } => {
                if let Ok(t) = serde_json::from_slice::<TriggerRequest>(&kv.value) {
                    self.triggers
                        .insert(run_id.to_owned(), (job.to_owned(), t.clone()));
                    effects
                        .triggers
                        .push((job.to_owned(), run_id.to_owned(), t));
                }
            }
            Key::Worker(id) => {
                if let Ok(w) = serde_json::from_slice::<WorkerRegistration>(&kv.value) {
                    effects
                        .registrations
                        .push((id.to_owned(), Some(w.heartbeat_at_ms)));
                    self.workers.insert(id.to_owned(), w);
                }
            }
            Key::Killer(job) => effects.kills.push((job.to_owned(), kv.value.clone())),
            Key::Deleted(_) => effects.deleted = true,
            Key::Undelivered { .. } | Key::Service { .. } | Key::Compaction | Key::Other => {}
        }
    }

    /// Takes a key deleted; a deleted running record goes to `deleted_runs`.
    fn delete(
        &mut self,
        keys: &Keys,
        key: &str,
        effects: &mut Effects,
        deleted_runs: &mut Vec<RunningRecord>,
    ) {
        match keys.parse(key) {
            Key::Job(name) => {
                self.jobs.remove(name);
                effects.jobs.push(JobEvent::Remove(name.to_owned()));
            }
            Key::Ledger(job) => {
                self.ledger.remove(job);
            }
            Key::Running { run_id, .. } => deleted_runs.extend(self.running.remove(run_id)),
            Key::Trigger { run_id, .. } => {
                self.triggers.remove(run_id);
            }
            Key::Worker(id) => {
                self.workers.remove(id);
                effects.gone.push(id.to_owned());
                effects.registrations.push((id.to_owned(), None));
            }
            Key::Killer(_)
            | Key::Deleted(_)
            | Key::Undelivered { .. }
            | Key::Service { .. }
            | Key::Compaction
            | Key::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distcron_core::records::RunTrigger;
    use distcron_kv::KeyValue;

    fn kv(key: String, value: Vec<u8>, revision: i64) -> KeyValue {
        KeyValue {
            key,
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: String, value: Vec<u8>, revision: i64) -> WatchEvent {
        WatchEvent {
            kind: WatchEventKind::Put,
            kv: kv(key, value, revision),
        }
    }

    fn delete(key: String, revision: i64) -> WatchEvent {
        WatchEvent {
            kind: WatchEventKind::Delete,
            kv: kv(key, Vec::new(), revision),
        }
    }

    fn worker(id: &str, started_at_ms: i64) -> Vec<u8> {
        let w = WorkerRegistration {
            worker_id: id.into(),
            started_at_ms,
            heartbeat_at_ms: started_at_ms + 5,
            claiming: true,
            ..Default::default()
        };
        serde_json::to_vec(&w).unwrap_or_default()
    }

    fn running(run: &str, worker: &str, claimed_at_ms: i64) -> Vec<u8> {
        let r = RunningRecord {
            run_id: run.into(),
            job_name: "j".into(),
            worker_id: worker.into(),
            slot_ms: claimed_at_ms,
            claimed_at_ms,
            trigger: RunTrigger::Schedule,
            passed_over: None,
        };
        serde_json::to_vec(&r).unwrap_or_default()
    }

    #[test]
    fn a_listing_replaces_the_view_and_resets_the_scheduler() {
        let keys = Keys::new("/t/");
        let mut view = View::default();
        view.ledger.insert("stale".into(), 1);
        let job = JobDefinition::new("j", "true", "* * * * * *");
        let listing = [
            kv(keys.job("j"), job.to_json(), 7),
            kv(keys.worker("w1"), worker("w1", 100), 3),
            kv(keys.killer("j"), Vec::new(), 4),
        ];
        let effects = view.replace(&keys, &listing);
        assert!(view.ledger.is_empty(), "the old view is gone");
        assert_eq!(view.workers.len(), 1);
        let [JobEvent::Reset(jobs)] = effects.jobs.as_slice() else {
            panic!("expected one reset: {:?}", effects.jobs);
        };
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].1, 7);
        assert_eq!(effects.kills.len(), 1);
        assert!(
            effects.registrations.is_empty(),
            "a listing is no heartbeat"
        );
    }

    #[test]
    fn a_running_record_deleted_with_its_worker_is_lost_and_a_release_is_not() {
        let keys = Keys::new("/t/");
        let mut view = View::default();
        view.apply(
            &keys,
            &[
                put(keys.worker("w1"), worker("w1", 100), 1),
                put(keys.worker("w2"), worker("w2", 100), 2),
                put(keys.running("j", "r1"), running("r1", "w1", 200), 3),
                put(keys.running("j", "r2"), running("r2", "w2", 200), 4),
            ],
        );
        // w1's lease expires (its registration and record go in one revision); w2 releases.
        let effects = view.apply(
            &keys,
            &[
                delete(keys.worker("w1"), 5),
                delete(keys.running("j", "r1"), 5),
                delete(keys.running("j", "r2"), 6),
            ],
        );
        let lost: Vec<&str> = effects.lost.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(lost, ["r1"]);
        assert_eq!(effects.gone, ["w1"]);
        assert!(view.running.is_empty());
    }

    #[test]
    fn a_run_of_an_earlier_incarnation_is_lost_and_a_worker_back_at_once_is_not_gone() {
        let keys = Keys::new("/t/");
        let mut view = View::default();
        view.apply(
            &keys,
            &[
                put(keys.worker("w1"), worker("w1", 100), 1),
                put(keys.running("j", "r1"), running("r1", "w1", 200), 2),
            ],
        );
        let effects = view.apply(
            &keys,
            &[
                delete(keys.worker("w1"), 3),
                put(keys.worker("w1"), worker("w1", 300), 4),
                delete(keys.running("j", "r1"), 5),
            ],
        );
        assert_eq!(effects.lost.len(), 1, "claimed before the new incarnation");
        assert!(effects.gone.is_empty(), "registered again");
        assert_eq!(
            effects.registrations,
            [("w1".to_owned(), None), ("w1".to_owned(), Some(305))]
        );
    }
}
