//! The truth about what ran, read straight from the run store: runs per (job, slot).

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde::Serialize;

use crate::measure::Summary;
use crate::stack::{RUN_COLLECTION, RUN_DATABASE};

/// One stored run, as much of it as the benchmark reads.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// The run id.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// The slot, ms.
    pub slot_ms: i64,
    /// When the command started, ms.
    pub start_ms: i64,
    /// When it ended, ms (0 while running).
    pub end_ms: i64,
    /// Status name.
    pub status: String,
}

/// Reads the runs of jobs whose name starts with `job_prefix` for slots in `[from_ms, to_ms)`.
pub async fn runs_in_window(
    mongo_uri: &str,
    job_prefix: &str,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<StoredRun>> {
    let client = mongodb::Client::with_uri_str(mongo_uri).await?;
    let coll = client
        .database(RUN_DATABASE)
        .collection::<Document>(RUN_COLLECTION);
    let filter = doc! {
        "jobName": { "$gte": job_prefix, "$lt": format!("{job_prefix}\u{10FFFF}") },
        "planTime": { "$gte": from_ms, "$lt": to_ms },
    };
    let projection =
        doc! { "runId": 1, "jobName": 1, "planTime": 1, "startTime": 1, "endTime": 1, "status": 1 };
    let docs: Vec<Document> = coll
        .find(filter)
        .projection(projection)
        .await?
        .try_collect()
        .await?;
    let int = |d: &Document, k: &str| {
        d.get_i64(k)
            .or_else(|_| d.get_i32(k).map(i64::from))
            .unwrap_or(0)
    };
    Ok(docs
        .iter()
        .map(|d| StoredRun {
            run_id: d.get_str("runId").unwrap_or_default().to_owned(),
            job: d.get_str("jobName").unwrap_or_default().to_owned(),
            slot_ms: int(d, "planTime"),
            start_ms: int(d, "startTime"),
            end_ms: int(d, "endTime"),
            status: d.get_str("status").unwrap_or_default().to_owned(),
        })
        .collect())
}

/// How the runs of a window compare with the slots that were due.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotAccount {
    /// Slots due in the window (jobs × slots).
    pub expected_slots: usize,
    /// Slots with exactly one run.
    pub exactly_once: usize,
    /// Runs beyond the first of a slot.
    pub duplicates: usize,
    /// Slots with no run record at all.
    pub missing: usize,
    /// The slots with no record, counted per second of the window (0 = its first slot): where in
    /// the window (before or after a fault) they fell.
    pub missing_by_second: BTreeMap<i64, usize>,
    /// Slots whose only record is `lost` (the worker died during the run).
    pub lost: usize,
    /// Slots recorded as `skipped`.
    pub skipped: usize,
    /// Runs per status.
    pub statuses: BTreeMap<String, usize>,
    /// Trigger lag (start − slot) of the runs that started.
    pub lag: Summary,
}

/// Accounts `runs` against the `expected` (job, slot) pairs.
pub fn account(expected: &[(String, i64)], runs: &[StoredRun]) -> SlotAccount {
    let mut per_slot: HashMap<(&str, i64), Vec<&StoredRun>> = HashMap::new();
    for r in runs {
        per_slot.entry((&r.job, r.slot_ms)).or_default().push(r);
    }
    let mut a = SlotAccount {
        expected_slots: expected.len(),
        ..SlotAccount::default()
    };
    for r in runs {
        *a.statuses.entry(r.status.clone()).or_default() += 1;
    }
    let window_start = expected.iter().map(|(_, s)| *s).min().unwrap_or(0);
    for (job, slot) in expected {
        match per_slot.get(&(job.as_str(), *slot)).map(Vec::as_slice) {
            None | Some([]) => {
                a.missing += 1;
                *a.missing_by_second
                    .entry((slot - window_start) / 1000)
                    .or_default() += 1;
            }
            Some([only]) => {
                a.exactly_once += 1;
                match only.status.as_str() {
                    "lost" => a.lost += 1,
                    "skipped" => a.skipped += 1,
                    _ => {}
                }
            }
            Some(more) => a.duplicates += more.len() - 1,
        }
    }
    // Runs for slots nobody expected (e.g. a job's slot outside the schedule) are duplicates too.
    let expected_set: std::collections::HashSet<(&str, i64)> =
        expected.iter().map(|(j, s)| (j.as_str(), *s)).collect();
    a.duplicates += runs
        .iter()
        .filter(|r| !expected_set.contains(&(r.job.as_str(), r.slot_ms)))
        .count();
    a.lag = Summary::of_ms(
        runs.iter()
            .filter(|r| r.start_ms > 0 && r.status != "skipped")
            .map(|r| (r.start_ms - r.slot_ms) as f64)
            .collect(),
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, slot: i64, status: &str) -> StoredRun {
        StoredRun {
            run_id: format!("{job}-{slot}"),
            job: job.into(),
            slot_ms: slot,
            start_ms: slot + 3,
            end_ms: slot + 5,
            status: status.into(),
        }
    }

    #[test]
    fn duplicates_missing_and_lost_are_counted_per_slot() {
        let expected: Vec<(String, i64)> = ["a", "b"]
            .iter()
            .flat_map(|j| [1000, 2000, 3000].map(|s| (j.to_string(), s)))
            .collect();
        let runs = vec![
            run("a", 1000, "succeeded"),
            run("a", 2000, "succeeded"),
            run("a", 2000, "succeeded"),
            run("a", 3000, "lost"),
            run("b", 1000, "skipped"),
            run("b", 3000, "succeeded"),
            run("b", 4000, "succeeded"),
        ];
        let a = account(&expected, &runs);
        assert_eq!(a.expected_slots, 6);
        assert_eq!(a.exactly_once, 4);
        assert_eq!(
            a.duplicates, 2,
            "one extra run of a@2000, one unexpected b@4000"
        );
        assert_eq!(a.missing, 1, "b@2000");
        assert_eq!(
            a.missing_by_second,
            BTreeMap::from([(1, 1)]),
            "b@2000 is second 1"
        );
        assert_eq!((a.lost, a.skipped), (1, 1));
        assert_eq!(a.lag.count, 6);
        assert_eq!(a.lag.max_ms, 3.0);
    }
}
