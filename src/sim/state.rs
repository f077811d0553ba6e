//! The simulator's shared state: the world as it changes, issued tokens, messages, the call and
//! push logs, the limit windows and the quota. One mutex; no await happens while it is held.

use crate::ids::random_hex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::limits::{Quota, Windows};
use super::{CallRecord, Faults, PushRecord, RedeliverySchedule, SimApp, SimConfig, SimMessage, World};
use crate::clock::Clock;

/// Lark returns the same token while at least this much of its life is left (reference §5.1).
pub(crate) const TOKEN_REUSE_MARGIN_SECS: i64 = 30 * 60;

pub(crate) struct Shared {
    pub apps: Vec<SimApp>,
    pub clock: Arc<dyn Clock>,
    pub token_lifetime: chrono::Duration,
    pub enforce_limits: bool,
    pub redelivery: RedeliverySchedule,
    pub faults: Mutex<Faults>,
    pub http: reqwest::Client,
    pub stop: watch::Sender<bool>,
    pub long_connections: super::long_connection::Hub,
    state: Mutex<State>,
}

impl Shared {
    pub fn new(config: SimConfig, stop: watch::Sender<bool>) -> Shared {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain reqwest client builds once a crypto provider is installed");
        Shared {
            apps: config.apps,
            clock: config.clock,
            token_lifetime: chrono::Duration::from_std(config.token_lifetime)
                .unwrap_or(chrono::Duration::hours(2)),
            enforce_limits: config.enforce_limits,
            redelivery: config.redelivery,
            faults: Mutex::new(Faults::default()),
            http,
            stop,
            long_connections: super::long_connection::Hub::new(config.long_connection),
            state: Mutex::new(State {
                world: config.world,
                tokens: HashMap::new(),
                current: HashMap::new(),
                user_tokens: HashMap::new(),
                oauth_codes: HashMap::new(),
                card_tokens: HashMap::new(),
                messages: Vec::new(),
                message_index: HashMap::new(),
                p2p_chats: HashMap::new(),
                message_uuids: HashMap::new(),
                chat_uuids: HashMap::new(),
                chat_extras: super::open_api::ChatExtras::default(),
                calls: Vec::new(),
                pushes: Vec::new(),
                windows: Windows::default(),
                quota: Quota::new(config.monthly_quota.filter(|_| config.enforce_limits)),
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants span
        // a panic point), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn app(&self, app_id: &str) -> Option<&SimApp> {
        self.apps.iter().find(|a| a.app_id == app_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TokenKind {
    Tenant,
    App,
}

#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub app_id: String,
    pub kind: TokenKind,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct UserToken {
    pub app_id: String,
    pub open_id: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct OAuthCode {
    pub app_id: String,
    pub open_id: String,
    pub redirect_uri: String,
    pub expires_at: DateTime<Utc>,
}

/// A card callback's `c-…` token, good for the delayed update of its card.
#[derive(Debug, Clone)]
pub(crate) struct CardToken {
    pub app_id: String,
    pub message_id: String,
    pub issued_at: DateTime<Utc>,
    pub uses: u32,
}

pub(crate) struct State {
    pub world: World,
    pub tokens: HashMap<String, IssuedToken>,
    /// The newest token of each (app, kind).
    pub current: HashMap<(String, TokenKind), String>,
    pub user_tokens: HashMap<String, UserToken>,
    pub oauth_codes: HashMap<String, OAuthCode>,
    pub card_tokens: HashMap<String, CardToken>,
    pub messages: Vec<SimMessage>,
    pub message_index: HashMap<String, usize>,
    /// The p2p chat of each (app, user).
    pub p2p_chats: HashMap<(String, String), String>,
    /// (app, uuid) → (message_id, first use).
    pub message_uuids: HashMap<(String, String), (String, DateTime<Utc>)>,
    /// (app, owner, uuid) → (chat_id, first use).
    pub chat_uuids: HashMap<(String, String, String), (String, DateTime<Utc>)>,
    /// Pins, top notices and member adds in flight of group chats.
    pub chat_extras: super::open_api::ChatExtras,
    pub calls: Vec<CallRecord>,
    pub pushes: Vec<PushRecord>,
    pub windows: Windows,
    pub quota: Quota,
}

impl State {
    /// The token of `kind` for `app_id` under the 30-minute rule, and its seconds left.
    pub fn issue_token(
        &mut self,
        app_id: &str,
        kind: TokenKind,
        now: DateTime<Utc>,
        lifetime: chrono::Duration,
    ) -> (String, i64) {
        let key = (app_id.to_string(), kind);
        if let Some(token) = self.current.get(&key)
            && let Some(issued) = self.tokens.get(token)
        {
            let left = (issued.expires_at - now).num_seconds();
            if left >= TOKEN_REUSE_MARGIN_SECS {
                return (token.clone(), left);
            }
        }
        let prefix = match kind {
            TokenKind::Tenant => "t-",
            TokenKind::App => "a-",
        };
        let token = format!("{prefix}{}", random_hex(20));
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                app_id: app_id.to_string(),
                kind,
                expires_at: now + lifetime,
            },
        );
        self.current.insert(key, token.clone());
        (token, lifetime.num_seconds())
    }

    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
        self.current.clear();
    }

    pub fn message(&self, message_id: &str) -> Option<&SimMessage> {
        self.message_index.get(message_id).map(|&i| &self.messages[i])
    }

    pub fn message_mut(&mut self, message_id: &str) -> Option<&mut SimMessage> {
        self.message_index
            .get(message_id)
            .copied()
            .map(|i| &mut self.messages[i])
    }

    pub fn push_message(&mut self, message: SimMessage) {
        self.message_index
            .insert(message.message_id.clone(), self.messages.len());
        self.messages.push(message);
    }

    /// The p2p chat between `app_id`'s bot and `open_id`, created on first use.
    pub fn p2p_chat(&mut self, app_id: &str, open_id: &str) -> String {
        self.p2p_chats
            .entry((app_id.to_string(), open_id.to_string()))
            .or_insert_with(|| format!("oc_{}", random_hex(16)))
            .clone()
    }
}

/// Resolves once the simulator is shutting down.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// `2 * bytes` random hex digits.
/// A uniform random number in [0, 1).
pub(crate) fn random_unit() -> f64 {
    (getrandom::u64().expect("OS random source") >> 11) as f64 / (1u64 << 53) as f64
}
