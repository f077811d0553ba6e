//! One app's long connection: fetch a one-shot URL from the endpoint, open the WebSocket (TLS
//! through rustls), ping at Lark's `PingInterval` and take a pong's new settings, hand whole
//! payloads to the [`PayloadHandler`] and ack each `event` frame with the answer; on a drop,
//! wait `ReconnectNonce` jitter, then `ReconnectInterval`, and start over with a new endpoint.
//! Stops where the SDKs stop (next §5.2): endpoint client errors, handshake 403, and 514 with
//! 1000040350 (more than 50 connections), saying why in the status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, protocol::WebSocketConfig};
use url::Url;

use super::fragments::Reassembler;
use super::frame::{AckAnswer, Frame, MAX_FRAME_BYTES, METHOD_CONTROL, METHOD_DATA};
use super::{
    AUTH_CODE_TOO_MANY_CONNECTIONS, CODE_INTERNAL_ERROR, CODE_SYSTEM_BUSY, ConnectionErrorNote,
    ConnectionState, ConnectionStatus, ENDPOINT_PATH, EndpointData, EndpointRequest, HANDSHAKE_AUTH_FAILED,
    HANDSHAKE_FORBIDDEN, PayloadHandler, ServerClientConfig,
};
use crate::clock::Clock;
use crate::lark::Secret;

/// The endpoint call's time limit (NODE: 15 s).
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(15);
/// The WebSocket handshake's time limit.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts after the first one are at least this far apart, whatever Lark's interval says.
const MIN_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Handlers running at once on one connection; more frames wait for a slot.
const MAX_CONCURRENT_HANDLERS: usize = 256;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection could not be opened or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("the endpoint call failed: {0}")]
    EndpointUnreachable(String),
    #[error("the endpoint answered code {code}: {msg}")]
    Endpoint { code: i64, msg: String },
    #[error("the endpoint answered a URL this client will not use: {0}")]
    BadUrl(String),
    #[error(
        "the WebSocket handshake was refused: handshake-status {status:?}, handshake-autherrcode {auth_code:?}: {msg}"
    )]
    Handshake {
        status: Option<i64>,
        auth_code: Option<i64>,
        msg: String,
    },
    #[error("the connection failed: {0}")]
    Transport(String),
    #[error("the server closed the connection: {0}")]
    Closed(String),
    #[error("gave up after {0} reconnect attempts (Lark's ReconnectCount)")]
    GaveUp(i64),
}

impl ConnectError {
    /// Whether the SDKs stop retrying on this (next §5.2).
    pub fn is_final(&self) -> bool {
        match self {
            ConnectError::Endpoint { code, .. } => !matches!(*code, CODE_SYSTEM_BUSY | CODE_INTERNAL_ERROR),
            ConnectError::BadUrl(_) | ConnectError::GaveUp(_) => true,
            ConnectError::Handshake {
                status, auth_code, ..
            } => {
                *status == Some(HANDSHAKE_FORBIDDEN)
                    || (*status == Some(HANDSHAKE_AUTH_FAILED)
                        && *auth_code == Some(AUTH_CODE_TOO_MANY_CONNECTIONS))
            }
            _ => false,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::EndpointUnreachable(_) => "endpoint_unreachable",
            ConnectError::Endpoint { code, .. } if !self.is_final() && *code == CODE_SYSTEM_BUSY => {
                "lark_busy"
            }
            ConnectError::Endpoint { .. } if !self.is_final() => "lark_internal_error",
            ConnectError::Endpoint { .. } => "endpoint_refused",
            ConnectError::BadUrl(_) => "bad_url",
            ConnectError::Handshake { status, .. } if *status == Some(HANDSHAKE_FORBIDDEN) => "forbidden",
            ConnectError::Handshake { .. } if self.is_final() => "too_many_connections",
            ConnectError::Handshake { status, .. } if *status == Some(HANDSHAKE_AUTH_FAILED) => "auth_failed",
            ConnectError::Handshake { .. } => "handshake_refused",
            ConnectError::Transport(_) => "transport",
            ConnectError::Closed(_) => "closed",
            ConnectError::GaveUp(_) => "gave_up",
        }
    }

