//! Table-driven tests of the cron dialect.

use chrono::{DateTime, Utc};
use distcron_schedule::Schedule;

/// 2026-01-01T00:00:00Z, a Thursday.
fn start() -> DateTime<Utc> {
    utc("2026-01-01T00:00:00Z")
}

fn utc(s: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad test time {s}: {e}"),
    }
}

fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let s = match Schedule::parse_at(expr, tz, utc(from)) {
        Ok(s) => s,
        Err(e) => panic!("{expr:?} in {tz:?} should parse: {e}"),
    };
    s.upcoming(utc(from), n)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect()
}

#[test]
fn accepted_forms_fire_when_expected() {
    let cases: &[(&str, &str, &[&str])] = &[
        // 5 fields: classic crontab, Monday = 1.
        (
            "30 9 * * 1",
            "",
            &["2026-01-05T09:30:00+00:00", "2026-01-12T09:30:00+00:00"],
        ),
        ("0 0 * * 0", "", &["2026-01-04T00:00:00+00:00"]),
        ("0 0 * * 7", "", &["2026-01-04T00:00:00+00:00"]),
        (
            "*/20 * * * *",
            "",
            &["2026-01-01T00:20:00+00:00", "2026-01-01T00:40:00+00:00"],
        ),
        (
            "5-7/2,30 1 * * *",
            "",
            &[
                "2026-01-01T01:05:00+00:00",
                "2026-01-01T01:07:00+00:00",
                "2026-01-01T01:30:00+00:00",
            ],
        ),
        // 6 fields: seconds first.
        (
            "*/15 * * * * *",
            "",
            &["2026-01-01T00:00:15+00:00", "2026-01-01T00:00:30+00:00"],
        ),
        ("0 0 12 * * ?", "", &["2026-01-01T12:00:00+00:00"]),
        // 7 fields: with a year.
        ("0 0 12 1 1 * 2028", "", &["2028-01-01T12:00:00+00:00"]),
        (
            "0 0 0 1 1 * 2027-2099/2",
            "",
            &["2027-01-01T00:00:00+00:00", "2029-01-01T00:00:00+00:00"],
        ),
        // Names, any case.
        ("0 8 * feb-mar mon", "", &["2026-02-02T08:00:00+00:00"]),
        (
            "0 8 1 JAN,JUL *",
            "",
            &["2026-01-01T08:00:00+00:00", "2026-07-01T08:00:00+00:00"],
        ),
        // L, W, #.
        (
            "0 0 L 2 *",
            "",
            &[
                "2026-02-28T00:00:00+00:00",
                "2027-02-28T00:00:00+00:00",
                "2028-02-29T00:00:00+00:00",
            ],
        ),
        ("0 0 15W 2 *", "", &["2026-02-16T00:00:00+00:00"]),
        (
            "0 0 * * FRI#3",
            "",
            &["2026-01-16T00:00:00+00:00", "2026-02-20T00:00:00+00:00"],
        ),
        ("0 0 * * 5L", "", &["2026-01-30T00:00:00+00:00"]),
        // Leap years.
        (
            "0 0 29 2 *",
            "",
            &["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"],
        ),
        // Macros.
        ("@hourly", "", &["2026-01-01T01:00:00+00:00"]),
        ("@daily", "", &["2026-01-02T00:00:00+00:00"]),
        ("@midnight", "", &["2026-01-02T00:00:00+00:00"]),
        ("@weekly", "", &["2026-01-04T00:00:00+00:00"]),
        ("@monthly", "", &["2026-02-01T00:00:00+00:00"]),
        ("@yearly", "", &["2027-01-01T00:00:00+00:00"]),
        ("@annually", "", &["2027-01-01T00:00:00+00:00"]),
        // @every: multiples of the interval since the epoch.
        (
            "@every 90s",
            "",
            &["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"],
        ),
        (
            "@every 1h30m",
            "",
            &["2026-01-01T01:30:00+00:00", "2026-01-01T03:00:00+00:00"],
        ),
        // Time zones.
        (
            "0 9 * * *",
            "Asia/Tokyo",
            &["2026-01-02T09:00:00+09:00", "2026-01-03T09:00:00+09:00"],
        ),
    ];
    for (expr, tz, want) in cases {
        assert_eq!(
            next_n(expr, tz, "2026-01-01T00:00:00Z", want.len()),
            *want,
            "{expr:?} in {tz:?}"
        );
    }
}

