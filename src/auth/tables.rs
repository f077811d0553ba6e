//! The tables `auth` owns in the state file. Names carry a version suffix so a changed row
//! type becomes a new table migrated by copy, never a silent reinterpretation.

use crate::store::Table;

use super::{AdminAccount, ApiToken, Session};

/// Admin accounts by username.
pub const ADMINS: Table<String, AdminAccount> = Table::new("admins_v1");
/// Browser sessions by session id (the cookie carries `id.secret`; only the secret's hash is kept).
pub const SESSIONS: Table<String, Session> = Table::new("sessions_v1");
/// API tokens by id (the token is `lko_<id>_<secret>`; only the secret's hash is kept).
pub const API_TOKENS: Table<String, ApiToken> = Table::new("api_tokens_v1");

/// Every table above, by name (for the schema check and backups).
pub const NAMES: &[&str] = &[ADMINS.name, SESSIONS.name, API_TOKENS.name];
