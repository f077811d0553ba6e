//! The fast reading of the one request that arrives most: a schema 2.0 `card.action.trigger`,
//! read into typed fields without building a JSON tree. It gives exactly what the general reading
//! in the parent module gives (a unit test holds them together) and hands every other body back.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::Inbound;
use crate::lark::event::{CardAction, CardCallbackVersion, Operator};

/// A schema 2.0 `card.action.trigger` body, read into exactly the fields a card action uses.
/// Anything this does not fit (another event, a challenge, a missing field, a duplicate key)
/// takes the general reading instead, which classifies it and names what is wrong.
#[derive(Deserialize)]
struct CardV2Body<'a> {
    /// Required: its presence marks schema 2.0.
    #[expect(dead_code, reason = "read only to require the field")]
    schema: serde::de::IgnoredAny,
    /// Present only on a challenge; its presence sends the body to the general reading.
    #[serde(rename = "type", default)]
    kind: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    header: CardV2Header<'a>,
    #[serde(borrow)]
    event: CardV2Event<'a>,
}

#[derive(Deserialize)]
struct CardV2Header<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    token: String,
}

#[derive(Deserialize)]
struct CardV2Event<'a> {
    #[serde(default, borrow)]
    operator: CardV2Operator<'a>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    action: CardV2Action,
    #[serde(default, borrow)]
    context: CardV2Context<'a>,
}

#[derive(Deserialize, Default)]
struct CardV2Operator<'a> {
    #[serde(default, borrow)]
    open_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    union_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct CardV2Context<'a> {
    #[serde(default, borrow)]
    open_message_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    open_chat_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CardV2Action {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    value: Option<Value>,
    /// `Some` whenever the field is there, `null` included, as the tree reading gives it.
    #[serde(default, deserialize_with = "present")]
    form_value: Option<Value>,
    #[serde(default)]
    option: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Reads a schema 2.0 card action without building a JSON tree: the Verification Token it
/// carries (to check) and the action. `None` for anything else.
pub(super) fn typed_card_v2(body: &[u8]) -> Option<(String, Inbound)> {
    // Other events would be read twice for nothing; Lark's JSON spells the type unescaped.
    const CARD_TYPE: &[u8] = b"card.action.trigger";
    if !body.windows(CARD_TYPE.len()).any(|w| w == CARD_TYPE) {
        return None;
    }
    let b: CardV2Body<'_> = serde_json::from_slice(body).ok()?;
    if b.kind.is_some() || b.header.event_type != "card.action.trigger" || b.header.event_id.is_empty() {
        return None;
    }
    let text = |v: Option<Cow<'_, str>>| v.filter(|s| !s.is_empty()).map(Cow::into_owned);
    let action = Inbound::CardAction(CardAction {
        version: CardCallbackVersion::V2,
        delivery_id: b.header.event_id.into_owned(),
        operator: Operator {
            open_id: text(b.event.operator.open_id),
            user_id: text(b.event.operator.user_id),
            union_id: text(b.event.operator.union_id),
        },
        open_message_id: text(b.event.context.open_message_id),
        open_chat_id: text(b.event.context.open_chat_id),
        update_token: text(b.event.token),
        tag: b.event.action.tag.unwrap_or_default(),
        // `null` reads as absent here and as `null` in the tree; both mean no value.
        value: b.event.action.value.unwrap_or(Value::Null),
        form_value: b.event.action.form_value,
        option: b.event.action.option,
    });
    Some((b.header.token, action))
}
