//! The Lark simulator: a faithful fake of Lark's Open API (tokens, messages, card updates, chats,
//! users, OAuth) and of Lark's event and card-callback delivery, for the integration tests and
//! `lark-oncall demo`. It rejects what Lark rejects, with Lark's HTTP status, `code`, `msg` and
//! headers (shared/lark-protocol.md §5, §6), and pushes signed, optionally encrypted events with
//! Lark's redelivery (§2, §3).
//!
//! Choices where the reference is silent, kept in one place:
//! - **Quota**: every Open API call that passes authentication and the frequency limits counts
//!   toward the tenant's monthly quota, whatever its business outcome — token fetches naming a
//!   known app_id included, even with a wrong secret (the reference lists no exempt APIs). Calls refused by the frequency limits
//!   or by the quota itself, injected faults, the OAuth authorize page and `/sim/` do not count.
//! - **Limits** are sliding windows over arrival times read from [`SimConfig::clock`]: a test
//!   moves a [`crate::clock::ShiftedClock`] forward instead of waiting (e.g. 20 × 50 sends, the
//!   clock moved 1 s between batches, reach the 1,000-per-minute limit in well under a second of
//!   wall time). Limits: 50/s per API per app and 1,000/min send+reply per app (HTTP 429, code
//!   99991400, `x-ogw-ratelimit-limit`/`-reset`); 5/s per user per app and 5/s per group shared by
//!   every bot, 5/s PATCHes per message (HTTP 400, code 230020).
//! - **Order of checks**: route → token (99991661/99991671/99991663) → frequency → quota →
//!   parameters → business rules. Nothing is created by a refused call.
//! - **Codes**: an unknown or invisible user → 230013; an unknown chat or message id → 230001;
//!   PATCH of another app's message → 230017; PATCH of a non-shared card or one older than 14
//!   days → 230001 with the reason in `msg`; oversized content → 230025.
//! - **p2p**: "the bot" a user talks to in [`Simulator::send_text`] is the first configured app.
//!   In groups a bot only receives messages that @-mention it, unless its app is granted the
//!   read-all scope (`SimApp::group_messages`, `im:message.group_msg`).
//! - **Delayed card update** (`/open-apis/interactive/v1/card/update`, §3.5): the callback's
//!   `c-…` token serves 2 updates within 30 minutes; a bad, spent or expired token → 230001 and an
//!   oversized card → 230025 (Lark's exact codes for this API are not in the reference).
//! - **Group chats** (`chats`): create refuses the whole call with 232043 when any id is one the
//!   bot cannot see; the same `uuid` and owner give the same chat for 10 hours; a bot-owned chat
//!   has no `owner_id`. Add-members follows `succeed_type` (0: 99992351 / 232024, 1: lists, 2:
//!   refuses); two adds to one chat that overlap in time → 232019. Pins are idempotent; the top
//!   notice needs `action_type` as a string. Operations on a dissolved chat → 232009, without the
//!   bot in it → 232011.
//! - **Card callbacks** are not redelivered (the reference does not say they are); a failed one is
//!   reported in [`CallbackOutcome::client_error`] with the code Lark's client shows (200341 …).

mod bot_hook;
mod http;
mod limits;
mod long_connection;
mod oauth;
mod open_api;
mod push;
mod state;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bot_hook::{SimBotHook, SimBotHookSetup, SimHookPost};
pub use long_connection::{EndpointFault, LongConnectionSettings, SimConnection};
pub use open_api::SimPin;
pub use world::{DEFAULT_APP_ID, SimChat, SimUser, World};

use crate::clock::{Clock, SystemClock};
use state::Shared;

/// How the simulator is set up.
pub struct SimConfig {
    /// `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    pub world: World,
    pub apps: Vec<SimApp>,
    /// Token expiry, the limit windows and the quota month read this clock.
    pub clock: Arc<dyn Clock>,
    /// Lifetime of tenant and app access tokens (Lark: 2 h).
    pub token_lifetime: Duration,
    /// Calls per tenant per month; `None` = unlimited.
    pub monthly_quota: Option<u64>,
    /// Off: no frequency limits and no quota (for load tests of the appliance itself).
    pub enforce_limits: bool,
    pub redelivery: RedeliverySchedule,
    /// The long-connection service (endpoint, WebSocket, 50-connection limit).
    pub long_connection: LongConnectionSettings,
}

