//! Jenkins-style `H`: a field value derived from a stable hash of the job's name, so that jobs
//! written `H * * * *` spread over the hour instead of all starting at minute 0, and each job
//! keeps its minute from one save, version and machine to the next.
//!
//! The hash of a field is 64-bit FNV-1a over the UTF-8 bytes of `<job name>/<field>`, where
//! `<field>` is the field's name in errors (`second`, `minute`, `hour`, `dayOfMonth`, `month`,
//! `dayOfWeek`, `year`): `backup/minute`. Each field thus gets its own value. With `h` that hash
//! and `first`-`last` the field's values:
//!
//! | form | value |
//! |---|---|
//! | `H` | `first + h % count`; in day-of-month over 1-28, so it exists in every month |
//! | `H(a-b)` | `a + h % (b - a + 1)` |
//! | `H/s` | every `s` from `first + h % s` to `last` |
//! | `H(a-b)/s` | every `s` from `a + h % min(s, b - a + 1)` to `b` |
//!
//! The forms are expanded to these numbers before croner parses the expression, so a preview
//! shows the concrete times the job got.

use crate::fields::Field;
use crate::ScheduleError;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The hash `H` uses for `field` of job `job`.
fn hash_of(job: &str, field: Field) -> u64 {
    fnv1a64(format!("{job}/{}", field.name()).as_bytes())
}

/// `h % n` for a count of field values `n` (at least 1).
fn pick(h: u64, n: u32) -> u32 {
    // The remainder is below `n`, so it fits.
    u32::try_from(h % u64::from(n.max(1))).unwrap_or(0)
}

/// Expands one `H` item of `field` (`text` is the whole field, for errors): `range` is what
/// follows the `H` (empty or `(a-b)`), `step` the checked step if any, `job` the job's name.
pub(crate) fn expand(
    field: Field,
    text: &str,
    range: &str,
    step: Option<u32>,
    job: Option<&str>,
) -> Result<String, ScheduleError> {
    let Some(job) = job else {
        return Err(ScheduleError {
            field: "name".to_owned(),
            message: format!(
                "required when cronExpr uses H ({:?} in {}): H's values are hashed from the \
                 job's name",
                text,
                field.name()
            ),
        });
    };
    let (lo, hi) = bounds(field, text, range, step.is_some())?;
    let h = hash_of(job, field);
    Ok(match step {
        None => (lo + pick(h, hi - lo + 1)).to_string(),
        Some(s) => format!("{}-{hi}/{s}", lo + pick(h, s.min(hi - lo + 1))),
    })
}

/// The values an `H` item picks from: its explicit `(a-b)`, else the field's (day-of-month
/// 1-28 for a single value).
fn bounds(
    field: Field,
    text: &str,
    range: &str,
    stepped: bool,
) -> Result<(u32, u32), ScheduleError> {
    let (first, last) = field.range();
    if range.is_empty() {
        let last = if field == Field::DayOfMonth && !stepped {
            28
        } else {
            last
        };
        return Ok((first, last));
    }
    let parsed = range
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((a, b)) if first <= a && a <= b && b <= last => Ok((a, b)),
        Some(_) => Err(field.error(
            text,
            format!(
                "H(a-b) needs {first} <= a <= b <= {last}, the values of {}",
                field.name()
            ),
        )),
        None => Err(field.error(text, "H takes a range as H(a-b), e.g. H(0-29)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn forms_expand_within_their_bounds() {
        let ex = |field, range, step| expand(field, "H", range, step, Some("backup")).unwrap();
        let h = hash_of("backup", Field::Minute);
        assert_eq!(ex(Field::Minute, "", None), (h % 60).to_string());
        assert_eq!(
            ex(Field::Minute, "(0-29)", Some(10)),
            format!("{}-29/10", h % 10)
        );
        assert_eq!(ex(Field::Minute, "", Some(15)), format!("{}-59/15", h % 15));
        assert_eq!(
            ex(Field::Minute, "(40-44)", Some(10)),
            format!("{}-44/10", 40 + h % 5)
        );
        let dom: u32 = ex(Field::DayOfMonth, "", None).parse().unwrap();
        assert!((1..=28).contains(&dom));
        for (range, needle) in [
            ("(5-3)", "a <= b"),
            ("(0-60)", "<= 59"),
            ("(1-", "H(a-b)"),
            ("X", "H(a-b)"),
        ] {
            let e = expand(Field::Minute, "H", range, None, Some("j")).unwrap_err();
            assert_eq!(e.field, "cronExpr.minute");
            assert!(e.message.contains(needle), "{range}: {}", e.message);
        }
        let e = expand(Field::Hour, "H", "", None, None).unwrap_err();
        assert_eq!(e.field, "name");
    }
}
