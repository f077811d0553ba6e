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
