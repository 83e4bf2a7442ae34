//! [`RunStore`] over an embedded SQLite file, for the single-machine mode.
//!
//! One table: the run as JSON (the same camelCase document MongoDB holds) plus the columns queries
//! filter and sort on. Calls run on the blocking pool (SQLite is synchronous), one connection
//! behind a mutex. Retention: runs stored longer ago than the configured days are deleted at
//! start-up and then at most once an hour, on insert.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::{
    JobStatsRaw, RunPage, RunQuery, RunStatus, RunStore, RunStoreError, StatusTotals, StoredRun,
};

const HOUR_MS: i64 = 3_600_000;

#[derive(Debug)]
struct Inner {
    conn: Connection,
    retention_ms: i64,
    pruned_at_ms: i64,
}

/// Run history in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteRunStore {
    inner: Arc<Mutex<Inner>>,
}

fn other(e: impl std::fmt::Display) -> RunStoreError {
    RunStoreError::Other(e.to_string())
}

fn decode(run_id: &str, json: &str) -> Result<StoredRun, RunStoreError> {
    serde_json::from_str(json).map_err(|e| RunStoreError::BadData {
        run_id: run_id.to_owned(),
        reason: e.to_string(),
    })
}

fn encode(run: &StoredRun) -> Result<String, RunStoreError> {
    serde_json::to_string(run).map_err(other)
}

/// A run as the `runs` table holds it: the indexed columns and the whole run as JSON.
struct Row {
    run_id: String,
    job_name: String,
    status: &'static str,
    start_time: i64,
    duration_ms: i64,
    version: i64,
    doc: String,
}

impl Row {
    /// The values every statement binds first, in order, with `stored_at` as the run's
    /// storage time.
    fn columns<'a>(&'a self, stored_at: &'a i64) -> [&'a dyn rusqlite::ToSql; 8] {
        [
            &self.run_id,
            &self.job_name,
            &self.status,
            &self.start_time,
            &self.duration_ms,
            &self.version,
            stored_at,
            &self.doc,
        ]
    }
}

fn rows_of(runs: &[StoredRun]) -> Result<Vec<Row>, RunStoreError> {
    runs.iter()
        .map(|run| {
            Ok(Row {
                run_id: run.run_id.clone(),
                job_name: run.job_name.clone(),
                status: run.status.as_str(),
                start_time: run.start_time,
                duration_ms: run.duration_ms,
                version: run.version,
                doc: encode(run)?,
            })
        })
        .collect()
}

/// Runs `sql` once per row, all in one transaction, binding run id, job name, status, start time,
/// duration, version, `now` and the document (then `version - 1` when `expects_version`).
/// Returns the ids of the runs for which it changed no row.
fn write_each(
    inner: &mut Inner,
    sql: &str,
    rows: Vec<Row>,
    now: i64,
    expects_version: bool,
) -> Result<Vec<String>, RunStoreError> {
    let tx = inner.conn.transaction().map_err(other)?;
    let mut unchanged = Vec::new();
    {
        let mut statement = tx.prepare_cached(sql).map_err(other)?;
        for row in rows {
            let columns = row.columns(&now);
            let n = if expects_version {
                let mut with_expected = columns.to_vec();
                let expected = row.version - 1;
                with_expected.push(&expected);
                statement.execute(with_expected.as_slice())
            } else {
                statement.execute(columns)
            }
            .map_err(other)?;
            if n == 0 {
                unchanged.push(row.run_id);
            }
        }
    }
    tx.commit().map_err(other)?;
    Ok(unchanged)
}

impl SqliteRunStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, RunStoreError> {
        let conn = Connection::open(path).map_err(|e| {
            RunStoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(other)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(other)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(other)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                retention_ms: 0,
                pruned_at_ms: 0,
            })),
        })
    }

    /// Runs `f` (operation `op`) with the connection on the blocking pool.
    async fn with<T, F>(&self, op: &'static str, f: F) -> Result<T, RunStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> Result<T, RunStoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        distcron_metrics::store_call("sqlite", op, async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = inner
                    .lock()
                    .map_err(|_| RunStoreError::Other("run store lock poisoned".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(other)?
        })
        .await
    }
}

