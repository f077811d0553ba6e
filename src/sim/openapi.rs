//! The simulated Open API: routing, token checks, frequency limits, quota, and each endpoint's
//! business rules (reference §5, §6). Works on parsed requests; `http` does the wire.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::chats;
use super::limits::Limit;
use super::oauth;
use super::state::{Shared, State, TokenKind};
use super::{CallRecord, MessageSender, SimChat, SimMessage, SimUser};
use crate::ids::random_hex;

const TEXT_LIMIT_BYTES: usize = 150 * 1024;
const CARD_LIMIT_BYTES: usize = 30 * 1024;
const PER_API_PER_SECOND: usize = 50;
const SENDS_PER_MINUTE: usize = 1000;
const CARD_UPDATES_PER_MINUTE: usize = 1000;
/// A card callback's update token lives 30 minutes and serves 2 updates (reference §3.5).
const CARD_TOKEN_MINUTES: i64 = 30;
const CARD_TOKEN_USES: u32 = 2;
const PER_RECEIVER_PER_SECOND: usize = 5;
const PATCHES_PER_MESSAGE_PER_SECOND: usize = 5;
const UUID_MAX_CHARS: usize = 50;
const MESSAGE_UUID_HOURS: i64 = 1;
const PATCH_WINDOW_DAYS: i64 = 14;
const MAX_PAGE_SIZE: usize = 100;
const MSG_TYPES: &[&str] = &[
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
    "system",
];

/// An Open API endpoint the simulator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    TenantToken,
    AppToken,
    SendMessage,
    Reply(String),
    Patch(String),
    CardUpdate,
    ListChats,
    CreateChat,
    AddMembers(String),
    UpdateChat(String),
    Pin,
    PutTopNotice(String),
    ShareLink(String),
    BatchGetId,
    OAuthToken,
    UserInfo,
}

impl Route {
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/open-apis/")?;
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let route = match (method, segments.as_slice()) {
            ("POST", ["auth", "v3", "tenant_access_token", "internal"]) => Route::TenantToken,
            ("POST", ["auth", "v3", "app_access_token", "internal"]) => Route::AppToken,
            ("POST", ["im", "v1", "messages"]) => Route::SendMessage,
            ("POST", ["im", "v1", "messages", id, "reply"]) => Route::Reply(id.to_string()),
            ("PATCH", ["im", "v1", "messages", id]) => Route::Patch(id.to_string()),
            ("POST", ["interactive", "v1", "card", "update"]) => Route::CardUpdate,
            ("GET", ["im", "v1", "chats"]) => Route::ListChats,
            ("POST", ["im", "v1", "chats"]) => Route::CreateChat,
            ("POST", ["im", "v1", "chats", id, "members"]) => Route::AddMembers(id.to_string()),
            ("PUT", ["im", "v1", "chats", id]) => Route::UpdateChat(id.to_string()),
            ("POST", ["im", "v1", "pins"]) => Route::Pin,
            ("POST", ["im", "v1", "chats", id, "top_notice", "put_top_notice"]) => {
                Route::PutTopNotice(id.to_string())
            }
            ("POST", ["im", "v1", "chats", id, "link"]) => Route::ShareLink(id.to_string()),
            ("POST", ["contact", "v3", "users", "batch_get_id"]) => Route::BatchGetId,
            ("POST", ["authen", "v2", "oauth", "token"]) => Route::OAuthToken,
            ("GET", ["authen", "v1", "user_info"]) => Route::UserInfo,
            _ => return None,
        };
        Some(route)
    }

    /// Lark's name for the API (also the key of its 50/s window).
    pub fn api(&self) -> &'static str {
        match self {
            Route::TenantToken => "auth.v3.tenant_access_token.internal",
            Route::AppToken => "auth.v3.app_access_token.internal",
            Route::SendMessage => "im.v1.message.create",
            Route::Reply(_) => "im.v1.message.reply",
            Route::Patch(_) => "im.v1.message.patch",
            Route::CardUpdate => "interactive.v1.card.update",
            Route::ListChats => "im.v1.chat.list",
            Route::CreateChat => "im.v1.chat.create",
            Route::AddMembers(_) => "im.v1.chat_members.create",
            Route::UpdateChat(_) => "im.v1.chat.update",
            Route::Pin => "im.v1.pin.create",
            Route::PutTopNotice(_) => "im.v1.chat_top_notice.put_top_notice",
            Route::ShareLink(_) => "im.v1.chat.link",
            Route::BatchGetId => "contact.v3.user.batch_get_id",
            Route::OAuthToken => "authen.v2.oauth.token",
            Route::UserInfo => "authen.v1.user_info",
        }
    }
}

