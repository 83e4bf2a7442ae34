//! The distcron cron dialect.
//!
//! One dialect, shared by jobsvc (validation and previews) and the worker (scheduling):
//!
//! | form | fields |
//! |---|---|
//! | 5 fields | `min hour dom month dow` (classic crontab; seconds = 0) |
//! | 6 fields | `sec min hour dom month dow` |
//! | 7 fields | `sec min hour dom month dow year` |
//! | macros | `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly` |
//! | interval | `@every <duration>`, e.g. `@every 90s`, `@every 1h30m` |
//!
//! Fields accept `*`, `?`, lists `,`, ranges `-`, steps `/`, month and weekday names (any case,
//! full or three letters: `FRI`, `friday`, in the month and day-of-week fields only),
//! `L` (last day of month, or `5L` last Friday), `W` (`15W`, nearest weekday) and `#` (`FRI#3`).
//! A number with a step, `N/S`, runs from `N` to the field's last value (`3/3` in the month field:
//! March, June, September, December), as in cronexpr and Quartz; the last weekday is 6 (Saturday).
//! A step must be less than the number of values in its field (`*/60` in seconds is refused, with
//! a hint at `@every 60s`).
//! Weekdays are numbered as in crontab: `0` and `7` are Sunday, `1` is Monday. When both
//! day-of-month and day-of-week are restricted a day matches if either matches (Vixie cron).
//!
//! Schedules are evaluated in an IANA time zone (default UTC). When a wall-clock time falls in a
//! daylight-saving gap it fires at the first instant after the gap; in an overlap (a repeated hour)
//! it fires once, at the first occurrence.
//!
//! `@every <d>` fires at the instants that are whole multiples of `d` since the Unix epoch, so every
//! worker computes the same slots without sharing state; `d` is whole seconds, 1 s to 366 days.
//!
//! `H` (Jenkins) stands for a value hashed from the job's name, in every field: `H`, `H(a-b)`,
//! `H/s`, `H(a-b)/s` (`H H(2-5) * * *`: a minute and an hour from 2 to 5 that are the job's own).
//! The hash is 64-bit FNV-1a of `<job name>/<field>`; the forms and their values are in the
//! `hashed` module's documentation and the README. [`Schedule::parse_for`] takes the job's name.
//!
//! The seed (gorhill/cronexpr) read six fields as `min hour dom month dow year`; an expression
//! that arrives through the seed's routes or in a seed-era stored job is converted with
//! [`seed_to_stored`] (`*/5 * * * * *` → `0 */5 * * * * *`) and the seven-field form is stored.
//!
//! Parsing is done by [`croner`]; this crate adds `@every`, names the field that is wrong in
//! errors, and rejects expressions with no future fire time and fields beyond the seventh.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

mod fields;
mod hashed;
mod seed;

pub use seed::seed_to_stored;

/// Why an expression or time zone was rejected. `field` names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// The part of the input that is wrong: `timeZone`, `cronExpr`, or `cronExpr.<field>` such
    /// as `cronExpr.minute`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ScheduleError {
    fn expr(message: impl Into<String>) -> Self {
        Self {
            field: "cronExpr".to_owned(),
            message: message.into(),
        }
    }
}

/// The longest interval `@every` accepts.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// The most fire times [`Schedule::upcoming`] returns.
pub const MAX_PREVIEW: usize = 100;

#[derive(Clone)]
enum Rule {
    /// The text croner parses, validated; parsed again for each evaluation
    /// ([`Schedule::times_after`]), because a parsed `Cron` holds about 5 KB (a byte for every
    /// possible year), which for a worker scheduling 10,000 jobs would be most of its memory.
    Cron(String),
    Every(Duration),
}

/// A parsed, validated schedule in a time zone.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    rule: Rule,
    tz: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expr", &self.expr)
            .field("tz", &self.tz)
            .finish()
    }
}

/// Parses an IANA time zone name; empty means UTC.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| ScheduleError {
        field: "timeZone".to_owned(),
        message: format!("unknown IANA time zone {name:?} (e.g. \"Europe/Berlin\", \"UTC\")"),
    })
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Optional)
        .build()
}

fn parse_every(rest: &str) -> Result<Duration, ScheduleError> {
    let text = rest.trim();
    if text.is_empty() {
        return Err(ScheduleError::expr(
            "@every needs a duration, e.g. \"@every 30s\"",
        ));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| ScheduleError::expr(format!("@every: bad duration {text:?}: {e}")))?;
    if d.subsec_nanos() != 0 {
        return Err(ScheduleError::expr(
            "@every: the duration must be whole seconds",
        ));
    }
    if d < Duration::from_secs(1) || d > MAX_EVERY {
        return Err(ScheduleError::expr(
            "@every: the duration must be between 1s and 366 days",
        ));
    }
    Ok(d)
}

/// Finds which field of a failing field-based expression is wrong, by parsing each field alone
/// (rewritten) with every other field set to `*`.
fn blame_field(rewritten: &[String]) -> Option<usize> {
    let p = parser();
    (0..rewritten.len()).find(|&i| {
        let probe: Vec<&str> = (0..rewritten.len())
            .map(|j| if i == j { rewritten[i].as_str() } else { "*" })
            .collect();
        p.parse(&probe.join(" ")).is_err()
    })
}

/// Parses text that [`cron_text`] accepted.
fn compile(text: &str) -> Option<Cron> {
    parser().parse(text).ok()
}

