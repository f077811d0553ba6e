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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shift {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub members: Vec<String>,
}

/// Where a final shift comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Layer { position: usize, name: String },
    Override { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FinalShift {
    #[serde(flatten)]
    pub shift: Shift,
    pub source: Source,
}

/// One layer's own shifts while one version is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LayerShifts {
    pub position: usize,
    pub name: String,
    /// Of the version the layer belongs to (`None`: the first version).
    pub effective_from: Option<DateTime<Utc>>,
    pub shifts: Vec<Shift>,
}

/// A window when nobody is on call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
mod tests;