pub(crate) struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    pub body: Bytes,
}

pub(crate) struct ApiReply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

/// A refused call: HTTP status and Lark's body.
#[derive(Debug)]
pub(super) struct Reject {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reject {
    pub(super) fn lark(status: u16, code: i64, msg: &str) -> Reject {
        Reject {
            status,
            body: json!({"code": code, "msg": msg, "error": {"log_id": random_hex(12)}}),
            headers: Vec::new(),
        }
    }

    pub(super) fn status(&self) -> u16 {
        self.status
    }

    pub(super) fn into_reply(self) -> ApiReply {
        ApiReply {
            status: self.status,
            body: self.body,
            headers: self.headers,
        }
    }

    /// HTTP 400 with an IM business code.
    pub(super) fn im(code: i64, msg: &str) -> Reject {
        Reject::lark(400, code, msg)
    }

    pub(super) fn invalid(ext: &str) -> Reject {
        Reject::im(
            230001,
            &format!("Your request contains an invalid request parameter, ext={ext}"),
        )
    }

    pub(super) fn oauth(code: i64, error: &str, description: &str) -> Reject {
        Reject {
            status: 400,
            body: json!({"code": code, "error": error, "error_description": description}),
            headers: Vec::new(),
        }
    }
}

pub(super) fn ok(data: Value) -> Value {
    json!({"code": 0, "msg": "success", "data": data})
}

fn millis(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// Answers one Open API call and logs it.
pub(crate) fn handle(shared: &Shared, route: &Route, req: &ApiRequest) -> ApiReply {
    let now = shared.clock.now();
    let mut st = shared.lock();
    let mut record = CallRecord {
        at: now,
        method: req.method.clone(),
        path: req.path.clone(),
        api: route.api().to_string(),
        app_id: None,
        status: 200,
        code: None,
        receiver: None,
        summary: String::new(),
    };
    let reply = match dispatch(shared, &mut st, route, req, now, &mut record) {
        Ok(body) => ApiReply {
            status: 200,
            body,
            headers: Vec::new(),
        },
        Err(r) => ApiReply {
            status: r.status,
            body: r.body,
            headers: r.headers,
        },
    };
    record.status = reply.status;
    record.code = reply.body.get("code").and_then(Value::as_i64);
    st.calls.push(record);
    reply
}

/// The answer to a path the Open API does not have, logged like Lark's gateway answers it.
pub(crate) fn not_found(shared: &Shared, req: &ApiRequest) -> ApiReply {
    let now = shared.clock.now();
    shared.lock().calls.push(CallRecord {
        at: now,
        method: req.method.clone(),
        path: req.path.clone(),
        api: String::new(),
        app_id: None,
        status: 404,
        code: None,
        receiver: None,
        summary: "no such API".to_string(),
    });
    ApiReply {
        status: 404,
        body: Value::String("404 page not found".to_string()),
        headers: Vec::new(),
    }
}

fn dispatch(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    match route {
        Route::TenantToken | Route::AppToken => token(shared, st, route, req, now, record),
        Route::OAuthToken => oauth::token(shared, st, route, req, now, record),
        Route::UserInfo => oauth::user_info(shared, st, route, req, now, record),
        Route::SendMessage => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            send_message(shared, st, req, &app_id, now, record)
        }
        Route::Reply(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            reply_message(shared, st, req, &app_id, id, now, record)
        }
        Route::Patch(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            patch_message(shared, st, req, &app_id, id, now, record)
        }
        Route::CardUpdate => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            card_update(st, req, &app_id, now, record)
        }
        Route::ListChats => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            list_chats(st, req, &app_id, record)
        }
        Route::CreateChat => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::create_chat(shared, st, req, &app_id, now, record)
        }
        Route::AddMembers(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::add_members(shared, st, req, &app_id, id, record)
        }
        Route::UpdateChat(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::update_chat(st, req, &app_id, id, record)
        }
        Route::Pin => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::pin(st, req, &app_id, now, record)
        }
        Route::PutTopNotice(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::put_top_notice(st, req, &app_id, id, record)
        }
        Route::ShareLink(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::share_link(st, req, &app_id, id, now, record)
        }
        Route::BatchGetId => {
            tenant_gate(shared, st, route, req, now, record)?;
            batch_get_id(st, req, record)
        }
    }
}

