//! Typed events and card actions (reference §3.1, §3.3, §4). Unknown event types become
//! [`Event::Other`]: acknowledged and counted, never an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ids Lark gives a user, as many as the app may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub open_id: Option<String>,
    pub user_id: Option<String>,
    pub union_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `im.message.receive_v1`.
    MessageReceived(MessageReceived),
    /// `im.chat.disbanded_v1`.
    ChatDisbanded(ChatDisbanded),
    /// `im.chat.member.bot.added_v1`: this app's bot was added to a group.
    BotAdded(BotMembership),
    /// `im.chat.member.bot.deleted_v1`: this app's bot was removed from a group.
    BotRemoved(BotMembership),
    /// `im.chat.updated_v1`: a group's settings changed (a rename among them).
    ChatUpdated(ChatUpdated),
    /// Any other type (or a schema 1.0 event): acknowledged and counted.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceived {
    pub message_id: String,
    pub chat_id: String,
    /// `p2p`, `group` or `topic_group`.
    pub chat_type: String,
    pub message_type: String,
    /// The message content JSON string as Lark sent it, e.g. `{"text":"@_user_1 ack 42"}`.
    pub content: String,
    pub root_id: Option<String>,
    pub sender: Operator,
    /// The `key` and ids of each @-mention (`@_user_1` …).
    pub mentions: Vec<Mention>,
}

impl MessageReceived {
    /// The text of a `text` message with @-mention placeholders removed and spaces collapsed.
    pub fn plain_text(&self) -> Option<String> {
        if self.message_type != "text" {
            return None;
        }
        let content: Value = serde_json::from_str(&self.content).ok()?;
        let mut text = content.get("text")?.as_str()?.to_string();
        for m in &self.mentions {
            text = text.replace(&m.key, " ");
        }
        Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    pub key: String,
    pub name: String,
    pub id: Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDisbanded {
    pub chat_id: String,
    pub name: Option<String>,
    pub operator: Operator,
}

/// Who added or removed the bot, to which chat (next §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotMembership {
    pub chat_id: String,
    /// The chat's name, as the event carries it.
    pub name: Option<String>,
    pub external: bool,
    pub operator: Operator,
}

/// A change of a group's settings; only what changed is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdated {
    pub chat_id: String,
    /// The new name, when the name changed.
    pub name: Option<String>,
    pub operator: Operator,
}

#[derive(Deserialize)]
struct RawBotMembership {
    chat_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    i18n_names: Option<RawI18nNames>,
    #[serde(default)]
    external: bool,
    #[serde(default)]
    operator_id: Operator,
}

#[derive(Deserialize, Default)]
struct RawI18nNames {
    #[serde(default)]
    zh_cn: Option<String>,
    #[serde(default)]
    en_us: Option<String>,
}

impl RawI18nNames {
    fn any(self) -> Option<String> {
        self.zh_cn
            .filter(|n| !n.is_empty())
            .or(self.en_us.filter(|n| !n.is_empty()))
    }
}

#[derive(Deserialize)]
struct RawChatUpdated {
    chat_id: String,
    #[serde(default)]
    after_change: Option<RawChatChange>,
    #[serde(default)]
    operator_id: Operator,
}

#[derive(Deserialize)]
struct RawChatChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    i18n_names: Option<RawI18nNames>,
}

fn membership(raw: RawBotMembership) -> BotMembership {
    BotMembership {
        chat_id: raw.chat_id,
        name: raw
            .name
            .filter(|n| !n.is_empty())
            .or_else(|| raw.i18n_names.and_then(RawI18nNames::any)),
        external: raw.external,
        operator: raw.operator_id,
    }
}

#[derive(Deserialize)]
struct RawMessageEvent {
    sender: RawSender,
    message: RawMessage,
}

#[derive(Deserialize)]
struct RawSender {
    #[serde(default)]
    sender_id: Operator,
}

#[derive(Deserialize)]
struct RawMessage {
    message_id: String,
    chat_id: String,
    chat_type: String,
    message_type: String,
    #[serde(default)]
    content: String,
    root_id: Option<String>,
    #[serde(default)]
    mentions: Vec<RawMention>,
}

