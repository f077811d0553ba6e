//! Lark-facing routes on the public listener: the Message Card Request URL
//! `POST /lark/{integration_id}/callback` (events and card callbacks). The homepage's pages and
//! its OAuth sign-in under `/lark/{integration_id}/…` are `web::homepage`'s.

use std::sync::Arc;

use bytes::Bytes;
use utoipa::ToSchema;
use warp::Reply;
use warp::http::HeaderMap;
use warp::reply::Response;

use super::error::{ApiError, ErrorCode};
use crate::integration::inbound::InboundError;
use crate::lark::callback::SignatureHeaders;
use crate::lark::event::Toast;
use crate::route_table;
use crate::services::Services;

/// The one answer to every refused callback, whatever the reason: an unknown integration, a bad
/// signature, a body that does not decrypt or parse. Telling them apart would make the endpoint a
/// padding oracle (issue 12.1); the reason goes to the integration's `callback_stats` instead.
fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::CallbackRefused,
        "the request is not a valid Lark request for this URL",
    )
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::UnknownIntegration(_) | InboundError::Rejected(_) => refused(),
            InboundError::Store(s) => s.into(),
        }
    }
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Public;
    /// The Message Card Request URL: Lark posts events, card callbacks and the URL challenge here,
    /// signed (and encrypted) with the integration's keys.
    POST ["lark" / {integration_id} / "callback"] lark with(warp::header::headers_cloned()), raw(CallbackPost)
        => callback -> 200 json(CallbackAnswer);
}

// What Lark posts and what it is answered, for the document (shared/lark-protocol.md §2–§3).
// The handler reads the raw bytes itself, since the signature is over them and is checked before
// anything is decrypted or parsed (`lark::callback`); these types only describe them.

/// What Lark posts: with an Encrypt Key set, the encrypted envelope; otherwise one of the plain
/// forms (which are also what the envelope decrypts to).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum CallbackPost {
    Encrypted(EncryptedPost),
    UrlVerification(UrlVerification),
    Event(EventPost),
    CardRequest(CardRequestV1),
}

/// `{"encrypt": …}`: the plain form, AES-256-CBC with the Encrypt Key.
#[derive(ToSchema)]
pub struct EncryptedPost {
    /// Base64 of the IV and the ciphertext.
    pub encrypt: String,
}

/// The Request URL check Lark sends when the URL is saved in the console (unsigned).
#[derive(ToSchema)]
pub struct UrlVerification {
    /// Echoed back as `{"challenge": …}`.
    pub challenge: String,
    /// The Verification Token.
    pub token: String,
    /// `url_verification`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// An event or a `card.action.trigger` callback: schema 2.0 (`schema`, `header`, `event`) or
/// 1.0 (`uuid`, `token`, `ts`, `type`, `event`).
#[derive(ToSchema)]
pub struct EventPost {
    /// `2.0`; absent from 1.0 events.
    pub schema: Option<String>,
    pub header: Option<EventHeader>,
    /// 1.0: the event's id.
    pub uuid: Option<String>,
    /// 1.0: the Verification Token.
    pub token: Option<String>,
    /// 1.0: when the event was sent.
    pub ts: Option<String>,
    /// 1.0: `event_callback`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The event's own fields: any JSON object, its shape set by the event type.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// Schema 2.0's header.
#[derive(ToSchema)]
pub struct EventHeader {
    pub event_id: String,
    /// E.g. `im.message.receive_v1`, `card.action.trigger`.
    pub event_type: String,
    pub app_id: String,
    pub tenant_key: String,
    /// Unix milliseconds (microseconds for card callbacks), as a string.
    pub create_time: String,
    /// The Verification Token.
    pub token: String,
}

/// The old message-card request (`card.action.trigger_v1`), with no schema.
#[derive(ToSchema)]
pub struct CardRequestV1 {
    pub open_id: String,
    pub user_id: Option<String>,
    pub tenant_key: String,
    pub open_message_id: String,
    pub open_chat_id: Option<String>,
    /// The card update token (`c-…`).
    pub token: String,
    /// The component used: `value`, `tag`, `option`, `form_value`, …; any JSON object.
    #[schema(value_type = Object)]
    pub action: serde_json::Value,
}

/// The 200 answer: the challenge echoed, an event's acknowledgement, or a card callback's answer.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum CallbackAnswer {
    Challenge(ChallengeAnswer),
    EventAck(EventAck),
    Card(CardAnswer),
}

#[derive(ToSchema)]
pub struct ChallengeAnswer {
    pub challenge: String,
}

/// An event taken (or a redelivery already taken).
#[derive(ToSchema)]
pub struct EventAck {
    /// `success`.
    pub msg: String,
}

/// A card callback's answer (§3.2): an optional toast and an optional new card; `{}` leaves the
/// card as it is. The old v1 request gets the new card's own JSON instead of `card`, with the
/// toast beside it.
#[derive(ToSchema)]
pub struct CardAnswer {
    pub toast: Option<Toast>,
    pub card: Option<CardReplacement>,
}

#[derive(ToSchema)]
pub struct CardReplacement {
    /// `raw`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The card's JSON: any JSON object, as Lark's card format has it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn callback(
    app: Arc<Services>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signature = SignatureHeaders {
        timestamp: header(&headers, "x-lark-request-timestamp"),
        nonce: header(&headers, "x-lark-request-nonce"),
        signature: header(&headers, "x-lark-signature"),
    };
    let reply = app.inbound.handle(&id, &signature, &body).await?;
    Ok(warp::reply::json(&reply).into_response())
}
