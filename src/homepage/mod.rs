//! The app homepage inside Lark: who a visitor is. It owns the signed, single-use OAuth `state`
//! (which carries where the person was going), the login that links a Lark identity to an
//! on-call member (`linked_via: "oauth"`), the homepage sessions (in redb, 30 days sliding,
//! revocable by the admin) and the re-send of cards that could not reach someone before they
//! were linked. Pages and routes are the web layer's (`web::homepage`); actions on incidents go
//! through the same code as card buttons ([`LarkActions::perform`]).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::{Delivery, LarkClients};
use crate::ids::{random_hex, sha256_hex};
use crate::incident::actions::LarkActions;
use crate::incident::model::Member;
use crate::incident::{IncidentError, Incidents};
use crate::lark::UserInfo;
use crate::store::{Store, StoreError, Table};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A `state` is good for this long after the homepage sends the person to Lark.
pub const STATE_LIFETIME: Duration = Duration::minutes(10);
/// A session lives this long after its last use.
pub const SESSION_LIFETIME: Duration = Duration::days(30);
/// A session's expiry is pushed back at most this often (each push is a write).
const SESSION_TOUCH_EVERY: Duration = Duration::hours(1);
/// Longest "where the person was going" kept in a `state` (strangers choose it).
const MAX_TARGET_CHARS: usize = 300;
/// Expired used-state marks removed per login, so the table stays small.
const PRUNE_BATCH: usize = 200;

/// The key that signs `state` values, created on first start.
const KEYS: Table<String, String> = Table::new("homepage_keys_v1");
/// Sessions by id (the cookie carries `id.secret`; only the secret's hash is kept).
pub const SESSIONS: Table<String, HomeSession> = Table::new("homepage_sessions_v1");
/// `state` values already used, by `{expiry ms:015}/{nonce}` until they expire.
const USED_STATES: Table<String, ()> = Table::new("homepage_used_states_v1");
/// Every table the homepage owns (`schema::table_names`).
pub const TABLE_NAMES: &[&str] = &[KEYS.name, SESSIONS.name, USED_STATES.name];

/// The name of the homepage's session cookie (its path is `/lark/{integration_id}/`).
pub const COOKIE: &str = "lko_home";

/// What the homepage may be configured with (`[homepage]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomepageConfig {
    /// Whom a person with no matching member is told to ask (`server.admin_contact`).
    pub admin_contact: Option<String>,
    /// Cards that did not reach someone (`app_not_linked`) this far back are re-sent once they
    /// link (`homepage.resend_window_hours`).
    pub resend_window: Duration,
}

impl Default for HomepageConfig {
    fn default() -> Self {
        HomepageConfig {
            admin_contact: None,
            resend_window: Duration::hours(24),
        }
    }
}

/// A logged-in homepage visitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomeSession {
    pub id: String,
    pub secret_hash: String,
    pub integration_id: String,
    pub member_id: String,
    /// The Lark identity that logged in.
    pub open_id: String,
    pub lark_name: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Why a state is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    /// Missing, malformed or not signed by us.
    Forged,
    Expired,
    /// Already used once.
    Replayed,
    /// Signed for another integration.
    OtherIntegration,
}

impl StateProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            StateProblem::Forged => "state_forged",
            StateProblem::Expired => "state_expired",
            StateProblem::Replayed => "state_replayed",
            StateProblem::OtherIntegration => "state_other_integration",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HomepageError {
    #[error("no integration {0}")]
    UnknownIntegration(String),
    #[error("the login state is not valid: {}", .0.as_str())]
    BadState(StateProblem),
    /// Lark refused the code (used, expired, unknown) or the user (no access to the app).
    #[error("Lark refused the login code: {reason}")]
    CodeRejected { code: Option<i64>, reason: String },
    /// Lark could not be asked (network, server error): the person may simply try again.
    #[error("Lark could not be reached: {0}")]
    LarkUnavailable(String),
    /// The Lark user matches no on-call member.
    #[error("no on-call member matches Lark user {}", .0.open_id)]
    NoMember(Box<UserInfo>),
    #[error(transparent)]
    Incident(#[from] IncidentError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HomepageError {
    /// A stable word for logs and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            HomepageError::UnknownIntegration(_) => "unknown_integration",
            HomepageError::BadState(p) => p.as_str(),
            HomepageError::CodeRejected { .. } => "code_rejected",
            HomepageError::LarkUnavailable(_) => "lark_unavailable",
            HomepageError::NoMember(_) => "no_member",
            HomepageError::Incident(_) => "incident_error",
            HomepageError::Store(_) => "store_error",
        }
    }
}

/// The signed content of a `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateClaims {
    /// Integration id.
    i: String,
    /// Nonce.
    n: String,
    /// Expiry, Unix ms.
    e: i64,
    /// Where to go after the login, below `/lark/{i}/app`.
    t: String,
}

