//! Lark integrations: the apps an admin connects (name, App ID, secrets, domain, plan, war-room
//! switch), validated, stored with their secrets sealed, and kept open in memory for the callback
//! endpoint; plus the inbound pipeline ([`inbound`]) that verifies, dedups and dispatches what
//! Lark sends to each integration's Message Card Request URL.
//!
//! Over 700 lines: one service type's whole life cycle (open, create, update, delete, the sealed
//! save, the views); the inbound pipeline, chats, receiver, secrets and tables are already their
//! own modules.

pub mod chats;
pub mod inbound;
pub mod receiver;
pub mod secrets;
pub mod tables;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::quota::Plan;
use crate::lark::Domain;
use crate::lark::crypto::Cipher;
use crate::lark::long_connection::ConnectionStatus;
use crate::store::{Store, StoreError};
use secrets::{Sealed, SecretBox, SecretError};

/// The default quota of Lark's Basic Free plan (calls per month; shared/lark-protocol.md §6.4).
pub const BASIC_FREE_MONTHLY_QUOTA: u64 = 10_000;

/// An integration as stored; secrets are sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntegrationRecord {
    pub id: String,
    pub name: String,
    pub app_id: String,
    pub domain: Domain,
    pub api_base_url: Option<String>,
    pub plan: Plan,
    pub war_room: bool,
    pub app_secret: Sealed,
    pub verification_token: Sealed,
    pub encrypt_key: Option<Sealed>,
    /// Accept plain old-format card requests signed only with the Verification Token even though
    /// an Encrypt Key is set (issue 12.5); off unless an admin opts in.
    #[serde(default)]
    pub allow_card_v1_token_signature: bool,
    /// How Lark reaches this integration (issue 19); records from before it used the Request URL.
    #[serde(default = "webhook_only")]
    pub receive_modes: Vec<ReceiveMode>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How events and card callbacks arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiveMode {
    /// Lark posts to the Message Card Request URL (needs a public endpoint).
    Webhook,
    /// The appliance holds an outbound WebSocket to Lark (no public endpoint; the old
    /// `card.action.trigger_v1` does not come this way).
    LongConnection,
}

fn webhook_only() -> Vec<ReceiveMode> {
    vec![ReceiveMode::Webhook]
}

impl IntegrationRecord {
    pub fn receives_by(&self, mode: ReceiveMode) -> bool {
        self.receive_modes.contains(&mode)
    }
}

/// The developer-console steps for long-connection mode, in the order that works: Lark saves
/// the mode only while a client is connected.
pub const LONG_CONNECTION_CONSOLE_STEPS: &[&str] = &[
    "Start the appliance with this integration in long_connection mode first, and wait until connected_since is set.",
    "Then, in the developer console, choose \"receive through persistent connection\" (使用长连接接收) on the Events page and on the Callbacks page.",
    "Save each page; Lark refuses to save while no client is connected.",
    "Subscribe to card.action.trigger (the new card callback): card.action.trigger_v1 is webhook-only.",
];

/// The events an integration's app subscribes to in the developer console (shown by the set-up
/// checks): messages to the bot, and the chat events that keep the chat list current.
pub const SUBSCRIBED_EVENTS: [&str; 5] = [
    "im.message.receive_v1",
    "im.chat.disbanded_v1",
    "im.chat.member.bot.added_v1",
    "im.chat.member.bot.deleted_v1",
    "im.chat.updated_v1",
];

