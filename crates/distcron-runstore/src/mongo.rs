//! [`RunStore`] over MongoDB.
//!
//! One document per run in the configured collection (default `cron`.`log`, the seed's), with
//! `_id` = run id (so run ids are unique) and the seed's field names. Every call has a timeout and
//! fails with [`RunStoreError::Unavailable`] while the server is down; the driver reconnects by
//! itself. Seed-era documents (ObjectId `_id`, no `status`) are read too.
//!
//! Indexes, created idempotently by [`RunStore::init`]: `{jobName: 1, startTime: -1, runId: -1}`
//! (runs of a job, newest first), `{startTime: -1, runId: -1}` (all runs, newest first),
//! `{status: 1, startTime: -1}` (status filters), and a TTL index on `storedAt` when retention is
//! set. Typed fields are read through serde, which also accepts the Int32 that some servers return
//! for small Int64 values.

use std::future::IntoFuture;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Collection, IndexModel};

use crate::{
    JobStatsRaw, RunPage, RunQuery, RunStatus, RunStore, RunStoreError, StatusTotals, StoredRun,
};

const TTL_INDEX: &str = "storedAt_ttl";
/// MongoDB's error code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;
/// Compare-and-replace calls of one batch in flight at once: the driver's default pool size.
const CONCURRENT_REPLACES: usize = 10;

/// Where the run history lives.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// Connection string.
    pub uri: String,
    /// Database (default `cron`).
    pub database: String,
    /// Collection (default `log`).
    pub collection: String,
    /// Timeout of every call.
    pub timeout: Duration,
}

impl MongoConfig {
    /// The seed's database and collection on `uri`, 5 s per call.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: "cron".into(),
            collection: "log".into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// [`RunStore`] over a MongoDB collection.
#[derive(Debug, Clone)]
pub struct MongoRunStore {
    coll: Collection<Document>,
    timeout: Duration,
}

fn map_err(e: &mongodb::error::Error) -> RunStoreError {
    use mongodb::error::ErrorKind;
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::Shutdown => RunStoreError::Unavailable(e.to_string()),
        ErrorKind::Command(c) if [91, 189, 11600, 11602, 13435, 13436].contains(&c.code) => {
            RunStoreError::Unavailable(e.to_string())
        }
        _ => RunStoreError::Other(e.to_string()),
    }
}

/// The positions of the documents an unordered `insert_many` refused because their `_id`
/// exists, when those are its only errors.
fn duplicate_indexes(e: &mongodb::error::Error) -> Option<Vec<usize>> {
    use mongodb::error::{ErrorKind, InsertManyError};
    match e.kind.as_ref() {
        ErrorKind::InsertMany(InsertManyError {
            write_errors: Some(errors),
            write_concern_error: None,
            ..
        }) if errors.iter().all(|w| w.code == DUPLICATE_KEY) => {
            Some(errors.iter().map(|w| w.index).collect())
        }
        _ => None,
    }
}

fn to_document(run: &StoredRun) -> Result<Document, RunStoreError> {
    let mut d = bson::to_document(run).map_err(|e| RunStoreError::BadData {
        run_id: run.run_id.clone(),
        reason: e.to_string(),
    })?;
    d.insert("_id", run.run_id.clone());
    d.insert("storedAt", bson::DateTime::now());
    Ok(d)
}