#[derive(Deserialize)]
struct RawMention {
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    id: Operator,
}

#[derive(Deserialize)]
struct RawDisbanded {
    chat_id: String,
    name: Option<String>,
    #[serde(default)]
    operator_id: Operator,
}

impl Event {
    /// Types the `event` object of a schema 2.0 envelope. A known type with an unexpected shape
    /// is kept as [`Event::Other`] so that a Lark-side addition never turns into a redelivery loop.
    pub fn from_v2(event_type: &str, event: Value) -> Event {
        match event_type {
            "im.message.receive_v1" => serde_json::from_value::<RawMessageEvent>(event)
                .map(|raw| {
                    Event::MessageReceived(MessageReceived {
                        message_id: raw.message.message_id,
                        chat_id: raw.message.chat_id,
                        chat_type: raw.message.chat_type,
                        message_type: raw.message.message_type,
                        content: raw.message.content,
                        root_id: raw.message.root_id.filter(|r| !r.is_empty()),
                        sender: raw.sender.sender_id,
                        mentions: raw
                            .message
                            .mentions
                            .into_iter()
                            .map(|m| Mention {
                                key: m.key,
                                name: m.name,
                                id: m.id,
                            })
                            .collect(),
                    })
                })
                .unwrap_or(Event::Other),
            "im.chat.disbanded_v1" => serde_json::from_value::<RawDisbanded>(event)
                .map(|raw| {
                    Event::ChatDisbanded(ChatDisbanded {
                        chat_id: raw.chat_id,
                        name: raw.name,
                        operator: raw.operator_id,
                    })
                })
                .unwrap_or(Event::Other),
            "im.chat.member.bot.added_v1" => serde_json::from_value::<RawBotMembership>(event)
                .map(|raw| Event::BotAdded(membership(raw)))
                .unwrap_or(Event::Other),
            "im.chat.member.bot.deleted_v1" => serde_json::from_value::<RawBotMembership>(event)
                .map(|raw| Event::BotRemoved(membership(raw)))
                .unwrap_or(Event::Other),
            "im.chat.updated_v1" => serde_json::from_value::<RawChatUpdated>(event)
                .map(|raw| {
                    let change = raw.after_change;
                    Event::ChatUpdated(ChatUpdated {
                        chat_id: raw.chat_id,
                        name: change.and_then(|c| {
                            c.name
                                .filter(|n| !n.is_empty())
                                .or_else(|| c.i18n_names.and_then(RawI18nNames::any))
                        }),
                        operator: raw.operator_id,
                    })
                })
                .unwrap_or(Event::Other),
            _ => Event::Other,
        }
    }
}

/// Which card callback Lark sent (or an app subscribes to): `card.action.trigger` (schema 2.0,
/// SHA-256 signature with the Encrypt Key, the default) or the old card request (SHA-1 with the
/// Verification Token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardCallbackVersion {
    #[default]
    V2,
    V1,
}

/// A card component was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardAction {
    pub version: CardCallbackVersion,
    /// The event id (v2) or the signed timestamp and nonce (v1): one per delivery.
    pub delivery_id: String,
    pub operator: Operator,
    pub open_message_id: Option<String>,
    pub open_chat_id: Option<String>,
    /// The card update token (`c-…`) for the delayed-update API, not the Verification Token.
    pub update_token: Option<String>,
    pub tag: String,
    /// The developer `value` bound to the component.
    pub value: Value,
    pub form_value: Option<Value>,
    pub option: Option<String>,
}

/// A toast shown to the person who pressed (§3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Toast {
    /// `info`, `success`, `error` or `warning`.
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub i18n: Option<std::collections::BTreeMap<String, String>>,
}

/// What a card action answers: an optional toast and an optional replacement card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardActionReply {
    pub toast: Option<Toast>,
    pub card: Option<Value>,
}