/// The tenant token's app, past the frequency limits and the quota.
fn tenant_gate(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<String, Reject> {
    let app_id = tenant_auth(st, req, now)?;
    record.app_id = Some(app_id.clone());
    gate(shared, st, route, &app_id, now)?;
    Ok(app_id)
}

/// The frequency limits of the call's API, then the monthly quota.
pub(super) fn gate(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    app_id: &str,
    now: DateTime<Utc>,
) -> Result<(), Reject> {
    if shared.enforce_limits {
        let mut limits = vec![Limit::per_second(
            format!("api:{app_id}:{}", route.api()),
            PER_API_PER_SECOND,
        )];
        match route {
            Route::SendMessage | Route::Reply(_) => {
                limits.push(Limit::per_minute(format!("send:{app_id}"), SENDS_PER_MINUTE));
            }
            Route::CardUpdate => {
                limits.push(Limit::per_minute(
                    format!("card_update:{app_id}"),
                    CARD_UPDATES_PER_MINUTE,
                ));
            }
            _ => {}
        }
        if let Err(refusal) = st.windows.admit(&limits, now) {
            let mut reject = Reject::lark(429, 99991400, "request trigger frequency limit");
            reject.headers = vec![
                ("x-ogw-ratelimit-limit", refusal.limit.to_string()),
                ("x-ogw-ratelimit-reset", refusal.reset_secs.to_string()),
            ];
            return Err(reject);
        }
    }
    if !st.quota.take(now) {
        return Err(Reject::lark(
            429,
            99991403,
            "This month's API call quota has been exceeded",
        ));
    }
    Ok(())
}

/// The receiver's 5/s window (shared by every bot for a group), or 230020.
fn receiver_limit(
    shared: &Shared,
    st: &mut State,
    key: String,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<(), Reject> {
    if shared.enforce_limits && st.windows.admit(&[Limit::per_second(key, limit)], now).is_err() {
        return Err(Reject::im(230020, "This operation triggers the frequency limit."));
    }
    Ok(())
}

fn bearer(req: &ApiRequest) -> Result<&str, Reject> {
    req.authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Reject::lark(
                400,
                99991661,
                "Missing access token for authorization. Please make a request with token attached.",
            )
        })
}

fn invalid_token() -> Reject {
    Reject::lark(
        400,
        99991663,
        "Invalid access token for authorization. Please make a request with token attached.",
    )
}

/// The app a tenant access token belongs to.
fn tenant_auth(st: &State, req: &ApiRequest, now: DateTime<Utc>) -> Result<String, Reject> {
    let token = bearer(req)?;
    if !["t-", "u-", "a-"].iter().any(|p| token.starts_with(p)) {
        return Err(Reject::lark(
            400,
            99991671,
            "token format error, must start with t- or u-",
        ));
    }
    match st.tokens.get(token) {
        Some(t) if t.kind == TokenKind::Tenant && t.expires_at > now => Ok(t.app_id.clone()),
        _ => Err(invalid_token()),
    }
}

