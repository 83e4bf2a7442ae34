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
//! | once | `@at <RFC 3339 time>`, e.g. `@at 2027-01-01T09:00:00Z`, `@at 2027-01-01T10:00:00+01:00` |
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
//! `@at <time>` has one slot, at that instant (the time's offset decides it; the time zone only
//! shows it); once it has passed the schedule has no more slots.
//!
//! A schedule may be bounded ([`Schedule::with_bounds`], a job's `startAt` and `endAt`): no slot
//! before the start or after the end (both included). The bounds filter the slots, they do not
//! shift them: `@every 1h` from 10:30 fires at 11:00, 12:00, ...
//!
//! Parsing a stored job ([`Schedule::parse_stored_for`]) does not depend on the time: a schedule
//! whose last slot has passed still parses, it just has no more slots. Saving checks that there
//! is a slot to come ([`Schedule::check_fires_after`]; the `parse_*at` and `parse`/`parse_for`
//! constructors do both).
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
//! Parsing is done by [`croner`]; this crate adds `@every`, `@at`, bounds, names the field that is wrong in
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
mod once;
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
    /// `@at`: one slot.
    At(DateTime<Utc>),
}

/// A parsed, validated schedule in a time zone, optionally bounded.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    rule: Rule,
    tz: Tz,
    /// No slot before this.
    start: Option<DateTime<Utc>>,
    /// No slot after this.
    end: Option<DateTime<Utc>>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expr", &self.expr)
            .field("tz", &self.tz)
            .field("start", &self.start)
            .field("end", &self.end)
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
                 @midnight, @hourly, @every <duration> or @at <time>"
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

