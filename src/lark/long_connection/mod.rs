//! Lark's long-connection mode (shared/lark-protocol.md §7, lark-protocol-next.md §5): events
//! and `card.action.trigger` callbacks over an outbound WebSocket, for sites that cannot open an
//! inbound port. The endpoint call, the `pbbp2` frames ([`frame`]), fragment reassembly
//! ([`fragments`]) and the connection loop with its keep-alive, reconnect and stop-retrying
//! rules ([`connection`]). Speaks Lark and knows no incidents: what a payload means is the
//! [`PayloadHandler`]'s business.

pub mod connection;
pub mod fragments;
pub mod frame;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use connection::{ConnectError, LongConnection};
pub use frame::{AckAnswer, Frame, Header};

/// The endpoint path, on the Open API domain.
pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";

/// Endpoint `code`s (§7.1, next §5.1).
pub const CODE_OK: i64 = 0;
pub const CODE_SYSTEM_BUSY: i64 = 1;
pub const CODE_INTERNAL_ERROR: i64 = 1_000_040_343;
/// Handshake refusals (response headers of a failed WebSocket handshake).
pub const HANDSHAKE_FORBIDDEN: i64 = 403;
pub const HANDSHAKE_AUTH_FAILED: i64 = 514;
pub const AUTH_CODE_TOO_MANY_CONNECTIONS: i64 = 1_000_040_350;
/// Lark's limit of connections per app.
pub const MAX_CONNECTIONS_PER_APP: usize = 50;

/// The keep-alive and reconnect settings Lark sends with the endpoint and in pongs, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ServerClientConfig {
    /// Attempts after a drop; -1 = for ever.
    #[serde(default = "forever")]
    pub reconnect_count: i64,
    #[serde(default = "two_minutes")]
    pub reconnect_interval: u64,
    /// The first reconnect waits a random 0..this many seconds.
    #[serde(default = "half_a_minute")]
    pub reconnect_nonce: u64,
    #[serde(default = "two_minutes")]
    pub ping_interval: u64,
}

fn forever() -> i64 {
    -1
}
fn two_minutes() -> u64 {
    120
}
fn half_a_minute() -> u64 {
    30
}

impl Default for ServerClientConfig {
    /// The SDKs' values before Lark sends any.
    fn default() -> ServerClientConfig {
        ServerClientConfig {
            reconnect_count: forever(),
            reconnect_interval: two_minutes(),
            reconnect_nonce: half_a_minute(),
            ping_interval: two_minutes(),
        }
    }
}

/// The body of the endpoint call's request.
#[derive(Serialize, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "AppID")]
    pub app_id: String,
    #[serde(rename = "AppSecret")]
    pub app_secret: String,
}

/// The endpoint call's `data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointData {
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "ClientConfig", default)]
    pub client_config: ServerClientConfig,
}

/// What the integration's handler answers for one payload.
pub type HandlerResult = Result<Option<serde_json::Value>, String>;

/// Handles one whole payload (an event or a card callback, schema 2.0 JSON). `Ok(Some(json))`
/// goes back base64-encoded in the ack (a card press's toast and card); `Err` acks code 500 and
/// Lark redelivers.
pub trait PayloadHandler: Send + Sync + 'static {
    fn handle<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, HandlerResult>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    #[default]
    Connecting,
    Connected,
    /// Dropped or refused; the next attempt is scheduled.
    WaitingToRetry,
    /// Refused in a way the SDKs do not retry (or shut down); see `last_error`.
    Stopped,
}

/// One connection's state for the admin API, the UI and `/metrics`.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct ConnectionStatus {
    pub state: ConnectionState,
    pub connected_since: Option<DateTime<Utc>>,
    pub last_frame_at: Option<DateTime<Utc>>,
    /// Connections opened after the first one.
    pub reconnects: u64,
    pub events_received: u64,
    /// Frames dropped: not decodable, for another service, or incomplete past the TTL.
    pub frames_refused: u64,
    /// Lark's keep-alive and reconnect settings in force (from the endpoint or a pong).
    pub settings: Option<ServerClientConfig>,
    pub last_error: Option<ConnectionErrorNote>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionErrorNote {
    pub at: DateTime<Utc>,
    /// A stable word: `endpoint_refused`, `forbidden`, `too_many_connections`, …
    #[schema(value_type = String)]
    pub reason: &'static str,
    pub message: String,
    /// What the admin can do about it, in words.
    #[schema(value_type = String)]
    pub fix: &'static str,
    /// Whether the client keeps trying.
    pub retrying: bool,
}
