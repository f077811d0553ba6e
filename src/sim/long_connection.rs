//! Lark's side of the long connection (shared/lark-protocol.md §7, lark-protocol-next.md §5):
//! the endpoint call with its codes, one-shot WebSocket URLs, the `pbbp2` frames, each event
//! given to one connected client of the app at random (cluster mode), redelivered when no ack
//! comes in time, payloads over [`LongConnectionSettings::fragment_bytes`] split into
//! fragments, at most 50 connections per app (the 51st handshake is refused with
//! `handshake-status: 514`, `handshake-autherrcode: 1000040350`), a new `ClientConfig` pushed
//! in a pong, and connections dropped on command.
//!
//! Choices where the reference is silent: a wrong App ID or App Secret at the endpoint answers
//! `code` 99991543 (the Open API's code for wrong credentials, §6.2); the URL is
//! `ws://HOST/ws/v2?device_id=…&service_id=…&ticket=…`, its ticket valid once, for 5 minutes;
//! a spent or unknown ticket is a handshake refusal with status 514 and no auth code (clients
//! retry it). Redelivery over the connection follows the app's [`super::RedeliverySchedule`];
//! while no client is connected a delivery waits for one (up to [`WAIT_FOR_CLIENT`]).
//! A card callback goes over the connection when one is open (the new callback only:
//! `card.action.trigger_v1` is webhook-only), and is not redelivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};

use super::state::{Shared, stopped};
use super::{PushRecord, SimApp};
use crate::ids::random_hex;
use crate::lark::long_connection::frame::{METHOD_CONTROL, METHOD_DATA};
use crate::lark::long_connection::{
    AUTH_CODE_TOO_MANY_CONNECTIONS, AckAnswer, CODE_OK, EndpointData, EndpointRequest, Frame,
    HANDSHAKE_AUTH_FAILED, MAX_CONNECTIONS_PER_APP, ServerClientConfig,
};

/// How long a delivery waits for some client of the app to be connected.
pub const WAIT_FOR_CLIENT: Duration = Duration::from_secs(60);
const TICKET_LIFETIME: Duration = Duration::from_secs(300);
const WRONG_CREDENTIALS: i64 = 99_991_543;

/// How the simulated long-connection service behaves.
#[derive(Debug, Clone)]
pub struct LongConnectionSettings {
    /// Sent with every endpoint answer.
    pub client_config: ServerClientConfig,
    /// How long Lark waits for an ack before the event counts as not delivered (Lark: 3 s).
    pub ack_timeout: Duration,
    /// Payloads longer than this are split into fragments.
    pub fragment_bytes: usize,
    pub max_connections_per_app: usize,
}

impl Default for LongConnectionSettings {
    fn default() -> LongConnectionSettings {
        LongConnectionSettings {
            client_config: ServerClientConfig::default(),
            ack_timeout: Duration::from_secs(3),
            fragment_bytes: 16 * 1024,
            max_connections_per_app: MAX_CONNECTIONS_PER_APP,
        }
    }
}

/// One open connection, as the virtual Lark page and tests see it.
#[derive(Debug, Clone, Serialize)]
pub struct SimConnection {
    pub id: u64,
    pub app_id: String,
    pub device_id: String,
    pub connected_at: DateTime<Utc>,
    /// Data frames sent on it (fragments count one each).
    pub frames_sent: u64,
    pub acks: u64,
    pub pings: u64,
}

/// What a test may inject at the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFault {
    pub code: i64,
    pub msg: String,
}

enum Outbound {
    Frame(Vec<u8>),
    /// Close the TCP connection without a close frame, as a network failure does.
    Drop,
}

struct Conn {
    info: SimConnection,
    tx: mpsc::UnboundedSender<Outbound>,
}

struct Ticket {
    app_id: String,
    device_id: String,
    issued: Instant,
}

#[derive(Default)]
struct HubState {
    tickets: HashMap<String, Ticket>,
    conns: HashMap<u64, Conn>,
    /// Delivered frames waiting for their ack, by SeqID.
    waiting: HashMap<u64, oneshot::Sender<AckAnswer>>,
    /// A `ClientConfig` to send in the next pong to each app's clients.
    pushed_config: HashMap<String, ServerClientConfig>,
    endpoint_fault: Option<EndpointFault>,
}

