//! Every table in the state file, with its key and row types. Names carry a version suffix so a
//! changed row type becomes a new table migrated by copy, never a silent reinterpretation.

use super::Table;

/// Schema version, sequence counters and other small facts about the file itself.
pub const META: Table<String, u64> = Table::new("meta_v1");

use crate::auth::{AdminAccount, ApiToken, Session};

/// Admin accounts by username.
pub const ADMINS: Table<String, AdminAccount> = Table::new("admins_v1");
/// Browser sessions by session id (the cookie carries `id.secret`; only the secret's hash is kept).
pub const SESSIONS: Table<String, Session> = Table::new("sessions_v1");
/// API tokens by id (the token is `lko_<id>_<secret>`; only the secret's hash is kept).
pub const API_TOKENS: Table<String, ApiToken> = Table::new("api_tokens_v1");

use crate::delivery::job::Job;
use crate::delivery::oplog::OpEntry;
use crate::delivery::quota::MonthUsage;

/// The outbox: every Lark call that changes something, written before it is attempted.
pub const OUTBOX: Table<u64, Job> = Table::new("outbox_v1");
/// The operation log, one entry per job outcome, by sequence number.
pub const OPLOG: Table<u64, OpEntry> = Table::new("oplog_v1");
/// Monthly quota usage by `{integration_id}/{YYYY-MM}`.
pub const QUOTA: Table<String, MonthUsage> = Table::new("quota_v1");

use crate::integration::IntegrationRecord;
use crate::integration::inbound::InboxEntry;

/// Lark integrations by id; secrets inside are sealed with the key file, never plain.
pub const INTEGRATIONS: Table<String, IntegrationRecord> = Table::new("integrations_v1");
/// Lark deliveries already seen, by `{integration_id}/{kind}:{id}`, with the Unix ms they were seen.
pub const DEDUP: Table<String, i64> = Table::new("dedup_v1");
/// The same entries ordered by time (`{ms:015}/{dedup key}`), so pruning reads only expired ones.
pub const DEDUP_EXPIRY: Table<String, ()> = Table::new("dedup_expiry_v1");
/// Accepted events not yet handled, by sequence number.
pub const INBOX: Table<u64, InboxEntry> = Table::new("inbox_v1");
/// Group chats each integration's bot is in, by `{integration_id}/{chat_id}`.
pub const CHATS: Table<String, crate::integration::chats::KnownChat> = Table::new("chats_v1");
/// Outbound incident webhook subscriptions by id (signing secrets sealed).
pub const WEBHOOKS: Table<String, crate::webhook::Subscription> = Table::new("webhooks_v1");
/// Webhook events waiting to be (re)sent, by sequence number.
pub const WEBHOOK_QUEUE: Table<u64, crate::webhook::QueuedEvent> = Table::new("webhook_queue_v1");

use crate::incident::model::{AlertSource, Escalation, Incident, Member, Rule, SentCard};

/// Incidents by id.
pub const INCIDENTS: Table<String, Incident> = Table::new("incidents_v1");
/// Incident ids by short number (`#42`), newest last.
pub const INCIDENT_NUMBERS: Table<u64, String> = Table::new("incident_numbers_v1");
/// The open incident of each dedup key (`{source or "api"}/{key}`); removed when it resolves.
pub const INCIDENT_DEDUP: Table<String, String> = Table::new("incident_dedup_v1");
/// Every card sent for an incident, by `{incident_id}/{message_id}`.
pub const INCIDENT_CARDS: Table<String, SentCard> = Table::new("incident_cards_v1");
/// Escalation progress of open incidents, by incident id.
pub const ESCALATIONS: Table<String, Escalation> = Table::new("escalations_v1");
/// On-call members by id.
pub const MEMBERS: Table<String, Member> = Table::new("members_v1");
/// Alert sources by id.
pub const ALERT_SOURCES: Table<String, AlertSource> = Table::new("alert_sources_v1");
/// Alert source ids by the SHA-256 of their integration key.
pub const ALERT_SOURCE_KEYS: Table<String, String> = Table::new("alert_source_keys_v1");
/// Escalation rules by id (their order is their `position`).
pub const RULES: Table<String, Rule> = Table::new("escalation_rules_v1");
/// Snoozed incidents by `{until as ms:015}/{incident_id}`, so the tick reads only ended snoozes.
/// incident id → its war room (the latest one).
pub const WAR_ROOMS: Table<String, crate::incident::war_room::WarRoom> = Table::new("war_rooms_v1");
/// War-room chat id → incident id.
pub const WAR_ROOM_CHATS: Table<String, String> = Table::new("war_room_chats_v1");
pub const SNOOZES: Table<String, String> = Table::new("incident_snoozes_v1");
