//! The simulator's HTTP side: the accept loop, fault injection in front of the Open API, the
//! OAuth authorize page, and the `/sim/` control API and "virtual Lark" page.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::oauth;
use super::open_api::{self, ApiRequest, Route};
use super::state::{Shared, random_unit, stopped};
use super::{CallRecord, FaultKind, Faults, Outage, SimError, push};
use crate::ids::random_hex;

const PAGE: &str = include_str!("page.html");
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Returned by the service to close a connection without an answer (the "refused" outage and
/// the end of a hang).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

type Reply = Result<Response<Full<Bytes>>, Dropped>;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| route(shared.clone(), peer.ip(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
    connections.shutdown().await;
}

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .expect("static headers are valid")
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    response(status, "application/json; charset=utf-8", body.to_string())
}

fn query_of(req: &Request<Incoming>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn body_of(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

async fn route(shared: Arc<Shared>, peer: std::net::IpAddr, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if path == "/sim" || path.starts_with("/sim/") {
        return Ok(control(&shared, req).await);
    }
    if let Some(token) = path.strip_prefix(super::bot_hook::HOOK_PATH)
        && req.method() == hyper::Method::POST
    {
        let token = token.to_string();
        let body = body_of(req).await.unwrap_or_default();
        return Ok(super::bot_hook::handle(&shared, &token, peer, &body));
    }
    match path.as_str() {
        "/callback/ws/endpoint" if req.method() == hyper::Method::POST => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = body_of(req).await.unwrap_or_default();
            return Ok(super::long_connection::endpoint(&shared, &host, &body));
        }
        "/ws/v2" => return Ok(super::long_connection::upgrade(&shared, req)),
        _ => {}
    }
    match path.as_str() {
        "/open-apis/authen/v1/authorize" => Ok(authorize_page(&shared, &query_of(&req))),
        "/open-apis/authen/v1/authorize/grant" => Ok(authorize_grant(&shared, &query_of(&req))),
        "/open-apis/authen/v1/authorize/deny" => Ok(authorize_deny(&shared, &query_of(&req))),
        _ => open_api(&shared, req).await,
    }
}

fn record_fault(shared: &Shared, method: &str, path: &str, status: u16, code: Option<i64>, summary: &str) {
    let api = Route::parse(method, path).map_or("", |r| r.api());
    let at = shared.clock.now();
    shared.lock().calls.push(CallRecord {
        at,
        method: method.to_string(),
        path: path.to_string(),
        api: api.to_string(),
        app_id: None,
        status,
        code,
        receiver: None,
        summary: format!("fault: {summary}"),
    });
}

/// The fault to inject into this call, if any.
fn pick_fault(faults: &Faults) -> Option<FaultKind> {
    if faults.error_rate <= 0.0 || random_unit() >= faults.error_rate {
        return None;
    }
    Some(match faults.kind {
        FaultKind::Mixed => match getrandom::u32().expect("OS random source") % 3 {
            0 => FaultKind::ServerError,
            1 => FaultKind::CodeOne,
            _ => FaultKind::Hang,
        },
        kind => kind,
    })
}

async fn open_api(shared: &Shared, req: Request<Incoming>) -> Reply {
    let faults = shared.faults.lock().expect("faults lock").clone();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    match faults.outage {
        Some(Outage::Refused) => {
            record_fault(shared, &method, &path, 0, None, "connection refused");
            return Err(Dropped);
        }
        Some(Outage::Unavailable) => {
            record_fault(shared, &method, &path, 503, None, "service unavailable");
            return Ok(response(
                503,
                "text/html",
                "<html><body>503 Service Unavailable</body></html>",
            ));
        }
        None => {}
    }
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    match pick_fault(&faults) {
        Some(FaultKind::ServerError) => {
            record_fault(shared, &method, &path, 500, None, "internal server error");
            return Ok(response(
                500,
                "text/html",
                "<html><body>500 Internal Server Error</body></html>",
            ));
        }
        Some(FaultKind::CodeOne) => {
            record_fault(shared, &method, &path, 500, Some(1), "system busy");
            return Ok(json_response(500, &json!({"code": 1, "msg": "system busy"})));
        }
        Some(FaultKind::Hang) => {
            record_fault(shared, &method, &path, 0, None, "hang");
            tokio::time::sleep(faults.hang).await;
            return Err(Dropped);
        }
        Some(FaultKind::Mixed) | None => {}
    }
    let query = query_of(&req);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(body) = body_of(req).await else {
        return Ok(json_response(400, &json!({"code": 9499, "msg": "Bad Request"})));
    };
    let api_request = ApiRequest {
        method: method.clone(),
        path: path.clone(),
        query,
        authorization,
        body,
    };
    let reply = match Route::parse(&method, &path) {
        Some(Route::AddMembers(chat_id)) => {
            let route = Route::AddMembers(chat_id.clone());
            open_api::add_members_over_time(shared, &route, &api_request, &chat_id).await
        }
        Some(route) => open_api::handle(shared, &route, &api_request),
        None => open_api::not_found(shared, &api_request),
    };
    let mut builder = Response::builder()
        .status(reply.status)
        .header("X-Tt-Logid", random_hex(12));
    let body = match reply.body {
        Value::String(text) => {
            builder = builder.header("Content-Type", "text/plain; charset=utf-8");
            text
        }
        other => {
            builder = builder.header("Content-Type", "application/json; charset=utf-8");
            other.to_string()
        }
    };
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    Ok(builder
        .body(Full::new(Bytes::from(body)))
        .expect("headers are valid"))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_page(status: u16, title: &str, body: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}\
             a.user{{display:block;padding:.6rem;border:1px solid #ccd;border-radius:6px;margin:.4rem 0;\
             text-decoration:none;color:#123}}a.user:hover{{background:#eef4ff}}</style></head>\
             <body><h2>{t}</h2>{body}</body></html>",
            t = escape_html(title)
        ),
    )
}

/// Lark's authorize page, simulated: pick who you are.
fn authorize_page(shared: &Shared, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let app_id = match oauth::authorize_check(shared, query) {
        Ok((app_id, _)) => app_id.to_string(),
        Err(reason) => return html_page(400, "Authorization failed", &escape_html(&reason)),
    };
    let users = shared.lock().world.users.clone();
    let mut links = String::new();
    for user in users {
        let mut params = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            if k != "open_id" {
                params.append_pair(k, v);
            }
        }
        params.append_pair("open_id", &user.open_id);
        links.push_str(&format!(
            "<a class=\"user\" href=\"/open-apis/authen/v1/authorize/grant?{}\">{} <small>{}</small></a>",
            escape_html(&params.finish()),
            escape_html(&user.name),
            escape_html(&user.email)
        ));
    }
    let mut deny = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        if k != "open_id" {
            deny.append_pair(k, v);
        }
    }
    html_page(
        200,
        "Log in with Lark (simulated)",
        &format!(
            "<p>App <code>{}</code> asks who you are.</p>{links}\
             <p><a id=\"deny\" href=\"/open-apis/authen/v1/authorize/deny?{}\">Deny</a></p>",
            escape_html(&app_id),
            escape_html(&deny.finish())
        ),
    )
}