    /// What the admin can do, in words.
    pub fn fix(&self) -> &'static str {
        match self.reason() {
            "endpoint_refused" => {
                "Lark refused this App ID and App Secret for a long connection. Check both against the \
                 developer console (a custom app, published, not disabled), then save the integration to \
                 connect again."
            }
            "forbidden" => {
                "Lark forbids this app's long connection (the app is banned or disabled). Check the app in \
                 the developer console, then save the integration to connect again."
            }
            "too_many_connections" => {
                "More than 50 connections are open for this app. Stop other clients using this App ID \
                 (other appliances, SDK scripts), then save the integration to connect again."
            }
            "gave_up" => "Lark's reconnect count is spent. Save the integration to connect again.",
            "bad_url" => {
                "Lark's endpoint answered an address that is not a secure WebSocket. Check the integration's \
                 domain and API address."
            }
            "auth_failed" => "Lark rejected the connection's authentication; retrying with a new endpoint.",
            "lark_busy" | "lark_internal_error" => "Lark is busy; retrying on its schedule.",
            _ => {
                "Cannot keep a connection to Lark: check that this host may open outbound HTTPS and WebSocket \
                 connections to Lark's Open API domain. Retrying on Lark's schedule."
            }
        }
    }
}

#[derive(Deserialize)]
struct EndpointAnswer {
    code: i64,
    #[serde(default)]
    msg: String,
    data: Option<EndpointData>,
}

/// One app's long-connection client.
pub struct LongConnection {
    base_url: Url,
    app_id: String,
    app_secret: Secret,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    handler: Arc<dyn PayloadHandler>,
    status: Arc<Mutex<ConnectionStatus>>,
    on_change: Option<StatusObserver>,
    clock: Arc<dyn Clock>,
}

/// Told of every status change (the metrics).
pub type StatusObserver = Arc<dyn Fn(&ConnectionStatus) + Send + Sync>;

/// How one open session ended.
enum SessionEnd {
    Stopped,
    Dropped(ConnectError),
}

impl LongConnection {
    /// A client for `app_id` on the Open API at `base_url` (or the simulator's). Needs a rustls
    /// crypto provider installed.
    pub fn new(
        base_url: Url,
        app_id: String,
        app_secret: Secret,
        handler: Arc<dyn PayloadHandler>,
        clock: Arc<dyn Clock>,
    ) -> Result<LongConnection, String> {
        let http = reqwest::Client::builder()
            .timeout(ENDPOINT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lark-oncall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        use rustls_platform_verifier::ConfigVerifierExt;
        let tls = rustls::ClientConfig::with_platform_verifier().map_err(|e| e.to_string())?;
        Ok(LongConnection {
            base_url,
            app_id,
            app_secret,
            http,
            tls: Arc::new(tls),
            handler,
            status: Arc::new(Mutex::new(ConnectionStatus::default())),
            on_change: None,
            clock,
        })
    }

    pub fn on_change(mut self, observer: StatusObserver) -> LongConnection {
        self.on_change = Some(observer);
        self
    }

    /// The live status, shared with whoever shows it.
    pub fn status(&self) -> Arc<Mutex<ConnectionStatus>> {
        self.status.clone()
    }

    fn update(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut status);
        if let Some(observer) = &self.on_change {
            observer(&status);
        }
    }

    fn note(&self, e: &ConnectError, retrying: bool) {
        if retrying {
            tracing::warn!(app_id = %self.app_id, reason = e.reason(), error = %e, "long connection lost; retrying");
        } else {
            tracing::error!(app_id = %self.app_id, reason = e.reason(), error = %e, fix = e.fix(),
                "long connection stopped");
        }
        let at = self.clock.now();
        self.update(|s| {
            s.connected_since = None;
            s.state = if retrying {
                ConnectionState::WaitingToRetry
            } else {
                ConnectionState::Stopped
            };
            s.last_error = Some(ConnectionErrorNote {
                at,
                reason: e.reason(),
                message: e.to_string(),
                fix: e.fix(),
                retrying,
            });
        });
    }