/// The app and user of a user access token.
pub(super) fn user_auth(
    st: &State,
    req: &ApiRequest,
    now: DateTime<Utc>,
) -> Result<(String, String), Reject> {
    let token = bearer(req)?;
    match st.user_tokens.get(token) {
        Some(t) if t.expires_at > now => Ok((t.app_id.clone(), t.open_id.clone())),
        _ => Err(Reject::lark(
            400,
            99991668,
            "user access token invalid or expired",
        )),
    }
}

pub(super) fn json_body(req: &ApiRequest) -> Result<Value, Reject> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice::<Value>(&req.body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Reject::invalid("the request body is not a JSON object"))
}

pub(super) fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

fn token(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let bad = || Reject::lark(400, 99991543, "app_id or app_secret is invalid");
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| bad())?;
    let app_id = str_field(&body, "app_id").unwrap_or_default();
    record.summary = format!("app_id={app_id}");
    let app = shared.app(app_id).ok_or_else(bad)?;
    // A known App ID with the wrong secret is refused as Lark does it, with its own code.
    let wrong_secret = || Reject::lark(400, 10014, "app secret invalid");
    record.app_id = Some(app.app_id.clone());
    gate(shared, st, route, &app.app_id, now)?;
    let secret = str_field(&body, "app_secret").unwrap_or_default();
    if !crate::lark::crypto::constant_time_eq(secret, &app.app_secret) {
        return Err(wrong_secret());
    }
    let (tenant, tenant_left) = st.issue_token(&app.app_id, TokenKind::Tenant, now, shared.token_lifetime);
    Ok(match route {
        Route::AppToken => {
            let (app_token, left) = st.issue_token(&app.app_id, TokenKind::App, now, shared.token_lifetime);
            json!({"code": 0, "msg": "ok", "app_access_token": app_token, "expire": left,
                   "tenant_access_token": tenant})
        }
        _ => json!({"code": 0, "msg": "ok", "tenant_access_token": tenant, "expire": tenant_left}),
    })
}

/// Checks a message `content` (a JSON string) of `msg_type` and returns it.
fn check_content(msg_type: &str, content: Option<&Value>) -> Result<String, Reject> {
    let text = content
        .and_then(Value::as_str)
        .ok_or_else(|| Reject::invalid("content must be a JSON string"))?;
    let parsed: Value = serde_json::from_str(text)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Reject::invalid("content is not a JSON object string"))?;
    let limit = if msg_type == "text" {
        TEXT_LIMIT_BYTES
    } else {
        CARD_LIMIT_BYTES
    };
    if text.len() > limit {
        return Err(Reject::im(
            230025,
            &format!(
                "The message content is too long: {} bytes, at most {limit}",
                text.len()
            ),
        ));
    }
    match msg_type {
        "text" if parsed.get("text").and_then(Value::as_str).is_none() => {
            Err(Reject::invalid("text content needs a \"text\" string"))
        }
        "interactive"
            if parsed.get("type").and_then(Value::as_str) == Some("template")
                && parsed
                    .pointer("/data/template_id")
                    .and_then(Value::as_str)
                    .is_none() =>
        {
            Err(Reject::invalid("a template card needs data.template_id"))
        }
        _ => Ok(text.to_string()),
    }
}

/// Whether a card content string declares a shared card (reference §3.6, §5.3).
fn is_shared_card(content: &str) -> bool {
    let Ok(card) = serde_json::from_str::<Value>(content) else {
        return false;
    };
    if card.get("type").and_then(Value::as_str) == Some("template") {
        return true;
    }
    match card.pointer("/config/update_multi").and_then(Value::as_bool) {
        Some(shared) => shared,
        None => card.get("schema").and_then(Value::as_str) == Some("2.0"),
    }
}

/// Where a message goes, once Lark's rules allow it.
struct Target {
    chat_id: String,
    chat_type: &'static str,
    user_open_id: Option<String>,
    limit_key: String,
}

