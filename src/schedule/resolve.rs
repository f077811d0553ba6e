//! The one resolver: who is on call at an instant, and the shifts of a window — per layer,
//! final (layers and overrides resolved) and the gaps where nobody is. Every view asks it, so
//! none can forget an override. Pure: no store, no clock.
//!
//! Wall-clock rule (after GoAlert's): turns, restriction windows and active dates are local wall
//! times in the schedule's zone, computed on the calendar (a 7-day turn is 7 calendar days, so a
//! turn across a DST change is 167 or 169 hours and the handoff stays at its wall time). A wall
//! time that happens twice (the autumn change) starts things at its first occurrence and ends
//! them at its last; a handoff is the start of the next turn, so it happens at the first
//! occurrence for both people (no gap, no double). A wall time that does not exist (the spring
//! change) moves forward by the length of the gap (02:30 becomes 03:30).

use chrono::{DateTime, Datelike, Duration, LocalResult, Months, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::model::{Layer, Override, Restriction, RotationUnit, Schedule, Version};

/// People on call without a break, from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub members: Vec<String>,
}

/// Where a final shift comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Layer { position: usize, name: String },
    Override { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinalShift {
    #[serde(flatten)]
    pub shift: Shift,
    pub source: Source,
}

/// One layer's own shifts while one version is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerShifts {
    pub position: usize,
    pub name: String,
    /// Of the version the layer belongs to (`None`: the first version).
    pub effective_from: Option<DateTime<Utc>>,
    pub shifts: Vec<Shift>,
}

/// A window when nobody is on call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(rename = "final")]
    pub final_shifts: Vec<FinalShift>,
    pub layers: Vec<LayerShifts>,
    pub gaps: Vec<Gap>,
}

/// Who is on call at `at` (empty: nobody), and from which source.
pub fn on_call(schedule: &Schedule, at: DateTime<Utc>) -> Option<FinalShift> {
    shifts(schedule, at, at + Duration::nanoseconds(1))
        .final_shifts
        .into_iter()
        .next()
}

/// From a resolution starting at `at`: the shift in force at `at`, and the first later shift
/// of other people (who takes over next).
pub fn current_and_next(
    resolved: &Resolution,
    at: DateTime<Utc>,
) -> (Option<&FinalShift>, Option<&FinalShift>) {
    let current = resolved
        .final_shifts
        .iter()
        .find(|f| f.shift.start <= at && at < f.shift.end);
    let next = resolved.final_shifts.iter().find(|f| {
        f.shift.start > at
            && current.is_none_or(|c| f.shift.start >= c.shift.end && f.shift.members != c.shift.members)
    });
    (current, next)
}

/// Every shift from `from` to `to`, clipped to the window.
pub fn shifts(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Resolution {
    let mut layers = Vec::new();
    let mut stack: Vec<Vec<(Shift, Source)>> = Vec::new();
    for (version, lo, hi) in version_spans(schedule, from, to) {
        let tz = zone(version);
        for (position, layer) in version.layers.iter().enumerate() {
            let own = layer_shifts(layer, tz, lo, hi);
            let source = Source::Layer {
                position,
                name: layer.name.clone(),
            };
            // Layer positions stack within a version; versions never overlap in time.
            if stack.len() <= position {
                stack.resize_with(position + 1, Vec::new);
            }
            stack[position].extend(own.iter().cloned().map(|s| (s, source.clone())));
            layers.push(LayerShifts {
                position,
                name: layer.name.clone(),
                effective_from: version.effective_from,
                shifts: own,
            });
        }
    }
    stack.extend(
        schedule
            .overrides
            .iter()
            .filter(|o| o.start < to && o.end > from)
            .map(|o| vec![override_shift(o, from, to)]),
    );
    let final_shifts = overlay(&stack, from, to);
    let gaps = gaps(&final_shifts, from, to);
    Resolution {
        from,
        to,
        final_shifts,
        layers,
        gaps,
    }
}

fn override_shift(o: &Override, from: DateTime<Utc>, to: DateTime<Utc>) -> (Shift, Source) {
    (
        Shift {
            start: o.start.max(from),
            end: o.end.min(to),
            members: vec![o.member_id.clone()],
        },
        Source::Override { id: o.id.clone() },
    )
}

fn zone(version: &Version) -> Tz {
    // Validated when saved.
    version.time_zone.parse().unwrap_or(Tz::UTC)
}

/// The versions in force within `[from, to)`, each with the part of the window it covers.
fn version_spans(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(&Version, DateTime<Utc>, DateTime<Utc>)> {
    let mut spans = Vec::new();
    for (i, version) in schedule.versions.iter().enumerate() {
        let lo = version.effective_from.map_or(from, |t| t.max(from));
        let hi = schedule
            .versions
            .get(i + 1)
            .and_then(|next| next.effective_from)
            .map_or(to, |t| t.min(to));
        if lo < hi {
            spans.push((version, lo, hi));
        }
    }
    spans
}

/// The instant a local wall time starts something at.
pub fn start_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => skipped_forward(tz, local),
    }
}