fn prune(inner: &mut Inner, now_ms: i64) -> Result<(), RunStoreError> {
    if inner.retention_ms > 0 {
        inner
            .conn
            .execute(
                "DELETE FROM runs WHERE stored_at < ?1",
                params![now_ms - inner.retention_ms],
            )
            .map_err(other)?;
    }
    inner.pruned_at_ms = now_ms;
    Ok(())
}

/// The WHERE clause and its parameters for a query (without the cursor).
fn filter(query: &RunQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(job) = &query.job_name {
        values.push(Value::Text(job.clone()));
        clauses.push(format!("job_name = ?{}", values.len()));
    }
    if !query.statuses.is_empty() {
        let mut marks = Vec::new();
        for s in &query.statuses {
            values.push(Value::Text(s.as_str().to_owned()));
            marks.push(format!("?{}", values.len()));
        }
        clauses.push(format!("status IN ({})", marks.join(", ")));
    }
    if let Some(from) = query.start_from {
        values.push(Value::Integer(from));
        clauses.push(format!("start_time >= ?{}", values.len()));
    }
    if let Some(before) = query.start_before {
        values.push(Value::Integer(before));
        clauses.push(format!("start_time < ?{}", values.len()));
    }
    let sql = if clauses.is_empty() {
        "1 = 1".to_owned()
    } else {
        clauses.join(" AND ")
    };
    (sql, values)
}

fn newest_start(
    conn: &Connection,
    job: &str,
    statuses: &[RunStatus],
) -> Result<i64, RunStoreError> {
    let marks: Vec<String> = (0..statuses.len()).map(|i| format!("?{}", i + 2)).collect();
    let sql = format!(
        "SELECT MAX(start_time) FROM runs WHERE job_name = ?1 AND status IN ({})",
        marks.join(", ")
    );
    let mut values: Vec<rusqlite::types::Value> =
        vec![rusqlite::types::Value::Text(job.to_owned())];
    values.extend(
        statuses
            .iter()
            .map(|s| rusqlite::types::Value::Text(s.as_str().to_owned())),
    );
    let max: Option<i64> = conn
        .query_row(&sql, params_from_iter(values), |row| row.get(0))
        .map_err(other)?;
    Ok(max.unwrap_or(0))
}

