//! Admin authentication: the admin account (argon2-hashed password, [`passwords`] policy),
//! browser sessions with their CSRF token, hashed API tokens with a scope and an optional expiry,
//! the per-process CLI token, and login throttling ([`throttle`]) by client address
//! ([`client_ip`]).

pub mod client_ip;
pub mod passwords;
pub mod tables;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub use passwords::check_new_password;
use throttle::LoginThrottle;

use crate::ids::{random_hex, sha256_hex};
use crate::store::{Store, StoreError};

pub const ADMIN_USER: &str = "admin";
const SESSION_LIFETIME_HOURS: i64 = 12;
const TOKEN_PREFIX: &str = "lko_";
/// `last_used_at` is written at most this often per token, so a busy scraper costs no writes.
const LAST_USED_WRITE_INTERVAL_SECS: i64 = 60;
/// The longest expiry a token may be given.
pub const MAX_TOKEN_DAYS: u32 = 3650;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminAccount {
    pub username: String,
    pub password_hash: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub username: String,
    pub secret_hash: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything, including tokens, the password, integrations' secrets and backups.
    Admin,
    /// Read-only requests (GET/HEAD) on the admin API, and `/metrics`.
    Read,
    /// `GET /metrics` only: what a Prometheus scraper needs.
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Read, Scope::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
        }
    }

    /// Tokens stored before scopes existed were all full admins, and keep working as such.
    fn before_scopes() -> Scope {
        Scope::Admin
    }

    /// Whether a request (`read_only`: GET or HEAD) to `path` is within this scope.
    pub fn allows(self, read_only: bool, path: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Read => read_only,
            Scope::Metrics => read_only && path == "/metrics",
        }
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Scope, AuthError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| AuthError::Invalid(format!("scope: {s:?} is not one of admin, read, metrics")))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    #[serde(default = "Scope::before_scopes")]
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub enum Principal {
    Session {
        /// The session's id (the cookie's first half), to end the others on a password change.
        id: String,
        username: String,
        csrf_token: String,
    },
    Token {
        id: String,
        name: String,
        scope: Scope,
    },
    /// The local CLI (`backup` while the service runs), proven by the token file in the state dir.
    Cli,
}

impl Principal {
    pub fn describe(&self) -> String {
        match self {
            Principal::Session { username, .. } => format!("user:{username}"),
            Principal::Token { name, .. } => format!("token:{name}"),
            Principal::Cli => "cli".into(),
        }
    }

