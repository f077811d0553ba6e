//! The simulated group-chat APIs a war room needs (shared/lark-protocol-next.md §1): create
//! (232043 all-or-nothing on ids the bot cannot see, `uuid` dedup for 10 hours, owner fields
//! omitted when the bot owns the chat), add members (`succeed_type` 0/1/2 and the three id
//! lists; a second add to a chat while one is in flight gets 232019), pins (idempotent), the
//! top notice, the share link and rename; and the list of chats the bot is in. Pins answer
//! 230046 while [`crate::sim::Faults::pins_for_managers_only`] is on.
//!
//! Choices where the reference is silent: an add-members call takes [`MEMBER_ADD_WORK`] of wall
//! time, so calls that overlap in time are "concurrent"; a create naming a resigned user
//! (`SimUser::resigned`) is refused with 232022, like one naming an invisible user with 232043.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiReply, ApiRequest, Reject, Route, id_list, json_body, ok, str_field};
use crate::ids::random_hex;
use crate::sim::state::{Shared, State};
use crate::sim::{CallRecord, SimChat};

const CHAT_UUID_HOURS: i64 = 10;
const MAX_PAGE_SIZE: usize = 100;
/// How long Lark works on one add-members call (wall time): overlapping calls to one chat clash.
pub(super) const MEMBER_ADD_WORK: Duration = Duration::from_millis(30);
const SHARE_LINK_BASE: &str = "https://applink.larksuite.com/client/chat/chatter/add_by_link";

/// A pinned message.
#[derive(Debug, Clone, Serialize)]
pub struct SimPin {
    pub message_id: String,
    pub chat_id: String,
    pub operator_app_id: String,
    pub created_at: DateTime<Utc>,
}

/// What the simulator keeps about group chats beyond the world's members.
#[derive(Debug, Default)]
pub(crate) struct ChatExtras {
    /// By message id.
    pub pins: HashMap<String, SimPin>,
    /// chat id → the message set as its top notice.
    pub top_notices: HashMap<String, String>,
    /// Chats an add-members call is working on.
    pub adds_in_flight: HashSet<String>,
}

fn dissolved() -> Reject {
    Reject::im(
        232009,
        "Your request specifies a chat which has already been dissolved.",
    )
}

/// The chat, live and with the calling bot in it (232006 / 232009 / 232011 otherwise).
fn bots_chat<'a>(st: &'a State, app_id: &str, chat_id: &str) -> Result<&'a SimChat, Reject> {
    let chat = st
        .world
        .chat(chat_id)
        .ok_or_else(|| Reject::im(232006, "Your request specifies a chat_id which is invalid."))?;
    if chat.disbanded {
        return Err(dissolved());
    }
    if !chat.apps.iter().any(|a| a == app_id) {
        return Err(Reject::im(232011, "Operator can NOT be out of the chat."));
    }
    Ok(chat)
}

