//! Messages (reference §5.1–§5.3): send and reply (content rules and size limits, receivers the
//! bot may reach, `uuid` dedup for an hour), card patches (shared cards within 14 days) and the
//! delayed card update with a callback's token.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::gates::receiver_limit;
use super::{ApiRequest, Reject, json_body, millis, ok, str_field};
use crate::ids::random_hex;
use crate::sim::state::{Shared, State};
use crate::sim::{CallRecord, MessageSender, SimMessage};

const TEXT_LIMIT_BYTES: usize = 150 * 1024;
const CARD_LIMIT_BYTES: usize = 30 * 1024;
/// A card callback's update token lives 30 minutes and serves 2 updates (reference §3.5).
const CARD_TOKEN_MINUTES: i64 = 30;
const CARD_TOKEN_USES: u32 = 2;
const PER_RECEIVER_PER_SECOND: usize = 5;
const PATCHES_PER_MESSAGE_PER_SECOND: usize = 5;
const UUID_MAX_CHARS: usize = 50;
const MESSAGE_UUID_HOURS: i64 = 1;
const PATCH_WINDOW_DAYS: i64 = 14;
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

pub(super) fn send_message(
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

pub(super) fn reply_message(
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

pub(super) fn patch_message(
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
pub(super) fn card_update(
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

#[cfg(test)]
mod tests {
    use super::*;

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