    /// Refuses a request outside a token's scope; sessions and the CLI are full admins.
    pub fn authorize(&self, read_only: bool, path: &str) -> Result<(), AuthError> {
        match self {
            Principal::Token { scope, .. } if !scope.allows(read_only, path) => {
                Err(AuthError::InsufficientScope(*scope))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many login attempts; retry in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
    #[error("invalid or expired credentials")]
    InvalidCredentials,
    #[error("this token's scope `{}` does not allow this request", .0.as_str())]
    InsufficientScope(Scope),
    #[error("current_password: does not match the account's password")]
    WrongCurrentPassword,
    #[error("{0}")]
    Invalid(String),
    #[error("no such token")]
    NoSuchToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new random secret as lowercase hex (`bytes` of entropy).
fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub fn hash_password(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 hashing with default parameters")
        .to_string()
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub struct Auth {
    store: Store,
    throttle: LoginThrottle,
    cli_token: String,
    failed_logins: Counter,
    /// When each token's `last_used_at` was last written.
    last_used_written: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Auth {
    pub fn new(store: Store, failed_logins: Counter) -> Arc<Auth> {
        Arc::new(Auth {
            store,
            throttle: LoginThrottle::new(),
            cli_token: format!("{TOKEN_PREFIX}cli_{}", random_hex(32)),
            failed_logins,
            last_used_written: Mutex::new(HashMap::new()),
        })
    }

    /// The token the local CLI presents; written to a 0600 file in the state directory.
    pub fn cli_token(&self) -> &str {
        &self.cli_token
    }

    /// Creates the admin account with a random password if there is none; returns that password.
    pub fn ensure_admin(&self) -> Result<Option<String>, AuthError> {
        if self.store.read(|r| r.get(&tables::ADMINS, ADMIN_USER))?.is_some() {
            return Ok(None);
        }
        let password = random_hex(12);
        let account = AdminAccount {
            username: ADMIN_USER.into(),
            password_hash: hash_password(&password),
            updated_at: Utc::now(),
        };
        let created = self.store.write_blocking(move |w| {
            // Another start-up may have raced us; keep the first account.
            if w.get(&tables::ADMINS, ADMIN_USER)?.is_some() {
                return Ok(false);
            }
            w.put(&tables::ADMINS, ADMIN_USER, &account)?;
            Ok(true)
        })?;
        Ok(created.then_some(password))
    }

    /// Checks `password` for `username` under the login throttle; the account when it matches.
    async fn check_password(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<Option<AdminAccount>, AuthError> {
        if let Err(retry_after) = self.throttle.admit(peer, username) {
            self.failed_logins.inc();
            return Err(AuthError::Throttled { retry_after });
        }
        let account = self.store.read(|r| r.get(&tables::ADMINS, username))?;
        let password = password.to_string();
        // Verify against a dummy hash for unknown users so timing does not reveal which exist.
        let phc = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = {
            let _permit = self.throttle.verify_permit().await;
            tokio::task::spawn_blocking(move || verify_password(&password, &phc))
                .await
                .unwrap_or(false)
        };
        if ok {
            return Ok(account);
        }
        self.failed_logins.inc();
        self.throttle.failed(peer);
        Ok(None)
    }

    /// Checks a password and opens a session: returns (cookie value, session).
    pub async fn login(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<(String, Session), AuthError> {
        let Some(account) = self.check_password(peer, username, password).await? else {
            // The name is the client's; a capped copy keeps the log line bounded.
            let username: String = username.chars().take(64).collect();
            tracing::warn!(%peer, username, "admin login failed");
            return Err(AuthError::BadCredentials);
        };
        let id = random_hex(16);
        let secret = random_hex(32);
        let now = Utc::now();
        let session = Session {
            username: account.username,
            secret_hash: sha256_hex(secret.as_bytes()),
            csrf_token: random_hex(24),
            created_at: now,
            expires_at: now + Duration::hours(SESSION_LIFETIME_HOURS),
        };
        let stored = session.clone();
        let key = id.clone();
        self.store
            .write(move |w| w.put(&tables::SESSIONS, key.as_str(), &stored))
            .await?;
        Ok((format!("{id}.{secret}"), session))
    }

    pub async fn logout(&self, cookie: &str) -> Result<(), AuthError> {
        if let Some((id, _)) = cookie.split_once('.') {
            let id = id.to_string();
            self.store
                .write(move |w| w.remove(&tables::SESSIONS, id.as_str()))
                .await?;
        }
        Ok(())
    }

    pub fn session(&self, cookie: &str) -> Result<Principal, AuthError> {
        let (id, secret) = cookie.split_once('.').ok_or(AuthError::InvalidCredentials)?;
        let session = self
            .store
            .read(|r| r.get(&tables::SESSIONS, id))?
            .ok_or(AuthError::InvalidCredentials)?;
        if !hashes_equal(&session.secret_hash, &sha256_hex(secret.as_bytes()))
            || session.expires_at < Utc::now()
        {
            return Err(AuthError::InvalidCredentials);
        }
        Ok(Principal::Session {
            id: id.to_string(),
            username: session.username,
            csrf_token: session.csrf_token,
        })
    }

    pub fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if hashes_equal(token, &self.cli_token) {
            return Ok(Principal::Cli);
        }
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(AuthError::InvalidCredentials)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::InvalidCredentials)?;
        let stored = self
            .store
            .read(|r| r.get(&tables::API_TOKENS, id))?
            .ok_or(AuthError::InvalidCredentials)?;
        if !hashes_equal(&stored.secret_hash, &sha256_hex(secret.as_bytes())) {
            return Err(AuthError::InvalidCredentials);
        }
        let now = Utc::now();
        if stored.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidCredentials);
        }
        self.note_use(&stored, now);
        Ok(Principal::Token {
            id: stored.id,
            name: stored.name,
            scope: stored.scope,
        })
    }

    /// Records `last_used_at`, at most once a minute per token, off the request's path.
    fn note_use(&self, token: &ApiToken, now: DateTime<Utc>) {
        let interval = Duration::seconds(LAST_USED_WRITE_INTERVAL_SECS);
        {
            let mut written = self.last_used_written.lock().expect("last-used lock");
            let last = written.get(&token.id).copied().or(token.last_used_at);
            if last.is_some_and(|at| now - at < interval) {
                return;
            }
            written.insert(token.id.clone(), now);
        }
        let (store, id) = (self.store.clone(), token.id.clone());
        tokio::spawn(async move {
            let written = store
                .write(move |w| match w.get(&tables::API_TOKENS, id.as_str())? {
                    Some(mut t) => {
                        t.last_used_at = Some(now);
                        w.put(&tables::API_TOKENS, id.as_str(), &t)
                    }
                    None => Ok(()),
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot record a token's last use");
            }
        });
    }

    /// Creates an API token; the plain token is returned once and only its hash is kept.
    pub async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        expires_in_days: Option<u32>,
    ) -> Result<(ApiToken, String), AuthError> {
        let (token, plain) = new_token(name, scope, expires_in_days)?;
        let stored = token.clone();
        self.store
            .write(move |w| w.put(&tables::API_TOKENS, stored.id.as_str(), &stored))
            .await?;
        Ok((token, plain))
    }

    pub fn list_tokens(&self) -> Result<Vec<ApiToken>, AuthError> {
        Ok(self
            .store
            .read(|r| r.scan_prefix(&tables::API_TOKENS, "", usize::MAX))?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), AuthError> {
        let id = id.to_string();
        let removed = self
            .store
            .write(move |w| w.remove(&tables::API_TOKENS, id.as_str()))
            .await?;
        if removed {
            Ok(())
        } else {
            Err(AuthError::NoSuchToken)
        }
    }

    /// Checks the current password of a session's user before a change (throttled like logins).
    pub async fn verify_current_password(
        &self,
        peer: IpAddr,
        username: &str,
        current: Option<&str>,
    ) -> Result<(), AuthError> {
        let current = current.ok_or_else(|| {
            AuthError::Invalid("current_password: is required to change the password from a session".into())
        })?;
        match self.check_password(peer, username, current).await? {
            Some(_) => Ok(()),
            None => Err(AuthError::WrongCurrentPassword),
        }
    }

    /// Sets the password and ends every session of the user but `keep_session` (the one making
    /// the change, if it was made from a session).
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
        keep_session: Option<&str>,
    ) -> Result<(), AuthError> {
        check_new_password(password)?;
        let account = AdminAccount {
            username: username.into(),
            password_hash: hash_password(password),
            updated_at: Utc::now(),
        };
        let keep = keep_session.map(str::to_string);
        let ended = self
            .store
            .write(move |w| {
                w.put(&tables::ADMINS, account.username.as_str(), &account)?;
                let sessions = w.scan_prefix(&tables::SESSIONS, "", usize::MAX)?;
                let mut ended = 0;
                for (id, session) in sessions {
                    if session.username == account.username && keep.as_deref() != Some(id.as_str()) {
                        w.remove(&tables::SESSIONS, id.as_str())?;
                        ended += 1;
                    }
                }
                Ok(ended)
            })
            .await?;
        tracing::info!(username, ended_sessions = ended, "admin password changed");
        Ok(())
    }

    /// Removes expired sessions and aged-out login-limiter state; returns the sessions removed.
    pub async fn prune(&self) -> Result<usize, AuthError> {
        self.throttle.prune();
        let now = Utc::now();
        let removed = self
            .store
            .write(move |w| {
                let sessions = w.scan_prefix(&tables::SESSIONS, "", usize::MAX)?;
                let mut removed = 0;
                for (id, session) in sessions {
                    if session.expires_at <= now {
                        w.remove(&tables::SESSIONS, id.as_str())?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await?;
        Ok(removed)
    }

    /// Entries the login limiters hold.
    pub fn throttle_entries(&self) -> usize {
        self.throttle.tracked()
    }
}

/// A token row and its plain form `lko_<id>_<secret>`, after checking the name and expiry.
pub fn new_token(
    name: &str,
    scope: Scope,
    expires_in_days: Option<u32>,
) -> Result<(ApiToken, String), AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(AuthError::Invalid("name: must be 1 to 64 characters".into()));
    }
    if let Some(days) = expires_in_days
        && !(1..=MAX_TOKEN_DAYS).contains(&days)
    {
        return Err(AuthError::Invalid(format!(
            "expires_in_days: must be 1 to {MAX_TOKEN_DAYS}"
        )));
    }
    let id = random_hex(6);
    let secret = random_hex(24);
    let now = Utc::now();
    let token = ApiToken {
        id: id.clone(),
        name: name.into(),
        secret_hash: sha256_hex(secret.as_bytes()),
        scope,
        created_at: now,
        expires_at: expires_in_days.map(|d| now + Duration::days(i64::from(d))),
        last_used_at: None,
    };
    Ok((token, format!("{TOKEN_PREFIX}{id}_{secret}")))
}

/// The CLI's offline admin commands, run on the state file while the service is stopped (no
/// [`Auth`], no login limiter): the same rows and rules as the service's own paths.
pub mod offline {
    use super::*;

    /// Sets the admin password and ends every open session, as a change made by the service does.
    pub fn reset_admin_password(store: &Store, password: &str) -> Result<(), AuthError> {
        check_new_password(password)?;
        let account = AdminAccount {
            username: ADMIN_USER.into(),
            password_hash: hash_password(password),
            updated_at: Utc::now(),
        };
        store.write_blocking(move |w| {
            w.put(&tables::ADMINS, ADMIN_USER, &account)?;
            for (id, _) in w.scan_prefix(&tables::SESSIONS, "", usize::MAX)? {
                w.remove(&tables::SESSIONS, id.as_str())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Stores a new API token; returns its plain form, shown once.
    pub fn create_token(
        store: &Store,
        name: &str,
        scope: Scope,
        expires_in_days: Option<u32>,
    ) -> Result<String, AuthError> {
        let (token, plain) = new_token(name, scope, expires_in_days)?;
        store.write_blocking(move |w| w.put(&tables::API_TOKENS, token.id.as_str(), &token))?;
        Ok(plain)
    }
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not a real password"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_stored_before_scopes_are_admins() {
        let old = r#"{"id":"a1","name":"old","secret_hash":"x","created_at":"2026-01-01T00:00:00Z","last_used_at":null}"#;
        let token: ApiToken = serde_json::from_str(old).unwrap();
        assert_eq!(token.scope, Scope::Admin);
        assert_eq!(token.expires_at, None);
    }

    #[test]
    fn scopes_reach_what_they_say() {
        assert!(Scope::Metrics.allows(true, "/metrics"));
        assert!(!Scope::Metrics.allows(true, "/api/v1/tokens"));
        assert!(Scope::Read.allows(true, "/api/v1/tokens"));
        assert!(!Scope::Read.allows(false, "/api/v1/tokens"));
        assert!(Scope::Admin.allows(false, "/api/v1/backup"));
    }
}