    /// Connects and keeps connecting until a final refusal or `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut config = ServerClientConfig::default();
        let mut attempts: i64 = 0;
        let mut ever_connected = false;
        let mut just_dropped = false;
        loop {
            if *stop.borrow() {
                break;
            }
            self.update(|s| s.state = ConnectionState::Connecting);
            let opened = tokio::select! {
                opened = self.open(&mut config) => opened,
                _ = stop.changed() => break,
            };
            match opened {
                Ok((socket, service)) => {
                    let now = self.clock.now();
                    self.update(|s| {
                        if ever_connected {
                            s.reconnects += 1;
                        }
                        s.state = ConnectionState::Connected;
                        s.connected_since = Some(now);
                        s.settings = Some(config);
                    });
                    tracing::info!(app_id = %self.app_id, "long connection open");
                    ever_connected = true;
                    attempts = 0;
                    match self.serve(socket, service, &mut config, &mut stop).await {
                        SessionEnd::Stopped => break,
                        SessionEnd::Dropped(e) => self.note(&e, true),
                    }
                    just_dropped = true;
                }
                Err(e) if e.is_final() => {
                    self.note(&e, false);
                    return;
                }
                Err(e) => self.note(&e, true),
            }
            attempts += 1;
            if config.reconnect_count >= 0 && attempts > config.reconnect_count {
                self.note(&ConnectError::GaveUp(config.reconnect_count), false);
                return;
            }
            let wait = if just_dropped {
                just_dropped = false;
                Duration::from_millis(random_below(config.reconnect_nonce.saturating_mul(1000)))
            } else {
                Duration::from_secs(config.reconnect_interval).max(MIN_RETRY_WAIT)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
        self.update(|s| {
            s.state = ConnectionState::Stopped;
            s.connected_since = None;
        });
    }

    async fn endpoint(&self) -> Result<EndpointData, ConnectError> {
        let url = self
            .base_url
            .join(ENDPOINT_PATH)
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let body = EndpointRequest {
            app_id: self.app_id.clone(),
            app_secret: self.app_secret.expose().to_string(),
        };
        let unreachable = |e: reqwest::Error| ConnectError::EndpointUnreachable(e.without_url().to_string());
        let response = self
            .http
            .post(url)
            .header("locale", "zh")
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let answer: EndpointAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| ConnectError::EndpointUnreachable(format!("HTTP {status} without a JSON answer")))?;
        match answer.data {
            Some(data) if answer.code == 0 => Ok(data),
            _ if answer.code == 0 => Err(ConnectError::Endpoint {
                code: 0,
                msg: "no data in the answer".into(),
            }),
            _ => Err(ConnectError::Endpoint {
                code: answer.code,
                msg: answer.msg,
            }),
        }
    }

