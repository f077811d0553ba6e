//! The tables `integration` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::IntegrationRecord;
use super::chats::KnownChat;
use super::inbound::InboxEntry;

/// Lark integrations by id; secrets inside are sealed with the key file, never plain.
pub const INTEGRATIONS: Table<String, IntegrationRecord> = Table::new("integrations_v1");
/// Lark deliveries already seen, by `{integration_id}/{kind}:{id}`, with the Unix ms they were seen.
pub const DEDUP: Table<String, i64> = Table::new("dedup_v1");
/// The same entries ordered by time (`{ms:015}/{dedup key}`), written by older builds: no longer
/// written (a second insert per request); pruning empties what is left.
pub const DEDUP_EXPIRY: Table<String, ()> = Table::new("dedup_expiry_v1");
/// Accepted events not yet handled, by sequence number.
pub const INBOX: Table<u64, InboxEntry> = Table::new("inbox_v1");
/// Group chats each integration's bot is in, by `{integration_id}/{chat_id}`.
pub const CHATS: Table<String, KnownChat> = Table::new("chats_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[
    INTEGRATIONS.name,
    DEDUP.name,
    DEDUP_EXPIRY.name,
    INBOX.name,
    CHATS.name,
];