/// The text croner parses for `expr` (macros resolved, fields rewritten and separated by one
/// space; `job` is the job's name, which `H` needs), once croner has accepted it.
fn cron_text(expr: &str, job: Option<&str>) -> Result<String, ScheduleError> {
    let trimmed = expr.trim();
    let lowered = trimmed.to_ascii_lowercase();
    let text = match lowered.as_str() {
        "@midnight" => "@daily",
        "@reboot" => {
            return Err(ScheduleError::expr(
                "@reboot is not supported: a cluster has no boot",
            ))
        }
        _ => trimmed,
    };
    if text.starts_with('@') {
        return parser().parse(text).map(|_| text.to_owned()).map_err(|_| {
            ScheduleError::expr(format!(
                "unknown macro {text:?}; use @yearly, @annually, @monthly, @weekly, @daily, \
                 @midnight, @hourly or @every <duration>"
            ))
        });
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if let Some(extra) = fields.get(7..).filter(|extra| !extra.is_empty()) {
        return Err(ScheduleError::expr(format!(
            "{} fields; at most 7 (sec min hour dom month dow year): {:?} after the year {} \
             extra (the seed's cronexpr ignored such fields without a word); remove {}",
            fields.len(),
            extra.join(" "),
            if extra.len() == 1 { "is" } else { "are" },
            if extra.len() == 1 { "it" } else { "them" },
        )));
    }
    let Some(layout) = fields::layout(fields.len()) else {
        return Err(ScheduleError::expr(format!(
            "expected 5 fields (min hour dom month dow), 6 (sec min hour dom month dow) or 7 \
             (sec min hour dom month dow year), got {}",
            fields.len()
        )));
    };
    let rewritten = layout
        .iter()
        .zip(&fields)
        .map(|(field, text)| fields::rewrite(*field, text, job))
        .collect::<Result<Vec<_>, _>>()?;
    let text = rewritten.join(" ");
    parser()
        .parse(&text)
        .map(|_| text)
        .map_err(|e| match blame_field(&rewritten) {
            Some(i) => layout[i].error(fields[i], e),
            None => ScheduleError::expr(e.to_string()),
        })
}

impl Schedule {
    /// Parses `expr` in time zone `time_zone` (empty = UTC) and checks that it has a fire time
    /// after `now`. Without a job's name, `H` is refused (the error names `name`); see
    /// [`Schedule::parse_for_at`].
    pub fn parse_at(
        expr: &str,
        time_zone: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        Self::parse_inner(None, expr, time_zone, now)
    }

    /// Parses `expr` of the job named `job` in time zone `time_zone` (empty = UTC), its `H` forms
    /// hashed from `job` (see the crate's documentation), and checks that it has a fire time
    /// after `now`.
    pub fn parse_for_at(
        job: &str,
        expr: &str,
        time_zone: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        Self::parse_inner(Some(job), expr, time_zone, now)
    }

    /// Parses `expr` of the job named `job` in `time_zone` and checks it has a fire time after
    /// the current time.
    pub fn parse_for(job: &str, expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_for_at(job, expr, time_zone, Utc::now())
    }

    fn parse_inner(
        job: Option<&str>,
        expr: &str,
        time_zone: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        let tz = parse_time_zone(time_zone)?;
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::expr("must not be empty"));
        }
        let rule = match trimmed.get(..6) {
            Some(head) if head.eq_ignore_ascii_case("@every") => {
                Rule::Every(parse_every(&trimmed[6..])?)
            }
            _ => Rule::Cron(cron_text(trimmed, job)?),
        };
        let schedule = Self {
            expr: trimmed.to_owned(),
            rule,
            tz,
        };
        if schedule.next_after(now).is_none() {
            return Err(ScheduleError::expr(format!(
                "{trimmed:?} never fires after {}",
                now.with_timezone(&tz).to_rfc3339()
            )));
        }
        Ok(schedule)
    }

    /// Parses `expr` in `time_zone` and checks it has a fire time after the current time; `H`
    /// is refused, as in [`Schedule::parse_at`].
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_at(expr, time_zone, Utc::now())
    }

    /// The expression as given (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone the schedule is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`, or `None` if there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.times_after(t).next()
    }

    /// The fire times strictly after `t`, in order (the expression is parsed once per call).
    pub fn times_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let cron = match &self.rule {
            Rule::Cron(text) => compile(text),
            Rule::Every(_) => None,
        };
        let mut cursor = Some(t);
        std::iter::from_fn(move || {
            let next = self.step(cron.as_ref(), cursor?);
            cursor = next;
            next
        })
    }

    /// The first fire time strictly after `t`; `cron` is the parsed expression of a cron rule.
    fn step(&self, cron: Option<&Cron>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok()?;
                let ms = t.timestamp_millis();
                let next = ms.div_euclid(step).checked_add(1)?.checked_mul(step)?;
                Utc.timestamp_millis_opt(next).single()
            }
            Rule::Cron(_) => {
                let local = t.with_timezone(&self.tz);
                cron?
                    .find_next_occurrence(&local, false)
                    .ok()
                    .map(|n| n.with_timezone(&Utc))
            }
        }
    }

    /// The next `count` fire times (at most [`MAX_PREVIEW`]) strictly after `after`, in the
    /// schedule's time zone.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        self.times_after(after)
            .take(count.min(MAX_PREVIEW))
            .map(|t| t.with_timezone(&self.tz))
            .collect()
    }

    /// The schedule in plain words.
    pub fn describe(&self) -> String {
        match &self.rule {
            Rule::Every(d) => format!("Every {}", humantime::format_duration(*d)),
            Rule::Cron(text) => compile(text).map_or_else(|| text.clone(), |c| c.describe()),
        }
    }
}