fn group_target(st: &State, app_id: &str, chat_id: &str) -> Result<Target, Reject> {
    let chat = st
        .world
        .chat(chat_id)
        .ok_or_else(|| Reject::invalid("invalid receive_id: no such chat"))?;
    if chat.disbanded {
        return Err(Reject::im(
            232009,
            "Your request specifies a chat which has already been dissolved.",
        ));
    }
    if !chat.apps.iter().any(|a| a == app_id) {
        return Err(Reject::im(230002, "Bot/User can NOT be out of the chat."));
    }
    Ok(Target {
        chat_id: chat.chat_id.clone(),
        chat_type: "group",
        user_open_id: None,
        limit_key: format!("chat:{}", chat.chat_id),
    })
}

fn no_availability() -> Reject {
    Reject::im(230013, "Bot has NO availability to this user.")
}

fn user_target(st: &mut State, app_id: &str, id_type: &str, id: &str) -> Result<Target, Reject> {
    let user = st.world.user_by(id_type, id).ok_or_else(no_availability)?;
    if !user.app_visible {
        return Err(no_availability());
    }
    let open_id = user.open_id.clone();
    Ok(Target {
        chat_id: st.p2p_chat(app_id, &open_id),
        chat_type: "p2p",
        limit_key: format!("user:{app_id}:{open_id}"),
        user_open_id: Some(open_id),
    })
}

fn message_json(m: &SimMessage, tenant_key: &str) -> Value {
    let sender = match &m.sender {
        MessageSender::App { app_id } => {
            json!({"id": app_id, "id_type": "app_id", "sender_type": "app", "tenant_key": tenant_key})
        }
        MessageSender::User { open_id } => {
            json!({"id": open_id, "id_type": "open_id", "sender_type": "user", "tenant_key": tenant_key})
        }
        MessageSender::BotHook { .. } => {
            json!({"id": "", "id_type": "app_id", "sender_type": "app", "tenant_key": tenant_key})
        }
    };
    let parent = m.parent_id.clone().unwrap_or_default();
    json!({
        "message_id": m.message_id, "root_id": parent, "parent_id": parent, "thread_id": "",
        "msg_type": m.msg_type, "create_time": millis(m.created_at), "update_time": millis(m.updated_at),
        "deleted": false, "updated": m.updates > 0, "chat_id": m.chat_id, "sender": sender,
        "body": {"content": m.content}, "mentions": [], "upper_message_id": ""
    })
}

/// Reads `msg_type`, `content`, `uuid` of a send or reply body.
fn outgoing(body: &Value) -> Result<(String, String, Option<String>), Reject> {
    let msg_type = str_field(body, "msg_type")
        .filter(|t| MSG_TYPES.contains(t))
        .ok_or_else(|| Reject::invalid("msg_type"))?
        .to_string();
    let content = check_content(&msg_type, body.get("content"))?;
    let uuid = match body.get("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if !u.is_empty() && u.chars().count() <= UUID_MAX_CHARS => Some(u.clone()),
        Some(_) => return Err(Reject::invalid("uuid must be a string of at most 50 characters")),
    };
    Ok((msg_type, content, uuid))
}

/// The message an earlier call with the same uuid created within the hour.
fn uuid_duplicate(st: &State, app_id: &str, uuid: &Option<String>, now: DateTime<Utc>) -> Option<Value> {
    let uuid = uuid.as_ref()?;
    let (message_id, at) = st.message_uuids.get(&(app_id.to_string(), uuid.clone()))?;
    if now - *at >= chrono::Duration::hours(MESSAGE_UUID_HOURS) {
        return None;
    }
    st.message(message_id)
        .map(|m| message_json(m, &st.world.tenant_key))
}