/// What an admin sends to create (all required fields) or update (any subset) an integration.
/// On update, an empty `encrypt_key` or `api_base_url` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationInput {
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub app_secret: Option<String>,
    pub verification_token: Option<String>,
    pub encrypt_key: Option<String>,
    pub domain: Option<Domain>,
    pub api_base_url: Option<String>,
    /// `basic_free` or `paid`.
    pub plan: Option<PlanKind>,
    /// The Basic Free plan's monthly call quota (default 10,000).
    pub monthly_quota: Option<u64>,
    pub war_room: Option<bool>,
    pub allow_card_v1_token_signature: Option<bool>,
    /// `["webhook"]`, `["long_connection"]` or both (during a migration).
    pub receive_modes: Option<Vec<ReceiveMode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    BasicFree,
    Paid,
}

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no integration {0}")]
    NotFound(String),
    #[error("an integration for app {0} already exists")]
    DuplicateApp(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> IntegrationError {
    IntegrationError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// What the callback endpoint has seen for one integration since start: "Lark reached us,
/// signature failed" without reading logs.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CallbackStats {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub challenges: u64,
    pub card_actions: u64,
    /// Accepted events by type; types nobody handles are counted here too.
    pub events_by_type: BTreeMap<String, u64>,
    pub unhandled_events: u64,
    pub last_accepted_at: Option<DateTime<Utc>>,
    pub last_error: Option<CallbackErrorNote>,
    /// The second of the last refusal written to the log: strangers can send refusals as fast as
    /// they like, the log gets at most one line a second per integration.
    #[serde(skip)]
    refusal_logged_at_secs: i64,
    #[serde(skip)]
    refusals_not_logged: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallbackErrorNote {
    pub at: DateTime<Utc>,
    pub reason: String,
    pub message: String,
}

/// An integration with its secrets opened, as the hot paths use it.
pub struct Live {
    pub record: IntegrationRecord,
    pub app_secret: String,
    pub verification_token: String,
    pub encrypt_key: Option<String>,
    pub cipher: Option<Cipher>,
    pub stats: Mutex<CallbackStats>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("id", &self.record.id)
            .field("app_id", &self.record.app_id)
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Counts a refused callback and keeps its reason for the admin. Returns how many refusals
    /// went unlogged before this one when this one should be logged, `None` when it should not.
    pub fn note_error(&self, reason: &str, message: &str) -> Option<u64> {
        let now = Utc::now();
        let mut stats = self.stats.lock().expect("stats lock");
        stats.rejected += 1;
        stats.last_error = Some(CallbackErrorNote {
            at: now,
            reason: reason.into(),
            message: message.into(),
        });
        if stats.refusal_logged_at_secs == now.timestamp() {
            stats.refusals_not_logged += 1;
            return None;
        }
        stats.refusal_logged_at_secs = now.timestamp();
        Some(std::mem::take(&mut stats.refusals_not_logged))
    }
}

fn security_warnings(live: &Live) -> Vec<String> {
    let mut warnings = Vec::new();
    if live.record.allow_card_v1_token_signature && live.encrypt_key.is_some() {
        warnings.push(
            "allow_card_v1_token_signature is on: anyone who learns the Verification Token can press \
             card buttons (acknowledge, resolve) as any linked member. Subscribe to card.action.trigger \
             instead and turn this off."
                .to_string(),
        );
    }
    warnings
}

/// The three URLs an admin pastes into the Lark developer console.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsoleUrls {
    /// Web Configuration address (the app homepage).
    pub web_configuration: String,
    /// Redirect URL for OAuth.
    pub redirect: String,
    /// Message Card Request URL: events and card callbacks.
    pub message_card_request: String,
}

/// An integration as the admin API shows it: secrets only as "set or not".
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub id: String,
    pub name: String,
    pub app_id: String,
    pub domain: Domain,
    pub api_base_url: Option<String>,
    #[schema(value_type = String)]
    pub plan: &'static str,
    pub monthly_quota: Option<u64>,
    pub war_room: bool,
    pub secrets: SecretsSet,
    pub allow_card_v1_token_signature: bool,
    /// Settings that weaken what the callback endpoint checks, in words, for the admin to see.
    pub warnings: Vec<String>,
    pub urls: ConsoleUrls,
    pub receive_modes: Vec<ReceiveMode>,
    /// The long connection's state while `receive_modes` has `long_connection`.
    pub long_connection: Option<LongConnectionView>,
    pub callback_stats: CallbackStats,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LongConnectionView {
    /// `None` until the receiver has started (the service is not serving yet).
    pub status: Option<ConnectionStatus>,
    #[schema(value_type = Vec<String>)]
    pub console_steps: &'static [&'static str],
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretsSet {
    pub app_secret: bool,
    pub verification_token: bool,
    pub encrypt_key: bool,
}

/// Every integration, stored and open in memory.
pub struct Integrations {
    store: Store,
    secrets: SecretBox,
    public_base: String,
    /// `lark.allow_api_base_url_override`: whether `api_base_url` may be set at all.
    allow_base_url_override: bool,
    live: RwLock<HashMap<String, Arc<Live>>>,
    observers: RwLock<Vec<ChangeObserver>>,
    /// Each long-connection receiver's status, by integration id ([`receiver`] keeps it).
    connections: RwLock<HashMap<String, Arc<Mutex<ConnectionStatus>>>>,
}

/// What the other domains hear when an integration changes.
pub enum IntegrationChange<'a> {
    /// Created or updated: the live integration as it is now.
    Saved(&'a Live),
    Removed(&'a str),
}

/// Called after every change of an integration, by whatever made it (API, CLI, demo).
pub type ChangeObserver = Arc<dyn Fn(IntegrationChange<'_>) + Send + Sync>;

impl Integrations {
    /// Opens the key file (creating it only while no sealed secret exists) and every integration.
    /// `sealed_elsewhere`: whether another domain (webhook signing secrets) holds secrets sealed
    /// with the same key, so a missing key file is an error rather than a fresh start.
    pub fn open(
        store: Store,
        state_dir: &std::path::Path,
        public_base: &str,
        allow_base_url_override: bool,
        sealed_elsewhere: bool,
    ) -> Result<Integrations, IntegrationError> {
        let records = store.read(|r| r.page(&tables::INTEGRATIONS, None, usize::MAX, false))?;
        let secrets = SecretBox::load_or_create(state_dir, records.is_empty() && !sealed_elsewhere)?;
        let mut live = HashMap::new();
        for (_, record) in records {
            let opened = open_record(&secrets, record)?;
            live.insert(opened.record.id.clone(), Arc::new(opened));
        }
        Ok(Integrations {
            store,
            secrets,
            public_base: public_base.trim_end_matches('/').to_string(),
            allow_base_url_override,
            live: RwLock::new(live),
            observers: RwLock::new(Vec::new()),
            connections: RwLock::new(HashMap::new()),
        })
    }

    /// Registers `observer` for every later change; it is told of the existing integrations now.
    pub fn on_change(&self, observer: ChangeObserver) {
        for live in self.all() {
            observer(IntegrationChange::Saved(&live));
        }
        self.observers.write().expect("observers lock").push(observer);
    }

    fn changed(&self, change: IntegrationChange<'_>) {
        let observers = self.observers.read().expect("observers lock").clone();
        for observer in observers {
            observer(match &change {
                IntegrationChange::Saved(live) => IntegrationChange::Saved(live),
                IntegrationChange::Removed(id) => IntegrationChange::Removed(id),
            });
        }
    }

    /// The key that seals stored secrets, for other domains that keep some.
    /// The stored record of an integration, read from the state file (not the live set).
    pub fn stored_record(store: &Store, id: &str) -> Result<Option<IntegrationRecord>, StoreError> {
        store.read(|r| r.get(&tables::INTEGRATIONS, id))
    }

    pub fn secret_box(&self) -> SecretBox {
        self.secrets.clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.live.read().expect("integrations lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<_> = self
            .live
            .read()
            .expect("integrations lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.id().cmp(b.id()))
        });
        all
    }

    /// Where the receiver of `id` keeps its status (`None`: no receiver).
    pub fn set_connection_status(&self, id: &str, status: Option<Arc<Mutex<ConnectionStatus>>>) {
        let mut all = self.connections.write().expect("connections lock");
        match status {
            Some(s) => all.insert(id.to_string(), s),
            None => all.remove(id),
        };
    }

    pub fn connection_status(&self, id: &str) -> Option<ConnectionStatus> {
        let all = self.connections.read().expect("connections lock");
        let status = all.get(id)?;
        let status = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(status)
    }

    pub fn urls(&self, id: &str) -> ConsoleUrls {
        let base = format!("{}/lark/{id}", self.public_base);
        ConsoleUrls {
            web_configuration: format!("{base}/app"),
            redirect: format!("{base}/oauth/callback"),
            message_card_request: format!("{base}/callback"),
        }
    }

    pub fn view(&self, live: &Live) -> IntegrationView {
        let r = &live.record;
        IntegrationView {
            id: r.id.clone(),
            name: r.name.clone(),
            app_id: r.app_id.clone(),
            domain: r.domain,
            api_base_url: r.api_base_url.clone(),
            plan: match r.plan {
                Plan::BasicFree { .. } => "basic_free",
                Plan::Paid => "paid",
            },
            monthly_quota: r.plan.limit(),
            war_room: r.war_room,
            secrets: SecretsSet {
                app_secret: !live.app_secret.is_empty(),
                verification_token: !live.verification_token.is_empty(),
                encrypt_key: live.encrypt_key.is_some(),
            },
            allow_card_v1_token_signature: r.allow_card_v1_token_signature,
            warnings: security_warnings(live),
            urls: self.urls(&r.id),
            receive_modes: r.receive_modes.clone(),
            long_connection: r
                .receives_by(ReceiveMode::LongConnection)
                .then(|| LongConnectionView {
                    status: self.connection_status(&r.id),
                    console_steps: LONG_CONNECTION_CONSOLE_STEPS,
                }),
            callback_stats: live.stats.lock().expect("stats lock").clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    pub async fn create(&self, input: IntegrationInput) -> Result<Arc<Live>, IntegrationError> {
        let name = required("name", input.name)?;
        let app_id = required("app_id", input.app_id)?;
        let app_secret = required("app_secret", input.app_secret)?;
        let verification_token = required("verification_token", input.verification_token)?;
        let now = Utc::now();
        let mut record = IntegrationRecord {
            id: crate::ids::new_id(crate::ids::prefix::INTEGRATION, 6),
            name: String::new(),
            app_id: String::new(),
            domain: input.domain.unwrap_or(Domain::Feishu),
            api_base_url: None,
            plan: Plan::BasicFree {
                monthly_quota: BASIC_FREE_MONTHLY_QUOTA,
            },
            war_room: input.war_room.unwrap_or(false),
            app_secret: self.secrets.seal(""),
            verification_token: self.secrets.seal(""),
            encrypt_key: None,
            allow_card_v1_token_signature: false,
            receive_modes: webhook_only(),
            created_at: now,
            updated_at: now,
        };
        let changes = IntegrationInput {
            name: Some(name),
            app_id: Some(app_id),
            app_secret: Some(app_secret),
            verification_token: Some(verification_token),
            encrypt_key: input.encrypt_key,
            domain: None,
            api_base_url: input.api_base_url,
            plan: input.plan,
            monthly_quota: input.monthly_quota,
            war_room: None,
            allow_card_v1_token_signature: input.allow_card_v1_token_signature,
            receive_modes: input.receive_modes,
        };
        self.apply(&mut record, changes)?;
        let created = self.save(record, true).await?;
        self.changed(IntegrationChange::Saved(&created));
        Ok(created)
    }

    pub async fn update(&self, id: &str, input: IntegrationInput) -> Result<Arc<Live>, IntegrationError> {
        let current = self
            .get(id)
            .ok_or_else(|| IntegrationError::NotFound(id.to_string()))?;
        let mut record = current.record.clone();
        self.apply(&mut record, input)?;
        record.updated_at = Utc::now();
        let updated = self.save(record, false).await?;
        // Counters belong to the integration, not to one version of its settings.
        *updated.stats.lock().expect("stats lock") = current.stats.lock().expect("stats lock").clone();
        self.changed(IntegrationChange::Saved(&updated));
        Ok(updated)
    }

    pub async fn delete(&self, id: &str) -> Result<(), IntegrationError> {
        let key = id.to_string();
        let existed = self
            .store
            .write(move |w| w.remove(&tables::INTEGRATIONS, key.as_str()))
            .await?;
        self.live.write().expect("integrations lock").remove(id);
        self.set_connection_status(id, None);
        if existed {
            self.changed(IntegrationChange::Removed(id));
            Ok(())
        } else {
            Err(IntegrationError::NotFound(id.to_string()))
        }
    }

    /// Validates `input` and applies it to `record`, sealing any secret it carries.
    fn apply(&self, record: &mut IntegrationRecord, input: IntegrationInput) -> Result<(), IntegrationError> {
        self.check_destination_change(record, &input)?;
        if let Some(name) = input.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(invalid("name", "must be 1 to 100 characters"));
            }
            record.name = name.to_string();
        }
        if let Some(app_id) = input.app_id {
            let app_id = app_id.trim();
            let well_formed = app_id.starts_with("cli_")
                && app_id.len() <= 64
                && app_id[4..].chars().all(|c| c.is_ascii_alphanumeric())
                && app_id.len() > 4;
            if !well_formed {
                return Err(invalid(
                    "app_id",
                    "must be the App ID from the Lark developer console, like cli_a1b2c3d4e5f6",
                ));
            }
            record.app_id = app_id.to_string();
        }
        if let Some(secret) = input.app_secret {
            record.app_secret = self.seal_required("app_secret", &secret)?;
        }
        if let Some(token) = input.verification_token {
            record.verification_token = self.seal_required("verification_token", &token)?;
        }
        if let Some(key) = input.encrypt_key {
            let key = key.trim();
            record.encrypt_key = if key.is_empty() {
                None
            } else {
                Some(self.seal_required("encrypt_key", key)?)
            };
        }
        if let Some(domain) = input.domain {
            record.domain = domain;
        }
        if let Some(url) = input.api_base_url {
            let url = url.trim();
            record.api_base_url = if url.is_empty() {
                None
            } else {
                Some(parse_base_url(url)?)
            };
        }
        let quota = match (input.monthly_quota, record.plan) {
            (Some(0), _) => return Err(invalid("monthly_quota", "must be at least 1")),
            (Some(q), _) => q,
            (None, Plan::BasicFree { monthly_quota }) => monthly_quota,
            (None, Plan::Paid) => BASIC_FREE_MONTHLY_QUOTA,
        };
        record.plan = match (input.plan, record.plan) {
            (Some(PlanKind::Paid), _) => Plan::Paid,
            (Some(PlanKind::BasicFree), _) | (None, Plan::BasicFree { .. }) => {
                Plan::BasicFree { monthly_quota: quota }
            }
            (None, Plan::Paid) => Plan::Paid,
        };
        if let Some(war_room) = input.war_room {
            record.war_room = war_room;
        }
        if let Some(allow) = input.allow_card_v1_token_signature {
            record.allow_card_v1_token_signature = allow;
        }
        if let Some(modes) = input.receive_modes {
            if modes.is_empty() {
                return Err(invalid(
                    "receive_modes",
                    "must name at least one of webhook, long_connection",
                ));
            }
            let mut unique = Vec::new();
            for mode in modes {
                if unique.contains(&mode) {
                    return Err(invalid("receive_modes", "must not name a mode twice"));
                }
                unique.push(mode);
            }
            record.receive_modes = unique;
        }
        Ok(())
    }

    /// Where the App Secret is sent is guarded: the override needs the config switch, and moving
    /// the integration to another base URL or domain needs the App Secret in the same request,
    /// so holding an API token is not enough to have the secret posted to a host of one's own.
    fn check_destination_change(
        &self,
        record: &IntegrationRecord,
        input: &IntegrationInput,
    ) -> Result<(), IntegrationError> {
        let new_base = input
            .api_base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        if new_base.is_some() && !self.allow_base_url_override {
            return Err(invalid(
                "api_base_url",
                "overriding Lark's API address is disabled; set lark.allow_api_base_url_override = true in the config file to allow it",
            ));
        }
        let base_changes = input.api_base_url.as_deref().is_some_and(|u| {
            let u = u.trim();
            let current = record.api_base_url.as_deref().unwrap_or("");
            u.trim_end_matches('/') != current
        });
        let domain_changes = input.domain.is_some_and(|d| d != record.domain);
        if (base_changes || domain_changes) && input.app_secret.is_none() {
            let changed = if base_changes { "api_base_url" } else { "domain" };
            return Err(invalid(
                "app_secret",
                format!("is required in the same request when {changed} changes"),
            ));
        }
        Ok(())
    }

    fn seal_required(&self, field: &'static str, value: &str) -> Result<Sealed, IntegrationError> {
        let value = value.trim();
        if value.is_empty() || value.len() > 256 {
            return Err(invalid(field, "must be 1 to 256 characters"));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(field, "must not contain control characters"));
        }
        Ok(self.secrets.seal(value))
    }

    async fn save(&self, record: IntegrationRecord, is_new: bool) -> Result<Arc<Live>, IntegrationError> {
        let duplicate = self
            .all()
            .into_iter()
            .any(|l| l.record.app_id == record.app_id && l.record.id != record.id);
        if duplicate {
            return Err(IntegrationError::DuplicateApp(record.app_id));
        }
        let live = Arc::new(open_record(&self.secrets, record.clone())?);
        let id = record.id.clone();
        self.store
            .write(move |w| {
                if !is_new && w.get(&tables::INTEGRATIONS, record.id.as_str())?.is_none() {
                    return Err(StoreError::Corrupt {
                        table: tables::INTEGRATIONS.name,
                        reason: format!("integration {} vanished during an update", record.id),
                    });
                }
                w.put(&tables::INTEGRATIONS, record.id.as_str(), &record)
            })
            .await?;
        self.live
            .write()
            .expect("integrations lock")
            .insert(id, live.clone());
        Ok(live)
    }
}

fn required(field: &'static str, value: Option<String>) -> Result<String, IntegrationError> {
    value.ok_or_else(|| invalid(field, "is required"))
}

fn parse_base_url(raw: &str) -> Result<String, IntegrationError> {
    let url =
        url::Url::parse(raw).map_err(|e| invalid("api_base_url", format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            "api_base_url",
            format!("{raw:?} must be an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("api_base_url", "must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn open_record(secrets: &SecretBox, record: IntegrationRecord) -> Result<Live, IntegrationError> {
    let encrypt_key = record.encrypt_key.as_ref().map(|k| secrets.open(k)).transpose()?;
    Ok(Live {
        app_secret: secrets.open(&record.app_secret)?,
        verification_token: secrets.open(&record.verification_token)?,
        cipher: encrypt_key.as_deref().map(Cipher::new),
        encrypt_key,
        record,
        stats: Mutex::new(CallbackStats::default()),
    })
}
