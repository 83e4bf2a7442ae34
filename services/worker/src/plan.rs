//! The plan of fire times: a min-heap of next slots, O(log n) per fire, never a scan of all jobs.
//! Heap entries carry the job's generation; entries of an older generation (the job changed,
//! was paused or deleted) are dropped when they surface. Pure: the scheduler task
//! ([`crate::scheduler`]) owns one and fires what it says is due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use distcron_core::JobDefinition;
use distcron_schedule::Schedule;

/// A change to the set of jobs.
#[derive(Debug)]
pub enum JobEvent {
    /// A job was created or changed, with its store revision.
    Upsert(Arc<JobDefinition>, i64),
    /// A job was deleted (or became unreadable).
    Remove(String),
    /// The full set (at start and after a resync); missed slots are evaluated for each.
    Reset(Vec<(Arc<JobDefinition>, i64)>),
}

/// A job the scheduler fires.
#[derive(Debug)]
struct Entry {
    def: Arc<JobDefinition>,
    revision: i64,
    schedule: Arc<Schedule>,
    generation: u64,
    /// When this revision began to be planned here, ms: its first slot is the first after it.
    planned_from_ms: i64,
}

/// A slot that is due.
#[derive(Debug)]
pub struct Due {
    /// The job.
    pub def: Arc<JobDefinition>,
    /// Its store revision.
    pub revision: i64,
    /// Its parsed schedule (parsed once per revision, not per fire).
    pub schedule: Arc<Schedule>,
    /// The slot, ms.
    pub slot_ms: i64,
    /// When this revision began to be planned here, ms.
    pub planned_from_ms: i64,
}

/// The scheduler's state.
#[derive(Debug, Default)]
pub struct Plan {
    entries: HashMap<String, Entry>,
    heap: BinaryHeap<Reverse<(i64, u64, String)>>,
    next_generation: u64,
}