fn authorize_deny(shared: &Shared, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    match oauth::authorize_deny(shared, query) {
        Ok(location) => Response::builder()
            .status(StatusCode::FOUND)
            .header("Location", location)
            .body(Full::new(Bytes::new()))
            .expect("a URL is a valid header"),
        Err(reason) => html_page(400, "Authorization failed", &escape_html(&reason)),
    }
}

fn authorize_grant(shared: &Shared, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    match oauth::authorize_grant(shared, query) {
        Ok(location) => Response::builder()
            .status(StatusCode::FOUND)
            .header("Location", location)
            .body(Full::new(Bytes::new()))
            .expect("a URL is a valid header"),
        Err(reason) => html_page(400, "Authorization failed", &escape_html(&reason)),
    }
}

fn control_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": {"code": code, "message": message}}))
}

fn sim_error(e: &SimError) -> Response<Full<Bytes>> {
    let (status, code) = match e {
        SimError::UnknownUser(_)
        | SimError::UnknownChat(_)
        | SimError::UnknownMessage(_)
        | SimError::UnknownApp(_) => (404, "not_found"),
        SimError::NotInChat { .. }
        | SimError::AlreadyInChat { .. }
        | SimError::Disbanded(_)
        | SimError::NotACard(_)
        | SimError::NoRequestUrl(_)
        | SimError::NoLongConnection(_)
        | SimError::NoApps => (409, "conflict"),
        SimError::BadSetup(_) => (400, "bad_request"),
        SimError::Verification(_) => (502, "verification_failed"),
        SimError::Bind { .. } | SimError::World { .. } => (500, "internal"),
    };
    control_error(status, code, &e.to_string())
}

