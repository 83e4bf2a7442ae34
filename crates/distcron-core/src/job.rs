//! Job definitions: the stored JSON, validation, and conversion to and from gRPC messages.
//!
//! The stored JSON keeps the seed's field names (`name`, `command`, `cronExpr`), so a seed-era
//! value `{"name":"x","command":"echo","cronExpr":"*/5 * * * * *"}` still loads; every newer field
//! has a default. Unknown fields are ignored so that older workers can read newer definitions.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use distcron_proto::jobs::v1 as pb;
use distcron_schedule::Schedule;
use serde::{Deserialize, Serialize};

/// Longest accepted job name.
pub const MAX_NAME_LEN: usize = 128;
/// Largest accepted command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Longest accepted timeout and missed-slot window: 7 days.
pub const MAX_SECONDS: u32 = 7 * 24 * 3600;
/// Most environment variables per job.
pub const MAX_ENV_VARS: usize = 128;
/// Largest total size of a job's environment, in bytes.
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// What happens to a slot while an earlier run of the same job is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// Skip the slot and record it as skipped.
    #[default]
    Forbid,
    /// Run next to the running one.
    Allow,
    /// Kill the running one, then start.
    Replace,
}

/// What happens to slots that passed while no worker could run them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissedPolicy {
    /// Do not run missed slots.
    #[default]
    Skip,
    /// Run the most recent missed slot once.
    Latest,
    /// Run every missed slot within the window.
    All,
}

fn default_true() -> bool {
    true
}

/// A job as stored under `jobs/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinition {
    /// Unique name.
    pub name: String,
    /// Shell command.
    pub command: String,
    /// Schedule in the distcron cron dialect.
    pub cron_expr: String,
    /// IANA time zone; empty = UTC.
    #[serde(default)]
    pub time_zone: String,
    /// No slot before this, ms since the epoch; `None` = no start bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<i64>,
    /// No slot after this, ms since the epoch; `None` = no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<i64>,
    /// Whether slots are scheduled.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Run time limit in seconds; 0 = none.
    #[serde(default)]
    pub timeout_seconds: u32,
    /// Overlap policy.
    #[serde(default)]
    pub overlap_policy: OverlapPolicy,
    /// Missed-slot policy.
    #[serde(default)]
    pub missed_policy: MissedPolicy,
    /// Window of [`MissedPolicy::All`], seconds.
    #[serde(default)]
    pub missed_window_seconds: u32,
    /// Working directory; empty = the worker's.
    #[serde(default)]
    pub working_dir: String,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment: passed to the command like `env`, never in a reply ([`Self::to_proto`]
    /// gives the names only) and masked in run output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Unix user to run as; empty = the worker's.
    #[serde(default)]
    pub user: String,
    /// When first stored, ms since the epoch (0 for seed-era values).
    #[serde(default)]
    pub created_at: i64,
    /// When last changed, ms since the epoch.
    #[serde(default)]
    pub updated_at: i64,
    /// W3C `traceparent` of the request that wrote this revision; each run's span links to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent: String,
}

/// The only keys of a job value the seed wrote.
const SEED_KEYS: [&str; 3] = ["name", "command", "cronExpr"];

/// A rejected field: `field` is the JSON name (`cronExpr`, `env.FOO`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, by its JSON name.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Most bytes of an error's message (which may quote the input).
const MAX_MESSAGE_BYTES: usize = 2 * crate::MAX_QUOTED_BYTES;

impl FieldError {
    /// A field error; the field (which may name an input key, as `env.<name>`) and the message
    /// are clipped ([`crate::clip`]), so the error stays small whatever the input.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self {
            field: crate::clip(&field, crate::MAX_QUOTED_BYTES).into_owned(),
            message: crate::clip(&message, MAX_MESSAGE_BYTES).into_owned(),
        }
    }
}

/// The instant of a time field (`startAt`, `endAt`) given in ms since the epoch, `None` when the
/// field is absent; out of range is an error naming `field`.
pub fn instant(field: &str, ms: Option<i64>) -> Result<Option<DateTime<Utc>>, FieldError> {
    ms.map(|ms| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| FieldError::new(field, format!("{ms} ms is out of range")))
    })
    .transpose()
}

