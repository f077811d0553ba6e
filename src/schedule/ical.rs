//! The iCalendar (RFC 5545) text of a calendar feed: one VEVENT per final shift, in UTC, so
//! calendar apps show shifts in their own zone and never re-apply DST rules of their own.

use chrono::{DateTime, Duration, Utc};

use super::resolve::{FinalShift, Source};

/// How far back a feed reaches.
pub const PAST_DAYS: i64 = 7;
/// How far ahead a feed reaches.
pub const AHEAD_DAYS: i64 = 60;

/// The window a feed rendered at `now` covers.
pub fn window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (now - Duration::days(PAST_DAYS), now + Duration::days(AHEAD_DAYS))
}

/// One calendar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub uid: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: String,
    pub description: String,
}

impl Event {
    /// The entry of a final shift of the schedule `schedule_id`, naming members by `name`.
    pub fn of(
        schedule_id: &str,
        schedule_name: &str,
        shift: FinalShift,
        name: impl Fn(&str) -> String,
    ) -> Event {
        let people: Vec<String> = shift.shift.members.iter().map(|m| name(m)).collect();
        let from = match &shift.source {
            Source::Layer { name, .. } => format!("layer {name}"),
            Source::Override { .. } => "an override".to_string(),
        };
        Event {
            uid: format!(
                "{schedule_id}-{}-{}@lark-oncall",
                shift.shift.start.timestamp(),
                shift.shift.members.join("+")
            ),
            start: shift.shift.start,
            end: shift.shift.end,
            summary: format!("On call: {} ({schedule_name})", people.join(", ")),
            description: format!("{schedule_name}, from {from}"),
        }
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// RFC 5545 §3.3.11 text escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends one content line, folded at 75 octets (§3.1) without splitting a character.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// The whole calendar named `name`.
pub fn calendar(name: &str, feed_id: &str, now: DateTime<Utc>, events: &[Event]) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//lark-oncall//schedules//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    line(&mut out, &format!("X-WR-CALNAME:{}", escape(name)));
    line(&mut out, &format!("X-WR-RELCALID:{feed_id}"));
    for e in events {
        line(&mut out, "BEGIN:VEVENT");
        line(&mut out, &format!("UID:{}", escape(&e.uid)));
        line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        line(&mut out, &format!("DTSTART:{}", stamp(e.start)));
        line(&mut out, &format!("DTEND:{}", stamp(e.end)));
        line(&mut out, &format!("SUMMARY:{}", escape(&e.summary)));
        line(&mut out, &format!("DESCRIPTION:{}", escape(&e.description)));
        line(&mut out, "TRANSP:TRANSPARENT");
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}