fn from_document(mut d: Document) -> Result<StoredRun, RunStoreError> {
    let id = match d.remove("_id") {
        Some(Bson::String(s)) => s,
        Some(Bson::ObjectId(o)) => o.to_hex(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    d.remove("storedAt");
    if !matches!(d.get("runId"), Some(Bson::String(_))) {
        d.insert("runId", id.clone());
    }
    if !d.contains_key("status") {
        // Seed-era run: success is an empty error text.
        let failed = matches!(d.get("err"), Some(Bson::String(s)) if !s.is_empty());
        let status = if failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        d.insert("status", status.as_str());
    }
    bson::from_document(d).map_err(|e| RunStoreError::BadData {
        run_id: id,
        reason: e.to_string(),
    })
}

fn filter_of(q: &RunQuery) -> Document {
    let mut f = Document::new();
    if let Some(job) = &q.job_name {
        f.insert("jobName", job.clone());
    }
    if !q.statuses.is_empty() {
        let names: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        f.insert("status", doc! { "$in": names });
    }
    let mut range = Document::new();
    if let Some(from) = q.start_from {
        range.insert("$gte", from);
    }
    if let Some(before) = q.start_before {
        range.insert("$lt", before);
    }
    if !range.is_empty() {
        f.insert("startTime", range);
    }
    f
}

impl MongoRunStore {
    /// Connects (lazily: a server that is down now makes calls fail with `Unavailable` until it
    /// is up).
    pub async fn connect(config: &MongoConfig) -> Result<Self, RunStoreError> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(|e| map_err(&e))?;
        options
            .app_name
            .get_or_insert_with(|| "distcron".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(3));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(3));
        let client = mongodb::Client::with_options(options).map_err(|e| map_err(&e))?;
        let coll = client
            .database(&config.database)
            .collection::<Document>(&config.collection);
        Ok(Self {
            coll,
            timeout: config.timeout,
        })
    }

    /// Runs one driver call (operation `what`) within the timeout; see
    /// [`distcron_metrics::store_call`].
    async fn timed<T, F>(&self, what: &'static str, fut: F) -> Result<T, RunStoreError>
    where
        F: IntoFuture<Output = Result<T, mongodb::error::Error>>,
    {
        distcron_metrics::store_call("mongodb", what, async {
            match tokio::time::timeout(self.timeout, fut.into_future()).await {
                Ok(r) => r.map_err(|e| map_err(&e)),
                Err(_) => Err(RunStoreError::Unavailable(format!(
                    "{what} timed out after {:?}",
                    self.timeout
                ))),
            }
        })
        .await
    }

    /// Replaces `run` if its stored version is `run.version - 1`; else returns its id.
    async fn replace_at_version(&self, run: &StoredRun) -> Result<Option<String>, RunStoreError> {
        let d = to_document(run)?;
        let filter = doc! { "_id": run.run_id.clone(), "version": run.version - 1 };
        let result = self
            .timed("replace_one", self.coll.replace_one(filter, d))
            .await?;
        Ok((result.matched_count != 1).then(|| run.run_id.clone()))
    }

    async fn find_all(
        &self,
        filter: Document,
        sort: Document,
        skip: u64,
        limit: i64,
        with_output: bool,
    ) -> Result<Vec<StoredRun>, RunStoreError> {
        let mut find = self.coll.find(filter).sort(sort).skip(skip).limit(limit);
        if !with_output {
            find = find.projection(doc! { "output": 0 });
        }
        let docs: Vec<Document> = self
            .timed("find", async move { find.await?.try_collect().await })
            .await?;
        docs.into_iter().map(from_document).collect()
    }

    async fn newest_start(&self, filter: Document) -> Result<i64, RunStoreError> {
        let runs = self
            .find_all(filter, doc! { "startTime": -1, "runId": -1 }, 0, 1, false)
            .await?;
        Ok(runs.first().map_or(0, |r| r.start_time))
    }
}

#[async_trait::async_trait]
impl RunStore for MongoRunStore {
    async fn init(&self, retention_days: u32) -> Result<(), RunStoreError> {
        let plain = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        for model in [
            plain(
                doc! { "jobName": 1, "startTime": -1, "runId": -1 },
                "jobName_startTime",
            ),
            plain(doc! { "startTime": -1, "runId": -1 }, "startTime"),
            plain(doc! { "status": 1, "startTime": -1 }, "status_startTime"),
        ] {
            self.timed("create_index", self.coll.create_index(model))
                .await?;
        }
        // The TTL index: recreate it when the retention changed, drop it when retention is off.
        let want =
            (retention_days > 0).then(|| Duration::from_secs(u64::from(retention_days) * 86_400));
        let indexes: Vec<IndexModel> = self
            .timed("list_indexes", async {
                self.coll.list_indexes().await?.try_collect().await
            })
            .await?;
        let current = indexes
            .iter()
            .find(|m| m.keys.keys().map(String::as_str).eq(["storedAt"]));
        let current_ttl = current
            .and_then(|m| m.options.as_ref())
            .and_then(|o| o.expire_after);
        if current.is_some() && current_ttl != want {
            let names = [
                current
                    .and_then(|m| m.options.as_ref())
                    .and_then(|o| o.name.clone()),
                Some(TTL_INDEX.to_owned()),
            ];
            for name in names.into_iter().flatten() {
                if let Err(e) = self
                    .timed("drop_index", self.coll.drop_index(name.clone()))
                    .await
                {
                    tracing::debug!(index = %name, error = %e, "drop_index");
                }
            }
        }
        if let Some(ttl) = want {
            if current_ttl != want {
                let model = IndexModel::builder()
                    .keys(doc! { "storedAt": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(TTL_INDEX.to_owned())
                            .expire_after(ttl)
                            .build(),
                    )
                    .build();
                self.timed("create_index", self.coll.create_index(model))
                    .await?;
            }
        }
        Ok(())
    }

    async fn get_many(&self, run_ids: &[String]) -> Result<Vec<StoredRun>, RunStoreError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = run_ids.iter().map(String::as_str).collect();
        self.find_all(
            doc! { "_id": { "$in": ids } },
            doc! { "_id": 1 },
            0,
            0,
            true,
        )
        .await
    }

    async fn insert_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let docs = runs
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        // Unordered: one existing run does not stop the others; existing runs are an answer,
        // not a failure.
        let insert = self.coll.insert_many(docs).ordered(false);
        let existing = self
            .timed("insert_many", async {
                match insert.await {
                    Ok(_) => Ok(Vec::new()),
                    Err(e) => duplicate_indexes(&e).ok_or(e),
                }
            })
            .await?;
        Ok(existing
            .into_iter()
            .filter_map(|i| runs.get(i).map(|r| r.run_id.clone()))
            .collect())
    }

    async fn update_many(&self, runs: &[StoredRun]) -> Result<Vec<String>, RunStoreError> {
        // MongoDB has no multi-document compare-and-replace before 8.0's bulkWrite; the replaces
        // go out concurrently over the connection pool instead of one round trip after another.
        let replaces: Vec<_> = runs
            .iter()
            .map(|run| self.replace_at_version(run))
            .collect();
        let stale: Vec<Option<String>> = futures::stream::iter(replaces)
            .buffer_unordered(CONCURRENT_REPLACES)
            .try_collect()
            .await?;
        Ok(stale.into_iter().flatten().collect())
    }

    async fn get(&self, run_id: &str) -> Result<Option<StoredRun>, RunStoreError> {
        let mut filter = doc! { "_id": run_id };
        if let Ok(oid) = bson::oid::ObjectId::parse_str(run_id) {
            filter =
                doc! { "_id": { "$in": [Bson::String(run_id.to_owned()), Bson::ObjectId(oid)] } };
        }
        let found = self.timed("find_one", self.coll.find_one(filter)).await?;
        found.map(from_document).transpose()
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, RunStoreError> {
        let filter = filter_of(query);
        let total = self
            .timed("count_documents", self.coll.count_documents(filter.clone()))
            .await?;
        let mut page_filter = filter;
        if let Some(after) = &query.after {
            page_filter.insert(
                "$or",
                vec![
                    doc! { "startTime": { "$lt": after.start_time } },
                    doc! { "startTime": after.start_time, "runId": { "$lt": after.run_id.clone() } },
                ],
            );
        }
        let runs = self
            .find_all(
                page_filter,
                doc! { "startTime": -1, "runId": -1 },
                u64::from(query.skip),
                i64::from(query.limit),
                query.with_output,
            )
            .await?;
        Ok(RunPage { runs, total })
    }

    async fn stats(&self, job_name: &str, since_ms: i64) -> Result<JobStatsRaw, RunStoreError> {
        let pipeline = vec![
            doc! { "$match": { "jobName": job_name, "startTime": { "$gte": since_ms } } },
            doc! { "$group": { "_id": "$status", "n": { "$sum": 1 }, "dur": { "$sum": "$durationMs" } } },
        ];
        let groups: Vec<Document> = self
            .timed("aggregate", async {
                self.coll.aggregate(pipeline).await?.try_collect().await
            })
            .await?;
        let number = |b: Option<&Bson>| match b {
            Some(Bson::Int32(i)) => i64::from(*i),
            Some(Bson::Int64(i)) => *i,
            Some(Bson::Double(f)) => *f as i64,
            _ => 0,
        };
        let mut totals = Vec::new();
        for g in &groups {
            let Ok(name) = g.get_str("_id") else { continue };
            let Ok(status) = name.parse::<RunStatus>() else {
                continue;
            };
            totals.push(StatusTotals {
                status,
                count: u64::try_from(number(g.get("n"))).unwrap_or(0),
                duration_ms: number(g.get("dur")),
            });
        }
        totals.sort_by_key(|t| t.status.as_str());
        let job = doc! { "jobName": job_name };
        let last_run = self
            .find_all(
                job.clone(),
                doc! { "startTime": -1, "runId": -1 },
                0,
                1,
                false,
            )
            .await?
            .pop();
        let mut success = job.clone();
        success.insert("status", RunStatus::Succeeded.as_str());
        let mut failure = job;
        let failures = RunStatus::FAILURES.map(RunStatus::as_str).to_vec();
        failure.insert("status", doc! { "$in": failures });
        Ok(JobStatsRaw {
            last_run,
            totals,
            last_success_ms: self.newest_start(success).await?,
            last_failure_ms: self.newest_start(failure).await?,
        })
    }
}
