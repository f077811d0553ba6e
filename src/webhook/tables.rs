//! The tables `webhook` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::{QueuedEvent, Subscription};

/// Outbound incident webhook subscriptions by id (signing secrets sealed).
pub const WEBHOOKS: Table<String, Subscription> = Table::new("webhooks_v1");
/// Webhook events waiting to be (re)sent, by sequence number.
pub const WEBHOOK_QUEUE: Table<u64, QueuedEvent> = Table::new("webhook_queue_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[WEBHOOKS.name, WEBHOOK_QUEUE.name];
