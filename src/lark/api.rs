//! Typed requests and answers of the Open API calls the product makes (reference §5). Only the
//! fields the product reads are declared; Lark adds fields freely, so unknown ones are ignored
//! and most declared ones default when absent.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::Secret;

/// Lark's `receive_id_type`: which kind of id a message's `receive_id` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiveIdType {
    OpenId,
    UserId,
    UnionId,
    Email,
    ChatId,
}

impl ReceiveIdType {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiveIdType::OpenId => "open_id",
            ReceiveIdType::UserId => "user_id",
            ReceiveIdType::UnionId => "union_id",
            ReceiveIdType::Email => "email",
            ReceiveIdType::ChatId => "chat_id",
        }
    }
}

/// A message body: `msg_type` and its `content`, which Lark wants as a JSON *string*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent {
    pub msg_type: String,
    pub content: String,
}

impl MessageContent {
    pub fn text(text: &str) -> MessageContent {
        MessageContent {
            msg_type: "text".into(),
            content: serde_json::json!({ "text": text }).to_string(),
        }
    }

    /// An interactive card from its card JSON.
    pub fn card(card: &Value) -> MessageContent {
        MessageContent {
            msg_type: "interactive".into(),
            content: card.to_string(),
        }
    }
}

/// A sent message (the `data` of send and reply).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub message_id: String,
    #[serde(default)]
    pub chat_id: Option<String>,
    #[serde(default)]
    pub msg_type: Option<String>,
    #[serde(default)]
    pub root_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    pub create_time: Option<String>,
}

/// A group chat, as listed or created.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chat {
    pub chat_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub external: bool,
    /// `normal`, `dissolved`, …
    #[serde(default)]
    pub chat_status: Option<String>,
}

/// One page of `GET /im/v1/chats`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatPage {
    #[serde(default)]
    pub items: Vec<Chat>,
    #[serde(default)]
    pub page_token: Option<String>,
    #[serde(default)]
    pub has_more: bool,
}

/// A group chat to create. Members are open_ids (at most 50 per call; the client adds the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewChat {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The owner's open_id; the creating bot owns the chat when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(rename = "user_id_list", skip_serializing_if = "Vec::is_empty")]
    pub member_open_ids: Vec<String>,
}

/// What adding members did (`succeed_type=1`: valid ids are added, the rest reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedMembers {
    #[serde(default)]
    pub invalid_id_list: Vec<String>,
    #[serde(default)]
    pub not_existed_id_list: Vec<String>,
    #[serde(default)]
    pub pending_approval_id_list: Vec<String>,
}

impl AddedMembers {
    pub(crate) fn merge(&mut self, other: AddedMembers) {
        self.invalid_id_list.extend(other.invalid_id_list);
        self.not_existed_id_list.extend(other.not_existed_id_list);
        self.pending_approval_id_list
            .extend(other.pending_approval_id_list);
    }
}

/// One email or mobile looked up; `user_id` is the open_id, absent when nobody matched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserIdMatch {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserStatus {
    #[serde(default)]
    pub is_frozen: bool,
    #[serde(default)]
    pub is_resigned: bool,
    #[serde(default)]
    pub is_activated: bool,
    #[serde(default)]
    pub is_exited: bool,
    #[serde(default)]
    pub is_unjoin: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserIdList {
    #[serde(default)]
    pub user_list: Vec<UserIdMatch>,
}

/// Lark's answer to the tenant token request (top-level fields, no `data`).
#[derive(Deserialize)]
pub(crate) struct TenantTokenAnswer {
    pub tenant_access_token: String,
    pub expire: u64,
}

/// A user's access token from the OAuth code exchange.
#[derive(Clone, Deserialize)]
pub struct UserToken {
    #[serde(rename = "access_token", deserialize_with = "secret")]
    pub access_token: Secret,
    #[serde(default)]
    pub expires_in: u64,
    #[serde(default, deserialize_with = "optional_secret")]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserToken")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn optional_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(Secret::new))
}

/// The logged-in user (`GET /authen/v1/user_info`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    pub open_id: String,
    #[serde(default)]
    pub union_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub en_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub enterprise_email: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub tenant_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_is_a_json_string() {
        let text = MessageContent::text("disk \"full\"");
        assert_eq!(text.msg_type, "text");
        let parsed: Value = serde_json::from_str(&text.content).unwrap();
        assert_eq!(parsed, json!({"text": "disk \"full\""}));
        let card = MessageContent::card(&json!({"config": {"update_multi": true}}));
        assert_eq!(card.msg_type, "interactive");
        assert_eq!(card.content, r#"{"config":{"update_multi":true}}"#);
    }

    #[test]
    fn receive_id_types_keep_lark_names() {
        for t in [
            ReceiveIdType::OpenId,
            ReceiveIdType::UserId,
            ReceiveIdType::UnionId,
            ReceiveIdType::Email,
            ReceiveIdType::ChatId,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
    }

    #[test]
    fn new_chat_serializes_lark_field_names() {
        let chat = NewChat {
            name: "INC-7".into(),
            member_open_ids: vec!["ou_a".into()],
            ..NewChat::default()
        };
        assert_eq!(
            serde_json::to_value(&chat).unwrap(),
            json!({"name": "INC-7", "user_id_list": ["ou_a"]})
        );
    }

    #[test]
    fn user_tokens_never_show_in_debug() {
        let token: UserToken = serde_json::from_value(json!({
            "access_token": "u-secret-token", "expires_in": 7200,
            "refresh_token": "ur-secret-refresh", "token_type": "Bearer", "scope": "auth:user.id:read"
        }))
        .unwrap();
        assert_eq!(token.access_token.expose(), "u-secret-token");
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
