//! The resolver's unit tests: a table of small schedules (rotations across DST changes,
//! ambiguous and skipped handoffs, restrictions, overrides) with the final shifts each must
//! give, and the checks that `on_call`, gaps and versioned changes agree with them.

use super::*;
use crate::schedule::model::{Participant, Rotation, wall_time};
use RotationUnit::*;
use chrono::NaiveTime;

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// A layer rotating through `people` (`a+b` is a group), from `first` local wall time.
fn layer(name: &str, people: &[&str], unit: RotationUnit, every: u32, first: &str) -> Layer {
    Layer {
        name: name.into(),
        participants: people
            .iter()
            .map(|p| Participant(p.split('+').map(str::to_string).collect()))
            .collect(),
        rotation: Rotation { unit, every },
        first_handoff: wall_time::parse(first).unwrap(),
        active_from: None,
        active_until: None,
        restrictions: vec![],
    }
}

fn restricted(mut l: Layer, days: &[u8], start: &str, end: &str) -> Layer {
    l.restrictions.push(Restriction {
        days: days.to_vec(),
        start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
        end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
    });
    l
}

fn schedule(zone: &str, layers: Vec<Layer>, overrides: &[(&str, &str, &str)]) -> Schedule {
    let now = t("2026-01-01T00:00:00Z");
    Schedule {
        id: "sch_test".into(),
        name: "test".into(),
        description: String::new(),
        handoff_notice: None,
        daily_summary: None,
        versions: vec![Version {
            effective_from: None,
            time_zone: zone.into(),
            layers,
            created_at: now,
        }],
        overrides: overrides
            .iter()
            .enumerate()
            .map(|(i, (start, end, who))| Override {
                id: format!("ovr_{i}"),
                start: t(start),
                end: t(end),
                member_id: who.to_string(),
                note: None,
                created_at: now,
            })
            .collect(),
        created_at: now,
        updated_at: now,
    }
}

/// The final shifts as `(start, end, members joined by +)`, start and end in RFC 3339.
fn final_of(s: &Schedule, from: &str, to: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    shifts(s, t(from), t(to))
        .final_shifts
        .into_iter()
        .map(|f| (f.shift.start, f.shift.end, f.shift.members.join("+")))
        .collect()
}

fn expected(rows: &[(&str, &str, &str)]) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    rows.iter()
        .map(|(s, e, who)| (t(s), t(e), who.to_string()))
        .collect()
}

