//! The fields of a field-based expression, and each field rewritten into the numeric form croner
//! parses: month and weekday names resolved to numbers, in their own field only, and `N/S`
//! widened to `N-last/S` (from `N`, every `S`, to the field's last value) as cronexpr and Quartz
//! read it; `H` forms are expanded to the job's values ([`crate::hashed`]). A step must be less than the number of values in its field: `*/60` in seconds would
//! fire once a minute at second 0, which is not what anyone writing it means, and cronexpr
//! refused it.

use crate::ScheduleError;

/// One field of a field-based expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

const FIVE: [Field; 5] = [
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];
const SIX: [Field; 6] = [
    Field::Second,
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];
const SEVEN: [Field; 7] = [
    Field::Second,
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
    Field::Year,
];

/// The fields of an expression of `count` fields, in order, or `None` for a count the dialect
/// does not have.
pub(crate) fn layout(count: usize) -> Option<&'static [Field]> {
    match count {
        5 => Some(&FIVE),
        6 => Some(&SIX),
        7 => Some(&SEVEN),
        _ => None,
    }
}

const MONTHS: [&str; 12] = [
    "JANUARY",
    "FEBRUARY",
    "MARCH",
    "APRIL",
    "MAY",
    "JUNE",
    "JULY",
    "AUGUST",
    "SEPTEMBER",
    "OCTOBER",
    "NOVEMBER",
    "DECEMBER",
];
const WEEKDAYS: [&str; 7] = [
    "SUNDAY",
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
];

impl Field {
    /// The field's name in errors (`cronExpr.<name>`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::DayOfMonth => "dayOfMonth",
            Self::Month => "month",
            Self::DayOfWeek => "dayOfWeek",
            Self::Year => "year",
        }
    }

    /// The number a word stands for in this field (full or three-letter name, upper case), if
    /// the field has names.
    fn number_of(self, word: &str) -> Option<usize> {
        let names: &[&str] = match self {
            Self::Month => &MONTHS,
            Self::DayOfWeek => &WEEKDAYS,
            _ => return None,
        };
        let first = usize::from(self == Self::Month);
        names
            .iter()
            .position(|full| word == *full || (word.len() == 3 && full.starts_with(word)))
            .map(|i| i + first)
    }

    /// The field's first and last value as cronexpr numbers them (day-of-week 0-6, Sunday 0; `7`
    /// is accepted as Sunday but is not in the range; years 1970-2099).
    pub(crate) fn range(self) -> (u32, u32) {
        match self {
            Self::Second | Self::Minute => (0, 59),
            Self::Hour => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::Month => (1, 12),
            Self::DayOfWeek => (0, 6),
            Self::Year => (1970, 2099),
        }
    }

    /// The letters the field takes besides names: `H` in every field, `L` and `W` in
    /// day-of-month (`L`, `15W`, `LW`), `L` in day-of-week (`5L`).
    fn takes_letters(self, word: &str) -> bool {
        if word == "H" {
            return true;
        }
        match self {
            Self::DayOfMonth => matches!(word, "L" | "W" | "LW"),
            Self::DayOfWeek => word == "L",
            _ => false,
        }
    }

    /// The error for this field's text `text`.
    pub(crate) fn error(self, text: &str, detail: impl std::fmt::Display) -> ScheduleError {
        let name = self.name();
        ScheduleError {
            field: format!("cronExpr.{name}"),
            message: format!("invalid {name} field {text:?}: {detail}"),
        }
    }
}

/// Rewrites one field for croner: names become numbers ([`resolve_names`]), then each item of the
/// list is rewritten ([`rewrite_item`]); `job` is the job's name, which `H` needs.
pub(crate) fn rewrite(
    field: Field,
    text: &str,
    job: Option<&str>,
) -> Result<String, ScheduleError> {
    let numeric = resolve_names(field, text)?;
    let items = numeric
        .split(',')
        .map(|item| rewrite_item(field, text, item, job))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(items.join(","))
}

/// Rewrites one item of a field's list (`text` is the whole field, for errors): `H` forms
/// become the job's values, `N/S` becomes `N-last/S` (croner refuses a single number with a
/// step).
fn rewrite_item(
    field: Field,
    text: &str,
    item: &str,
    job: Option<&str>,
) -> Result<String, ScheduleError> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(check_step(field, text, step)?)),
        None => (item, None),
    };
    if let Some(range) = base.strip_prefix('H') {
        return crate::hashed::expand(field, text, range, step, job);
    }
    let Some(step) = step else {
        return Ok(item.to_owned());
    };
    if base.is_empty() || !base.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(item.to_owned());
    }
    let (first, last) = field.range();
    match base.parse::<u32>() {
        Ok(n) if (first..=last).contains(&n) => Ok(format!("{n}-{last}/{step}")),
        _ => Err(field.error(
            text,
            format!(
                "{base} is outside {first}-{last}, the values of {}",
                field.name()
            ),
        )),
    }
}

/// Refuses a step that is not a number, is 0, or is at least the number of values in the field
/// (it would fire once), with a hint at what to write instead.
fn check_step(field: Field, text: &str, step: &str) -> Result<u32, ScheduleError> {
    let (first, last) = field.range();
    let size = last - first + 1;
    let n: u32 = step
        .parse()
        .map_err(|_| field.error(text, format!("step {step:?} is not a number")))?;
    if n == 0 {
        return Err(field.error(text, "a step must be at least 1"));
    }
    if n >= size {
        let name = field.name();
        return Err(field.error(
            text,
            format!(
                "a step of {n} is not less than the {size} values of {name} ({first}-{last}), \
                 so it would fire only once; {}",
                instead(field, n)
            ),
        ));
    }
    Ok(n)
}

