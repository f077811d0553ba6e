//! The tables `incident` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

//!
//! The index tables (`INCIDENT_NUMBERS`, `OPEN_INCIDENTS`, `INCIDENT_DEDUP`, `SNOOZES`, `ESCALATIONS`) are written
//! only by [`super::store_incident`], which keeps them consistent with `INCIDENTS`.

use crate::store::Table;

use super::model::{AlertSource, Escalation, Incident, Member, Rule, SentCard};
use super::war_room::WarRoom;

/// Incidents by id.
pub const INCIDENTS: Table<String, Incident> = Table::new("incidents_v1");
/// Incident ids by short number (`#42`), newest last.
pub const INCIDENT_NUMBERS: Table<u64, String> = Table::new("incident_numbers_v1");
/// Open (triggered or acknowledged) incident ids by number, so the lists people look at most
/// (*My incidents*, the open view, the bot's `list`) never walk the resolved history.
pub const OPEN_INCIDENTS: Table<u64, String> = Table::new("incident_open_v1");
/// The open incident of each dedup key (`{source or "api"}/{key}`); removed when it resolves.
pub const INCIDENT_DEDUP: Table<String, String> = Table::new("incident_dedup_v1");
/// Every card sent for an incident, by `{incident_id}/{message_id}`.
pub const INCIDENT_CARDS: Table<String, SentCard> = Table::new("incident_cards_v1");
/// Escalation progress of open incidents, by incident id.
pub const ESCALATIONS: Table<String, Escalation> = Table::new("escalations_v1");
/// Snoozed incidents by `{until as ms:015}/{incident_id}`, so the tick reads only ended snoozes.
pub const SNOOZES: Table<String, String> = Table::new("incident_snoozes_v1");
/// On-call members by id.
pub const MEMBERS: Table<String, Member> = Table::new("members_v1");
/// Alert sources by id.
pub const ALERT_SOURCES: Table<String, AlertSource> = Table::new("alert_sources_v1");
/// Alert source ids by the SHA-256 of their integration key.
pub const ALERT_SOURCE_KEYS: Table<String, String> = Table::new("alert_source_keys_v1");
/// Escalation rules by id (their order is their `position`).
pub const RULES: Table<String, Rule> = Table::new("escalation_rules_v1");
/// Incident id → its war room (the latest one).
pub const WAR_ROOMS: Table<String, WarRoom> = Table::new("war_rooms_v1");
/// War-room chat id → incident id.
pub const WAR_ROOM_CHATS: Table<String, String> = Table::new("war_room_chats_v1");

/// The group-bot webhooks an incident notified, by `{incident_id}/{webhook_id}`.
pub const INCIDENT_BOT_WEBHOOKS: Table<String, super::group_bot::BotWebhookNotice> =
    Table::new("incident_bot_webhooks_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[
    INCIDENTS.name,
    INCIDENT_NUMBERS.name,
    OPEN_INCIDENTS.name,
    INCIDENT_DEDUP.name,
    INCIDENT_CARDS.name,
    ESCALATIONS.name,
    SNOOZES.name,
    MEMBERS.name,
    ALERT_SOURCES.name,
    ALERT_SOURCE_KEYS.name,
    RULES.name,
    WAR_ROOMS.name,
    WAR_ROOM_CHATS.name,
    INCIDENT_BOT_WEBHOOKS.name,
];