/// Expressions the seed's cronexpr accepted, with the fire times its documentation gives them.
#[test]
fn cronexpr_expressions_keep_their_meaning() {
    let cases: &[(&str, &[&str])] = &[
        // Full day and month names, any case, in their own field.
        (
            "0 0 * * friday",
            &["2026-01-02T00:00:00+00:00", "2026-01-09T00:00:00+00:00"],
        ),
        ("0 0 1 january *", &["2027-01-01T00:00:00+00:00"]),
        ("0 0 * * SUNDAY", &["2026-01-04T00:00:00+00:00"]),
        ("0 9 * jun-August Saturday", &["2026-06-06T09:00:00+00:00"]),
        (
            "0 0 * * sat-sun",
            &["2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00"],
        ),
        ("0 0 * Mar Tue", &["2026-03-03T00:00:00+00:00"]),
        // N/S is N-last/S in every field: from March, every 3 months, on the weekday nearest
        // the 15th.
        (
            "30 3 15W 3/3 *",
            &[
                "2026-03-16T03:30:00+00:00",
                "2026-06-15T03:30:00+00:00",
                "2026-09-15T03:30:00+00:00",
                "2026-12-15T03:30:00+00:00",
                "2027-03-15T03:30:00+00:00",
            ],
        ),
        (
            "10/20 * * * *",
            &[
                "2026-01-01T00:10:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:50:00+00:00",
                "2026-01-01T01:10:00+00:00",
            ],
        ),
        (
            "0 0 * * 1/2",
            &[
                "2026-01-02T00:00:00+00:00",
                "2026-01-05T00:00:00+00:00",
                "2026-01-07T00:00:00+00:00",
                "2026-01-09T00:00:00+00:00",
            ],
        ),
        (
            "45/5 0 0 * * *",
            &[
                "2026-01-01T00:00:45+00:00",
                "2026-01-01T00:00:50+00:00",
                "2026-01-01T00:00:55+00:00",
                "2026-01-02T00:00:45+00:00",
            ],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(
            next_n(expr, "", "2026-01-01T00:00:00Z", want.len()),
            *want,
            "{expr:?}"
        );
    }
}

/// Six-field expressions from the seed, converted to the stored form, fire as cronexpr fired them
/// (`min hour dom month dow year`, seconds 0).
#[test]
fn seed_six_field_expressions_keep_their_meaning_once_converted() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "*/5 * * * * *",
            "0 */5 * * * * *",
            &["2026-01-01T00:05:00+00:00", "2026-01-01T00:10:00+00:00"],
        ),
        (
            "0 12 * * * 2027",
            "0 0 12 * * * 2027",
            &["2027-01-01T12:00:00+00:00", "2027-01-02T12:00:00+00:00"],
        ),
        (
            "30 3 15W 3/3 * *",
            "0 30 3 15W 3/3 * *",
            &["2026-03-16T03:30:00+00:00", "2026-06-15T03:30:00+00:00"],
        ),
        (
            "0 0 1 january * 2028",
            "0 0 0 1 january * 2028",
            &["2028-01-01T00:00:00+00:00"],
        ),
        // Five fields mean the same to both and are stored as given.
        ("0 9 * * mon", "0 9 * * mon", &["2026-01-05T09:00:00+00:00"]),
    ];
    for (seed, stored, want) in cases {
        assert_eq!(distcron_schedule::seed_to_stored(seed), *stored, "{seed:?}");
        assert_eq!(
            next_n(stored, "", "2026-01-01T00:00:00Z", want.len()),
            *want,
            "{seed:?}"
        );
    }
}