pub(super) fn create_chat(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let id_type = req.query.get("user_id_type").map_or("open_id", String::as_str);
    if !["open_id", "user_id", "union_id"].contains(&id_type) {
        return Err(Reject::invalid("user_id_type"));
    }
    let body = json_body(req)?;
    let users = id_list(&body, "user_id_list", 50)?;
    let bots = id_list(&body, "bot_id_list", 5)?;
    let name = str_field(&body, "name").unwrap_or_default().to_string();
    record.summary = format!("create chat {name:?} with {} users", users.len());
    let owner_id = str_field(&body, "owner_id").map(str::to_string);
    let uuid = match req.query.get("uuid") {
        None => None,
        Some(u) if !u.is_empty() && u.chars().count() <= 50 => Some(u.clone()),
        Some(_) => return Err(Reject::im(232001, "uuid must be 1 to 50 characters")),
    };
    let owner_key = owner_id.clone().unwrap_or_else(|| app_id.to_string());
    if let Some(uuid) = &uuid
        && let Some((chat_id, at)) = st
            .chat_uuids
            .get(&(app_id.to_string(), owner_key.clone(), uuid.clone()))
        && now - *at < chrono::Duration::hours(CHAT_UUID_HOURS)
        && let Some(chat) = st.world.chat(chat_id)
    {
        record.summary.push_str(", uuid duplicate");
        return Ok(ok(chat_json(chat, &st.world.tenant_key)));
    }
    // All or nothing: one id the bot cannot see (the owner's included) refuses the whole call,
    // as does one person who resigned.
    let mut members = Vec::new();
    let mut unavailable = Vec::new();
    for id in users.iter().chain(owner_id.iter()) {
        match st.world.user_by(id_type, id) {
            Some(user) if user.app_visible && user.resigned => {
                return Err(Reject::im(
                    232022,
                    &format!("The invited user {id} has resigned."),
                ));
            }
            Some(user) if user.app_visible => {
                if !members.contains(&user.open_id) {
                    members.push(user.open_id.clone());
                }
            }
            _ => unavailable.push(id.clone()),
        }
    }
    if !unavailable.is_empty() {
        return Err(Reject::im(
            232043,
            &format!(
                "Your request contains unavailable ids, ext=bot is invisible to user ids: {unavailable:?}"
            ),
        ));
    }
    let owner = match &owner_id {
        Some(id) => st
            .world
            .user_by(id_type, id)
            .map(|u| u.open_id.clone())
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut apps = vec![app_id.to_string()];
    for bot in bots {
        if shared.app(&bot).is_none() {
            return Err(Reject::im(232021, &format!("bot_id_list: no bot {bot}")));
        }
        if !apps.contains(&bot) {
            apps.push(bot);
        }
    }
    let chat = SimChat {
        chat_id: format!("oc_{}", random_hex(16)),
        name,
        description: str_field(&body, "description").unwrap_or_default().to_string(),
        owner_open_id: owner,
        members,
        apps,
        disbanded: false,
    };
    record.receiver = Some(chat.chat_id.clone());
    if let Some(uuid) = uuid {
        st.chat_uuids
            .insert((app_id.to_string(), owner_key, uuid), (chat.chat_id.clone(), now));
    }
    let data = chat_json(&chat, &st.world.tenant_key);
    st.world.chats.push(chat);
    Ok(ok(data))
}

/// Clears a chat's in-flight add when its call ends, however it ends.
struct AddInFlight<'a> {
    shared: &'a Shared,
    chat_id: String,
}

impl Drop for AddInFlight<'_> {
    fn drop(&mut self) {
        self.shared
            .lock()
            .chat_extras
            .adds_in_flight
            .remove(&self.chat_id);
    }
}

/// An add-members call over its working time: one that overlaps another to the same chat is
/// refused with 232019, as Lark does.
pub(in crate::sim) async fn add_members_over_time(
    shared: &Shared,
    route: &Route,
    req: &ApiRequest,
    chat_id: &str,
) -> ApiReply {
    let now = shared.clock.now();
    let clash = !shared
        .lock()
        .chat_extras
        .adds_in_flight
        .insert(chat_id.to_string());
    if clash {
        let reject = Reject::im(
            232019,
            "The request has been rate limited: another member change to this chat is in progress.",
        );
        let mut st = shared.lock();
        st.calls.push(CallRecord {
            at: now,
            method: req.method.clone(),
            path: req.path.clone(),
            api: route.api().to_string(),
            app_id: None,
            status: reject.status(),
            code: Some(232019),
            receiver: Some(chat_id.to_string()),
            summary: "add members while another add to this chat is in flight".into(),
        });
        return reject.into_reply();
    }
    let _in_flight = AddInFlight {
        shared,
        chat_id: chat_id.to_string(),
    };
    tokio::time::sleep(MEMBER_ADD_WORK).await;
    super::handle(shared, route, req)
}