struct Case {
    name: &'static str,
    schedule: Schedule,
    from: &'static str,
    to: &'static str,
    want: &'static [(&'static str, &'static str, &'static str)],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "daily, Asia/Shanghai (no DST)",
            schedule: schedule(
                "Asia/Shanghai",
                vec![layer("p", &["a", "b", "c"], Day, 1, "2026-12-07T09:00")],
                &[],
            ),
            from: "2026-12-07T09:00:00+08:00",
            to: "2026-12-11T09:00:00+08:00",
            want: &[
                ("2026-12-07T09:00:00+08:00", "2026-12-08T09:00:00+08:00", "a"),
                ("2026-12-08T09:00:00+08:00", "2026-12-09T09:00:00+08:00", "b"),
                ("2026-12-09T09:00:00+08:00", "2026-12-10T09:00:00+08:00", "c"),
                ("2026-12-10T09:00:00+08:00", "2026-12-11T09:00:00+08:00", "a"),
            ],
        },
        Case {
            name: "daily, window before the first handoff is empty and turns are clipped",
            schedule: schedule(
                "Asia/Shanghai",
                vec![layer("p", &["a", "b"], Day, 1, "2026-12-07T09:00")],
                &[],
            ),
            from: "2026-12-06T00:00:00+08:00",
            to: "2026-12-08T12:00:00+08:00",
            want: &[
                ("2026-12-07T09:00:00+08:00", "2026-12-08T09:00:00+08:00", "a"),
                ("2026-12-08T09:00:00+08:00", "2026-12-08T12:00:00+08:00", "b"),
            ],
        },
        Case {
            name: "3-day rotation with a group sharing a turn",
            schedule: schedule(
                "UTC",
                vec![layer("p", &["a", "b+c"], Day, 3, "2026-12-01T08:00")],
                &[],
            ),
            from: "2026-12-01T08:00:00Z",
            to: "2026-12-10T08:00:00Z",
            want: &[
                ("2026-12-01T08:00:00Z", "2026-12-04T08:00:00Z", "a"),
                ("2026-12-04T08:00:00Z", "2026-12-07T08:00:00Z", "b+c"),
                ("2026-12-07T08:00:00Z", "2026-12-10T08:00:00Z", "a"),
            ],
        },
        Case {
            name: "weekly, America/New_York spring forward: 7 calendar days (167 h), handoff stays 09:00",
            schedule: schedule(
                "America/New_York",
                vec![layer("p", &["a", "b"], Week, 1, "2026-03-02T09:00")],
                &[],
            ),
            from: "2026-03-02T09:00:00-05:00",
            to: "2026-03-16T09:00:00-04:00",
            want: &[
                ("2026-03-02T09:00:00-05:00", "2026-03-09T09:00:00-04:00", "a"),
                ("2026-03-09T09:00:00-04:00", "2026-03-16T09:00:00-04:00", "b"),
            ],
        },
        Case {
            name: "weekly, America/New_York fall back: 169 h, handoff stays 09:00",
            schedule: schedule(
                "America/New_York",
                vec![layer("p", &["a", "b"], Week, 1, "2026-10-26T09:00")],
                &[],
            ),
            from: "2026-10-26T09:00:00-04:00",
            to: "2026-11-09T09:00:00-05:00",
            want: &[
                ("2026-10-26T09:00:00-04:00", "2026-11-02T09:00:00-05:00", "a"),
                ("2026-11-02T09:00:00-05:00", "2026-11-09T09:00:00-05:00", "b"),
            ],
        },
        Case {
            name: "daily, Europe/London spring forward (23 h day) and no gap",
            schedule: schedule(
                "Europe/London",
                vec![layer("p", &["a", "b"], Day, 1, "2026-03-27T09:00")],
                &[],
            ),
            from: "2026-03-28T00:00:00Z",
            to: "2026-03-31T00:00:00Z",
            want: &[
                ("2026-03-28T00:00:00Z", "2026-03-28T09:00:00Z", "a"),
                ("2026-03-28T09:00:00+00:00", "2026-03-29T09:00:00+01:00", "b"),
                ("2026-03-29T09:00:00+01:00", "2026-03-30T09:00:00+01:00", "a"),
                ("2026-03-30T09:00:00+01:00", "2026-03-31T00:00:00Z", "b"),
            ],
        },
        Case {
            name: "daily, Europe/London fall back (25 h day) and no double",
            schedule: schedule(
                "Europe/London",
                vec![layer("p", &["a", "b"], Day, 1, "2026-10-23T09:00")],
                &[],
            ),
            from: "2026-10-24T09:00:00+01:00",
            to: "2026-10-26T09:00:00+00:00",
            want: &[
                ("2026-10-24T09:00:00+01:00", "2026-10-25T09:00:00+00:00", "b"),
                ("2026-10-25T09:00:00+00:00", "2026-10-26T09:00:00+00:00", "a"),
            ],
        },
        Case {
            name: "12-hour turns, America/New_York spring forward: handoffs stay 08:00 and 20:00",
            schedule: schedule(
                "America/New_York",
                vec![layer("p", &["day", "night"], Hour, 12, "2026-03-07T08:00")],
                &[],
            ),
            from: "2026-03-07T08:00:00-05:00",
            to: "2026-03-09T08:00:00-04:00",
            want: &[
                ("2026-03-07T08:00:00-05:00", "2026-03-07T20:00:00-05:00", "day"),
                ("2026-03-07T20:00:00-05:00", "2026-03-08T08:00:00-04:00", "night"),
                ("2026-03-08T08:00:00-04:00", "2026-03-08T20:00:00-04:00", "day"),
                ("2026-03-08T20:00:00-04:00", "2026-03-09T08:00:00-04:00", "night"),
            ],
        },
        Case {
            name: "an ambiguous handoff (01:30 on the fall-back night) happens once, at its first occurrence",
            schedule: schedule(
                "America/New_York",
                vec![layer("p", &["a", "b"], Day, 1, "2026-10-30T01:30")],
                &[],
            ),
            from: "2026-10-31T01:30:00-04:00",
            to: "2026-11-02T01:30:00-05:00",
            want: &[
                ("2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "b"),
                ("2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "a"),
            ],
        },
        Case {
            name: "a skipped handoff (02:30 on the spring-forward night) moves forward to 03:30",
            schedule: schedule(
                "America/New_York",
                vec![layer("p", &["a", "b"], Day, 1, "2026-03-06T02:30")],
                &[],
            ),
            from: "2026-03-07T02:30:00-05:00",
            to: "2026-03-09T02:30:00-04:00",
            want: &[
                ("2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "b"),
                ("2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00", "a"),
            ],
        },
        Case {
            name: "monthly from the 31st: the end of shorter months, then the 31st again",
            schedule: schedule(
                "UTC",
                vec![layer("p", &["a", "b", "c"], Month, 1, "2026-01-31T10:00")],
                &[],
            ),
            from: "2026-01-31T10:00:00Z",
            to: "2026-04-30T10:00:00Z",
            want: &[
                ("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z", "a"),
                ("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z", "b"),
                ("2026-03-31T10:00:00Z", "2026-04-30T10:00:00Z", "c"),
            ],
        },
        Case {
            name: "layered restrictions: weekday office hours win over the 24/7 layer",
            schedule: schedule(
                "Asia/Shanghai",
                vec![
                    layer("base", &["n"], Week, 1, "2026-11-30T00:00"),
                    restricted(
                        layer("office", &["d", "e"], Day, 1, "2026-11-30T09:00"),
                        &[0, 1, 2, 3, 4],
                        "09:00",
                        "18:00",
                    ),
                ],
                &[],
            ),
            // Friday 4 Dec to Monday 7 Dec.
            from: "2026-12-04T00:00:00+08:00",
            to: "2026-12-07T12:00:00+08:00",
            want: &[
                ("2026-12-04T00:00:00+08:00", "2026-12-04T09:00:00+08:00", "n"),
                ("2026-12-04T09:00:00+08:00", "2026-12-04T18:00:00+08:00", "d"),
                ("2026-12-04T18:00:00+08:00", "2026-12-07T09:00:00+08:00", "n"),
                ("2026-12-07T09:00:00+08:00", "2026-12-07T12:00:00+08:00", "e"),
            ],
        },
        Case {
            name: "a restriction past midnight (22:00–06:00) on a weekly layer",
            schedule: schedule(
                "UTC",
                vec![restricted(
                    layer("night", &["a", "b"], Week, 1, "2026-11-30T00:00"),
                    &[6],
                    "22:00",
                    "06:00",
                )],
                &[],
            ),
            from: "2026-12-06T00:00:00Z",
            to: "2026-12-08T00:00:00Z",
            want: &[
                ("2026-12-06T22:00:00Z", "2026-12-07T00:00:00Z", "a"),
                ("2026-12-07T00:00:00Z", "2026-12-07T06:00:00Z", "b"),
            ],
        },
        Case {
            name: "a restriction ending at an ambiguous time ends at its last occurrence",
            schedule: schedule(
                "America/New_York",
                vec![restricted(
                    layer("p", &["a"], Week, 1, "2026-10-26T00:00"),
                    &[5],
                    "20:00",
                    "01:30",
                )],
                &[],
            ),
            from: "2026-10-31T00:00:00-04:00",
            to: "2026-11-02T00:00:00-05:00",
            want: &[("2026-10-31T20:00:00-04:00", "2026-11-01T01:30:00-05:00", "a")],
        },
        Case {
            name: "an override inside a shift splits it",
            schedule: schedule(
                "UTC",
                vec![layer("p", &["a", "b"], Day, 1, "2026-12-01T09:00")],
                &[("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z", "x")],
            ),
            from: "2026-12-01T09:00:00Z",
            to: "2026-12-02T09:00:00Z",
            want: &[
                ("2026-12-01T09:00:00Z", "2026-12-01T12:00:00Z", "a"),
                ("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z", "x"),
                ("2026-12-01T14:00:00Z", "2026-12-02T09:00:00Z", "a"),
            ],
        },
        Case {
            name: "an override across a handoff covers both people's ends, a later override wins over it",
            schedule: schedule(
                "UTC",
                vec![layer("p", &["a", "b"], Day, 1, "2026-12-01T09:00")],
                &[
                    ("2026-12-02T06:00:00Z", "2026-12-02T12:00:00Z", "x"),
                    ("2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z", "y"),
                ],
            ),
            from: "2026-12-02T00:00:00Z",
            to: "2026-12-02T18:00:00Z",
            want: &[
                ("2026-12-02T00:00:00Z", "2026-12-02T06:00:00Z", "a"),
                ("2026-12-02T06:00:00Z", "2026-12-02T10:00:00Z", "x"),
                ("2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z", "y"),
                ("2026-12-02T11:00:00Z", "2026-12-02T12:00:00Z", "x"),
                ("2026-12-02T12:00:00Z", "2026-12-02T18:00:00Z", "b"),
            ],
        },
        Case {
            name: "an override fills a gap left by restrictions",
            schedule: schedule(
                "UTC",
                vec![restricted(
                    layer("p", &["a"], Day, 1, "2026-11-30T00:00"),
                    &[0, 1, 2, 3, 4],
                    "09:00",
                    "17:00",
                )],
                &[("2026-12-01T20:00:00Z", "2026-12-01T22:00:00Z", "x")],
            ),
            from: "2026-12-01T00:00:00Z",
            to: "2026-12-02T00:00:00Z",
            want: &[
                ("2026-12-01T09:00:00Z", "2026-12-01T17:00:00Z", "a"),
                ("2026-12-01T20:00:00Z", "2026-12-01T22:00:00Z", "x"),
            ],
        },
    ]
}

#[test]
fn final_shifts_match_the_table() {
    for case in cases() {
        let got = final_of(&case.schedule, case.from, case.to);
        assert_eq!(got, expected(case.want), "{}", case.name);
    }
}

#[test]
fn on_call_agrees_with_shifts_at_every_quarter_hour() {
    for case in cases() {
        let resolved = shifts(&case.schedule, t(case.from), t(case.to));
        let mut at = t(case.from);
        while at < t(case.to) {
            let covering = resolved
                .final_shifts
                .iter()
                .find(|f| f.shift.start <= at && at < f.shift.end)
                .map(|f| f.shift.members.clone());
            let now = on_call(&case.schedule, at).map(|f| f.shift.members);
            assert_eq!(now, covering, "{} at {at}", case.name);
            at += Duration::minutes(15);
        }
    }
}

#[test]
fn gaps_are_what_final_does_not_cover() {
    let s = schedule(
        "UTC",
        vec![restricted(
            layer("p", &["a"], Day, 1, "2026-11-30T00:00"),
            &[1],
            "09:00",
            "17:00",
        )],
        &[],
    );
    let r = shifts(&s, t("2026-12-01T00:00:00Z"), t("2026-12-02T00:00:00Z"));
    let gaps: Vec<_> = r.gaps.iter().map(|g| (g.start, g.end)).collect();
    assert_eq!(
        gaps,
        vec![
            (t("2026-12-01T00:00:00Z"), t("2026-12-01T09:00:00Z")),
            (t("2026-12-01T17:00:00Z"), t("2026-12-02T00:00:00Z"))
        ]
    );
    assert_eq!(on_call(&s, t("2026-12-01T08:59:59Z")), None);
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].shifts.len(), 1);
}

