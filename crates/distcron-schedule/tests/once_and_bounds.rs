//! `@at` one-off schedules and `startAt`/`endAt` bounds.

use chrono::{DateTime, Utc};
use distcron_schedule::Schedule;

fn utc(s: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad test time {s}: {e}"),
    }
}

/// 2026-01-01T00:00:00Z.
fn now() -> DateTime<Utc> {
    utc("2026-01-01T00:00:00Z")
}

fn all_after(s: &Schedule, t: &str) -> Vec<String> {
    s.times_after(utc(t))
        .take(10)
        .map(|t| t.to_rfc3339())
        .collect()
}

#[test]
fn at_has_one_slot_at_its_instant_whatever_the_offset() {
    for expr in [
        "@at 2027-01-01T09:00:00Z",
        "@AT 2027-01-01T10:00:00+01:00",
        "  @at   2027-01-01T04:00:00-05:00 ",
    ] {
        let s = Schedule::parse_at(expr, "", now()).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(
            all_after(&s, "2026-01-01T00:00:00Z"),
            ["2027-01-01T09:00:00+00:00"],
            "{expr}"
        );
        // Strictly after: the instant itself and anything later have no slot.
        assert!(s.next_after(utc("2027-01-01T09:00:00Z")).is_none());
        assert!(s.next_after(utc("2030-01-01T00:00:00Z")).is_none());
    }
    // The time zone shows the instant; it does not move it.
    let s = Schedule::parse_at("@at 2027-01-01T09:00:00.250Z", "Europe/Berlin", now())
        .unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<String> = s
        .upcoming(now(), 5)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(shown, ["2027-01-01T10:00:00.250+01:00"]);
    assert_eq!(s.describe(), "Once, at 2027-01-01T10:00:00.250+01:00");
}

#[test]
fn at_in_the_past_is_refused_for_a_save_but_parses_when_stored() {
    let e = Schedule::parse_at("@at 2025-12-31T23:59:59Z", "", now()).expect_err("past");
    assert_eq!(e.field, "cronExpr");
    assert!(e.message.contains("is in the past"), "{e}");
    let e = Schedule::parse_at("@at 2026-01-01T00:00:00Z", "", now()).expect_err("now");
    assert!(e.message.contains("is in the past"), "{e}");
    // A stored job's @at whose instant has passed still parses: it has no more slots.
    let stored = Schedule::parse_stored_for("j", "@at 2025-12-31T23:59:59Z", "")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(stored.next_after(now()).is_none());
    assert_eq!(
        all_after(&stored, "2025-01-01T00:00:00Z"),
        ["2025-12-31T23:59:59+00:00"]
    );
}

#[test]
fn bad_at_times_name_the_expression() {
    for (expr, needle) in [
        ("@at", "needs an RFC 3339 time"),
        ("@at tomorrow", "not an RFC 3339 time"),
        ("@at 2027-01-01T09:00:00", "not an RFC 3339 time"),
        ("@at 2027-01-01", "not an RFC 3339 time"),
        ("@at 2027-01-01T09:00:00.0001Z", "whole milliseconds"),
    ] {
        let e = Schedule::parse_at(expr, "", now()).expect_err(expr);
        assert_eq!(e.field, "cronExpr", "{expr}");
        assert!(e.message.contains(needle), "{expr}: {e}");
    }
}

#[test]
fn bounds_keep_slots_within_start_and_end_both_included() {
    let s = Schedule::parse_stored_for("j", "0 * * * *", "")
        .and_then(|s| {
            s.with_bounds(
                Some(utc("2026-01-01T02:00:00Z")),
                Some(utc("2026-01-01T04:00:00Z")),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = [
        "2026-01-01T02:00:00+00:00",
        "2026-01-01T03:00:00+00:00",
        "2026-01-01T04:00:00+00:00",
    ];
    assert_eq!(all_after(&s, "2026-01-01T00:00:00Z"), expected);
    assert_eq!(all_after(&s, "2026-01-01T02:30:00Z"), expected[1..]);
    assert!(s.next_after(utc("2026-01-01T04:00:00Z")).is_none());
    assert!(s
        .describe()
        .ends_with(", from 2026-01-01T02:00:00+00:00, until 2026-01-01T04:00:00+00:00"));
    // Bounds filter the slots of @every; they do not shift them.
    let every = Schedule::parse_stored_for("j", "@every 1h", "")
        .and_then(|s| s.with_bounds(Some(utc("2026-01-01T00:30:00Z")), None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        every.next_after(now()).map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-01-01T01:00:00+00:00")
    );
}

#[test]
fn an_end_in_the_past_or_before_the_start_is_refused_naming_end_at() {
    let past = Schedule::parse_stored_for("j", "* * * * *", "")
        .and_then(|s| s.with_bounds(None, Some(utc("2025-12-31T00:00:00Z"))))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = past.check_fires_after(now()).expect_err("ended");
    assert_eq!(e.field, "endAt");
    assert!(e.message.contains("is in the past"), "{e}");
    // Stored, it is simply over.
    assert!(past.next_after(now()).is_none());

    let e = Schedule::parse_stored_for("j", "* * * * *", "")
        .and_then(|s| {
            s.with_bounds(
                Some(utc("2026-02-01T00:00:00Z")),
                Some(utc("2026-02-01T00:00:00Z")),
            )
        })
        .expect_err("end not after start");
    assert_eq!(e.field, "endAt");
    assert!(e.message.contains("must be after startAt"), "{e}");

    // Bounds that leave no slot of the expression: the expression never fires in them.
    let e = Schedule::parse_stored_for("j", "0 0 1 1 *", "")
        .and_then(|s| s.with_bounds(None, Some(utc("2026-06-01T00:00:00Z"))))
        .and_then(|s| s.check_fires_after(utc("2026-01-02T00:00:00Z")))
        .expect_err("no slot before the end");
    assert_eq!(e.field, "cronExpr");
    assert!(e.message.contains("never fires after"), "{e}");
    assert!(e.message.contains("until endAt"), "{e}");
    // An @at outside the bounds never fires either.
    let e = Schedule::parse_stored_for("j", "@at 2026-03-01T00:00:00Z", "")
        .and_then(|s| s.with_bounds(Some(utc("2026-04-01T00:00:00Z")), None))
        .and_then(|s| s.check_fires_after(now()))
        .expect_err("before the start");
    assert!(e.message.contains("from startAt"), "{e}");
}
