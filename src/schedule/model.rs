//! The schedule domain's records: schedules with their versions of layers, overrides and
//! calendar feeds, and how their local wall times read and write as JSON.

use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rotation's unit of length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RotationUnit {
    Hour,
    Day,
    Week,
    Month,
}

/// How long one turn lasts: `every` × `unit`, counted on the wall clock (a week is 7 calendar
/// days in any season).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub unit: RotationUnit,
    #[serde(default = "one")]
    pub every: u32,
}

fn one() -> u32 {
    1
}

/// One turn of a rotation: a member, or a group of members on call together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant(pub Vec<String>);

impl Serialize for Participant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

/// A member id, or a list of member ids (as serialized above).
impl utoipa::PartialSchema for Participant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let id = || ObjectBuilder::new().schema_type(Type::String);
        OneOfBuilder::new()
            .item(id().description(Some("A member id.")))
            .item(
                ArrayBuilder::new()
                    .items(id())
                    .description(Some("Member ids who share a turn.")),
            )
            .into()
    }
}

impl utoipa::ToSchema for Participant {}

impl<'de> Deserialize<'de> for Participant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Participant;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member id, or a list of member ids who share a turn")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Participant, E> {
                Ok(Participant(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Participant, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    ids.push(id);
                }
                Ok(Participant(ids))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A weekly window in the schedule's time zone: `days` (0 = Monday … 6 = Sunday), from `start`
/// to `end` (`HH:MM`); an end at or before the start runs into the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    pub days: Vec<u8>,
    #[serde(with = "clock_time")]
    #[schema(value_type = String, example = "09:00")]
    pub start: NaiveTime,
    #[serde(with = "clock_time")]
    #[schema(value_type = String, example = "18:00")]
    pub end: NaiveTime,
}

/// A rotation of participants. Later layers win where layers overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub name: String,
    /// In turn order, starting at the first handoff.
    pub participants: Vec<Participant>,
    pub rotation: Rotation,
    /// The local wall time the first participant's turn starts.
    #[serde(with = "wall_time")]
    #[schema(value_type = String, example = "2026-12-07T09:00:00")]
    pub first_handoff: NaiveDateTime,
    /// Local wall time the layer starts to apply (the first handoff when absent; earlier turns
    /// count back from it).
    #[serde(default, with = "optional_wall_time", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "2026-12-07T09:00:00")]
    pub active_from: Option<NaiveDateTime>,
    /// Local wall time the layer stops applying; open when absent.
    #[serde(default, with = "optional_wall_time", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "2027-01-04T09:00:00")]
    pub active_until: Option<NaiveDateTime>,
    /// Only within these weekly windows; always when empty.
    #[serde(default)]
    pub restrictions: Vec<Restriction>,
}

/// The layers and time zone of a schedule from `effective_from` until the next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Version {
    /// `None` for the first version, which applies to all time before the next one.
    pub effective_from: Option<DateTime<Utc>>,
    pub time_zone: String,
    pub layers: Vec<Layer>,
    pub created_at: DateTime<Utc>,
}

/// Someone on call from `start` to `end` in place of whoever the layers name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Override {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub member_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A Lark message to whoever takes over, `minutes_before` each shift starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffNotice {
    pub minutes_before: u32,
    /// Also tell whoever hands over.
    #[serde(default)]
    pub notify_outgoing: bool,
}

/// A card of who is on call now and next, once a local day at `at`, to chats of one integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DailySummary {
    /// The integration whose bot posts the card (and is in the chats).
    pub integration_id: String,
    pub chats: Vec<String>,
    /// Local time of day in the schedule's zone.
    #[serde(with = "clock_time")]
    #[schema(value_type = String, example = "09:30")]
    pub at: NaiveTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Not versioned: it moves no shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_notice: Option<HandoffNotice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_summary: Option<DailySummary>,
    /// Oldest first; each later one takes effect at its `effective_from`.
    pub versions: Vec<Version>,
    /// In the order they were made: a later override wins where two overlap.
    pub overrides: Vec<Override>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The version in force at `at`.
    pub fn version_at(&self, at: DateTime<Utc>) -> &Version {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_from.is_none_or(|from| from <= at))
            .unwrap_or(&self.versions[0])
    }

    /// Whether any version or override names `member_id`.
    pub fn names_member(&self, member_id: &str) -> bool {
        self.overrides.iter().any(|o| o.member_id == member_id)
            || self.versions.iter().any(|v| {
                v.layers
                    .iter()
                    .flat_map(|l| &l.participants)
                    .any(|p| p.0.iter().any(|m| m == member_id))
            })
    }
}

/// A notice that went out: what it was for (a shift's start, a daily card's time) and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noticed {
    pub due: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
}

/// Whose shifts a calendar feed carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedTarget {
    Schedule(String),
    Member(String),
}

/// A secret iCalendar URL; the token is shown once and stored as its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    pub id: String,
    #[serde(flatten)]
    pub target: FeedTarget,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Local wall times as `YYYY-MM-DDTHH:MM` (seconds optional), with no offset: the schedule's
/// time zone gives them their instant.
pub mod wall_time {
    use super::*;

    const EXPECTED: &str =
        "a local wall time such as 2026-12-07T09:00, without an offset (the schedule's time zone applies)";

    pub fn parse(text: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
            .ok()
    }

    pub fn format(t: &NaiveDateTime) -> String {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not {EXPECTED}")))
    }
}

mod optional_wall_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => wall_time::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "wall_time")] NaiveDateTime);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// Times of day as `HH:MM`.
mod clock_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a time of day HH:MM")))
    }
}
