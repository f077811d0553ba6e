//! The simulated Open API (reference §5, §6): the route table, the call log and the refusal
//! shape every endpoint shares. Works on parsed requests; `http` does the wire. Each endpoint's
//! business rules live by resource: [`gates`] (tokens, frequency limits, quota), [`messages`]
//! (send, reply, card updates), [`chats`] (the group chats a war room needs) and [`contacts`]
//! (user look-up); the OAuth endpoints are in `sim::oauth`, beside the authorize page.

mod chats;
mod contacts;
mod gates;
mod messages;

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::CallRecord;
use super::oauth;
use super::state::{Shared, State};
use crate::ids::random_hex;
pub(crate) use chats::ChatExtras;
pub use chats::SimPin;
pub(in crate::sim) use chats::add_members_over_time;
use gates::tenant_gate;
pub(super) use gates::{gate, user_auth};

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
        Route::TenantToken | Route::AppToken => gates::token(shared, st, route, req, now, record),
        Route::OAuthToken => oauth::token(shared, st, route, req, now, record),
        Route::UserInfo => oauth::user_info(shared, st, route, req, now, record),
        Route::SendMessage => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            messages::send_message(shared, st, req, &app_id, now, record)
        }
        Route::Reply(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            messages::reply_message(shared, st, req, &app_id, id, now, record)
        }
        Route::Patch(id) => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            messages::patch_message(shared, st, req, &app_id, id, now, record)
        }
        Route::CardUpdate => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            messages::card_update(st, req, &app_id, now, record)
        }
        Route::ListChats => {
            let app_id = tenant_gate(shared, st, route, req, now, record)?;
            chats::list_chats(st, req, &app_id, record)
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
            chats::pin(shared, st, req, &app_id, now, record)
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
            contacts::batch_get_id(st, req, record)
        }
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
}