#[allow(clippy::too_many_arguments)]
fn create_message(
    st: &mut State,
    app_id: &str,
    target: Target,
    msg_type: String,
    content: String,
    uuid: Option<String>,
    parent_id: Option<String>,
    now: DateTime<Utc>,
) -> Value {
    let message = SimMessage {
        message_id: format!("om_{}", random_hex(16)),
        chat_id: target.chat_id,
        chat_type: target.chat_type.to_string(),
        user_open_id: target.user_open_id,
        sender: MessageSender::App {
            app_id: app_id.to_string(),
        },
        msg_type,
        content,
        updates: 0,
        uuid: uuid.clone(),
        parent_id,
        created_at: now,
        updated_at: now,
    };
    if let Some(uuid) = uuid {
        st.message_uuids
            .insert((app_id.to_string(), uuid), (message.message_id.clone(), now));
    }
    let data = message_json(&message, &st.world.tenant_key);
    st.push_message(message);
    ok(data)
}

fn send_message(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let id_type = req
        .query
        .get("receive_id_type")
        .map(String::as_str)
        .filter(|t| ["open_id", "user_id", "union_id", "email", "chat_id"].contains(t))
        .ok_or_else(|| Reject::invalid("receive_id_type"))?;
    let body = json_body(req)?;
    let receive_id = str_field(&body, "receive_id")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Reject::invalid("receive_id"))?;
    record.receiver = Some(receive_id.to_string());
    let (msg_type, content, uuid) = outgoing(&body)?;
    record.summary = format!("{msg_type} to {id_type}, {} bytes", content.len());
    if let Some(first) = uuid_duplicate(st, app_id, &uuid, now) {
        record.summary.push_str(", uuid duplicate");
        return Ok(ok(first));
    }
    let target = if id_type == "chat_id" {
        group_target(st, app_id, receive_id)?
    } else {
        user_target(st, app_id, id_type, receive_id)?
    };
    receiver_limit(shared, st, target.limit_key.clone(), PER_RECEIVER_PER_SECOND, now)?;
    Ok(create_message(
        st, app_id, target, msg_type, content, uuid, None, now,
    ))
}

fn reply_message(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    parent_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let body = json_body(req)?;
    let (msg_type, content, uuid) = outgoing(&body)?;
    record.summary = format!("{msg_type} reply to {parent_id}, {} bytes", content.len());
    let parent = st
        .message(parent_id)
        .ok_or_else(|| Reject::invalid("invalid message_id"))?
        .clone();
    record.receiver = Some(parent.chat_id.clone());
    if let Some(first) = uuid_duplicate(st, app_id, &uuid, now) {
        record.summary.push_str(", uuid duplicate");
        return Ok(ok(first));
    }
    let target = match &parent.user_open_id {
        None => group_target(st, app_id, &parent.chat_id)?,
        Some(open_id) => {
            let own_chat = st.p2p_chats.get(&(app_id.to_string(), open_id.clone()));
            if own_chat != Some(&parent.chat_id) {
                return Err(Reject::im(230002, "Bot/User can NOT be out of the chat."));
            }
            user_target(st, app_id, "open_id", open_id)?
        }
    };
    receiver_limit(shared, st, target.limit_key.clone(), PER_RECEIVER_PER_SECOND, now)?;
    Ok(create_message(
        st,
        app_id,
        target,
        msg_type,
        content,
        uuid,
        Some(parent.message_id),
        now,
    ))
}

fn patch_message(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let body = json_body(req)?;
    let content = check_content("interactive", body.get("content"))?;
    record.summary = format!("card update of {message_id}, {} bytes", content.len());
    let message = st
        .message(message_id)
        .ok_or_else(|| Reject::invalid("invalid message_id"))?;
    record.receiver = Some(message.chat_id.clone());
    if message.sender
        != (MessageSender::App {
            app_id: app_id.to_string(),
        })
    {
        return Err(Reject::im(230017, "Bot is not the owner of the resource."));
    }
    if message.msg_type != "interactive" {
        return Err(Reject::invalid(
            "only interactive messages (cards) can be updated",
        ));
    }
    if now - message.created_at > chrono::Duration::days(PATCH_WINDOW_DAYS) {
        return Err(Reject::invalid("the message was sent more than 14 days ago"));
    }
    if !is_shared_card(&message.content) {
        return Err(Reject::invalid(
            "the card sent was not shared: config.update_multi must be true",
        ));
    }
    if !is_shared_card(&content) {
        return Err(Reject::invalid(
            "the new card must set config.update_multi to true",
        ));
    }
    receiver_limit(
        shared,
        st,
        format!("patch:{message_id}"),
        PATCHES_PER_MESSAGE_PER_SECOND,
        now,
    )?;
    let message = st.message_mut(message_id).expect("checked above");
    message.content = content;
    message.updates += 1;
    message.updated_at = now;
    Ok(ok(json!({})))
}