impl SimConfig {
    /// Lark's defaults on `127.0.0.1:0` with the built-in world around the given apps (the
    /// first app is the bot of the world's chats).
    pub fn new(apps: Vec<SimApp>) -> SimConfig {
        let bot = apps.first().map_or(DEFAULT_APP_ID, |a| a.app_id.as_str());
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            world: World::default_world_for(bot),
            apps,
            clock: Arc::new(SystemClock),
            token_lifetime: Duration::from_secs(7200),
            monthly_quota: Some(10_000),
            enforce_limits: true,
            redelivery: RedeliverySchedule::lark(),
            long_connection: LongConnectionSettings::default(),
        }
    }

    /// A simulator for `lark-oncall demo`: one app ([`DEFAULT_APP_ID`], secrets given by the
    /// caller) pushing to `request_url`, the built-in world, Lark's limits.
    pub fn demo(listen: SocketAddr, app: SimApp) -> SimConfig {
        SimConfig {
            listen,
            ..SimConfig::new(vec![app])
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("apps", &self.apps)
            .field("users", &self.world.users.len())
            .field("chats", &self.world.chats.len())
            .field("token_lifetime", &self.token_lifetime)
            .field("monthly_quota", &self.monthly_quota)
            .field("enforce_limits", &self.enforce_limits)
            .field("redelivery", &self.redelivery)
            .finish()
    }
}

/// Which card callback an app subscribes to (reference §3.1, §3.3): the same type the
/// appliance parses into.
pub use crate::lark::event::CardCallbackVersion;

/// A custom app registered in the simulated tenant.
#[derive(Clone)]
pub struct SimApp {
    pub app_id: String,
    pub app_secret: String,
    pub verification_token: String,
    pub encrypt_key: Option<String>,
    /// Where events and card callbacks are pushed (the appliance's Request URL).
    pub request_url: Option<String>,
    pub card_callback: CardCallbackVersion,
    /// Granted `im:message.group_msg`: the bot receives every message of its groups, not only
    /// those that @-mention it.
    pub group_messages: bool,
    /// Scopes the app was granted that change what `user_info` returns:
    /// `contact:user.email:readonly` (email) and `contact:user.phone:readonly` (mobile).
    pub user_scopes: Vec<String>,
}

/// The scope `user_info` needs to return a user's email.
pub const EMAIL_SCOPE: &str = "contact:user.email:readonly";
/// The scope `user_info` needs to return a user's mobile.
pub const MOBILE_SCOPE: &str = "contact:user.phone:readonly";

impl SimApp {
    /// An app without Encrypt Key and Request URL, with the new card callback.
    pub fn new(app_id: &str, app_secret: &str, verification_token: &str) -> SimApp {
        SimApp {
            app_id: app_id.to_string(),
            app_secret: app_secret.to_string(),
            verification_token: verification_token.to_string(),
            encrypt_key: None,
            request_url: None,
            card_callback: CardCallbackVersion::V2,
            group_messages: false,
            user_scopes: Vec::new(),
        }
    }

    /// The bot's own open_id, as mentions carry it.
    pub fn bot_open_id(&self) -> String {
        world::derived_id("ou_", &format!("bot:{}", self.app_id))
    }
}

impl std::fmt::Debug for SimApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApp")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("verification_token", &"<redacted>")
            .field("encrypt_key", &self.encrypt_key.as_ref().map(|_| "<redacted>"))
            .field("request_url", &self.request_url)
            .field("card_callback", &self.card_callback)
            .field("group_messages", &self.group_messages)
            .field("user_scopes", &self.user_scopes)
            .finish()
    }
}

/// Delays before each redelivery of a failed event push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeliverySchedule {
    pub delays: Vec<Duration>,
}

impl RedeliverySchedule {
    /// Lark's: retries after 15 s, 5 min, 1 h and 6 h (reference §2.7).
    pub fn lark() -> RedeliverySchedule {
        RedeliverySchedule {
            delays: [15, 300, 3600, 21_600].map(Duration::from_secs).to_vec(),
        }
    }

