//! The tables `delivery` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::job::Job;
use super::oplog::OpEntry;
use super::quota::MonthUsage;

/// The outbox: every Lark call that changes something, written before it is attempted.
pub const OUTBOX: Table<u64, Job> = Table::new("outbox_v1");
/// The operation log, one entry per job outcome, by sequence number.
pub const OPLOG: Table<u64, OpEntry> = Table::new("oplog_v1");
/// Monthly quota usage by `{integration_id}/{YYYY-MM}`.
pub const QUOTA: Table<String, MonthUsage> = Table::new("quota_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[OUTBOX.name, OPLOG.name, QUOTA.name];