/// The delayed update after a card callback: `token` is the callback's `c-…` token.
fn card_update(
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let body = json_body(req)?;
    let token = str_field(&body, "token").ok_or_else(|| Reject::invalid("token"))?;
    let mut card = body
        .get("card")
        .filter(|c| c.is_object())
        .cloned()
        .ok_or_else(|| Reject::invalid("card must be a card JSON object"))?;
    // `open_ids` picks who sees a non-shared update; the store keeps the one shared view.
    card.as_object_mut().map(|c| c.remove("open_ids"));
    let content = card.to_string();
    record.summary = format!("delayed card update, {} bytes", content.len());
    if content.len() > CARD_LIMIT_BYTES {
        return Err(Reject::im(
            230025,
            &format!(
                "The card is too long: {} bytes, at most {CARD_LIMIT_BYTES}",
                content.len()
            ),
        ));
    }
    let grant = st
        .card_tokens
        .get_mut(token)
        .filter(|g| g.app_id == app_id)
        .ok_or_else(|| Reject::invalid("token is not a card update token of this app"))?;
    if now - grant.issued_at > chrono::Duration::minutes(CARD_TOKEN_MINUTES) {
        return Err(Reject::invalid("the card update token has expired (30 minutes)"));
    }
    if grant.uses >= CARD_TOKEN_USES {
        return Err(Reject::invalid("the card update token was already used twice"));
    }
    grant.uses += 1;
    let message_id = grant.message_id.clone();
    record.receiver = Some(message_id.clone());
    let message = st
        .message_mut(&message_id)
        .ok_or_else(|| Reject::invalid("the card's message is gone"))?;
    message.content = content;
    message.updates += 1;
    message.updated_at = now;
    Ok(ok(json!({})))
}

/// A chat as Lark answers it; the owner fields are omitted when a bot owns the chat.
pub(super) fn chat_json(chat: &SimChat, tenant_key: &str) -> Value {
    let mut value = json!({
        "chat_id": chat.chat_id, "avatar": "", "name": chat.name, "description": chat.description,
        "external": false, "tenant_key": tenant_key, "labels": [], "chat_status": "normal",
        "chat_mode": "group", "chat_type": "private"
    });
    if !chat.owner_open_id.is_empty() {
        value["owner_id"] = json!(chat.owner_open_id);
        value["owner_id_type"] = json!("open_id");
    }
    value
}

fn list_chats(st: &State, req: &ApiRequest, app_id: &str, record: &mut CallRecord) -> Result<Value, Reject> {
    let page_size = match req.query.get("page_size") {
        None => 20,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| Reject::invalid("page_size must be 1..=100"))?,
    };
    let start = match req.query.get("page_token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .strip_prefix("pt_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Reject::invalid("page_token"))?,
    };
    let chats: Vec<&SimChat> = st
        .world
        .chats
        .iter()
        .filter(|c| !c.disbanded && c.apps.iter().any(|a| a == app_id))
        .collect();
    let end = (start + page_size).min(chats.len());
    let items: Vec<Value> = chats
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|c| chat_json(c, &st.world.tenant_key))
        .collect();
    let has_more = end < chats.len();
    record.summary = format!("page of {} from {start}", items.len());
    Ok(ok(json!({
        "items": items,
        "page_token": if has_more { format!("pt_{end}") } else { String::new() },
        "has_more": has_more
    })))
}