    /// Lark's schedule divided by `factor` (tests: 1000 turns 15 s into 15 ms).
    pub fn scaled_down(factor: u32) -> RedeliverySchedule {
        RedeliverySchedule {
            delays: RedeliverySchedule::lark()
                .delays
                .into_iter()
                .map(|d| d / factor.max(1))
                .collect(),
        }
    }
}

/// What a faulty call looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with a non-JSON body.
    ServerError,
    /// HTTP 500 with `{"code":1,"msg":"system busy"}`.
    CodeOne,
    /// No answer until `Faults::hang` has passed.
    Hang,
    /// One of the above at random.
    #[default]
    Mixed,
}

/// A total outage of the Open API (the `/sim/` control API keeps working).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// HTTP 503 to every call.
    Unavailable,
    /// The connection is closed without an answer, as when nothing listens.
    Refused,
}

/// Faults injected into the Open API, switchable at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of calls (0..1) answered with `kind` instead of being processed.
    pub error_rate: f64,
    pub kind: FaultKind,
    /// Added before every Open API answer.
    #[serde(with = "millis")]
    pub latency: Duration,
    /// How long a `Hang` fault holds the call.
    #[serde(with = "millis")]
    pub hang: Duration,
    pub outage: Option<Outage>,
    /// Scopes the app is not granted (it has every scope otherwise): an API none of whose
    /// scopes is left answers 99991672 naming the ones it accepts.
    pub missing_scopes: Vec<String>,
    /// Group chats allow only their owner and managers to pin, and the app is neither (as when
    /// a person took over the chat): pins answer 230046.
    pub pins_for_managers_only: bool,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            error_rate: 0.0,
            kind: FaultKind::Mixed,
            latency: Duration::ZERO,
            hang: Duration::from_secs(30),
            outage: None,
            missing_scopes: Vec::new(),
            pins_for_managers_only: false,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// One Open API call as the simulator answered it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    /// Lark's API name, e.g. `im.v1.message.create`; empty for unknown paths.
    pub api: String,
    pub app_id: Option<String>,
    /// HTTP status; 0 when no answer was given (a hang or a refused connection).
    pub status: u16,
    /// The `code` of the answer, when it had one.
    pub code: Option<i64>,
    /// The chat or user the call was about.
    pub receiver: Option<String>,
    /// A short description of the request (never secrets).
    pub summary: String,
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageSender {
    App {
        app_id: String,
    },
    User {
        open_id: String,
    },
    /// A custom group bot, posting through its webhook.
    BotHook {
        name: String,
    },
}

/// A message in the simulated tenant.
#[derive(Debug, Clone, Serialize)]
pub struct SimMessage {
    pub message_id: String,
    pub chat_id: String,
    /// `p2p` or `group`.
    pub chat_type: String,
    /// The user of a p2p chat.
    pub user_open_id: Option<String>,
    pub sender: MessageSender,
    pub msg_type: String,
    /// The content JSON string as it stands now (after PATCHes and callback replacements).
    pub content: String,
    /// How many times the content was replaced.
    pub updates: u32,
    pub uuid: Option<String>,
    pub parent_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One attempt to push an event or callback to an app's Request URL.
#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    pub at: DateTime<Utc>,
    pub app_id: String,
    /// `event`, `card_callback` or `url_verification`.
    pub kind: String,
    /// `header.event_id` (absent for the v1 card callback and the challenge).
    pub event_id: Option<String>,
    /// `im.message.receive_v1`, `card.action.trigger`, …
    pub event_type: String,
    /// 0 for the first push, n for the n-th redelivery.
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub ok: bool,
}

