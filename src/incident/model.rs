//! The incident domain's records: incidents with their timeline, members, alert sources,
//! escalation rules, escalation progress and the cards sent for an incident.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::Priority;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// How urgent: critical 3, warning 2, info 1.
    pub fn urgency(self) -> u8 {
        match self {
            Severity::Critical => 3,
            Severity::Warning => 2,
            Severity::Info => 1,
        }
    }

    pub fn priority(self) -> Priority {
        match self {
            Severity::Critical => Priority::Critical,
            Severity::Warning => Priority::Warning,
            Severity::Info => Priority::Info,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Triggered,
    Acknowledged,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Triggered => "triggered",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

/// Where an action on an incident came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Card,
    Bot,
    Homepage,
    Api,
    Alert,
    System,
}

/// Who did something, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub via: Via,
    /// A member id, an admin principal (`user:admin`, `token:ci`), an alert source id, or
    /// nothing for the system itself.
    pub who: Option<String>,
    /// A readable name for cards and the timeline.
    pub name: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            via: Via::System,
            who: None,
            name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// `triggered`, `acknowledged`, `unacknowledged`, `resolved`, `snoozed`, `snooze_ended`,
    /// `reopened`, `reassigned`, `responders_added`, `note`, `notified`, `escalated`, `not_linked`,
    /// `war_room_opened`, `war_room_joined`, `war_room_failed`, `war_room_closed`,
    /// `action_refused` (someone whose role does not let them act tried to).
    pub kind: String,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: String,
    /// The short number people type (`#42`).
    pub number: u64,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub status: Status,
    /// Notifications pause until then; the incident is triggered again when it passes.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// The responders, by member id: the people each level notifies, whoever acknowledges,
    /// and whoever a reassignment names (which replaces them).
    pub assignees: Vec<String>,
    /// Names of those who acknowledged it.
    pub acknowledged_by: Vec<String>,
    pub dedup_key: Option<String>,
    /// The alert source it came from, if any.
    pub source_id: Option<String>,
    /// The escalation rule that matched when it opened (or reopened).
    pub rule_id: Option<String>,
    /// The integration its cards go through (the rule's).
    pub integration_id: Option<String>,
    /// How many alerts merged into it (1 for the one that opened it).
    pub alert_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Bumped on every change, so a card rendered from an older state is known to be stale.
    pub version: u64,
    pub timeline: Vec<TimelineEvent>,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.status != Status::Resolved
    }

    pub fn snoozed_at(&self, now: DateTime<Utc>) -> bool {
        self.snoozed_until.is_some_and(|t| t > now)
    }
}

/// A person's identity in one Lark app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LarkIdentity {
    pub open_id: String,
    /// `lookup` (batch look-up by email/mobile), `oauth` or `manual`.
    pub linked_via: String,
    pub linked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub mobile: Option<String>,
    /// Lark identity by integration id; a member without one for an integration is "not linked".
    pub lark: BTreeMap<String, LarkIdentity>,
    /// What the member may do from Lark (cards, bot commands, the homepage).
    #[serde(default)]
    pub role: MemberRole,
    pub created_at: DateTime<Utc>,
}

/// What a member may do from Lark. Members stored before roles existed are responders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// May act on incidents from cards, bot commands and the homepage.
    #[default]
    Responder,
    /// May look, not act.
    Viewer,
    /// May act, and change settings from the homepage.
    Admin,
}

impl MemberRole {
    /// The one answer to "may this member act on an incident from Lark?".
    pub fn may_act(self) -> bool {
        matches!(self, MemberRole::Responder | MemberRole::Admin)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Responder => "responder",
            MemberRole::Viewer => "viewer",
            MemberRole::Admin => "admin",
        }
    }
}

/// Somewhere alerts come from, authenticated by its own integration key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertSource {
    pub id: String,
    pub name: String,
    /// SHA-256 of the integration key: the key itself is shown once, at creation.
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
}