/// The instant a local wall time ends something at.
pub fn end_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.max(b).with_timezone(&Utc),
        LocalResult::None => skipped_forward(tz, local),
    }
}

/// A skipped wall time read with the offset in force before the gap, which lands as far past
/// the gap's end as the time was past its start.
fn skipped_forward(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let before = tz
        .offset_from_utc_datetime(&(local - Duration::days(1)))
        .fix()
        .local_minus_utc();
    (local - Duration::seconds(i64::from(before))).and_utc()
}

/// The local wall time turn `k` starts (`k` may be negative: turns before the first handoff).
fn turn_local(layer: &Layer, k: i64) -> Option<NaiveDateTime> {
    let n = i64::from(layer.rotation.every.max(1)).checked_mul(k)?;
    let first = layer.first_handoff;
    match layer.rotation.unit {
        RotationUnit::Hour => first.checked_add_signed(Duration::try_hours(n)?),
        RotationUnit::Day => first.checked_add_signed(Duration::try_days(n)?),
        RotationUnit::Week => first.checked_add_signed(Duration::try_days(n.checked_mul(7)?)?),
        RotationUnit::Month => {
            let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
            if n >= 0 {
                first.checked_add_months(months)
            } else {
                first.checked_sub_months(months)
            }
        }
    }
}

fn turn_start(layer: &Layer, tz: Tz, k: i64) -> DateTime<Utc> {
    match turn_local(layer, k) {
        Some(local) => start_instant(tz, local),
        None if k < 0 => DateTime::<Utc>::MIN_UTC,
        None => DateTime::<Utc>::MAX_UTC,
    }
}

/// The turn in force at `t`: estimated on the wall clock, then corrected on real instants.
fn turn_at(layer: &Layer, tz: Tz, t: DateTime<Utc>) -> i64 {
    let local = t.with_timezone(&tz).naive_local();
    let first = layer.first_handoff;
    let every = i64::from(layer.rotation.every.max(1));
    let mut k = match layer.rotation.unit {
        RotationUnit::Month => {
            let months = |d: NaiveDateTime| i64::from(d.year()) * 12 + i64::from(d.month0());
            (months(local) - months(first)).div_euclid(every)
        }
        unit => {
            let step = every
                * match unit {
                    RotationUnit::Hour => 3600,
                    RotationUnit::Day => 86_400,
                    _ => 7 * 86_400,
                };
            (local - first).num_seconds().div_euclid(step)
        }
    };
    while k > i64::MIN / 2 && turn_start(layer, tz, k) > t {
        k -= 1;
    }
    while k < i64::MAX / 2 && turn_start(layer, tz, k + 1) <= t {
        k += 1;
    }
    k
}