    /// Fetches a URL and opens it; returns the socket and its `service_id`.
    async fn open(&self, config: &mut ServerClientConfig) -> Result<(Socket, i32), ConnectError> {
        let data = self.endpoint().await?;
        *config = data.client_config;
        let url = Url::parse(&data.url).map_err(|_| ConnectError::BadUrl("not a URL".into()))?;
        // A TLS Open API hands out TLS WebSockets; plain ws:// only from a plain (local) one.
        let secure_enough =
            url.scheme() == "wss" || (url.scheme() == "ws" && self.base_url.scheme() == "http");
        if !secure_enough {
            return Err(ConnectError::BadUrl(format!("scheme {}", url.scheme())));
        }
        let service = url
            .query_pairs()
            .find(|(k, _)| k == "service_id")
            .and_then(|(_, v)| v.parse::<i32>().ok())
            .ok_or_else(|| ConnectError::BadUrl("no service_id".into()))?;
        let request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
        );
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Err(_) => Err(ConnectError::Transport("the handshake timed out".into())),
            Ok(Ok((socket, _))) => Ok((socket, service)),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let number = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
                Err(ConnectError::Handshake {
                    status: number("handshake-status"),
                    auth_code: number("handshake-autherrcode"),
                    msg: header("handshake-msg")
                        .unwrap_or_else(|| format!("HTTP {}", response.status().as_u16())),
                })
            }
            Ok(Err(e)) => Err(ConnectError::Transport(e.to_string())),
        }
    }

    async fn serve(
        &self,
        socket: Socket,
        service: i32,
        config: &mut ServerClientConfig,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let (mut sink, mut stream) = socket.split();
        let (acks, mut ack_rx) = mpsc::unbounded_channel::<Frame>();
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
        let mut fragments = Reassembler::default();
        let mut next_ping = tokio::time::Instant::now();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = sink.send(Message::Close(None)).await;
                    return SessionEnd::Stopped;
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    next_ping = tokio::time::Instant::now() + Duration::from_secs(config.ping_interval.max(1));
                    if let Err(e) = sink.send(Message::Binary(Frame::ping(service).encode().into())).await {
                        return SessionEnd::Dropped(ConnectError::Transport(e.to_string()));
                    }
                }
                Some(ack) = ack_rx.recv() => {
                    if let Err(e) = sink.send(Message::Binary(ack.encode().into())).await {
                        return SessionEnd::Dropped(ConnectError::Transport(e.to_string()));
                    }
                }
                _ = sweep.tick() => {
                    let dropped = fragments.expire(Instant::now()) as u64;
                    if dropped > 0 {
                        self.update(|s| s.frames_refused += dropped);
                    }
                }
                message = stream.next() => match message {
                    None => return SessionEnd::Dropped(ConnectError::Closed("end of stream".into())),
                    Some(Err(e)) => return SessionEnd::Dropped(ConnectError::Transport(e.to_string())),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map_or_else(|| "no reason given".to_string(), |f| f.reason.to_string());
                        return SessionEnd::Dropped(ConnectError::Closed(why));
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        let now = self.clock.now();
                        self.update(|s| s.last_frame_at = Some(now));
                        match Frame::decode(&bytes) {
                            Ok(frame) if frame.service == service => {
                                if let Some(new_config) = self.on_frame(frame, &mut fragments, &acks, &slots) {
                                    tracing::info!(app_id = %self.app_id, ?new_config, "Lark sent new connection settings");
                                    let ping_changed = new_config.ping_interval != config.ping_interval;
                                    *config = new_config;
                                    self.update(|s| s.settings = Some(new_config));
                                    if ping_changed {
                                        next_ping = tokio::time::Instant::now() + Duration::from_secs(config.ping_interval.max(1));
                                    }
                                }
                            }
                            // Frames not for the service this connection was opened for are
                            // not Lark's answer to us: refused, like undecodable ones.
                            Ok(_) | Err(_) => self.update(|s| s.frames_refused += 1),
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Handles one decoded frame; returns new settings a pong carried.
    fn on_frame(
        &self,
        frame: Frame,
        fragments: &mut Reassembler,
        acks: &mpsc::UnboundedSender<Frame>,
        slots: &Arc<Semaphore>,
    ) -> Option<ServerClientConfig> {
        match (frame.method, frame.kind()) {
            (METHOD_CONTROL, Some("pong")) => frame
                .payload
                .as_deref()
                .filter(|p| !p.is_empty())
                .and_then(|p| serde_json::from_slice(p).ok()),
            // Only `event` frames are dispatched and acked; `card` and unknown types are
            // ignored, as every SDK does (next §5.4).
            (METHOD_DATA, Some("event")) => {
                let number = |k: &str| frame.header(k).and_then(|v| v.parse::<usize>().ok());
                let (sum, seq) = (number("sum").unwrap_or(1), number("seq").unwrap_or(0));
                let message_id = frame.header("message_id").unwrap_or_default().to_string();
                let payload = frame.payload.clone().unwrap_or_default();
                match fragments.push(&message_id, sum, seq, payload, Instant::now()) {
                    Ok(Some(whole)) => {
                        self.update(|s| s.events_received += 1);
                        let handler = self.handler.clone();
                        let acks = acks.clone();
                        let slots = slots.clone();
                        tokio::spawn(async move {
                            let Ok(_slot) = slots.acquire().await else { return };
                            let started = Instant::now();
                            let answer = match handler.handle(&whole).await {
                                Ok(answer) => AckAnswer::ok(answer.as_ref()),
                                Err(e) => {
                                    tracing::warn!(error = %e, "a long-connection payload was not accepted; Lark will redeliver");
                                    AckAnswer::failed()
                                }
                            };
                            let biz_rt = started.elapsed().as_millis() as u64;
                            let _ = acks.send(frame.ack(&answer, biz_rt));
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a long-connection fragment was refused");
                        self.update(|s| s.frames_refused += 1);
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// A uniform random number in `0..=bound`.
fn random_below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    getrandom::u64().unwrap_or(0) % (bound + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(status: i64, auth_code: Option<i64>) -> ConnectError {
        ConnectError::Handshake {
            status: Some(status),
            auth_code,
            msg: String::new(),
        }
    }

    #[test]
    fn retrying_stops_where_the_sdks_stop() {
        let endpoint = |code| ConnectError::Endpoint {
            code,
            msg: String::new(),
        };
        assert!(!endpoint(CODE_SYSTEM_BUSY).is_final());
        assert!(!endpoint(CODE_INTERNAL_ERROR).is_final());
        assert!(endpoint(10003).is_final());
        assert!(handshake(HANDSHAKE_FORBIDDEN, None).is_final());
        assert!(handshake(HANDSHAKE_AUTH_FAILED, Some(AUTH_CODE_TOO_MANY_CONNECTIONS)).is_final());
        assert!(!handshake(HANDSHAKE_AUTH_FAILED, Some(1)).is_final());
        assert!(!handshake(500, None).is_final());
        assert!(!ConnectError::Transport("reset".into()).is_final());
        assert_eq!(
            handshake(HANDSHAKE_AUTH_FAILED, Some(AUTH_CODE_TOO_MANY_CONNECTIONS)).reason(),
            "too_many_connections"
        );
        assert!(
            handshake(HANDSHAKE_AUTH_FAILED, Some(AUTH_CODE_TOO_MANY_CONNECTIONS))
                .fix()
                .contains("50")
        );
    }
}