pub(super) fn add_members(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    chat_id: &str,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    record.receiver = Some(chat_id.to_string());
    let id_type = req.query.get("member_id_type").map_or("open_id", String::as_str);
    if !["open_id", "user_id", "union_id", "app_id"].contains(&id_type) {
        return Err(Reject::im(232001, "member_id_type"));
    }
    let succeed_type = match req.query.get("succeed_type").map(String::as_str) {
        None | Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(_) => return Err(Reject::im(232001, "succeed_type must be 0, 1 or 2")),
    };
    let body = json_body(req)?;
    let ids = id_list(&body, "id_list", 50)?;
    if ids.is_empty() {
        return Err(Reject::im(232001, "id_list must not be empty"));
    }
    record.summary = format!(
        "add {} members ({id_type}, succeed_type {succeed_type})",
        ids.len()
    );
    bots_chat(st, app_id, chat_id)?;
    let (mut users, mut bots, mut not_existed) = (vec![], vec![], vec![]);
    let (mut invisible, mut resigned) = (vec![], vec![]);
    for id in ids {
        if id_type == "app_id" {
            if shared.app(&id).is_some() {
                bots.push(id);
            } else {
                not_existed.push(id);
            }
            continue;
        }
        match st.world.user_by(id_type, &id) {
            None => not_existed.push(id),
            Some(u) if !u.app_visible => invisible.push(id),
            Some(u) if u.resigned => resigned.push(id),
            Some(u) => users.push(u.open_id.clone()),
        }
    }
    // Type 1 adds whom it can and lists the rest; type 0 refuses unknown and invisible ids but
    // skips (and lists) resigned people; type 2 refuses any invalid id.
    if succeed_type != 1 {
        if !not_existed.is_empty() {
            return Err(Reject::lark(
                400,
                99992351,
                &format!("these open ids not existed: {not_existed:?}"),
            ));
        }
        if !invisible.is_empty() {
            return Err(Reject::im(
                232024,
                &format!(
                    "Users {invisible:?} are not visible to the app, or the operator has no permission to collaborate with them."
                ),
            ));
        }
    }
    if succeed_type == 2 && !resigned.is_empty() {
        return Err(Reject::im(
            232022,
            &format!("The invited users {resigned:?} have resigned."),
        ));
    }
    let invalid = [invisible, resigned].concat();
    if users.is_empty() && bots.is_empty() && succeed_type != 1 {
        return Err(Reject::im(232027, "There are no valid members in the list."));
    }
    let chat = st.world.chat_mut(chat_id).expect("checked by bots_chat");
    for u in users {
        if !chat.members.contains(&u) {
            chat.members.push(u);
        }
    }
    for b in bots {
        if !chat.apps.contains(&b) {
            chat.apps.push(b);
        }
    }
    Ok(ok(json!({
        "invalid_id_list": invalid, "not_existed_id_list": not_existed, "pending_approval_id_list": []
    })))
}

fn pin_json(pin: &SimPin) -> Value {
    json!({"pin": {"message_id": pin.message_id, "chat_id": pin.chat_id, "operator_id": pin.operator_app_id,
                   "operator_id_type": "app_id", "create_time": pin.created_at.timestamp_millis().to_string()}})
}

/// `POST /im/v1/pins`: pinning a pinned message returns its pin.
pub(super) fn pin(
    shared: &Shared,
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let body = json_body(req)?;
    let message_id = str_field(&body, "message_id")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Reject::im(230001, "message_id is required"))?;
    record.summary = format!("pin {message_id}");
    let message = st
        .message(message_id)
        .ok_or_else(|| Reject::im(230001, "invalid message_id"))?;
    let chat_id = message.chat_id.clone();
    record.receiver = Some(chat_id.clone());
    if message.chat_type != "group" {
        return Err(Reject::im(
            230001,
            "only messages of group chats can be pinned here",
        ));
    }
    if matches!(message.msg_type.as_str(), "system" | "hongbao" | "video_chat") {
        return Err(Reject::im(230054, "This message type is not supported."));
    }
    let chat = st
        .world
        .chat(&chat_id)
        .ok_or_else(|| Reject::im(230045, "The chat does not exist."))?;
    if chat.disbanded {
        return Err(dissolved());
    }
    if !chat.apps.iter().any(|a| a == app_id) {
        return Err(Reject::im(230002, "Bot/User can NOT be out of the chat."));
    }
    if shared.faults.lock().expect("faults lock").pins_for_managers_only {
        return Err(Reject::im(
            230046,
            "The chat only allows the group owner and group managers to pin messages.",
        ));
    }
    if let Some(pin) = st.chat_extras.pins.get(message_id) {
        record.summary.push_str(", already pinned");
        return Ok(ok(pin_json(pin)));
    }
    let pin = SimPin {
        message_id: message_id.to_string(),
        chat_id,
        operator_app_id: app_id.to_string(),
        created_at: now,
    };
    let data = pin_json(&pin);
    st.chat_extras.pins.insert(message_id.to_string(), pin);
    Ok(ok(data))
}