/// One layer's shifts within `[from, to)`: its turns, inside its active dates and restrictions.
pub fn layer_shifts(layer: &Layer, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Shift> {
    let active_from = start_instant(tz, layer.active_from.unwrap_or(layer.first_handoff));
    let lo = from.max(active_from);
    let hi = layer.active_until.map_or(to, |t| to.min(end_instant(tz, t)));
    if lo >= hi || layer.participants.is_empty() {
        return Vec::new();
    }
    let count = layer.participants.len() as i64;
    let mut turns = Vec::new();
    let mut k = turn_at(layer, tz, lo);
    let mut start = turn_start(layer, tz, k);
    while start < hi {
        let end = turn_start(layer, tz, k + 1);
        let (s, e) = (start.max(lo), end.min(hi));
        if s < e {
            turns.push(Shift {
                start: s,
                end: e,
                members: layer.participants[k.rem_euclid(count) as usize].0.clone(),
            });
        }
        k += 1;
        start = end;
    }
    if layer.restrictions.is_empty() {
        return turns;
    }
    let windows = restriction_windows(&layer.restrictions, tz, lo, hi);
    intersect(&turns, &windows)
}

/// The restriction windows meeting `[from, to)`, merged where they touch, in order.
fn restriction_windows(
    restrictions: &[Restriction],
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let first_day = from.with_timezone(&tz).date_naive() - Duration::days(1);
    let last_day = to.with_timezone(&tz).date_naive();
    let mut windows = Vec::new();
    let mut day = first_day;
    while day <= last_day {
        let weekday = day.weekday().num_days_from_monday() as u8;
        for r in restrictions.iter().filter(|r| r.days.contains(&weekday)) {
            let start = start_instant(tz, day.and_time(r.start));
            let end_day = if r.end <= r.start {
                day + Duration::days(1)
            } else {
                day
            };
            let end = end_instant(tz, end_day.and_time(r.end));
            let (s, e) = (start.max(from), end.min(to));
            if s < e {
                windows.push((s, e));
            }
        }
        day += Duration::days(1);
    }
    windows.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(windows.len());
    for (s, e) in windows {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// The parts of `shifts` inside `windows` (both sorted, neither overlapping itself).
fn intersect(shifts: &[Shift], windows: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<Shift> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < shifts.len() && j < windows.len() {
        let (shift, (ws, we)) = (&shifts[i], windows[j]);
        let (s, e) = (shift.start.max(ws), shift.end.min(we));
        if s < e {
            out.push(Shift {
                start: s,
                end: e,
                members: shift.members.clone(),
            });
        }
        if shift.end <= we {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The final schedule: at every instant the highest entry of `stack` with a shift there wins.
/// Each entry is sorted and does not overlap itself.
fn overlay(stack: &[Vec<(Shift, Source)>], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<FinalShift> {
    let mut bounds: Vec<DateTime<Utc>> = stack
        .iter()
        .flatten()
        .flat_map(|(s, _)| [s.start, s.end])
        .chain([from, to])
        .filter(|t| *t >= from && *t <= to)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut cursors = vec![0usize; stack.len()];
    let mut out: Vec<FinalShift> = Vec::new();
    for pair in bounds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mut winner = None;
        for (level, entries) in stack.iter().enumerate().rev() {
            let cursor = &mut cursors[level];
            while *cursor < entries.len() && entries[*cursor].0.end <= a {
                *cursor += 1;
            }
            if let Some((shift, source)) = entries.get(*cursor)
                && shift.start <= a
            {
                winner = Some((shift, source));
                break;
            }
        }
        let Some((shift, source)) = winner else {
            continue;
        };
        match out.last_mut() {
            Some(last)
                if last.shift.end == a && last.shift.members == shift.members && last.source == *source =>
            {
                last.shift.end = b;
            }
            _ => out.push(FinalShift {
                shift: Shift {
                    start: a,
                    end: b,
                    members: shift.members.clone(),
                },
                source: source.clone(),
            }),
        }
    }
    out
}

fn gaps(final_shifts: &[FinalShift], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut at = from;
    for f in final_shifts {
        if f.shift.start > at {
            gaps.push(Gap {
                start: at,
                end: f.shift.start,
            });
        }
        at = at.max(f.shift.end);
    }
    if at < to {
        gaps.push(Gap { start: at, end: to });
    }
    gaps
}

#[cfg(test)]
mod tests {
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
}