/// `H` values of job `backup.daily`: 64-bit FNV-1a of `backup.daily/<field>`, written out so
/// that a change of hash or of formula fails here (every worker and jobsvc must agree).
#[test]
fn hashed_fields_are_stable_for_a_name() {
    let cases: &[(&str, &[&str])] = &[
        // minute: hash % 60 = 29.
        (
            "H * * * *",
            &["2026-01-01T00:29:00+00:00", "2026-01-01T01:29:00+00:00"],
        ),
        // hour: 2 + hash % 4 = 5.
        (
            "H H(2-5) * * *",
            &["2026-01-01T05:29:00+00:00", "2026-01-02T05:29:00+00:00"],
        ),
        // second: starts at hash % 15 = 6, every 15.
        (
            "H/15 * * * * *",
            &[
                "2026-01-01T00:00:06+00:00",
                "2026-01-01T00:00:21+00:00",
                "2026-01-01T00:00:36+00:00",
                "2026-01-01T00:00:51+00:00",
                "2026-01-01T00:01:06+00:00",
            ],
        ),
        // minute: starts at hash % 10 = 9, every 10 up to 29.
        (
            "h(0-29)/10 * * * *",
            &[
                "2026-01-01T00:09:00+00:00",
                "2026-01-01T00:19:00+00:00",
                "2026-01-01T00:29:00+00:00",
                "2026-01-01T01:09:00+00:00",
            ],
        ),
        // day of month: 1 + hash % 28 = 19.
        (
            "0 0 H * *",
            &["2026-01-19T00:00:00+00:00", "2026-02-19T00:00:00+00:00"],
        ),
        // day of week: hash % 7 = 0, Sunday.
        ("0 0 * * H", &["2026-01-04T00:00:00+00:00"]),
        // month: 1 + hash % 12 = 10.
        ("0 0 1 H *", &["2026-10-01T00:00:00+00:00"]),
    ];
    for (expr, want) in cases {
        let s = Schedule::parse_for_at("backup.daily", expr, "", start())
            .unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"));
        let got: Vec<String> = s
            .upcoming(start(), want.len())
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(got, *want, "{expr:?}");
    }
    // Without the job's name there is nothing to hash: the error names the missing field.
    let e = Schedule::parse_at("H * * * *", "", start()).err();
    assert_eq!(e.map(|e| e.field), Some("name".to_owned()));
    let e = Schedule::parse_for_at("j", "H(50-70) * * * *", "", start()).err();
    assert_eq!(e.map(|e| e.field), Some("cronExpr.minute".to_owned()));
}

#[test]
fn hashed_fields_spread_jobs_over_the_hour() {
    let mut per_minute = [0u32; 60];
    for i in 0..1200 {
        let s = Schedule::parse_for_at(&format!("job-{i}"), "H * * * *", "", start())
            .unwrap_or_else(|e| panic!("{e}"));
        let next = s.next_after(start()).unwrap_or_else(|| panic!("job-{i}"));
        per_minute[usize::try_from((next - start()).num_minutes()).unwrap_or(0) % 60] += 1;
    }
    // 20 a minute on average; a herd would show as a full minute and empty ones.
    assert!(
        per_minute.iter().all(|n| (5..=40).contains(n)),
        "{per_minute:?}"
    );
}

#[test]
fn dst_gaps_fire_once_after_the_gap() {
    // Europe/Berlin springs forward 02:00 -> 03:00 on 2026-03-29: 02:30 does not exist.
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    // America/New_York springs forward on 2026-03-08.
    assert_eq!(
        next_n("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00"
        ]
    );
}