/// Checks a job name: `[A-Za-z0-9._-]{1,128}`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            "name",
            format!("at most {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(FieldError::new(
            "name",
            format!("{bad:?} not allowed: use letters, digits, '.', '_' and '-'"),
        ));
    }
    if name == "." || name == ".." {
        return Err(FieldError::new("name", "must not be \".\" or \"..\""));
    }
    Ok(())
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_user_name(u: &str) -> bool {
    let mut chars = u.chars();
    u.len() <= 32
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && u.trim_end_matches('$')
            .chars()
            .skip(1)
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl JobDefinition {
    /// A job with defaults for everything but name, command and schedule.
    pub fn new(name: &str, command: &str, cron_expr: &str) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            cron_expr: cron_expr.into(),
            time_zone: String::new(),
            start_at: None,
            end_at: None,
            enabled: true,
            timeout_seconds: 0,
            overlap_policy: OverlapPolicy::default(),
            missed_policy: MissedPolicy::default(),
            missed_window_seconds: 0,
            working_dir: String::new(),
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            user: String::new(),
            created_at: 0,
            updated_at: 0,
            trace_parent: String::new(),
        }
    }

    /// Checks every field as a save does, and that the job fires after `now`: an `@at` in the
    /// past, an `endAt` in the past or an expression with no slot to come is refused, naming the
    /// field. Returns the parsed schedule, or the first field that is wrong.
    pub fn validate_for_save(&self, now: DateTime<Utc>) -> Result<Schedule, FieldError> {
        let schedule = self.validate()?;
        schedule
            .check_fires_after(now)
            .map_err(|e| FieldError::new(e.field, e.message))?;
        Ok(schedule)
    }

    /// The parsed schedule within `startAt` and `endAt`, whatever the time: a stored job whose
    /// last slot has passed has a schedule with no more slots, not an invalid one.
    pub fn schedule(&self) -> Result<Schedule, FieldError> {
        let start = instant("startAt", self.start_at)?;
        let end = instant("endAt", self.end_at)?;
        Schedule::parse_stored_for(&self.name, &self.cron_expr, &self.time_zone)
            .and_then(|s| s.with_bounds(start, end))
            .map_err(|e| FieldError::new(e.field, e.message))
    }

    /// Checks every field of a stored definition, whatever the time (see
    /// [`Self::validate_for_save`] for what a save checks besides); returns the parsed schedule
    /// ([`Self::schedule`]), or the first field that is wrong.
    pub fn validate(&self) -> Result<Schedule, FieldError> {
        validate_name(&self.name)?;
        if self.command.trim().is_empty() {
            return Err(FieldError::new("command", "must not be empty"));
        }
        if self.command.len() > MAX_COMMAND_BYTES {
            return Err(FieldError::new(
                "command",
                format!("{} bytes; at most {MAX_COMMAND_BYTES}", self.command.len()),
            ));
        }
        if self.command.contains('\0') {
            return Err(FieldError::new("command", "must not contain NUL bytes"));
        }
        let schedule = self.schedule()?;
        if self.timeout_seconds > MAX_SECONDS {
            return Err(FieldError::new(
                "timeoutSeconds",
                format!(
                    "{} is more than 7 days ({MAX_SECONDS})",
                    self.timeout_seconds
                ),
            ));
        }
        if self.missed_window_seconds > MAX_SECONDS {
            return Err(FieldError::new(
                "missedWindowSeconds",
                format!(
                    "{} is more than 7 days ({MAX_SECONDS})",
                    self.missed_window_seconds
                ),
            ));
        }
        if self.missed_policy == MissedPolicy::All && self.missed_window_seconds == 0 {
            return Err(FieldError::new(
                "missedWindowSeconds",
                "required (1 to 604800) when missedPolicy is \"all\"",
            ));
        }
        if !self.working_dir.is_empty()
            && (!self.working_dir.starts_with('/') || self.working_dir.contains('\0'))
        {
            return Err(FieldError::new("workingDir", "must be an absolute path"));
        }
        self.validate_env()?;
        if !self.user.is_empty() && !is_user_name(&self.user) {
            return Err(FieldError::new(
                "user",
                format!("{:?} is not a valid user name", self.user),
            ));
        }
        Ok(schedule)
    }

    /// Checks `env` and `secretEnv`: names, values, and their count and size together.
    fn validate_env(&self) -> Result<(), FieldError> {
        if self.env.len() + self.secret_env.len() > MAX_ENV_VARS {
            return Err(FieldError::new(
                "env",
                format!("at most {MAX_ENV_VARS} variables (env and secretEnv together)"),
            ));
        }
        let mut env_bytes = 0;
        let all = self
            .env
            .iter()
            .map(|kv| ("env", kv))
            .chain(self.secret_env.iter().map(|kv| ("secretEnv", kv)));
        for (map, (k, v)) in all {
            if !is_env_name(k) {
                return Err(FieldError::new(
                    format!("{map}.{k}"),
                    "variable names are letters, digits and '_', not starting with a digit",
                ));
            }
            if v.contains('\0') {
                return Err(FieldError::new(
                    format!("{map}.{k}"),
                    "must not contain NUL bytes",
                ));
            }
            if map == "secretEnv" && self.env.contains_key(k) {
                return Err(FieldError::new(
                    format!("secretEnv.{k}"),
                    "also in env: a variable is either plain or secret",
                ));
            }
            env_bytes += k.len() + v.len();
        }
        if env_bytes > MAX_ENV_BYTES {
            return Err(FieldError::new(
                "env",
                format!("at most {MAX_ENV_BYTES} bytes in all (env and secretEnv together)"),
            ));
        }
        Ok(())
    }

    /// Parses a stored value. A seed-era value (no keys but name, command and cronExpr, as the
    /// seed wrote them) loads with defaults and its schedule read as the seed read it: a
    /// six-field `cronExpr` (`min hour dom month dow year`) becomes the seven-field stored form
    /// ([`distcron_schedule::seed_to_stored`]). Values distcron wrote always have more keys, so
    /// their six fields keep distcron's meaning (`sec min hour dom month dow`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let seed_era = value
            .as_object()
            .is_some_and(|o| o.keys().all(|k| SEED_KEYS.contains(&k.as_str())));
        let mut job: Self = serde_json::from_value(value)?;
        if seed_era {
            job.cron_expr = distcron_schedule::seed_to_stored(&job.cron_expr);
        }
        Ok(job)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The gRPC message, with the store revision.
    pub fn to_proto(&self, revision: i64) -> pb::Job {
        pb::Job {
            name: self.name.clone(),
            command: self.command.clone(),
            cron_expr: self.cron_expr.clone(),
            time_zone: self.time_zone.clone(),
            enabled: Some(self.enabled),
            timeout_seconds: self.timeout_seconds,
            overlap_policy: match self.overlap_policy {
                OverlapPolicy::Forbid => pb::OverlapPolicy::Forbid,
                OverlapPolicy::Allow => pb::OverlapPolicy::Allow,
                OverlapPolicy::Replace => pb::OverlapPolicy::Replace,
            } as i32,
            missed_policy: match self.missed_policy {
                MissedPolicy::Skip => pb::MissedPolicy::Skip,
                MissedPolicy::Latest => pb::MissedPolicy::Latest,
                MissedPolicy::All => pb::MissedPolicy::All,
            } as i32,
            missed_window_seconds: self.missed_window_seconds,
            working_dir: self.working_dir.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            user: self.user.clone(),
            // Names only: a secret's value never leaves the store through a reply.
            secret_env: (!self.secret_env.is_empty()).then(|| pb::SecretEnv {
                values: self
                    .secret_env
                    .keys()
                    .map(|k| (k.clone(), String::new()))
                    .collect(),
            }),
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at,
            revision,
            start_at_ms: self.start_at,
            end_at_ms: self.end_at,
            // Computed where the ledger is known (jobsvc).
            done: false,
        }
    }

    /// A definition from a gRPC message. `enabled` absent becomes `default_enabled`; output-only
    /// fields (times, revision, done) are ignored. Unknown enum values are rejected naming the
    /// field. `secret_env` is taken as sent, empty values included: [`Self::resolve_secret_env`] then
    /// fills them in from the stored definition.
    pub fn from_proto(job: &pb::Job, default_enabled: bool) -> Result<Self, FieldError> {
        let overlap_policy = match pb::OverlapPolicy::try_from(job.overlap_policy) {
            Ok(pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Forbid) => OverlapPolicy::Forbid,
            Ok(pb::OverlapPolicy::Allow) => OverlapPolicy::Allow,
            Ok(pb::OverlapPolicy::Replace) => OverlapPolicy::Replace,
            Err(_) => {
                return Err(FieldError::new(
                    "overlapPolicy",
                    format!("unknown value {}", job.overlap_policy),
                ))
            }
        };
        let missed_policy = match pb::MissedPolicy::try_from(job.missed_policy) {
            Ok(pb::MissedPolicy::Unspecified | pb::MissedPolicy::Skip) => MissedPolicy::Skip,
            Ok(pb::MissedPolicy::Latest) => MissedPolicy::Latest,
            Ok(pb::MissedPolicy::All) => MissedPolicy::All,
            Err(_) => {
                return Err(FieldError::new(
                    "missedPolicy",
                    format!("unknown value {}", job.missed_policy),
                ))
            }
        };
        Ok(Self {
            name: job.name.clone(),
            command: job.command.clone(),
            cron_expr: job.cron_expr.clone(),
            time_zone: job.time_zone.clone(),
            start_at: job.start_at_ms,
            end_at: job.end_at_ms,
            enabled: job.enabled.unwrap_or(default_enabled),
            timeout_seconds: job.timeout_seconds,
            overlap_policy,
            missed_policy,
            missed_window_seconds: job.missed_window_seconds,
            working_dir: job.working_dir.clone(),
            env: job
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secret_env: job
                .secret_env
                .iter()
                .flat_map(|s| s.values.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            user: job.user.clone(),
            created_at: 0,
            updated_at: 0,
            trace_parent: String::new(),
        })
    }

    /// Applies the save rules of `SecretEnv` against the `stored` definition: when the request
    /// carried no secret environment (`sent` false) the stored secrets stay; otherwise an empty
    /// value keeps the stored value of that name, and a name with no stored value is an error.
    pub fn resolve_secret_env(
        &mut self,
        sent: bool,
        stored: Option<&JobDefinition>,
    ) -> Result<(), FieldError> {
        let stored_secrets = stored.map(|s| &s.secret_env);
        if !sent {
            self.secret_env = stored_secrets.cloned().unwrap_or_default();
            return Ok(());
        }
        for (name, value) in &mut self.secret_env {
            if value.is_empty() {
                *value = stored_secrets
                    .and_then(|s| s.get(name))
                    .cloned()
                    .ok_or_else(|| {
                        FieldError::new(
                            format!("secretEnv.{name}"),
                            "empty, and no stored value to keep: give the value",
                        )
                    })?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Forbid => "forbid",
            Self::Allow => "allow",
            Self::Replace => "replace",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobDefinition {
        JobDefinition::new("backup.daily-1", "echo hi", "*/5 * * * * *")
    }

    #[test]
    fn seed_json_loads_with_defaults() {
        let seed = br#"{"name":"j1","command":"echo hello","cronExpr":"*/5 * * * * *"}"#;
        let j = JobDefinition::from_json(seed).expect("seed value loads");
        assert_eq!(j.name, "j1");
        // Six fields in a seed-era value are read as the seed read them: every 5 minutes.
        assert_eq!(j.cron_expr, "0 */5 * * * * *");
        assert!(j.enabled);
        assert_eq!(j.overlap_policy, OverlapPolicy::Forbid);
        assert_eq!(j.missed_policy, MissedPolicy::Skip);
        assert_eq!(j.time_zone, "");
        assert!(j.validate().is_ok());
    }

    #[test]
    fn validation_hashes_h_from_the_job_name() {
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01");
        let next = |name: &str| {
            let schedule = JobDefinition::new(name, "true", "H * * * *")
                .validate()
                .expect("H is valid in a job");
            schedule.next_after(at).map(|t| t.to_rfc3339())
        };
        assert_eq!(
            next("backup.daily").as_deref(),
            Some("2026-01-01T00:29:00+00:00")
        );
        assert_ne!(next("backup.daily"), next("backup.weekly"));
    }

    #[test]
    fn only_seed_era_values_get_the_seed_reading() {
        let load = |json: &str| JobDefinition::from_json(json.as_bytes()).expect("loads");
        let five = r#"{"name":"j","command":"true","cronExpr":"0 9 * * mon"}"#;
        assert_eq!(load(five).cron_expr, "0 9 * * mon");
        let year = r#"{"cronExpr":"0 12 * * * 2027","name":"j","command":"true"}"#;
        assert_eq!(load(year).cron_expr, "0 0 12 * * * 2027");
        // A value with any distcron field was written by distcron: six fields start with seconds.
        let ours = r#"{"name":"j","command":"true","cronExpr":"*/5 * * * * *","timeZone":""}"#;
        assert_eq!(load(ours).cron_expr, "*/5 * * * * *");
        let written = String::from_utf8(job().to_json()).expect("utf8");
        assert_eq!(load(&written).cron_expr, "*/5 * * * * *");
    }

    #[test]
    fn json_round_trips_with_seed_field_names() {
        let mut j = job();
        j.overlap_policy = OverlapPolicy::Replace;
        j.env.insert("A".into(), "1".into());
        let json = String::from_utf8(j.to_json()).expect("utf8");
        assert!(json.contains("\"cronExpr\":\"*/5 * * * * *\""), "{json}");
        assert!(json.contains("\"overlapPolicy\":\"replace\""), "{json}");
        assert_eq!(JobDefinition::from_json(json.as_bytes()).expect("parse"), j);
    }

    #[test]
    fn secret_values_never_reach_a_reply_and_saves_keep_or_replace_them() {
        let mut stored = job();
        stored
            .secret_env
            .insert("DB_PASSWORD".into(), "hunter22".into());
        stored.secret_env.insert("API_KEY".into(), "k-123".into());
        let reply = stored.to_proto(7);
        let names = reply.secret_env.clone().expect("names are shown");
        assert_eq!(names.values.len(), 2);
        assert!(names.values.values().all(String::is_empty), "{names:?}");
        assert!(!format!("{reply:?}").contains("hunter22"));

        // Saving a reply as it came (names with empty values) keeps every value.
        let mut again = JobDefinition::from_proto(&reply, true).expect("valid");
        again.resolve_secret_env(true, Some(&stored)).expect("kept");
        assert_eq!(again.secret_env, stored.secret_env);
        // Absent keeps them too (a client that knows nothing of secrets).
        let mut plain = reply.clone();
        plain.secret_env = None;
        let mut unaware = JobDefinition::from_proto(&plain, true).expect("valid");
        unaware
            .resolve_secret_env(false, Some(&stored))
            .expect("kept");
        assert_eq!(unaware.secret_env, stored.secret_env);
        // A new value replaces, a name left out is removed.
        let mut changed = reply.clone();
        changed.secret_env = Some(pb::SecretEnv {
            values: [("DB_PASSWORD".to_owned(), "new-one".to_owned())].into(),
        });
        let mut replaced = JobDefinition::from_proto(&changed, true).expect("valid");
        replaced
            .resolve_secret_env(true, Some(&stored))
            .expect("set");
        assert_eq!(
            replaced.secret_env,
            [("DB_PASSWORD".to_owned(), "new-one".to_owned())].into()
        );
        // An empty value with nothing stored is refused, naming the variable.
        let mut fresh = JobDefinition::from_proto(&reply, true).expect("valid");
        let e = fresh
            .resolve_secret_env(true, None)
            .expect_err("nothing to keep");
        assert_eq!(e.field, "secretEnv.API_KEY");
    }

    #[test]
    fn a_variable_is_plain_or_secret_and_both_count_toward_the_limits() {
        let mut j = job();
        j.env.insert("TOKEN".into(), "a".into());
        j.secret_env.insert("TOKEN".into(), "b".into());
        assert_eq!(j.validate().expect_err("both").field, "secretEnv.TOKEN");
        let mut j = job();
        j.secret_env.insert("1BAD".into(), "x".into());
        assert_eq!(j.validate().expect_err("name").field, "secretEnv.1BAD");
        let mut j = job();
        for i in 0..MAX_ENV_VARS {
            j.env.insert(format!("E{i}"), "1".into());
        }
        j.secret_env.insert("S".into(), "1".into());
        assert_eq!(j.validate().expect_err("count").field, "env");
    }

    /// A change that makes a job invalid.
    type Mutation = Box<dyn Fn(&mut JobDefinition)>;

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|j| j.name = String::new()), "name"),
            (Box::new(|j| j.name = "a/b".into()), "name"),
            (Box::new(|j| j.name = "has space".into()), "name"),
            (Box::new(|j| j.name = "x".repeat(129)), "name"),
            (Box::new(|j| j.name = "..".into()), "name"),
            (Box::new(|j| j.command = "  ".into()), "command"),
            (
                Box::new(|j| j.command = "x".repeat(MAX_COMMAND_BYTES + 1)),
                "command",
            ),
            (
                Box::new(|j| j.cron_expr = "61 * * * *".into()),
                "cronExpr.minute",
            ),
            (Box::new(|j| j.cron_expr = "0 0 30 2 *".into()), "cronExpr"),
            (
                Box::new(|j| j.time_zone = "Nowhere/City".into()),
                "timeZone",
            ),
            (
                Box::new(|j| j.timeout_seconds = MAX_SECONDS + 1),
                "timeoutSeconds",
            ),
            (
                Box::new(|j| j.missed_policy = MissedPolicy::All),
                "missedWindowSeconds",
            ),
            (
                Box::new(|j| j.working_dir = "relative/dir".into()),
                "workingDir",
            ),
            (
                Box::new(|j| {
                    j.env.insert("1BAD".into(), "v".into());
                }),
                "env.1BAD",
            ),
            (Box::new(|j| j.user = "Root User".into()), "user"),
            (
                Box::new(|j| j.cron_expr = "@at 2020-01-01T00:00:00Z".into()),
                "cronExpr",
            ),
            (Box::new(|j| j.end_at = Some(1_000)), "endAt"),
            (Box::new(|j| j.start_at = Some(i64::MAX)), "startAt"),
            (
                Box::new(|j| {
                    j.start_at = Some(4_102_444_800_000);
                    j.end_at = Some(4_102_444_800_000);
                }),
                "endAt",
            ),
        ];
        for (mutate, field) in cases {
            let mut j = job();
            mutate(&mut j);
            match j.validate_for_save(Utc::now()) {
                Ok(_) => panic!("expected {field} to be rejected"),
                Err(e) => assert_eq!(e.field, field, "{e}"),
            }
        }
        assert!(job().validate_for_save(Utc::now()).is_ok());
    }

    #[test]
    fn a_stored_job_past_its_last_slot_is_valid_but_cannot_be_saved() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("test time")
                .with_timezone(&Utc)
        };
        let mut once = JobDefinition::new("once", "true", "@at 2027-01-01T09:00:00+01:00");
        let before = at("2026-06-01T00:00:00Z");
        let after = at("2027-06-01T00:00:00Z");
        let schedule = once
            .validate_for_save(before)
            .expect("saved before its instant");
        assert_eq!(
            schedule.next_after(before),
            Some(at("2027-01-01T08:00:00Z"))
        );
        // After its instant a worker still reads it: no more slots, not invalid.
        assert!(once.validate().expect("stored").next_after(after).is_none());
        let e = once.validate_for_save(after).expect_err("in the past");
        assert_eq!(e.field, "cronExpr");
        assert!(e.message.contains("is in the past"), "{e}");

        // The same for an end: bounds apply to every slot.
        once.cron_expr = "0 * * * *".into();
        once.start_at = Some(at("2027-01-01T00:30:00Z").timestamp_millis());
        once.end_at = Some(at("2027-01-01T03:00:00Z").timestamp_millis());
        let slots: Vec<_> = once
            .validate_for_save(before)
            .expect("bounded")
            .times_after(before)
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            slots,
            [
                "2027-01-01T01:00:00+00:00",
                "2027-01-01T02:00:00+00:00",
                "2027-01-01T03:00:00+00:00"
            ]
        );
        assert!(once.validate().expect("stored").next_after(after).is_none());
        let e = once.validate_for_save(after).expect_err("ended");
        assert_eq!(e.field, "endAt");
        assert!(e.message.contains("is in the past"), "{e}");
    }

    #[test]
    fn bounds_round_trip_and_are_left_out_when_absent() {
        let plain = String::from_utf8(job().to_json()).expect("utf8");
        assert!(
            !plain.contains("startAt") && !plain.contains("endAt"),
            "{plain}"
        );
        let mut j = job();
        j.start_at = Some(1_800_000_000_000);
        j.end_at = Some(1_900_000_000_000);
        let json = String::from_utf8(j.to_json()).expect("utf8");
        assert!(json.contains("\"startAt\":1800000000000"), "{json}");
        assert!(json.contains("\"endAt\":1900000000000"), "{json}");
        assert_eq!(JobDefinition::from_json(json.as_bytes()).expect("parse"), j);
        let p = j.to_proto(3);
        assert_eq!((p.start_at_ms, p.end_at_ms), (j.start_at, j.end_at));
        assert_eq!(JobDefinition::from_proto(&p, true).expect("valid"), j);
    }

    #[test]
    fn proto_round_trip_and_unknown_enums() {
        let mut j = job();
        j.missed_policy = MissedPolicy::Latest;
        let p = j.to_proto(7);
        assert_eq!(p.revision, 7);
        assert_eq!(JobDefinition::from_proto(&p, true).expect("valid"), j);
        let mut bad = p.clone();
        bad.overlap_policy = 42;
        assert_eq!(
            JobDefinition::from_proto(&bad, true).map_err(|e| e.field),
            Err("overlapPolicy".into())
        );
        let mut unset = p;
        unset.enabled = None;
        assert!(
            !JobDefinition::from_proto(&unset, false)
                .expect("valid")
                .enabled
        );
    }
}