fn utc(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

/// What became of an upsert.
#[derive(Debug, PartialEq, Eq)]
pub enum Upserted {
    /// Scheduled; first fire at this time.
    Scheduled(i64),
    /// Paused: not scheduled.
    Disabled,
    /// Valid, with no slot to come (an `@at` whose instant has passed, a job past its `endAt`):
    /// nothing to schedule, though slots missed before now may still be caught up.
    Finished,
    /// The stored definition is invalid (e.g. its schedule no longer parses).
    Invalid(String),
}

impl Plan {
    /// Adds or replaces a job; `now_ms` is when its first slot is searched from.
    pub fn upsert(&mut self, def: Arc<JobDefinition>, revision: i64, now_ms: i64) -> Upserted {
        self.entries.remove(&def.name);
        if !def.enabled {
            return Upserted::Disabled;
        }
        let schedule = match def.validate() {
            Ok(s) => s,
            Err(e) => return Upserted::Invalid(e.to_string()),
        };
        let Some(first) = schedule.next_after(utc(now_ms)) else {
            return Upserted::Finished;
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let first = first.timestamp_millis();
        self.heap
            .push(Reverse((first, generation, def.name.clone())));
        self.entries.insert(
            def.name.clone(),
            Entry {
                def,
                revision,
                schedule: Arc::new(schedule),
                generation,
                planned_from_ms: now_ms,
            },
        );
        Upserted::Scheduled(first)
    }

    /// Drops a job.
    pub fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// How many jobs are scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Names of the scheduled jobs.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The next fire time, if any (may belong to a stale entry).
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pops every slot due at `now_ms`, re-arming each job for its following slot.
    pub fn pop_due(&mut self, now_ms: i64) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(Reverse((t, generation, name))) = self.heap.peek().cloned() {
            if t > now_ms {
                break;
            }
            self.heap.pop();
            let Some(entry) = self
                .entries
                .get(&name)
                .filter(|e| e.generation == generation)
            else {
                continue;
            };
            due.push(Due {
                def: entry.def.clone(),
                revision: entry.revision,
                schedule: entry.schedule.clone(),
                slot_ms: t,
                planned_from_ms: entry.planned_from_ms,
            });
            if let Some(next) = entry.schedule.next_after(utc(t)) {
                self.heap
                    .push(Reverse((next.timestamp_millis(), generation, name)));
            }
        }
        // Stale entries of long-gone generations would otherwise sit in the heap until their
        // time; rebuild when they dominate.
        if self.heap.len() > 2 * self.entries.len() + 1024 {
            let live = &self.entries;
            let kept: Vec<_> = self
                .heap
                .drain()
                .filter(|Reverse((_, g, n))| live.get(n).is_some_and(|e| e.generation == *g))
                .collect();
            self.heap = kept.into();
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, expr: &str) -> Arc<JobDefinition> {
        Arc::new(JobDefinition::new(name, "true", expr))
    }

    #[test]
    fn fires_in_time_order_and_rearms() {
        let mut plan = Plan::default();
        let t0 = 1_800_000_000_000; // a whole second
        assert_eq!(
            plan.upsert(job("a", "* * * * * *"), 1, t0),
            Upserted::Scheduled(t0 + 1000)
        );
        assert_eq!(
            plan.upsert(job("b", "*/2 * * * * *"), 1, t0),
            Upserted::Scheduled(t0 + 2000)
        );
        let due: Vec<(String, i64)> = plan
            .pop_due(t0 + 2000)
            .into_iter()
            .map(|d| (d.def.name.clone(), d.slot_ms))
            .collect();
        assert_eq!(
            due,
            [
                ("a".into(), t0 + 1000),
                ("a".into(), t0 + 2000),
                ("b".into(), t0 + 2000)
            ]
        );
        assert_eq!(plan.next_due(), Some(t0 + 3000));
    }

    #[test]
    fn changed_paused_and_deleted_jobs_stop_firing_at_once() {
        let mut plan = Plan::default();
        let t0 = 1_800_000_000_000;
        plan.upsert(job("a", "* * * * * *"), 1, t0);
        plan.upsert(job("b", "* * * * * *"), 1, t0);
        plan.upsert(job("c", "* * * * * *"), 1, t0);
        let mut paused = JobDefinition::new("a", "true", "* * * * * *");
        paused.enabled = false;
        assert_eq!(plan.upsert(Arc::new(paused), 2, t0), Upserted::Disabled);
        plan.remove("b");
        // "c" changes to every 5 s: the old every-second entry must not fire.
        plan.upsert(job("c", "*/5 * * * * *"), 2, t0);
        let due: Vec<(String, i64)> = plan
            .pop_due(t0 + 5000)
            .into_iter()
            .map(|d| (format!("{}@{}", d.def.name, d.revision), d.slot_ms))
            .collect();
        assert_eq!(due, [("c@2".into(), t0 + 5000)]);
    }

    #[test]
    fn invalid_definitions_are_reported_not_scheduled() {
        let mut plan = Plan::default();
        match plan.upsert(job("x", "61 * * * *"), 1, 0) {
            Upserted::Invalid(reason) => assert!(reason.starts_with("cronExpr.minute"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(plan.next_due(), None);
        assert!(plan.pop_due(i64::MAX / 2).is_empty());
    }

    #[test]
    fn jobs_past_their_last_slot_are_finished_not_invalid() {
        let mut plan = Plan::default();
        let t0 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
        let once = job("once", "@at 2027-01-15T08:00:05Z");
        assert_eq!(
            plan.upsert(once.clone(), 1, t0),
            Upserted::Scheduled(t0 + 5000)
        );
        let due: Vec<i64> = plan
            .pop_due(t0 + 60_000)
            .iter()
            .map(|d| d.slot_ms)
            .collect();
        assert_eq!(due, [t0 + 5000]);
        assert_eq!(plan.next_due(), None);
        // Read again after its instant (a restart, a resync): finished, and no hot loop.
        assert_eq!(plan.upsert(once, 1, t0 + 60_000), Upserted::Finished);
        let mut ended = JobDefinition::new("ended", "true", "* * * * * *");
        ended.end_at = Some(t0 + 2000);
        let ended = Arc::new(ended);
        assert_eq!(
            plan.upsert(ended.clone(), 1, t0),
            Upserted::Scheduled(t0 + 1000)
        );
        let due: Vec<i64> = plan
            .pop_due(t0 + 60_000)
            .iter()
            .map(|d| d.slot_ms)
            .collect();
        assert_eq!(due, [t0 + 1000, t0 + 2000]);
        assert_eq!(plan.upsert(ended, 1, t0 + 2000), Upserted::Finished);
        assert!(matches!(
            plan.upsert(job("y", "0 0 0 1 1 * 2020"), 1, t0),
            Upserted::Finished
        ));
        assert!(plan.pop_due(i64::MAX / 2).is_empty());
    }
}