/// What happened when a user pressed a card button.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackOutcome {
    /// The callback's HTTP status, if it answered in time.
    pub status: Option<u16>,
    /// The toast the client shows, as the callback returned it.
    pub toast: Option<serde_json::Value>,
    /// Whether the callback's answer replaced the card.
    pub card_replaced: bool,
    /// The code Lark's client shows when the callback failed (reference §3.2): 200341 timeout,
    /// 200342 connection failed, 200671 non-200, 200672 bad body, 200673 bad card.
    pub client_error: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("world file {path}: {reason}")]
    World { path: String, reason: String },
    #[error("no user {0}")]
    UnknownUser(String),
    #[error("no chat {0}")]
    UnknownChat(String),
    #[error("{0}")]
    BadSetup(String),
    #[error("no message {0}")]
    UnknownMessage(String),
    #[error("no app {0}")]
    UnknownApp(String),
    #[error("app {0} has no Request URL")]
    NoRequestUrl(String),
    #[error("message {0} is not a card")]
    NotACard(String),
    #[error("user {user} cannot see chat {chat}")]
    NotInChat { user: String, chat: String },
    #[error("chat {0} is disbanded")]
    Disbanded(String),
    #[error("the bot of {app} is already in chat {chat}")]
    AlreadyInChat { app: String, chat: String },
    #[error("no app to talk to: the simulator has no apps")]
    NoApps,
    #[error("应用未建立长连接: app {0} has no long connection open")]
    NoLongConnection(String),
    #[error("url_verification failed: {0}")]
    Verification(String),
}