/// The long-connection service of one simulator.
pub(crate) struct Hub {
    pub settings: LongConnectionSettings,
    state: std::sync::Mutex<HubState>,
    next_id: AtomicU64,
}

/// The `service` of every frame; one per simulator.
const SERVICE_ID: i32 = 4242;

impl Hub {
    pub fn new(settings: LongConnectionSettings) -> Hub {
        Hub {
            settings,
            state: std::sync::Mutex::new(HubState::default()),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connections(&self) -> Vec<SimConnection> {
        let mut all: Vec<_> = self.lock().conns.values().map(|c| c.info.clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn connected(&self, app_id: &str) -> bool {
        self.lock().conns.values().any(|c| c.info.app_id == app_id)
    }

    /// Drops every connection of `app_id` (all apps when `None`); returns how many.
    pub fn drop_connections(&self, app_id: Option<&str>) -> usize {
        let st = self.lock();
        let mut dropped = 0;
        for c in st.conns.values() {
            if app_id.is_none_or(|a| a == c.info.app_id) && c.tx.send(Outbound::Drop).is_ok() {
                dropped += 1;
            }
        }
        dropped
    }

    pub fn push_client_config(&self, app_id: &str, config: ServerClientConfig) {
        self.lock().pushed_config.insert(app_id.to_string(), config);
    }

    pub fn set_endpoint_fault(&self, fault: Option<EndpointFault>) {
        self.lock().endpoint_fault = fault;
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static headers are valid")
}

/// `POST /callback/ws/endpoint`.
pub(crate) fn endpoint(shared: &Shared, host: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let hub = &shared.long_connections;
    if let Some(fault) = hub.lock().endpoint_fault.clone() {
        return json_response(200, &json!({"code": fault.code, "msg": fault.msg, "data": null}));
    }
    let Ok(request) = serde_json::from_slice::<EndpointRequest>(body) else {
        return json_response(
            200,
            &json!({"code": WRONG_CREDENTIALS, "msg": "AppID and AppSecret are required", "data": null}),
        );
    };
    let known = shared
        .app(&request.app_id)
        .is_some_and(|a| crate::lark::crypto::constant_time_eq(&a.app_secret, &request.app_secret));
    if !known {
        return json_response(
            200,
            &json!({"code": WRONG_CREDENTIALS, "msg": "invalid app_id or app_secret", "data": null}),
        );
    }
    let ticket = random_hex(16);
    let device_id = hub.next().to_string();
    {
        let mut st = hub.lock();
        st.tickets.retain(|_, t| t.issued.elapsed() < TICKET_LIFETIME);
        st.tickets.insert(
            ticket.clone(),
            Ticket {
                app_id: request.app_id,
                device_id: device_id.clone(),
                issued: Instant::now(),
            },
        );
    }
    let data = EndpointData {
        url: format!("ws://{host}/ws/v2?device_id={device_id}&service_id={SERVICE_ID}&ticket={ticket}"),
        client_config: hub.settings.client_config,
    };
    json_response(200, &json!({"code": CODE_OK, "msg": "ok", "data": data}))
}

fn refusal(status: i64, msg: &str, auth_code: Option<i64>) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(u16::try_from(status).unwrap_or(400))
        .header("handshake-status", status.to_string())
        .header("handshake-msg", msg);
    if let Some(code) = auth_code {
        response = response.header("handshake-autherrcode", code.to_string());
    }
    response
        .body(Full::new(Bytes::new()))
        .expect("static headers are valid")
}

/// `GET /ws/v2?…` with `Upgrade: websocket`.
pub(crate) fn upgrade(
    shared: &Arc<Shared>,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let hub = &shared.long_connections;
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let is_upgrade = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(accept) = key.filter(|_| is_upgrade) else {
        return json_response(
            400,
            &json!({"code": 400, "msg": "a WebSocket upgrade is required"}),
        );
    };
    let ticket = query.get("ticket").and_then(|t| {
        let t = hub.lock().tickets.remove(t)?;
        (t.issued.elapsed() < TICKET_LIFETIME).then_some(t)
    });
    let Some(ticket) = ticket else {
        return refusal(HANDSHAKE_AUTH_FAILED, "ticket invalid or already used", None);
    };
    if query.get("device_id") != Some(&ticket.device_id) {
        return refusal(HANDSHAKE_AUTH_FAILED, "device_id does not match the ticket", None);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let id = hub.next();
    {
        let mut st = hub.lock();
        let open = st
            .conns
            .values()
            .filter(|c| c.info.app_id == ticket.app_id)
            .count();
        if open >= hub.settings.max_connections_per_app {
            return refusal(
                HANDSHAKE_AUTH_FAILED,
                "connection limit exceeded",
                Some(AUTH_CODE_TOO_MANY_CONNECTIONS),
            );
        }
        st.conns.insert(
            id,
            Conn {
                info: SimConnection {
                    id,
                    app_id: ticket.app_id.clone(),
                    device_id: ticket.device_id.clone(),
                    connected_at: shared.clock.now(),
                    frames_sent: 0,
                    acks: 0,
                    pings: 0,
                },
                tx,
            },
        );
    }
    let upgrading = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrading.await {
            let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            serve(&shared, id, &ticket.app_id, socket, rx).await;
        }
        shared.long_connections.lock().conns.remove(&id);
    });
    Response::builder()
        .status(101)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Accept", accept)
        .body(Full::new(Bytes::new()))
        .expect("static headers are valid")
}

async fn serve(
    shared: &Shared,
    id: u64,
    app_id: &str,
    socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
    let hub = &shared.long_connections;
    let (mut sink, mut stream) = socket.split();
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            out = rx.recv() => match out {
                Some(Outbound::Frame(bytes)) => {
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                }
                Some(Outbound::Drop) | None => return,
            },
            message = stream.next() => {
                let Some(Ok(message)) = message else { return };
                let Message::Binary(bytes) = message else {
                    if matches!(message, Message::Close(_)) {
                        return;
                    }
                    continue;
                };
                let Ok(frame) = Frame::decode(&bytes) else { continue };
                match (frame.method, frame.kind()) {
                    (METHOD_CONTROL, Some("ping")) => {
                        let config = {
                            let mut st = hub.lock();
                            if let Some(c) = st.conns.get_mut(&id) {
                                c.info.pings += 1;
                            }
                            st.pushed_config.remove(app_id)
                        };
                        let mut pong = Frame::ping(SERVICE_ID);
                        pong.set_header("type", "pong");
                        pong.payload = config.map(|c| serde_json::to_vec(&c).expect("a plain struct serializes"));
                        if sink.send(Message::Binary(pong.encode().into())).await.is_err() {
                            return;
                        }
                    }
                    // Lark tolerates any biz_rt, even negative ones (next §5.5).
                    (METHOD_DATA, _) => {
                        let answer = frame
                            .payload
                            .as_deref()
                            .and_then(|p| serde_json::from_slice::<AckAnswer>(p).ok());
                        let mut st = hub.lock();
                        if let Some(c) = st.conns.get_mut(&id) {
                            c.info.acks += 1;
                        }
                        if let (Some(answer), Some(waiter)) = (answer, st.waiting.remove(&frame.seq_id)) {
                            let _ = waiter.send(answer);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// How one attempt over the connection went.
enum Attempt {
    Acked(AckAnswer),
    NoAck,
    NoClient,
}

/// Sends `plaintext` as one `event` message (fragmented when large) to one connected client
/// of `app_id` at random and waits for the ack.
async fn attempt(shared: &Shared, app_id: &str, plaintext: &[u8]) -> Attempt {
    let hub = &shared.long_connections;
    let message_id = format!("msg_{}", random_hex(8));
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![plaintext]
    } else {
        plaintext.chunks(hub.settings.fragment_bytes.max(1)).collect()
    };
    let (ack_tx, ack_rx) = oneshot::channel();
    let mut last_seq = 0;
    {
        let mut st = hub.lock();
        let candidates: Vec<u64> = st
            .conns
            .values()
            .filter(|c| c.info.app_id == app_id)
            .map(|c| c.info.id)
            .collect();
        if candidates.is_empty() {
            return Attempt::NoClient;
        }
        let pick = candidates[getrandom::u32().unwrap_or(0) as usize % candidates.len()];
        let conn = st.conns.get_mut(&pick).expect("listed above");
        for (seq, chunk) in chunks.iter().enumerate() {
            let seq_id = hub.next();
            last_seq = seq_id;
            let mut frame = Frame {
                seq_id,
                log_id: seq_id,
                service: SERVICE_ID,
                method: METHOD_DATA,
                payload: Some(chunk.to_vec()),
                ..Frame::default()
            };
            for (k, v) in [
                ("type", "event".to_string()),
                ("message_id", message_id.clone()),
                ("sum", chunks.len().to_string()),
                ("seq", seq.to_string()),
                ("trace_id", random_hex(8)),
                ("timestamp", shared.clock.now().timestamp_millis().to_string()),
            ] {
                frame.set_header(k, v);
            }
            conn.info.frames_sent += 1;
            let _ = conn.tx.send(Outbound::Frame(frame.encode()));
        }
        // The client acks the frame that completed the message; any of them will do.
        st.waiting.insert(last_seq, ack_tx);
    }
    let outcome = match tokio::time::timeout(hub.settings.ack_timeout, ack_rx).await {
        Ok(Ok(answer)) => Attempt::Acked(answer),
        _ => Attempt::NoAck,
    };
    hub.lock().waiting.remove(&last_seq);
    outcome
}

/// Waits until some client of `app_id` is connected, or [`WAIT_FOR_CLIENT`] passes.
async fn wait_for_client(shared: &Shared, app_id: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT_FOR_CLIENT {
        if shared.long_connections.connected(app_id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn attempt_recorded(
    shared: &Shared,
    app: &SimApp,
    event_id: &str,
    event_type: &str,
    plaintext: &[u8],
    attempt_no: u32,
) -> bool {
    let at = shared.clock.now();
    let (ok, error) = match attempt(shared, &app.app_id, plaintext).await {
        Attempt::Acked(a) if a.code == 200 => (true, None),
        Attempt::Acked(a) => (false, Some(format!("ack code {}", a.code))),
        Attempt::NoAck => (false, Some("no ack in time".to_string())),
        Attempt::NoClient => (false, Some("no client connected".to_string())),
    };
    shared.lock().pushes.push(PushRecord {
        at,
        app_id: app.app_id.clone(),
        kind: "long_connection_event".to_string(),
        event_id: Some(event_id.to_string()),
        event_type: event_type.to_string(),
        attempt: attempt_no,
        status: ok.then_some(200),
        error,
        ok,
    });
    ok
}

/// Delivers an event over the app's long connections: the first attempt now, redeliveries (same
/// event id) in the background on the schedule until one is acked.
pub(crate) async fn deliver(
    shared: &Arc<Shared>,
    app: &SimApp,
    event_id: String,
    event_type: &str,
    plaintext: Vec<u8>,
) {
    if attempt_recorded(shared, app, &event_id, event_type, &plaintext, 0).await {
        return;
    }
    let shared = shared.clone();
    let app = app.clone();
    let event_type = event_type.to_string();
    tokio::spawn(async move {
        let mut stop = shared.stop.subscribe();
        for (i, delay) in shared.redelivery.delays.clone().into_iter().enumerate() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            tokio::select! {
                found = wait_for_client(&shared, &app.app_id) => if !found { continue },
                _ = stopped(&mut stop) => return,
            }
            let attempt_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if attempt_recorded(&shared, &app, &event_id, &event_type, &plaintext, attempt_no).await {
                return;
            }
        }
    });
}

/// A card callback over the connection: the handler's answer, or the client error code Lark
/// shows (200341 no answer in time, 200671 a failed handler).
pub(crate) async fn card_callback(shared: &Shared, app_id: &str, plaintext: &[u8]) -> Result<Value, u32> {
    match attempt(shared, app_id, plaintext).await {
        Attempt::Acked(a) if a.code == 200 => Ok(a.answer().unwrap_or_else(|| json!({}))),
        Attempt::Acked(_) => Err(200671),
        Attempt::NoAck | Attempt::NoClient => Err(200341),
    }
}