#[derive(Deserialize)]
struct PressBody {
    user_open_id: String,
    message_id: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct SendTextBody {
    user_open_id: String,
    chat_id: Option<String>,
    text: String,
    #[serde(default)]
    mention_bot: bool,
}

#[derive(Deserialize)]
struct ChatBody {
    chat_id: String,
}

#[derive(Deserialize)]
struct BotMembershipBody {
    chat_id: String,
    /// The first app when absent.
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    operator_open_id: Option<String>,
}

#[derive(Deserialize)]
struct RenameBody {
    chat_id: String,
    name: String,
    #[serde(default)]
    operator_open_id: Option<String>,
}

#[derive(Deserialize)]
struct AppBody {
    app_id: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

fn done(result: Result<(), SimError>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => json_response(200, &json!({"ok": true})),
        Err(e) => sim_error(&e),
    }
}

/// `/sim/…`: the page and the JSON control API mirroring [`super::Simulator`].
async fn control(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = query_of(&req);
    let Some(body) = body_of(req).await else {
        return control_error(413, "too_large", "request body too large");
    };
    let ok = |value: Value| json_response(200, &value);
    match (method.as_str(), path.as_str()) {
        ("GET", "/sim" | "/sim/") => response(200, "text/html; charset=utf-8", PAGE),
        ("GET", "/sim/api/world") => {
            let apps: Vec<Value> = shared
                .apps
                .iter()
                .map(|a| {
                    json!({"app_id": a.app_id, "bot_open_id": a.bot_open_id(), "request_url": a.request_url,
                           "card_callback": a.card_callback, "encrypted": a.encrypt_key.is_some()})
                })
                .collect();
            let st = shared.lock();
            let mut pins: HashMap<&str, Vec<&str>> = HashMap::new();
            for pin in st.chat_extras.pins.values() {
                pins.entry(pin.chat_id.as_str())
                    .or_default()
                    .push(pin.message_id.as_str());
            }
            ok(
                json!({"world": st.world, "apps": apps, "pins": pins, "top_notices": st.chat_extras.top_notices,
                       "bot_hooks": st.bot_hooks}),
            )
        }
        ("GET", "/sim/api/calls") => ok(json!(shared.lock().calls)),
        ("GET", "/sim/api/pushes") => ok(json!(shared.lock().pushes)),
        ("GET", "/sim/api/quota") => {
            let now = shared.clock.now();
            ok(json!({"used": shared.lock().quota.used(now)}))
        }
        ("GET", "/sim/api/messages") => {
            let st = shared.lock();
            let chat = query.get("chat_id");
            let user = query.get("user");
            let messages: Vec<_> = st
                .messages
                .iter()
                .filter(|m| chat.is_none_or(|c| *c == m.chat_id))
                .filter(|m| user.is_none_or(|u| m.user_open_id.as_ref() == Some(u)))
                .collect();
            ok(json!(messages))
        }
        ("GET", "/sim/api/faults") => ok(json!(*shared.faults.lock().expect("faults lock"))),
        ("PUT", "/sim/api/faults") => match parse::<Faults>(&body) {
            Ok(faults) if (0.0..=1.0).contains(&faults.error_rate) => {
                *shared.faults.lock().expect("faults lock") = faults.clone();
                ok(json!(faults))
            }
            Ok(_) => control_error(400, "bad_request", "error_rate must be within 0..1"),
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("POST", "/sim/api/expire_tokens") => {
            shared.lock().expire_tokens();
            ok(json!({"ok": true}))
        }
        ("POST", "/sim/api/press") => match parse::<PressBody>(&body) {
            Ok(p) => match push::press_button(shared, &p.user_open_id, &p.message_id, p.value).await {
                Ok(outcome) => ok(json!(outcome)),
                Err(e) => sim_error(&e),
            },
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("POST", "/sim/api/send_text") => match parse::<SendTextBody>(&body) {
            Ok(s) => done(
                push::send_text(
                    shared,
                    &s.user_open_id,
                    s.chat_id.as_deref(),
                    &s.text,
                    s.mention_bot,
                )
                .await,
            ),
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("POST", "/sim/api/disband") => match parse::<ChatBody>(&body) {
            Ok(c) => done(push::disband_chat(shared, &c.chat_id).await),
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("POST", "/sim/api/chats/add_bot" | "/sim/api/chats/remove_bot") => {
            match parse::<BotMembershipBody>(&body) {
                Ok(b) => {
                    let Some(app_id) = b.app_id.or_else(|| shared.apps.first().map(|a| a.app_id.clone()))
                    else {
                        return sim_error(&SimError::NoApps);
                    };
                    let operator = b.operator_open_id.as_deref();
                    done(if path.ends_with("add_bot") {
                        push::add_bot(shared, &b.chat_id, &app_id, operator).await
                    } else {
                        push::remove_bot(shared, &b.chat_id, &app_id, operator).await
                    })
                }
                Err(e) => control_error(400, "bad_request", &e),
            }
        }
        ("POST", "/sim/api/chats/rename") => match parse::<RenameBody>(&body) {
            Ok(r) if !r.name.trim().is_empty() => done(
                push::rename_chat(shared, &r.chat_id, r.name.trim(), r.operator_open_id.as_deref()).await,
            ),
            Ok(_) => control_error(400, "bad_request", "name must not be empty"),
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("POST", "/sim/api/verify_url") => match parse::<AppBody>(&body) {
            Ok(a) => done(push::verify_url(shared, &a.app_id).await),
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("GET", "/sim/api/bot_hooks") => ok(json!(shared.lock().bot_hooks)),
        ("POST", "/sim/api/bot_hooks") => match parse::<super::bot_hook::SimBotHookSetup>(&body) {
            Ok(setup) => match super::bot_hook::add(shared, setup) {
                Ok(hook) => ok(
                    json!({"token": hook.token, "name": hook.name, "chat_id": hook.chat_id,
                                      "path": format!("{}{}", super::bot_hook::HOOK_PATH, hook.token)}),
                ),
                Err(e) => sim_error(&e),
            },
            Err(e) => control_error(400, "bad_request", &e),
        },
        ("GET", "/sim/api/long_connections") => ok(json!(shared.long_connections.connections())),
        ("POST", "/sim/api/long_connections/drop") => match parse::<DropBody>(&body) {
            Ok(d) => ok(json!({"dropped": shared.long_connections.drop_connections(d.app_id.as_deref())})),
            Err(e) => control_error(400, "bad_request", &e),
        },
        _ => control_error(404, "not_found", "no such simulator endpoint"),
    }
}

#[derive(Deserialize)]
struct DropBody {
    #[serde(default)]
    app_id: Option<String>,
}