impl CardActionReply {
    /// The HTTP 200 body for the callback version that asked. v2: `{"toast", "card": {"type":
    /// "raw", "data"}}`; v1: the raw card itself, with the toast beside it (§3.3, §9.3), or `{}`.
    pub fn to_body(&self, version: CardCallbackVersion) -> Value {
        let mut body = serde_json::Map::new();
        match version {
            CardCallbackVersion::V2 => {
                if let Some(card) = &self.card {
                    body.insert("card".into(), serde_json::json!({"type": "raw", "data": card}));
                }
            }
            CardCallbackVersion::V1 => {
                if let Some(Value::Object(card)) = &self.card {
                    body.extend(card.clone());
                }
            }
        }
        if let Some(toast) = &self.toast {
            body.insert(
                "toast".into(),
                serde_json::to_value(toast).expect("toast serializes"),
            );
        }
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_text_drops_mentions() {
        let e = Event::from_v2(
            "im.message.receive_v1",
            json!({"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},
                   "message":{"message_id":"om_1","chat_id":"oc_1","chat_type":"group","message_type":"text",
                              "content":"{\"text\":\"@_user_1  ack   42\"}",
                              "mentions":[{"key":"@_user_1","name":"bot","id":{"open_id":"ou_bot"}}]}}),
        );
        let Event::MessageReceived(m) = e else { panic!() };
        assert_eq!(m.plain_text().as_deref(), Some("ack 42"));
        assert_eq!(m.sender.open_id.as_deref(), Some("ou_1"));
    }

    #[test]
    fn unexpected_shapes_are_other() {
        assert_eq!(
            Event::from_v2("im.message.receive_v1", json!({"message": 1})),
            Event::Other
        );
        assert_eq!(Event::from_v2("contact.user.created_v3", json!({})), Event::Other);
        let Event::ChatDisbanded(d) = Event::from_v2(
            "im.chat.disbanded_v1",
            json!({"chat_id":"oc_9","operator_id":{"open_id":"ou_2"},"name":"ops"}),
        ) else {
            panic!()
        };
        assert_eq!(d.chat_id, "oc_9");
    }

    #[test]
    fn chat_membership_and_updates_are_typed() {
        let Event::BotAdded(added) = Event::from_v2(
            "im.chat.member.bot.added_v1",
            json!({"chat_id": "oc_1", "operator_id": {"open_id": "ou_1"}, "external": false,
                   "operator_tenant_key": "t", "name": "", "i18n_names": {"zh_cn": "运维", "en_us": "Ops"}}),
        ) else {
            panic!()
        };
        assert_eq!(added.name.as_deref(), Some("运维"));
        assert_eq!(added.operator.open_id.as_deref(), Some("ou_1"));
        let Event::ChatUpdated(renamed) = Event::from_v2(
            "im.chat.updated_v1",
            json!({"chat_id": "oc_1", "after_change": {"name": "SRE"}, "before_change": {"name": "Ops"}}),
        ) else {
            panic!()
        };
        assert_eq!(renamed.name.as_deref(), Some("SRE"));
        let Event::ChatUpdated(other) = Event::from_v2(
            "im.chat.updated_v1",
            json!({"chat_id": "oc_1", "after_change": {"description": "x"}}),
        ) else {
            panic!()
        };
        assert_eq!(other.name, None, "a change without a name keeps the name");
    }

    #[test]
    fn reply_bodies_per_version() {
        let reply = CardActionReply {
            toast: Some(Toast {
                kind: "success".into(),
                content: "ok".into(),
                i18n: None,
            }),
            card: Some(json!({"elements": []})),
        };
        assert_eq!(
            reply.to_body(CardCallbackVersion::V2),
            json!({"toast": {"type": "success", "content": "ok"}, "card": {"type": "raw", "data": {"elements": []}}})
        );
        assert_eq!(
            reply.to_body(CardCallbackVersion::V1),
            json!({"toast": {"type": "success", "content": "ok"}, "elements": []})
        );
        assert_eq!(
            CardActionReply::default().to_body(CardCallbackVersion::V2),
            json!({})
        );
    }
}