/// What to write instead of a step of `n` that does not fit in `field`.
fn instead(field: Field, n: u32) -> String {
    let every = |unit: &str, whole: &str| {
        format!("use \"@every {n}{unit}\" for an interval that does not divide {whole}")
    };
    match field {
        Field::Second => every("s", "a minute"),
        Field::Minute => every("m", "an hour"),
        Field::Hour => every("h", "a day"),
        Field::DayOfMonth => every("d", "a month"),
        Field::Month => "list the months instead (\"1,7\")".to_owned(),
        Field::DayOfWeek => "list the weekdays instead (\"MON,THU\")".to_owned(),
        Field::Year => "list the years instead (\"2027,2031\")".to_owned(),
    }
}

/// Month and weekday names (any case, full or three letters) become numbers; letters that are not
/// a name of the field, nor `L`/`W` where those apply, are refused (croner would read `MON` in any
/// field as 1).
fn resolve_names(field: Field, text: &str) -> Result<String, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    let mut out = String::with_capacity(upper.len());
    let mut rest = upper.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        match field.number_of(word) {
            // After a `-`, Sunday ends a range as 7 (`MON-SUN`).
            Some(0) if out.ends_with('-') => out.push('7'),
            Some(n) => out.push_str(&n.to_string()),
            None if field.takes_letters(word) => out.push_str(word),
            None => return Err(field.error(text, unknown_word(field, word))),
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unknown_word(field: Field, word: &str) -> String {
    match field {
        Field::Month => format!("{word:?} is not a month (JAN or JANUARY, any case)"),
        Field::DayOfWeek => format!("{word:?} is not a weekday (MON or MONDAY, any case, or L)"),
        Field::DayOfMonth => format!("{word:?} is not allowed here (L, W or LW)"),
        _ => format!("{word:?} is not allowed here (numbers or H)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` in `field` as it is handed to croner, which must succeed.
    fn ok(field: Field, text: &str) -> String {
        rewrite(field, text, None).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_number_with_a_step_runs_to_the_last_value() {
        assert_eq!(ok(Field::Month, "3/3"), "3-12/3");
        assert_eq!(ok(Field::Second, "5/15"), "5-59/15");
        assert_eq!(ok(Field::DayOfWeek, "mon/2"), "1-6/2");
        assert_eq!(ok(Field::Year, "2027/2"), "2027-2099/2");
        assert_eq!(ok(Field::Minute, "0/20,45"), "0-59/20,45");
        assert_eq!(ok(Field::Hour, "*/6"), "*/6");
        assert_eq!(ok(Field::Hour, "1-10/3"), "1-10/3");
        for (field, text) in [(Field::Minute, "60/5"), (Field::DayOfMonth, "0/2")] {
            let e = rewrite(field, text, None).err();
            assert_eq!(
                e.map(|e| e.field),
                Some(format!("cronExpr.{}", field.name())),
                "{text}"
            );
        }
    }

    #[test]
    fn steps_that_fire_once_are_refused_with_a_hint() {
        assert_eq!(ok(Field::Second, "*/59"), "*/59");
        assert_eq!(ok(Field::DayOfWeek, "*/6"), "*/6");
        assert_eq!(ok(Field::Year, "*/129"), "*/129");
        for (field, text, hint) in [
            (
                Field::Second,
                "*/60",
                "use \"@every 60s\" for an interval that does not divide a minute",
            ),
            (Field::Second, "2-20/61", "\"@every 61s\""),
            (Field::Minute, "*/90", "\"@every 90m\""),
            (Field::Hour, "0/24", "\"@every 24h\""),
            (Field::DayOfMonth, "*/31", "\"@every 31d\""),
            (Field::Month, "*/12", "list the months"),
            (Field::DayOfWeek, "*/7", "list the weekdays"),
            (Field::Year, "2027/130", "list the years"),
            (Field::Minute, "*/0", "at least 1"),
            (Field::Minute, "*/1.5", "not a number"),
            (Field::Minute, "1/2/3", "not a number"),
        ] {
            match rewrite(field, text, None) {
                Ok(r) => panic!("{text} should be refused, got {r}"),
                Err(e) => {
                    assert_eq!(e.field, format!("cronExpr.{}", field.name()), "{text}");
                    assert!(e.message.contains(hint), "{text}: {}", e.message);
                }
            }
        }
    }

    #[test]
    fn names_become_numbers_in_their_own_field_only() {
        assert_eq!(ok(Field::DayOfWeek, "friday"), "5");
        assert_eq!(ok(Field::DayOfWeek, "Mon-Fri"), "1-5");
        assert_eq!(ok(Field::DayOfWeek, "sat-SUNDAY"), "6-7");
        assert_eq!(ok(Field::DayOfWeek, "sun,Wednesday"), "0,3");
        assert_eq!(ok(Field::DayOfWeek, "FRI#3"), "5#3");
        assert_eq!(ok(Field::DayOfWeek, "5L"), "5L");
        assert_eq!(ok(Field::Month, "january"), "1");
        assert_eq!(ok(Field::Month, "Sep-december"), "9-12");
        assert_eq!(ok(Field::DayOfMonth, "15w"), "15W");
        assert_eq!(ok(Field::DayOfMonth, "LW"), "LW");
        for (field, text) in [
            (Field::Minute, "MON"),
            (Field::DayOfWeek, "MAY"),
            (Field::Month, "FRI"),
            (Field::Month, "JANU"),
            (Field::DayOfWeek, "FRIDAYS"),
            (Field::DayOfMonth, "MON"),
        ] {
            let e = rewrite(field, text, None).err();
            assert_eq!(
                e.map(|e| e.field),
                Some(format!("cronExpr.{}", field.name())),
                "{text}"
            );
        }
    }
}