#[async_trait::async_trait]
impl RunStore for SqliteRunStore {
    async fn init(&self, retention_days: u32) -> Result<(), RunStoreError> {
        self.with("init", move |inner| {
            inner
                .conn
                .execute_batch(
                    "CREATE TABLE IF NOT EXISTS runs (
                        run_id TEXT PRIMARY KEY,
                        job_name TEXT NOT NULL,
                        status TEXT NOT NULL,
                        start_time INTEGER NOT NULL,
                        duration_ms INTEGER NOT NULL,
                        version INTEGER NOT NULL,
                        stored_at INTEGER NOT NULL,
                        doc TEXT NOT NULL
                    );
                    CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_name, start_time DESC, run_id DESC);
                    CREATE INDEX IF NOT EXISTS runs_by_start ON runs (start_time DESC, run_id DESC);
                    CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, start_time DESC);
                    CREATE INDEX IF NOT EXISTS runs_by_age ON runs (stored_at);",
                )
                .map_err(other)?;
            inner.retention_ms = i64::from(retention_days) * 24 * HOUR_MS;
            prune(inner, distcron_core::now_ms())
        })
        .await
    }

    async fn get_many(&self, run_ids: &[String]) -> Result<Vec<StoredRun>, RunStoreError> {
        let ids = run_ids.to_vec();
        self.with("get_many", move |inner| {
            let mut out = Vec::new();
            let mut stmt = inner
                .conn
                .prepare_cached("SELECT doc FROM runs WHERE run_id = ?1")
                .map_err(other)?;
            for id in &ids {
                let doc: Option<String> = stmt
                    .query_row(params![id], |row| row.get(0))
                    .optional()
                    .map_err(other)?;
                if let Some(doc) = doc {
                    out.push(decode(id, &doc)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn insert_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError> {
        let rows = rows_of(runs)?;
        self.with("insert_many", move |inner| {
            let now = distcron_core::now_ms();
            if now - inner.pruned_at_ms > HOUR_MS {
                prune(inner, now)?;
            }
            write_each(
                inner,
                "INSERT OR IGNORE INTO runs (run_id, job_name, status, start_time, duration_ms, version, stored_at, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rows,
                now,
                false,
            )
        })
        .await
    }

    async fn update_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError> {
        let rows = rows_of(runs)?;
        self.with("update_many", move |inner| {
            write_each(
                inner,
                "UPDATE runs SET job_name = ?2, status = ?3, start_time = ?4, duration_ms = ?5,
                     version = ?6, stored_at = ?7, doc = ?8
                 WHERE run_id = ?1 AND version = ?9",
                rows,
                distcron_core::now_ms(),
                true,
            )
        })
        .await
    }

    async fn get(&self, run_id: &str) -> Result<Option<StoredRun>, RunStoreError> {
        Ok(self.get_many(&[run_id.to_owned()]).await?.pop())
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, RunStoreError> {
        let query = query.clone();
        self.with("list", move |inner| {
            let (mut sql, mut values) = filter(&query);
            let total: i64 = inner
                .conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM runs WHERE {sql}"),
                    params_from_iter(values.clone()),
                    |row| row.get(0),
                )
                .map_err(other)?;
            if let Some(after) = &query.after {
                values.push(rusqlite::types::Value::Integer(after.start_time));
                let t = values.len();
                values.push(rusqlite::types::Value::Text(after.run_id.clone()));
                let id = values.len();
                sql = format!(
                    "{sql} AND (start_time < ?{t} OR (start_time = ?{t} AND run_id < ?{id}))"
                );
            }
            values.push(rusqlite::types::Value::Integer(i64::from(query.limit)));
            let limit = values.len();
            values.push(rusqlite::types::Value::Integer(i64::from(query.skip)));
            let offset = values.len();
            let mut stmt = inner
                .conn
                .prepare(&format!(
                    "SELECT run_id, doc FROM runs WHERE {sql}
                     ORDER BY start_time DESC, run_id DESC LIMIT ?{limit} OFFSET ?{offset}"
                ))
                .map_err(other)?;
            let rows = stmt
                .query_map(params_from_iter(values), |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(other)?;
            let mut runs = Vec::new();
            for row in rows {
                let (id, doc) = row.map_err(other)?;
                let mut run = decode(&id, &doc)?;
                if !query.with_output {
                    run.output.clear();
                }
                runs.push(run);
            }
            Ok(RunPage {
                runs,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
        .await
    }

    async fn stats(&self, job_name: &str, since_ms: i64) -> Result<JobStatsRaw, RunStoreError> {
        let job = job_name.to_owned();
        self.with("stats", move |inner| {
            let conn = &inner.conn;
            let mut stmt = conn
                .prepare(
                    "SELECT status, COUNT(*), SUM(duration_ms) FROM runs
                     WHERE job_name = ?1 AND start_time >= ?2 GROUP BY status",
                )
                .map_err(other)?;
            let rows = stmt
                .query_map(params![job, since_ms], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(other)?;
            let mut totals = Vec::new();
            for row in rows {
                let (name, count, duration) = row.map_err(other)?;
                if let Ok(status) = name.parse::<RunStatus>() {
                    totals.push(StatusTotals {
                        status,
                        count: u64::try_from(count).unwrap_or(0),
                        duration_ms: duration.unwrap_or(0),
                    });
                }
            }
            totals.sort_by_key(|t| t.status.as_str());
            let last: Option<(String, String)> = conn
                .query_row(
                    "SELECT run_id, doc FROM runs WHERE job_name = ?1
                     ORDER BY start_time DESC, run_id DESC LIMIT 1",
                    params![job],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(other)?;
            let last_run = last.map(|(id, doc)| decode(&id, &doc)).transpose()?;
            Ok(JobStatsRaw {
                last_run,
                totals,
                last_success_ms: newest_start(conn, &job, &[RunStatus::Succeeded])?,
                last_failure_ms: newest_start(conn, &job, &RunStatus::FAILURES)?,
            })
        })
        .await
    }
}