/// `t` as RFC 3339 in `tz`.
fn shown(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
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
        let schedule = Self::parse_inner(None, expr, time_zone)?;
        schedule.check_fires_after(now)?;
        Ok(schedule)
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
        let schedule = Self::parse_stored_for(job, expr, time_zone)?;
        schedule.check_fires_after(now)?;
        Ok(schedule)
    }

    /// Parses `expr` of the job named `job` in `time_zone` and checks it has a fire time after
    /// the current time.
    pub fn parse_for(job: &str, expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_for_at(job, expr, time_zone, Utc::now())
    }

    /// Parses the stored expression `expr` of the job named `job` in `time_zone`, without the
    /// check that it still fires: whatever the time, a valid expression parses, and one whose
    /// last slot has passed (an `@at` in the past) has no more slots.
    pub fn parse_stored_for(job: &str, expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_inner(Some(job), expr, time_zone)
    }

    /// Parses `expr` in `time_zone` as [`Schedule::parse_stored_for`] does, for no job: `H` is
    /// refused, as in [`Schedule::parse_at`].
    pub fn parse_stored(expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_inner(None, expr, time_zone)
    }

    fn parse_inner(job: Option<&str>, expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_time_zone(time_zone)?;
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::expr("must not be empty"));
        }
        let rule = if let Some(rest) = strip_macro(trimmed, "@every") {
            Rule::Every(parse_every(rest)?)
        } else if let Some(rest) = strip_macro(trimmed, "@at") {
            Rule::At(once::parse_at_time(rest)?)
        } else {
            Rule::Cron(cron_text(trimmed, job)?)
        };
        Ok(Self {
            expr: trimmed.to_owned(),
            rule,
            tz,
            start: None,
            end: None,
        })
    }

    /// Parses `expr` in `time_zone` and checks it has a fire time after the current time; `H`
    /// is refused, as in [`Schedule::parse_at`].
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse_at(expr, time_zone, Utc::now())
    }

    /// The schedule with no slot before `start` or after `end` (each included when it is a slot
    /// itself); `None` leaves that side open. An end not after the start is refused, naming
    /// `endAt`.
    pub fn with_bounds(
        mut self,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, ScheduleError> {
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                return Err(ScheduleError {
                    field: "endAt".to_owned(),
                    message: format!(
                        "{} must be after startAt ({})",
                        shown(end, self.tz),
                        shown(start, self.tz)
                    ),
                });
            }
        }
        self.start = start;
        self.end = end;
        Ok(self)
    }

    /// Checks that the schedule has a slot after `now`, as a save requires. The error names
    /// what makes it never fire: `cronExpr` for an `@at` in the past or an expression with no
    /// slot to come (within the bounds), `endAt` for an end in the past.
    pub fn check_fires_after(&self, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        if self.next_after(now).is_some() {
            return Ok(());
        }
        let when = shown(now, self.tz);
        if let Rule::At(at) = self.rule {
            if at <= now {
                return Err(ScheduleError::expr(format!(
                    "{:?} is in the past (now is {when}): it would never fire",
                    self.expr
                )));
            }
        }
        if let Some(end) = self.end.filter(|end| *end <= now) {
            return Err(ScheduleError {
                field: "endAt".to_owned(),
                message: format!(
                    "{} is in the past (now is {when}): the job would never fire",
                    shown(end, self.tz)
                ),
            });
        }
        let within = match (self.start, self.end) {
            (None, None) => String::new(),
            (Some(s), None) => format!(" from startAt {}", shown(s, self.tz)),
            (None, Some(e)) => format!(" until endAt {}", shown(e, self.tz)),
            (Some(s), Some(e)) => format!(
                " between startAt {} and endAt {}",
                shown(s, self.tz),
                shown(e, self.tz)
            ),
        };
        Err(ScheduleError::expr(format!(
            "{:?} never fires after {when}{within}",
            self.expr
        )))
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

    /// The fire times strictly after `t` and within the bounds, in order (the expression is
    /// parsed once per call).
    pub fn times_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let cron = match &self.rule {
            Rule::Cron(text) => compile(text),
            Rule::Every(_) | Rule::At(_) => None,
        };
        // Slots are whole milliseconds: strictly after the millisecond before the start is the
        // start or later.
        let from = match self.start {
            Some(start) if start > t => start
                .checked_sub_signed(chrono::TimeDelta::milliseconds(1))
                .unwrap_or(t),
            _ => t,
        };
        let end = self.end;
        let mut cursor = Some(from);
        std::iter::from_fn(move || {
            let next = self.step(cron.as_ref(), cursor?);
            cursor = next;
            next
        })
        .take_while(move |slot| end.is_none_or(|end| *slot <= end))
    }

    /// The first fire time strictly after `t`, bounds aside; `cron` is the parsed expression of
    /// a cron rule.
    fn step(&self, cron: Option<&Cron>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok()?;
                let ms = t.timestamp_millis();
                let next = ms.div_euclid(step).checked_add(1)?.checked_mul(step)?;
                Utc.timestamp_millis_opt(next).single()
            }
            Rule::At(at) => (*at > t).then_some(*at),
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

    /// The schedule in plain words, with its bounds.
    pub fn describe(&self) -> String {
        let rule = match &self.rule {
            Rule::Every(d) => format!("Every {}", humantime::format_duration(*d)),
            Rule::At(at) => format!("Once, at {}", shown(*at, self.tz)),
            Rule::Cron(text) => compile(text).map_or_else(|| text.clone(), |c| c.describe()),
        };
        let start = self.start.map(|s| format!(", from {}", shown(s, self.tz)));
        let end = self.end.map(|e| format!(", until {}", shown(e, self.tz)));
        format!(
            "{rule}{}{}",
            start.unwrap_or_default(),
            end.unwrap_or_default()
        )
    }
}

/// What follows the macro `name` (any case) at the start of `expr`, if `expr` starts with it.
fn strip_macro<'a>(expr: &'a str, name: &str) -> Option<&'a str> {
    let head = expr.get(..name.len())?;
    head.eq_ignore_ascii_case(name).then(|| &expr[name.len()..])
}