/// `POST /im/v1/chats/:id/top_notice/put_top_notice`.
pub(super) fn put_top_notice(
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    chat_id: &str,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    record.receiver = Some(chat_id.to_string());
    let body = json_body(req)?;
    let notice = body
        .get("chat_top_notice")
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .ok_or_else(|| Reject::im(232001, "chat_top_notice must list one notice"))?;
    let action_type = match notice.get("action_type") {
        None => "2",
        Some(Value::String(t)) if t == "1" || t == "2" => t.as_str(),
        Some(_) => {
            return Err(Reject::im(
                232001,
                "action_type must be the string \"1\" (message) or \"2\" (announcement)",
            ));
        }
    };
    record.summary = format!("top notice of type {action_type}");
    bots_chat(st, app_id, chat_id)?;
    if action_type == "1" {
        let message_id = notice
            .get("message_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Reject::im(232001, "action_type \"1\" needs message_id"))?;
        if st.message(message_id).is_none_or(|m| m.chat_id != chat_id) {
            return Err(Reject::im(232001, "message_id is not a message of this chat"));
        }
        st.chat_extras
            .top_notices
            .insert(chat_id.to_string(), message_id.to_string());
    } else {
        st.chat_extras.top_notices.remove(chat_id);
    }
    Ok(ok(json!({})))
}

/// `POST /im/v1/chats/:id/link`.
pub(super) fn share_link(
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    chat_id: &str,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    record.receiver = Some(chat_id.to_string());
    let body = json_body(req)?;
    let period = str_field(&body, "validity_period").unwrap_or("week");
    let lifetime = match period {
        "week" => Some(chrono::Duration::days(7)),
        "year" => Some(chrono::Duration::days(365)),
        "permanently" => None,
        _ => {
            return Err(Reject::im(
                232001,
                "validity_period must be week, year or permanently",
            ));
        }
    };
    record.summary = format!("share link valid for {period}");
    bots_chat(st, app_id, chat_id)?;
    let expire_time = lifetime.map_or_else(|| "0".to_string(), |l| (now + l).timestamp().to_string());
    Ok(ok(json!({
        "share_link": format!("{SHARE_LINK_BASE}?link_token={}", random_hex(16)),
        "expire_time": expire_time,
        "is_permanent": lifetime.is_none()
    })))
}

/// `PUT /im/v1/chats/:id`: name and description.
pub(super) fn update_chat(
    st: &mut State,
    req: &ApiRequest,
    app_id: &str,
    chat_id: &str,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    record.receiver = Some(chat_id.to_string());
    let body = json_body(req)?;
    let name = str_field(&body, "name").map(str::to_string);
    let description = str_field(&body, "description").map(str::to_string);
    record.summary = format!("update chat, name {name:?}");
    bots_chat(st, app_id, chat_id)?;
    let chat = st.world.chat_mut(chat_id).expect("checked by bots_chat");
    if let Some(name) = name {
        chat.name = name;
    }
    if let Some(description) = description {
        chat.description = description;
    }
    Ok(ok(json!({})))
}

impl State {
    /// The pinned messages of a chat, oldest first.
    pub(crate) fn pins_of(&self, chat_id: &str) -> Vec<SimPin> {
        let mut pins: Vec<SimPin> = self
            .chat_extras
            .pins
            .values()
            .filter(|p| p.chat_id == chat_id)
            .cloned()
            .collect();
        pins.sort_by_key(|p| p.created_at);
        pins
    }
}

/// A chat as Lark answers it; the owner fields are omitted when a bot owns the chat.
fn chat_json(chat: &SimChat, tenant_key: &str) -> Value {
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

pub(super) fn list_chats(
    st: &State,
    req: &ApiRequest,
    app_id: &str,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
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