/// What must not happen within `escalate_after_minutes` for the next level to be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalateUnless {
    #[default]
    Acknowledged,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Member ids.
    #[serde(default)]
    pub members: Vec<String>,
    /// Group chat ids (`oc_…`) the bot is in.
    #[serde(default)]
    pub chats: Vec<String>,
    /// Custom group-bot webhook ids (`bwh_…`).
    #[serde(default)]
    pub bot_webhooks: Vec<String>,
    /// Schedule ids: whoever is on call in them when the level notifies.
    #[serde(default)]
    pub schedules: Vec<String>,
    /// When nobody is paged in person (no members, nobody on call in the schedules), call the
    /// next level right after this one's chats got the card.
    #[serde(default)]
    pub fall_through_when_nobody_on_call: bool,
    /// Nobody is notified before this; an incident closed meanwhile notifies nobody.
    #[serde(default)]
    pub delay_minutes: u32,
    /// Notify again every this many minutes while unacknowledged…
    #[serde(default)]
    pub repeat_every_minutes: Option<u32>,
    /// …this many more times.
    #[serde(default)]
    pub repeat_count: u32,
    /// Call the next level when the incident is not acknowledged (or resolved) this long after
    /// this level's first notification.
    #[serde(default)]
    pub escalate_after_minutes: Option<u32>,
    #[serde(default)]
    pub escalate_unless: EscalateUnless,
}

/// A weekly window: `days` (0 = Monday … 6 = Sunday), from `start` to `end` (`HH:MM`, end
/// exclusive; an end before the start runs past midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub days: Vec<u8>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// Any of these severities; empty = any.
    #[serde(default)]
    pub severities: Vec<Severity>,
    /// Every one of these labels with exactly this value.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: String,
    pub name: String,
    /// Rules are tried in ascending position; the first match wins.
    pub position: u32,
    pub integration_id: String,
    #[serde(rename = "match")]
    pub matches: RuleMatch,
    /// Empty = always.
    pub time_windows: Vec<TimeWindow>,
    /// IANA time zone of the windows.
    pub timezone: String,
    pub levels: Vec<Level>,
    /// `auto`: matching incidents get a war room without anyone pressing for it.
    #[serde(default)]
    pub war_room: WarRoomMode,
    pub created_at: DateTime<Utc>,
}

/// Whether a rule opens war rooms by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarRoomMode {
    /// Someone presses "War room" (card, API).
    #[default]
    Manual,
    Auto,
}

/// How far an open incident's escalation has gone; durable so a restart resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub incident_id: String,
    pub rule_id: String,
    pub integration_id: String,
    pub level: usize,
    /// When the current level was entered.
    pub level_started_at: DateTime<Utc>,
    /// The next notification of the current level; `None` when its repeats are used up.
    pub next_notify_at: Option<DateTime<Utc>>,
    /// Notifications of the current level so far.
    pub notified: u32,
    /// When the current level first notified (the escalation wait counts from there).
    pub first_notified_at: Option<DateTime<Utc>>,
}

/// One card sent for an incident, remembered so every one of them is updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SentCard {
    pub incident_id: String,
    pub message_id: String,
    pub integration_id: String,
    /// `open_id:ou_…` or `chat_id:oc_…`.
    pub receiver: String,
    pub sent_at: DateTime<Utc>,
}

#[cfg(test)]
impl Incident {
    /// A triggered critical incident with nothing else set, for unit tests to adjust.
    pub(crate) fn sample(now: DateTime<Utc>) -> Incident {
        Incident {
            id: "inc_1".into(),
            number: 1,
            title: "t".into(),
            description: String::new(),
            severity: Severity::Critical,
            labels: Default::default(),
            status: Status::Triggered,
            snoozed_until: None,
            assignees: vec![],
            acknowledged_by: vec![],
            dedup_key: None,
            source_id: None,
            rule_id: None,
            integration_id: None,
            alert_count: 1,
            created_at: now,
            updated_at: now,
            resolved_at: None,
            version: 1,
            timeline: vec![],
        }
    }
}
