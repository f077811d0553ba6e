//! Admin authentication: the admin account (argon2-hashed password), browser sessions with their
//! CSRF token, hashed API tokens, the per-process CLI token, and login throttling.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use chrono::{DateTime, Duration, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError, tables};

pub const ADMIN_USER: &str = "admin";
const SESSION_LIFETIME_HOURS: i64 = 12;
/// Login attempts a client address may make in a burst; after that, one more per minute.
const LOGIN_ATTEMPT_BURST: u32 = 10;
const TOKEN_PREFIX: &str = "lko_";

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub enum Principal {
    Session {
        username: String,
        csrf_token: String,
    },
    Token {
        id: String,
        name: String,
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
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many login attempts from this address; wait a minute")]
    Throttled,
    #[error("invalid or expired credentials")]
    InvalidCredentials,
    #[error("{0}")]
    Invalid(String),
    #[error("no such token")]
    NoSuchToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new random secret as lowercase hex (`bytes` of entropy).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS random source");
    hex::encode(buf)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

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

pub fn check_new_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 12 {
        return Err(AuthError::Invalid(
            "password: must be at least 12 characters".into(),
        ));
    }
    Ok(())
}

pub struct Auth {
    store: Store,
    login_limiter: DefaultKeyedRateLimiter<IpAddr>,
    cli_token: String,
    failed_logins: Counter,
}

impl Auth {
    pub fn new(store: Store, failed_logins: Counter) -> Arc<Auth> {
        let quota = Quota::with_period(std::time::Duration::from_secs(60))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(LOGIN_ATTEMPT_BURST).expect("non-zero"));
        Arc::new(Auth {
            store,
            login_limiter: RateLimiter::keyed(quota),
            cli_token: format!("{TOKEN_PREFIX}cli_{}", random_hex(32)),
            failed_logins,
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

    /// Checks a password and opens a session: returns (cookie value, session).
    pub async fn login(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<(String, Session), AuthError> {
        if self.login_limiter.check_key(&peer).is_err() {
            self.failed_logins.inc();
            return Err(AuthError::Throttled);
        }
        let account = self.store.read(|r| r.get(&tables::ADMINS, username))?;
        let password = password.to_string();
        // Verify against a dummy hash for unknown users so timing does not reveal which exist.
        let phc = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
            .await
            .unwrap_or(false);
        let Some(account) = account.filter(|_| ok) else {
            self.failed_logins.inc();
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
        Ok(Principal::Token {
            id: stored.id,
            name: stored.name,
        })
    }

    /// Creates an API token; the plain token is returned once and only its hash is kept.
    pub async fn create_token(&self, name: &str) -> Result<(ApiToken, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(AuthError::Invalid("name: must be 1 to 64 characters".into()));
        }
        let (token, plain) = new_token(name);
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

    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), AuthError> {
        check_new_password(password)?;
        let account = AdminAccount {
            username: username.into(),
            password_hash: hash_password(password),
            updated_at: Utc::now(),
        };
        self.store
            .write(move |w| w.put(&tables::ADMINS, account.username.as_str(), &account))
            .await?;
        Ok(())
    }
}

/// A token row and its plain form `lko_<id>_<secret>`.
pub fn new_token(name: &str) -> (ApiToken, String) {
    let id = random_hex(6);
    let secret = random_hex(24);
    let token = ApiToken {
        id: id.clone(),
        name: name.into(),
        secret_hash: sha256_hex(secret.as_bytes()),
        created_at: Utc::now(),
        last_used_at: None,
    };
    (token, format!("{TOKEN_PREFIX}{id}_{secret}"))
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not a real password"));