#[test]
fn dst_overlaps_fire_once() {
    // Europe/Berlin falls back 03:00 -> 02:00 on 2026-10-25: 02:30 happens twice.
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    // America/New_York falls back on 2026-11-01: 01:30 happens twice.
    assert_eq!(
        next_n("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    // Interval fields keep firing through the repeated hour, on absolute time.
    let hourly = next_n("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 4);
    assert_eq!(
        hourly,
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T04:00:00+01:00"
        ]
    );
}

#[test]
fn rejections_name_the_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("61 * * * *", "", "cronExpr.minute", "61"),
        ("* 24 * * *", "", "cronExpr.hour", "24"),
        ("* * 32 * *", "", "cronExpr.dayOfMonth", "32"),
        ("* * * 13 *", "", "cronExpr.month", "13"),
        ("* * * * 8", "", "cronExpr.dayOfWeek", "8"),
        ("* * * * FOO", "", "cronExpr.dayOfWeek", "FOO"),
        ("MON * * * *", "", "cronExpr.minute", "MON"),
        ("0 0 * * may", "", "cronExpr.dayOfWeek", "not a weekday"),
        ("0 0 1 fri *", "", "cronExpr.month", "not a month"),
        (
            "*/60 * * * * *",
            "",
            "cronExpr.second",
            "use \"@every 60s\" for an interval that does not divide a minute",
        ),
        ("0 2-20/61 * * * *", "", "cronExpr.minute", "@every 61m"),
        ("0 0 * */12 *", "", "cronExpr.month", "list the months"),
        ("60 * * * * *", "", "cronExpr.second", "60"),
        ("0 0 0 1 1 * abc", "", "cronExpr.year", "abc"),
        ("* * *", "", "cronExpr", "got 3"),
        (
            "* * * * * * * *",
            "",
            "cronExpr",
            "8 fields; at most 7 (sec min hour dom month dow year): \"*\" after the year is extra",
        ),
        (
            "0 0 12 * * * 2027 x 9",
            "",
            "cronExpr",
            "\"x 9\" after the year are extra",
        ),
        ("", "", "cronExpr", "empty"),
        ("   ", "", "cronExpr", "empty"),
        ("@reboot", "", "cronExpr", "@reboot"),
        ("@fortnightly", "", "cronExpr", "unknown macro"),
        ("@every", "", "cronExpr", "needs a duration"),
        ("@every 0s", "", "cronExpr", "between 1s"),
        ("@every 1500ms", "", "cronExpr", "whole seconds"),
        ("@every soon", "", "cronExpr", "bad duration"),
        ("@every 400days", "", "cronExpr", "between 1s"),
        ("0 0 30 2 *", "", "cronExpr", "never fires"),
        ("0 0 0 1 1 * 2020", "", "cronExpr", "never fires"),
        (
            "0 0 * * *",
            "Mars/Olympus_Mons",
            "timeZone",
            "Mars/Olympus_Mons",
        ),
    ];
    for (expr, tz, field, needle) in cases {
        match Schedule::parse_at(expr, tz, start()) {
            Ok(s) => panic!("{expr:?} should be rejected, got {s:?}"),
            Err(e) => {
                assert_eq!(e.field, *field, "{expr:?}: {e}");
                assert!(
                    e.message.contains(needle),
                    "{expr:?}: message {:?} lacks {needle:?}",
                    e.message
                );
            }
        }
    }
}

#[test]
fn next_after_is_strict_and_handles_milliseconds() {
    let s = match Schedule::parse_at("* * * * * *", "", start()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        s.next_after(utc("2026-01-01T00:00:05Z")),
        Some(utc("2026-01-01T00:00:06Z"))
    );
    assert_eq!(
        s.next_after(utc("2026-01-01T00:00:05.999Z")),
        Some(utc("2026-01-01T00:00:06Z"))
    );
    let every = match Schedule::parse_at("@every 2s", "", start()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        every.next_after(utc("2026-01-01T00:00:01.500Z")),
        Some(utc("2026-01-01T00:00:02Z"))
    );
    assert_eq!(
        every.next_after(utc("2026-01-01T00:00:02Z")),
        Some(utc("2026-01-01T00:00:04Z"))
    );
}

#[test]
fn preview_is_capped_and_described() {
    let s = match Schedule::parse_at("*/5 * * * *", "Europe/Berlin", start()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        s.upcoming(start(), 1000).len(),
        distcron_schedule::MAX_PREVIEW
    );
    assert!(!s.describe().is_empty());
    let every = match Schedule::parse_at("@every 10m", "", start()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(every.describe(), "Every 10m");
    // A schedule that ends yields fewer than asked.
    let once = match Schedule::parse_at("0 0 12 1 1 * 2028", "", start()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(once.upcoming(start(), 5).len(), 1);
}

#[test]
fn times_after_walks_the_same_slots_as_next_after() {
    for (expr, tz) in [
        ("*/7 * * * * *", "UTC"),
        ("0 30 1 * * * 2026-2027", "Europe/Berlin"),
        ("@every 90s", ""),
        ("@midnight", "America/New_York"),
    ] {
        let schedule = Schedule::parse_at(expr, tz, start())
            .unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"));
        let walked: Vec<_> = schedule.times_after(start()).take(50).collect();
        let mut stepped = Vec::new();
        let mut cursor = start();
        while let Some(next) = schedule.next_after(cursor).filter(|_| stepped.len() < 50) {
            stepped.push(next);
            cursor = next;
        }
        assert_eq!(walked, stepped, "{expr}");
        assert_eq!(walked.len(), 50, "{expr}");
        assert!(walked.windows(2).all(|w| w[0] < w[1]), "{expr}");
    }
}