/// A running simulator; clones share it.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Simulator {
    /// Binds `config.listen` and serves until [`Simulator::shutdown`].
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        // reqwest is built without a default provider; pushes need ring installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, stop));
        let server = tokio::spawn(http::serve(listener, shared.clone(), stopped));
        Ok(Simulator {
            shared,
            addr,
            server: Arc::new(Mutex::new(Some(server))),
        })
    }

    /// `http://127.0.0.1:PORT`: the Open API base URL for the client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The "virtual Lark" page, to open in a browser.
    pub fn page_url(&self) -> String {
        format!("http://{}/sim/", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every Open API call so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// Every message so far (bots' and users'), oldest first, with current content.
    pub fn messages(&self) -> Vec<SimMessage> {
        self.shared.lock().messages.clone()
    }

    /// Every push attempt to an app so far, oldest first.
    pub fn pushes(&self) -> Vec<PushRecord> {
        self.shared.lock().pushes.clone()
    }

    /// The world as it stands (chats created, members added, chats disbanded).
    pub fn world(&self) -> World {
        self.shared.lock().world.clone()
    }

    /// The pinned messages of a group chat, oldest first.
    pub fn pins(&self, chat_id: &str) -> Vec<SimPin> {
        self.shared.lock().pins_of(chat_id)
    }

    /// The message set as the chat's top notice, if any.
    pub fn top_notice(&self, chat_id: &str) -> Option<String> {
        self.shared.lock().chat_extras.top_notices.get(chat_id).cloned()
    }

    /// Calls counted toward this month's quota.
    pub fn quota_used(&self) -> u64 {
        let now = self.shared.clock.now();
        self.shared.lock().quota.used(now)
    }

    /// Counts `calls` made by other tools of the tenant toward this month's quota, so Lark's
    /// count runs ahead of what the appliance itself has spent.
    pub fn spend_quota(&self, calls: u64) {
        let now = self.shared.clock.now();
        self.shared.lock().quota.spend(now, calls);
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().expect("faults lock").clone()
    }

    /// Invalidates every tenant and app access token issued so far.
    pub fn expire_tokens(&self) {
        self.shared.lock().expire_tokens();
    }

    /// `user_open_id` presses a button of card `message_id` whose `value` is given: the signed
    /// callback goes to the sending app, and its answer may replace the card.
    pub async fn press_button(
        &self,
        user_open_id: &str,
        message_id: &str,
        value: serde_json::Value,
    ) -> Result<CallbackOutcome, SimError> {
        push::press_button(&self.shared, user_open_id, message_id, value).await
    }

    /// `user_open_id` writes `text` in a group (`Some(chat_id)`) or to the bot (`None`); the
    /// bot receives `im.message.receive_v1` in p2p, or in a group when mentioned. Returns once
    /// the first push attempt is over; redeliveries continue in the background.
    pub async fn send_text(
        &self,
        user_open_id: &str,
        chat_id: Option<&str>,
        text: &str,
        mention_bot: bool,
    ) -> Result<(), SimError> {
        push::send_text(&self.shared, user_open_id, chat_id, text, mention_bot).await
    }

    /// Sets up a custom bot in a group; returns it (its URL is [`Simulator::bot_hook_url`]).
    pub fn add_bot_hook(&self, setup: SimBotHookSetup) -> Result<SimBotHook, SimError> {
        bot_hook::add(&self.shared, setup)
    }

    /// The webhook URL of a custom bot, as its group's settings show it.
    pub fn bot_hook_url(&self, hook: &SimBotHook) -> String {
        format!("{}{}{}", self.base_url(), bot_hook::HOOK_PATH, hook.token)
    }

    /// Every custom bot with the posts that reached it, oldest first.
    pub fn bot_hooks(&self) -> Vec<SimBotHook> {
        self.shared.lock().bot_hooks.clone()
    }

    /// `operator` (a member; the owner when `None`) adds `app_id`'s bot to a group, which
    /// pushes `im.chat.member.bot.added_v1` to that bot.
    pub async fn add_bot_to_chat(
        &self,
        chat_id: &str,
        app_id: &str,
        operator: Option<&str>,
    ) -> Result<(), SimError> {
        push::add_bot(&self.shared, chat_id, app_id, operator).await
    }

    /// `operator` removes `app_id`'s bot from a group, which pushes
    /// `im.chat.member.bot.deleted_v1` to that bot.
    pub async fn remove_bot_from_chat(
        &self,
        chat_id: &str,
        app_id: &str,
        operator: Option<&str>,
    ) -> Result<(), SimError> {
        push::remove_bot(&self.shared, chat_id, app_id, operator).await
    }

    /// `operator` renames a group, which pushes `im.chat.updated_v1` to every bot in it.
    pub async fn rename_chat(
        &self,
        chat_id: &str,
        name: &str,
        operator: Option<&str>,
    ) -> Result<(), SimError> {
        push::rename_chat(&self.shared, chat_id, name, operator).await
    }

    /// Disbands a group and pushes `im.chat.disbanded_v1` to every bot in it.
    pub async fn disband_chat(&self, chat_id: &str) -> Result<(), SimError> {
        push::disband_chat(&self.shared, chat_id).await
    }

    /// Sends `url_verification` to the app's Request URL (encrypted when it has an Encrypt
    /// Key) and checks that the answer echoes the challenge within 1 s.
    pub async fn verify_url(&self, app_id: &str) -> Result<(), SimError> {
        push::verify_url(&self.shared, app_id).await
    }

    /// The long connections open now, oldest first.
    pub fn long_connections(&self) -> Vec<SimConnection> {
        self.shared.long_connections.connections()
    }

    /// Drops the long connections of `app_id` (every app's with `None`) without a close frame,
    /// as a network failure does; returns how many.
    pub fn drop_long_connections(&self, app_id: Option<&str>) -> usize {
        self.shared.long_connections.drop_connections(app_id)
    }

    /// The next pong to each client of `app_id` carries `config`.
    pub fn push_client_config(&self, app_id: &str, config: crate::lark::long_connection::ServerClientConfig) {
        self.shared.long_connections.push_client_config(app_id, config);
    }

    /// Makes the endpoint call answer `fault` (or behave again with `None`).
    pub fn set_endpoint_fault(&self, fault: Option<EndpointFault>) {
        self.shared.long_connections.set_endpoint_fault(fault);
    }

    /// The developer console's save of "receive through persistent connection": Lark refuses
    /// it unless a client of the app is connected (next §5.6).
    pub fn console_save_long_connection(&self, app_id: &str) -> Result<(), SimError> {
        if self.shared.app(app_id).is_none() {
            return Err(SimError::UnknownApp(app_id.to_string()));
        }
        if !self.shared.long_connections.connected(app_id) {
            return Err(SimError::NoLongConnection(app_id.to_string()));
        }
        Ok(())
    }

    /// Stops serving and cancels pending redeliveries.
    pub async fn shutdown(self) {
        let _ = self.shared.stop.send(true);
        let server = self.server.lock().expect("server lock").take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
