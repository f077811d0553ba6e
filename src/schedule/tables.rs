//! The tables `schedule` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::cover::CoverRequest;
use super::model::{Feed, Noticed, Schedule};

/// Schedules by id, with their versions and overrides.
pub const SCHEDULES: Table<String, Schedule> = Table::new("schedules_v1");
/// Calendar feeds by id.
pub const FEEDS: Table<String, Feed> = Table::new("schedule_feeds_v1");
/// Calendar feed ids by the SHA-256 of their token.
pub const FEED_TOKENS: Table<String, String> = Table::new("schedule_feed_tokens_v1");

/// Notices sent, so each goes out once: `handoff/{schedule}/{shift start, Unix s}/{member}`
/// and `daily/{schedule}/{local date}/{chat}`.
pub const NOTICES: Table<String, Noticed> = Table::new("schedule_notices_v1");

/// Requests to cover someone's shift, by id.
pub const COVER_REQUESTS: Table<String, CoverRequest> = Table::new("schedule_cover_requests_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[
    SCHEDULES.name,
    FEEDS.name,
    FEED_TOKENS.name,
    NOTICES.name,
    COVER_REQUESTS.name,
];
