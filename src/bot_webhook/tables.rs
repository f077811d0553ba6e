//! The tables `bot_webhook` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::BotWebhookRecord;

/// Group-bot webhooks by id; the URL and the signing secret inside are sealed, never plain.
pub const BOT_WEBHOOKS: Table<String, BotWebhookRecord> = Table::new("bot_webhooks_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[BOT_WEBHOOKS.name];