#[test]
fn a_change_effective_next_week_leaves_this_week_alone() {
    let old = schedule(
        "Europe/London",
        vec![layer("p", &["a", "b"], Day, 1, "2026-11-30T09:00")],
        &[],
    );
    let mut edited = old.clone();
    edited.versions.push(Version {
        effective_from: Some(t("2026-12-07T09:00:00Z")),
        time_zone: "Europe/London".into(),
        layers: vec![layer("p", &["c"], Week, 1, "2026-12-07T09:00")],
        created_at: t("2026-12-01T00:00:00Z"),
    });
    let this_week = ("2026-11-30T09:00:00Z", "2026-12-07T09:00:00Z");
    assert_eq!(
        final_of(&edited, this_week.0, this_week.1),
        final_of(&old, this_week.0, this_week.1)
    );
    assert_eq!(final_of(&old, this_week.0, this_week.1).len(), 7);
    assert_eq!(
        final_of(&edited, "2026-12-07T09:00:00Z", "2026-12-14T09:00:00Z"),
        expected(&[("2026-12-07T09:00:00Z", "2026-12-14T09:00:00Z", "c")])
    );
    let layers = shifts(&edited, t("2026-12-06T09:00:00Z"), t("2026-12-08T09:00:00Z")).layers;
    assert_eq!(
        layers.iter().map(|l| l.effective_from).collect::<Vec<_>>(),
        vec![None, Some(t("2026-12-07T09:00:00Z"))]
    );
}

#[test]
fn active_dates_bound_a_layer_and_uncovered_time_falls_to_the_layer_below() {
    let mut top = layer("holiday", &["h"], Day, 1, "2026-12-24T00:00");
    top.active_until = Some(wall_time::parse("2026-12-26T00:00").unwrap());
    let s = schedule(
        "Asia/Shanghai",
        vec![layer("base", &["a"], Week, 1, "2026-12-21T09:00"), top],
        &[],
    );
    assert_eq!(
        final_of(&s, "2026-12-23T00:00:00+08:00", "2026-12-27T00:00:00+08:00"),
        expected(&[
            ("2026-12-23T00:00:00+08:00", "2026-12-24T00:00:00+08:00", "a"),
            ("2026-12-24T00:00:00+08:00", "2026-12-26T00:00:00+08:00", "h"),
            ("2026-12-26T00:00:00+08:00", "2026-12-27T00:00:00+08:00", "a"),
        ])
    );
}
