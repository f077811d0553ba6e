//! The chat events Lark pushes when a member changes a group: `im.chat.disbanded_v1`, a bot
//! added or removed (to that bot only), and `im.chat.updated_v1` on a rename (next §3).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{deliver_event, user_ids};
use crate::sim::state::Shared;
use crate::sim::{SimApp, SimError};

pub(crate) async fn disband_chat(shared: &Arc<Shared>, chat_id: &str) -> Result<(), SimError> {
    let (event, bots) = {
        let mut st = shared.lock();
        let tenant_key = st.world.tenant_key.clone();
        let chat = st
            .world
            .chat(chat_id)
            .ok_or_else(|| SimError::UnknownChat(chat_id.to_string()))?;
        if chat.disbanded {
            return Err(SimError::Disbanded(chat_id.to_string()));
        }
        let operator = st
            .world
            .user(&chat.owner_open_id)
            .map_or_else(|| json!({}), user_ids);
        let event = json!({
            "chat_id": chat.chat_id, "operator_id": operator, "external": false,
            "operator_tenant_key": tenant_key, "name": chat.name,
            "i18n_names": {"zh_cn": chat.name, "en_us": chat.name, "ja_jp": chat.name}
        });
        let bots: Vec<SimApp> = chat.apps.iter().filter_map(|a| shared.app(a)).cloned().collect();
        st.world.chat_mut(chat_id).expect("found above").disbanded = true;
        (event, bots)
    };
    for bot in bots {
        deliver_event(shared, &bot, "im.chat.disbanded_v1", event.clone()).await;
    }
    Ok(())
}

fn chat_names(name: &str) -> Value {
    json!({"zh_cn": name, "en_us": name, "ja_jp": name})
}

/// The members' view of a chat change: the chat, the operator (a member; the owner when
/// `None`), and the event fields every chat event carries (next §3).
fn chat_event_base(
    shared: &Shared,
    chat_id: &str,
    operator: Option<&str>,
) -> Result<(crate::sim::SimChat, serde_json::Map<String, Value>), SimError> {
    let st = shared.lock();
    let chat = st
        .world
        .chat(chat_id)
        .cloned()
        .ok_or_else(|| SimError::UnknownChat(chat_id.to_string()))?;
    if chat.disbanded {
        return Err(SimError::Disbanded(chat_id.to_string()));
    }
    let operator = operator.unwrap_or(&chat.owner_open_id);
    if !chat.members.iter().any(|m| m == operator) {
        return Err(SimError::NotInChat {
            user: operator.to_string(),
            chat: chat_id.to_string(),
        });
    }
    let operator_ids = st.world.user(operator).map_or_else(|| json!({}), user_ids);
    let mut fields = serde_json::Map::new();
    fields.insert("chat_id".into(), json!(chat.chat_id));
    fields.insert("operator_id".into(), operator_ids);
    fields.insert("external".into(), json!(false));
    fields.insert("operator_tenant_key".into(), json!(st.world.tenant_key));
    Ok((chat, fields))
}

/// A member adds `app_id`'s bot to a group: `im.chat.member.bot.added_v1` goes to that bot only.
pub(crate) async fn add_bot(
    shared: &Arc<Shared>,
    chat_id: &str,
    app_id: &str,
    operator: Option<&str>,
) -> Result<(), SimError> {
    let app = shared
        .app(app_id)
        .cloned()
        .ok_or_else(|| SimError::UnknownApp(app_id.to_string()))?;
    let (chat, mut event) = chat_event_base(shared, chat_id, operator)?;
    if chat.apps.iter().any(|a| a == app_id) {
        return Err(SimError::AlreadyInChat {
            app: app_id.to_string(),
            chat: chat_id.to_string(),
        });
    }
    event.insert("name".into(), json!(chat.name));
    event.insert("i18n_names".into(), chat_names(&chat.name));
    if let Some(c) = shared.lock().world.chat_mut(chat_id) {
        c.apps.push(app_id.to_string());
    }
    deliver_event(shared, &app, "im.chat.member.bot.added_v1", Value::Object(event)).await;
    Ok(())
}

/// A member removes `app_id`'s bot from a group: `im.chat.member.bot.deleted_v1` goes to the
/// removed bot only, and its sends to the chat answer 230002 from then on.
pub(crate) async fn remove_bot(
    shared: &Arc<Shared>,
    chat_id: &str,
    app_id: &str,
    operator: Option<&str>,
) -> Result<(), SimError> {
    let app = shared
        .app(app_id)
        .cloned()
        .ok_or_else(|| SimError::UnknownApp(app_id.to_string()))?;
    let (chat, mut event) = chat_event_base(shared, chat_id, operator)?;
    if !chat.apps.iter().any(|a| a == app_id) {
        return Err(SimError::NotInChat {
            user: app_id.to_string(),
            chat: chat_id.to_string(),
        });
    }
    event.insert("name".into(), json!(chat.name));
    event.insert("i18n_names".into(), chat_names(&chat.name));
    if let Some(c) = shared.lock().world.chat_mut(chat_id) {
        c.apps.retain(|a| a != app_id);
    }
    deliver_event(
        shared,
        &app,
        "im.chat.member.bot.deleted_v1",
        Value::Object(event),
    )
    .await;
    Ok(())
}

/// A member renames a group: `im.chat.updated_v1` goes to every bot in it.
pub(crate) async fn rename_chat(
    shared: &Arc<Shared>,
    chat_id: &str,
    name: &str,
    operator: Option<&str>,
) -> Result<(), SimError> {
    let (chat, mut event) = chat_event_base(shared, chat_id, operator)?;
    event.insert(
        "after_change".into(),
        json!({"name": name, "i18n_names": chat_names(name)}),
    );
    event.insert(
        "before_change".into(),
        json!({"name": chat.name, "i18n_names": chat_names(&chat.name)}),
    );
    event.insert(
        "moderator_list".into(),
        json!({"added_member_list": [], "removed_member_list": []}),
    );
    let bots: Vec<SimApp> = chat.apps.iter().filter_map(|a| shared.app(a)).cloned().collect();
    if let Some(c) = shared.lock().world.chat_mut(chat_id) {
        c.name = name.to_string();
    }
    for bot in bots {
        deliver_event(shared, &bot, "im.chat.updated_v1", Value::Object(event.clone())).await;
    }
    Ok(())
}