pub(super) fn id_list(body: &Value, name: &str, max: usize) -> Result<Vec<String>, Reject> {
    let Some(list) = body.get(name) else {
        return Ok(Vec::new());
    };
    let ids: Option<Vec<String>> = list
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or(None);
    ids.filter(|ids| ids.len() <= max)
        .ok_or_else(|| Reject::invalid(&format!("{name} must be at most {max} strings")))
}

fn user_id_of(user: &SimUser, id_type: &str) -> String {
    match id_type {
        "user_id" => user.user_id.clone(),
        "union_id" => user.union_id.clone(),
        _ => user.open_id.clone(),
    }
}

fn batch_get_id(st: &State, req: &ApiRequest, record: &mut CallRecord) -> Result<Value, Reject> {
    let field_error = || Reject::lark(400, 99992402, "field validation failed");
    let id_type = req.query.get("user_id_type").map_or("open_id", String::as_str);
    if !["open_id", "user_id", "union_id"].contains(&id_type) {
        return Err(field_error());
    }
    let body = json_body(req)?;
    let emails = id_list(&body, "emails", 50).map_err(|_| field_error())?;
    let mobiles = id_list(&body, "mobiles", 50).map_err(|_| field_error())?;
    record.summary = format!("{} emails, {} mobiles", emails.len(), mobiles.len());
    let status = json!({"is_frozen": false, "is_resigned": false, "is_activated": true,
                        "is_exited": false, "is_unjoin": false});
    let mut list = Vec::new();
    for (field, values) in [("email", &emails), ("mobile", &mobiles)] {
        for value in values {
            let found = st.world.users.iter().find(|u| {
                u.app_visible
                    && if field == "email" {
                        u.email.eq_ignore_ascii_case(value)
                    } else {
                        u.mobile == *value
                    }
            });
            let mut entry = json!({ field: value });
            if let Some(u) = found {
                entry["user_id"] = json!(user_id_of(u, id_type));
                entry["status"] = status.clone();
            }
            list.push(entry);
        }
    }
    Ok(ok(json!({ "user_list": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_api_names() {
        assert_eq!(
            Route::parse("POST", "/open-apis/im/v1/messages"),
            Some(Route::SendMessage)
        );
        assert_eq!(
            Route::parse("PATCH", "/open-apis/im/v1/messages/om_1"),
            Some(Route::Patch("om_1".into()))
        );
        assert_eq!(Route::parse("GET", "/open-apis/im/v1/messages"), None);
        assert_eq!(Route::parse("POST", "/elsewhere"), None);
        assert_eq!(Route::AddMembers("x".into()).api(), "im.v1.chat_members.create");
    }

    #[test]
    fn content_rules() {
        assert!(check_content("text", Some(&json!("{\"text\":\"hi\"}"))).is_ok());
        assert!(check_content("text", Some(&json!({"text": "hi"}))).is_err());
        assert!(check_content("text", Some(&json!("{\"nope\":1}"))).is_err());
        let big = format!("{{\"elements\":[],\"x\":\"{}\"}}", "a".repeat(CARD_LIMIT_BYTES));
        let err = check_content("interactive", Some(&json!(big))).unwrap_err();
        assert_eq!(err.body["code"], 230025);
        // Bytes, not characters: 12,000 three-byte characters are 36,000 bytes.
        let cjk = format!("{{\"x\":\"{}\"}}", "告".repeat(12_000));
        assert_eq!(
            check_content("interactive", Some(&json!(cjk))).unwrap_err().body["code"],
            230025
        );
    }

    #[test]
    fn shared_cards() {
        assert!(is_shared_card(
            r#"{"config":{"update_multi":true},"elements":[]}"#
        ));
        assert!(!is_shared_card(r#"{"elements":[]}"#));
        assert!(is_shared_card(r#"{"schema":"2.0","body":{"elements":[]}}"#));
        assert!(!is_shared_card(
            r#"{"schema":"2.0","config":{"update_multi":false}}"#
        ));
    }
}
