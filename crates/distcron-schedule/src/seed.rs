//! Expressions written for the seed, read as the seed read them and given in the stored dialect.
//!
//! The seed parsed schedules with gorhill/cronexpr, whose six-field form is
//! `min hour dom month dow year` (seconds 0), where distcron's is `sec min hour dom month dow`.
//! Every other form means the same in both: five fields are `min hour dom month dow` with seconds
//! 0, seven are `sec min hour dom month dow year`, and the macros agree.

/// The stored (seven-field) form of a six-field expression as the seed's cronexpr read it, and
/// every other expression unchanged.
///
/// A six-field expression gets a `0` seconds field in front, its fields separated by one space:
/// `*/5 * * * * *` (every 5 minutes to the seed) becomes `0 */5 * * * * *`, and `0 12 * * * 2027`
/// becomes `0 0 12 * * * 2027`. Anything else, five fields included, is returned trimmed and
/// otherwise as given, because it already means what it meant to the seed. Nothing is checked
/// here: an invalid expression stays invalid, and validation ([`crate::Schedule::parse`])
/// names its field.
pub fn seed_to_stored(expr: &str) -> String {
    let trimmed = expr.trim();
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() == 6 && !trimmed.starts_with('@') {
        format!("0 {}", fields.join(" "))
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::seed_to_stored;

    #[test]
    fn six_fields_get_seconds_and_the_rest_is_kept() {
        for (seed, stored) in [
            ("*/5 * * * * *", "0 */5 * * * * *"),
            ("0 12 * * * 2027", "0 0 12 * * * 2027"),
            ("  30  3 15W 3/3 *   * ", "0 30 3 15W 3/3 * *"),
            ("*/5 * * * *", "*/5 * * * *"),
            ("0 30 3 * * * 2030", "0 30 3 * * * 2030"),
            (" @daily ", "@daily"),
            (
                "@every 1h 30m 10s 5ms 1us 2ns",
                "@every 1h 30m 10s 5ms 1us 2ns",
            ),
            ("* * * * * * * *", "* * * * * * * *"),
        ] {
            assert_eq!(seed_to_stored(seed), stored, "{seed:?}");
        }
    }
}