/// A finished login.
#[derive(Debug, Clone)]
pub struct Login {
    /// The cookie value (`id.secret`).
    pub cookie: String,
    pub session: HomeSession,
    pub member: Member,
    /// Below `/lark/{id}/app`: where the person was going.
    pub target: String,
    /// Cards re-sent to the person now that they are linked.
    pub resent: usize,
}

/// The homepage service.
pub struct Homepage {
    store: Store,
    clock: Arc<dyn Clock>,
    incidents: Arc<Incidents>,
    lark: Arc<LarkClients>,
    /// Card-button rules, for the homepage's own actions.
    pub actions: LarkActions,
    pub config: HomepageConfig,
    state_key: Vec<u8>,
}

/// Keeps only a path below the homepage (`/incidents/inc_…`, `/open?severity=critical`):
/// anything else (another host, odd characters, too long) becomes the homepage itself.
pub fn clean_target(target: &str) -> String {
    let ok = target.len() <= MAX_TARGET_CHARS
        && (target.is_empty() || target.starts_with('/') || target.starts_with('?'))
        && !target.starts_with("//")
        && !target.contains("..")
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.?=&%#".contains(&b));
    if ok { target.to_string() } else { String::new() }
}

impl Homepage {
    pub fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        incidents: Arc<Incidents>,
        lark: Arc<LarkClients>,
        delivery: Arc<Delivery>,
        public_base: &str,
        config: HomepageConfig,
    ) -> Result<Arc<Homepage>, StoreError> {
        let key = store.write_blocking(|w| match w.get(&KEYS, "state")? {
            Some(key) => Ok(key),
            None => {
                let key = random_hex(32);
                w.put(&KEYS, "state", &key)?;
                Ok(key)
            }
        })?;
        Ok(Arc::new(Homepage {
            actions: LarkActions::new(
                incidents.clone(),
                delivery,
                public_base,
                config.admin_contact.clone(),
            ),
            store,
            clock,
            incidents,
            lark,
            config,
            state_key: key.into_bytes(),
        }))
    }

    pub fn incidents(&self) -> &Arc<Incidents> {
        &self.incidents
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.state_key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// Signs `text` for a round trip through the browser (a state, a flash message).
    pub fn seal_text(&self, text: &str) -> String {
        let body = URL_SAFE_NO_PAD.encode(text.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(self.sign(body.as_bytes()));
        format!("{body}.{tag}")
    }

    /// The text of a [`Homepage::seal_text`] value, if we signed it.
    pub fn open_sealed(&self, sealed: &str) -> Option<String> {
        let (body, tag) = sealed.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.state_key).expect("any key length");
        m.update(body.as_bytes());
        m.verify_slice(&tag).ok()?;
        String::from_utf8(URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// A token that proves a form came from a page of this session.
    pub fn form_token(&self, session: &HomeSession) -> String {
        URL_SAFE_NO_PAD.encode(self.sign(format!("form:{}", session.id).as_bytes()))
    }

    pub fn form_token_ok(&self, session: &HomeSession, token: &str) -> bool {
        crate::lark::crypto::constant_time_eq(&self.form_token(session), token)
    }

    /// Where to send a visitor without a session: Lark's authorize page, with a fresh state.
    pub fn authorize_url(
        &self,
        integration: &str,
        redirect_uri: &str,
        target: &str,
    ) -> Result<String, HomepageError> {
        let client = self
            .lark
            .get(integration)
            .ok_or_else(|| HomepageError::UnknownIntegration(integration.to_string()))?;
        let claims = StateClaims {
            i: integration.to_string(),
            n: random_hex(12),
            e: (self.clock.now() + STATE_LIFETIME).timestamp_millis(),
            t: clean_target(target),
        };
        let state = self.seal_text(&serde_json::to_string(&claims).expect("claims serialize"));
        Ok(client.authorize_url(redirect_uri, &state, &[]).to_string())
    }

    /// Checks a state and marks it used; returns where the person was going.
    async fn use_state(&self, integration: &str, state: &str) -> Result<String, HomepageError> {
        let bad = HomepageError::BadState;
        let claims: StateClaims = self
            .open_sealed(state)
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or(bad(StateProblem::Forged))?;
        if claims.i != integration {
            return Err(bad(StateProblem::OtherIntegration));
        }
        let now = self.clock.now().timestamp_millis();
        if claims.e <= now {
            return Err(bad(StateProblem::Expired));
        }
        let key = format!("{:015}/{}", claims.e.max(0), claims.n);
        let first_use = self
            .store
            .write(move |w| {
                let seen = w.get(&USED_STATES, key.as_str())?.is_some();
                let expired: Vec<String> = w
                    .page(&USED_STATES, None, PRUNE_BATCH, false)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .take_while(|k| k.as_str() < format!("{now:015}").as_str())
                    .collect();
                for old in expired {
                    w.remove(&USED_STATES, old.as_str())?;
                }
                if !seen {
                    w.put(&USED_STATES, key.as_str(), &())?;
                }
                Ok(!seen)
            })
            .await?;
        if !first_use {
            return Err(bad(StateProblem::Replayed));
        }
        Ok(claims.t)
    }

    /// The callback: checks the state, exchanges the code, reads the user, links the member
    /// and opens a session; then re-sends what could not reach them before.
    pub async fn finish_login(
        &self,
        integration: &str,
        redirect_uri: &str,
        code: &str,
        state: &str,
    ) -> Result<Login, HomepageError> {
        let client = self
            .lark
            .get(integration)
            .ok_or_else(|| HomepageError::UnknownIntegration(integration.to_string()))?;
        let target = self.use_state(integration, state).await?;
        let lark_failure = |e: crate::lark::LarkError| {
            if e.is_retryable() {
                HomepageError::LarkUnavailable(e.to_string())
            } else {
                HomepageError::CodeRejected {
                    code: e.code(),
                    reason: e.to_string(),
                }
            }
        };
        let token = client
            .exchange_code(code, redirect_uri)
            .await
            .map_err(lark_failure)?;
        let info = client
            .user_info(&token.access_token)
            .await
            .map_err(lark_failure)?;
        let member = self
            .matching_member(integration, &info)?
            .ok_or_else(|| HomepageError::NoMember(Box::new(info.clone())))?;
        let was_linked = member.lark.get(integration).map(|l| l.open_id.clone());
        let member = self
            .incidents
            .members
            .link(&member.id, integration, &info.open_id, "oauth")
            .await?;
        let (cookie, session) = self.create_session(integration, &member, &info).await?;
        tracing::info!(
            integration,
            member = %member.id,
            relinked = was_linked.as_deref() != Some(info.open_id.as_str()),
            "homepage login linked a Lark identity to an on-call member"
        );
        let resent = self.resend_after_link(integration, &member).await?;
        Ok(Login {
            cookie,
            session,
            member,
            target,
            resent,
        })
    }

    /// The member for a Lark user: by the open_id already linked (look-up or an earlier login),
    /// else by email, else by mobile when Lark returned them. Never creates one.
    fn matching_member(&self, integration: &str, info: &UserInfo) -> Result<Option<Member>, HomepageError> {
        let members = self.incidents.members.list()?;
        if let Some(m) = members
            .iter()
            .find(|m| m.lark.get(integration).is_some_and(|l| l.open_id == info.open_id))
        {
            return Ok(Some(m.clone()));
        }
        let emails: Vec<&str> = [info.email.as_deref(), info.enterprise_email.as_deref()]
            .into_iter()
            .flatten()
            .filter(|e| !e.is_empty())
            .collect();
        if let Some(m) = members.iter().find(|m| {
            m.email
                .as_deref()
                .is_some_and(|mine| emails.iter().any(|e| e.eq_ignore_ascii_case(mine)))
        }) {
            return Ok(Some(m.clone()));
        }
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let mobile = info.mobile.as_deref().map(digits).filter(|d| !d.is_empty());
        Ok(mobile.and_then(|mobile| {
            members
                .iter()
                .find(|m| m.mobile.as_deref().map(digits).as_deref() == Some(mobile.as_str()))
                .cloned()
        }))
    }

    async fn create_session(
        &self,
        integration: &str,
        member: &Member,
        info: &UserInfo,
    ) -> Result<(String, HomeSession), HomepageError> {
        let now = self.clock.now();
        let (id, secret) = (random_hex(12), random_hex(24));
        let session = HomeSession {
            id: id.clone(),
            secret_hash: sha256_hex(secret.as_bytes()),
            integration_id: integration.to_string(),
            member_id: member.id.clone(),
            open_id: info.open_id.clone(),
            lark_name: info.name.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + SESSION_LIFETIME,
        };
        let stored = session.clone();
        self.store
            .write(move |w| {
                let expired: Vec<String> = w
                    .page(&SESSIONS, None, usize::MAX, false)?
                    .into_iter()
                    .filter(|(_, s)| s.expires_at <= now)
                    .map(|(k, _)| k)
                    .collect();
                for old in expired {
                    w.remove(&SESSIONS, old.as_str())?;
                }
                w.put(&SESSIONS, stored.id.as_str(), &stored)
            })
            .await?;
        Ok((format!("{id}.{secret}"), session))
    }

    /// The live session a cookie names on this integration; its expiry slides forward.
    pub async fn session(
        &self,
        integration: &str,
        cookie: &str,
    ) -> Result<Option<HomeSession>, HomepageError> {
        let Some((id, secret)) = cookie.split_once('.') else {
            return Ok(None);
        };
        if id.len() > 64 || secret.len() > 128 {
            return Ok(None);
        }
        let Some(mut session) = self.store.read(|r| r.get(&SESSIONS, id))? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if session.integration_id != integration
            || session.expires_at <= now
            || !crate::lark::crypto::constant_time_eq(&session.secret_hash, &sha256_hex(secret.as_bytes()))
        {
            return Ok(None);
        }
        // A member deleted since (or whose link was replaced by another login) is logged out.
        let still_linked = self
            .incidents
            .members
            .get(&session.member_id)
            .ok()
            .is_some_and(|m| {
                m.lark
                    .get(integration)
                    .is_some_and(|l| l.open_id == session.open_id)
            });
        if !still_linked {
            self.revoke(&session.id).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= SESSION_TOUCH_EVERY {
            session.last_seen_at = now;
            session.expires_at = now + SESSION_LIFETIME;
            let stored = session.clone();
            self.store
                .write(move |w| w.put(&SESSIONS, stored.id.as_str(), &stored))
                .await?;
        }
        Ok(Some(session))
    }

    /// Every live session (for the admin).
    pub fn sessions(&self) -> Result<Vec<HomeSession>, HomepageError> {
        let now = self.clock.now();
        Ok(self
            .store
            .read(|r| r.page(&SESSIONS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.expires_at > now)
            .collect())
    }

    /// Ends a session (log out, or the admin revoking it); `false` if there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, HomepageError> {
        let id = id.to_string();
        Ok(self
            .store
            .write(move |w| w.remove(&SESSIONS, id.as_str()))
            .await?)
    }

    /// Re-sends, through the outbox, the cards of still-open incidents that could not reach
    /// `member` (`app_not_linked`) within the configured window; the operation log says which.
    async fn resend_after_link(&self, integration: &str, member: &Member) -> Result<usize, HomepageError> {
        let since = self.clock.now() - self.config.resend_window;
        let receiver = format!("member:{}", member.id);
        let entries_with = |outcome: &str| {
            oplog::query(
                &self.store,
                &oplog::OpQuery {
                    integration: Some(integration.to_string()),
                    outcome: Some(outcome.into()),
                    limit: Some(oplog::MAX_PAGE),
                    ..Default::default()
                },
            )
        };
        // Newest first: the first entry per incident is its latest.
        let mut handled: Vec<(String, u64)> = Vec::new();
        for outcome in ["resent_after_link", "not_resent_closed"] {
            for e in entries_with(outcome)? {
                if e.receiver.as_deref() == Some(receiver.as_str())
                    && let Some(id) = e.incident_id
                {
                    handled.push((id, e.seq));
                }
            }
        }
        let mut incidents: Vec<String> = Vec::new();
        for entry in entries_with("app_not_linked")? {
            if entry.at < since || entry.receiver.as_deref() != Some(receiver.as_str()) {
                continue;
            }
            let Some(id) = entry.incident_id else {
                continue;
            };
            // Already re-sent (an earlier login) after this miss.
            let done = handled.iter().any(|(h, seq)| *h == id && *seq > entry.seq);
            if !done && !incidents.contains(&id) {
                incidents.push(id);
            }
        }
        let mut resent = 0;
        for id in incidents {
            let Ok(incident) = self.incidents.get(&id) else {
                continue;
            };
            let outcome = if incident.is_open() {
                self.incidents
                    .notify_member(&incident, integration, &member.id)
                    .await?;
                resent += 1;
                "resent_after_link"
            } else {
                "not_resent_closed"
            };
            let entry = OpEntry {
                at: self.clock.now(),
                integration_id: integration.to_string(),
                incident_id: Some(incident.id.clone()),
                receiver: Some(receiver.clone()),
                kind: "send".into(),
                outcome: outcome.into(),
                reason: Some("linked_by_homepage_login".into()),
                ..OpEntry::default()
            };
            self.store
                .write(move |w| oplog::append(w, entry).map(drop))
                .await?;
            tracing::info!(integration, member = %member.id, incident = %incident.id, outcome, "card that could not reach a person before their login");
        }
        Ok(resent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_below_the_homepage() {
        assert_eq!(clean_target("/incidents/inc_ab12"), "/incidents/inc_ab12");
        assert_eq!(
            clean_target("/open?severity=critical&status=triggered"),
            "/open?severity=critical&status=triggered"
        );
        assert_eq!(clean_target("//evil.example.com"), "");
        assert_eq!(clean_target("https://evil.example.com"), "");
        assert_eq!(clean_target("/../admin"), "");
        assert_eq!(clean_target("/a\"><script>"), "");
        assert_eq!(clean_target(&"/x".repeat(200)), "");
    }
}
