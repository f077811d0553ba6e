//! What arrives on the Message Card Request URL, verified and typed: the `url_verification`
//! challenge, schema 2.0 and 1.0 events, the `card.action.trigger` callback and the old
//! `card.action.trigger_v1` card request. Reference: shared/lark-protocol.md §2.2–§2.9, §3.
//!
//! Order of checks: the signature over the raw body first, before anything is decrypted or
//! parsed, so a stranger cannot use decryption as a padding oracle (issue 12.1); then the
//! timestamp; then decryption and parsing; then the Verification Token and classification.
//! With an Encrypt Key set, an unsigned body is decrypted only to answer a `url_verification`
//! (Lark does not sign the challenge); everything else must be signed. Signed requests older than
//! the replay window, or from more than [`MAX_FUTURE_SKEW_SECS`] ahead, are refused.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, Cipher, CryptoError};
use super::event::{CardAction, CardCallbackVersion, Event, Operator};

mod typed;
use typed::typed_card_v2;

/// How far ahead of our clock a signed request's timestamp may be.
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;

/// An app's callback secrets and policy.
pub struct CallbackSecrets<'a> {
    pub verification_token: &'a str,
    /// The Encrypt Key and its derived cipher, when the app has one.
    pub encrypt: Option<(&'a str, &'a Cipher)>,
    /// With an Encrypt Key set, still accept a plain old-format card request signed only with
    /// the Verification Token (§3.4). Off unless an admin opts in: the token alone would then be
    /// enough to act on incidents.
    pub allow_card_v1_token_signature: bool,
}

/// Which secret signed a request's raw body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    /// SHA-256 with the Encrypt Key (§2.6).
    EncryptKey,
    /// SHA-1 with the Verification Token (the old card request, §3.4).
    VerificationToken,
    /// No signature, or none that this integration's secrets define.
    Nobody,
}

/// The three signature headers, as received.
#[derive(Debug, Default, Clone)]
pub struct SignatureHeaders {
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub signature: Option<String>,
}

/// A verified inbound request.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Answer `{"challenge": …}` and stop.
    Challenge { challenge: String },
    /// A schema 2.0 or 1.0 event: acknowledge, dedup on its keys, process after the response.
    Event(EventDelivery),
    /// A card button (or other component) was used: the response carries the toast and card.
    CardAction(CardAction),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventDelivery {
    /// `header.event_id` (2.0) or `uuid` (1.0).
    pub event_id: String,
    pub event_type: String,
    pub event: Event,
    /// `header.create_time` (2.0, Unix ms): when Lark made the event, for handlers that must
    /// not let a late redelivery undo a newer change.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `header.create_time`, Unix milliseconds as a string.
fn create_time(header: &serde_json::Map<String, Value>) -> Option<chrono::DateTime<chrono::Utc>> {
    let millis: i64 = header.get("create_time")?.as_str()?.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis)
}

impl Inbound {
    /// The keys under which a redelivery of this request is recognised: the event id, and for a
    /// received message also its `message_id`, which Lark may redeliver under a new event id.
    pub fn dedup_keys(&self) -> Vec<String> {
        match self {
            Inbound::Challenge { .. } => Vec::new(),
            Inbound::Event(e) => {
                let mut keys = vec![format!("event:{}", e.event_id)];
                if let Event::MessageReceived(m) = &e.event {
                    keys.push(format!("message:{}", m.message_id));
                }
                keys
            }
            Inbound::CardAction(a) => vec![format!("card:{}", a.delivery_id)],
        }
    }
}

/// Why a request was refused. The edge answers every one the same way; the reason is for the
/// admin (`callback_stats`) and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the body is not JSON: {0}")]
    MalformedJson(String),
    #[error("the body is encrypted but this integration has no Encrypt Key")]
    EncryptedWithoutKey,
    #[error("cannot decrypt the body: {0}")]
    Decrypt(#[from] CryptoError),
    #[error("the decrypted body is not JSON: {0}")]
    MalformedDecrypted(String),
    #[error("the request is not a Lark event or card callback: {0}")]
    UnknownShape(String),
    #[error("missing {0} header")]
    MissingSignatureHeader(&'static str),
    #[error("signature mismatch")]
    BadSignature,
    #[error("verification token mismatch")]
    BadToken,
    #[error("the request timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the request timestamp is {age_secs} s away from now, outside the accepted window")]
    Stale { age_secs: i64 },
    #[error(
        "an old-format card request signed only with the Verification Token, while an Encrypt Key is set \
         (allow_card_v1_token_signature is off)"
    )]
    CardV1TokenSignatureRefused,
}

impl CallbackError {
    /// A stable word for logs, metrics and the admin API.
    pub fn reason(&self) -> &'static str {
        match self {
            CallbackError::MalformedJson(_) => "malformed_json",
            CallbackError::EncryptedWithoutKey => "encrypted_without_key",
            CallbackError::Decrypt(CryptoError::BadBase64) => "bad_base64",
            CallbackError::Decrypt(CryptoError::BadLength(_)) => "bad_ciphertext_length",
            CallbackError::Decrypt(CryptoError::BadPadding) => "bad_padding",
            CallbackError::MalformedDecrypted(_) => "malformed_decrypted_json",
            CallbackError::UnknownShape(_) => "unknown_shape",
            CallbackError::MissingSignatureHeader(_) => "missing_signature",
            CallbackError::BadSignature => "bad_signature",
            CallbackError::BadToken => "bad_token",
            CallbackError::BadTimestamp => "bad_timestamp",
            CallbackError::Stale { .. } => "stale_timestamp",
            CallbackError::CardV1TokenSignatureRefused => "card_v1_token_signature_refused",
        }
    }
}

#[derive(Deserialize)]
struct EncryptedBody {
    encrypt: String,
}

/// The encrypted body's one field, borrowed from the request: Lark's base64 carries no escapes,
/// so the common case parses without copying it or building a JSON tree.
#[derive(Deserialize)]
struct Encrypted<'a> {
    #[serde(borrow)]
    encrypt: Cow<'a, str>,
}

/// Verifies and types one request. `now_secs` is the current Unix time; signed requests older
/// than `replay_window_secs` or more than [`MAX_FUTURE_SKEW_SECS`] ahead are refused.
pub fn parse(
    secrets: &CallbackSecrets<'_>,
    headers: &SignatureHeaders,
    raw_body: &[u8],
    now_secs: i64,
    replay_window_secs: i64,
) -> Result<Inbound, CallbackError> {
    let signature = signature_headers(headers);
    let signer = match (&signature, secrets.encrypt) {
        (Ok((ts, nonce, sig)), Some((key, _))) => {
            if crypto::signature_matches(sig, &crypto::event_signature(ts, nonce, key, raw_body)) {
                Signer::EncryptKey
            } else if signed_with_token(secrets, ts, nonce, sig, raw_body) {
                Signer::VerificationToken
            } else {
                return Err(CallbackError::BadSignature);
            }
        }
        // Without an Encrypt Key Lark signs only the old card request; events carry no signature
        // this integration could check, and there is nothing to decrypt.
        (Ok((ts, nonce, sig)), None) if signed_with_token(secrets, ts, nonce, sig, raw_body) => {
            Signer::VerificationToken
        }
        _ => Signer::Nobody,
    };
    if let (Ok((ts, _, _)), Signer::EncryptKey | Signer::VerificationToken) = (&signature, signer) {
        check_fresh(ts, now_secs, replay_window_secs)?;
    }
    let opened = open(secrets, raw_body)?;
    let encrypted = matches!(opened, Opened::Decrypted(_));
    let body: Value = match opened {
        Opened::Decrypted(plain) => {
            if signer == Signer::EncryptKey
                && let Some((token, action)) = typed_card_v2(&plain)
            {
                check_token(Some(&token), secrets.verification_token)?;
                return Ok(action);
            }
            serde_json::from_slice(&plain).map_err(|e| CallbackError::MalformedDecrypted(e.to_string()))?
        }
        Opened::Plain(body) => body,
    };
    let Value::Object(map) = &body else {
        return Err(CallbackError::UnknownShape(
            "the body is not a JSON object".into(),
        ));
    };

    // The challenge is checked by its token only, like every SDK (§2.2).
    if map.get("type").and_then(Value::as_str) == Some("url_verification") {
        check_token(
            map.get("token").and_then(Value::as_str),
            secrets.verification_token,
        )?;
        let challenge = map
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::UnknownShape("url_verification without a challenge".into()))?;
        return Ok(Inbound::Challenge {
            challenge: challenge.to_string(),
        });
    }
    // Anything but the challenge must be signed when the integration has an Encrypt Key.
    let unsigned = || match &signature {
        Err(missing) => missing.clone(),
        Ok(_) => CallbackError::BadSignature,
    };

    let is_v2 = map.contains_key("schema");
    let is_v1_event = !is_v2
        && map.contains_key("uuid")
        && map.get("type").and_then(Value::as_str) == Some("event_callback");
    let is_v1_card =
        !is_v2 && !is_v1_event && map.contains_key("action") && map.contains_key("open_message_id");

    if is_v1_card {
        // Whether Lark signs an encrypted old-format request with SHA-1/token or SHA-256/key is
        // unsettled (§9.3): accept either for an encrypted body, whose decryption already proves
        // the Encrypt Key. A plain one signed with the token alone is the downgrade of issue 12.5.
        let accepted = match signer {
            Signer::EncryptKey => true,
            Signer::VerificationToken => {
                secrets.encrypt.is_none() || encrypted || secrets.allow_card_v1_token_signature
            }
            Signer::Nobody => return Err(unsigned()),
        };
        if !accepted {
            return Err(CallbackError::CardV1TokenSignatureRefused);
        }
        let (ts, nonce, _) = signature?;
        return card_v1(&body, ts, nonce);
    }

    if secrets.encrypt.is_some() && signer != Signer::EncryptKey {
        return Err(unsigned());
    }

    if is_v2 {
        let header = map
            .get("header")
            .and_then(Value::as_object)
            .ok_or_else(|| CallbackError::UnknownShape("schema 2.0 without a header".into()))?;
        check_token(
            header.get("token").and_then(Value::as_str),
            secrets.verification_token,
        )?;
        let event_id = string_field(header.get("event_id"), "header.event_id")?;
        let event_type = string_field(header.get("event_type"), "header.event_type")?;
        let created_at = create_time(header);
        let event = take_field(body, "event");
        if event_type == "card.action.trigger" {
            return card_v2(event_id, &event);
        }
        return Ok(Inbound::Event(EventDelivery {
            event: Event::from_v2(&event_type, event),
            event_id,
            event_type,
            created_at,
        }));
    }
    if is_v1_event {
        check_token(
            map.get("token").and_then(Value::as_str),
            secrets.verification_token,
        )?;
        let event_id = string_field(map.get("uuid"), "uuid")?;
        let event = take_field(body, "event");
        let event_type = string_field(event.get("type"), "event.type")?;
        return Ok(Inbound::Event(EventDelivery {
            event: Event::Other,
            event_id,
            event_type,
            created_at: None,
        }));
    }
    Err(CallbackError::UnknownShape(
        "neither a challenge, a schema 2.0 or 1.0 event, nor a card callback".into(),
    ))
}

/// Types a payload that arrived over a long connection (§7): plaintext schema 2.0, neither
/// encrypted nor signed, and without a Verification Token to check, because the connection
/// itself was opened with the App Secret. The old card request never comes this way.
pub fn parse_long_connection(payload: &[u8]) -> Result<Inbound, CallbackError> {
    let body: Value =
        serde_json::from_slice(payload).map_err(|e| CallbackError::MalformedJson(e.to_string()))?;
    let header = body
        .get("header")
        .and_then(Value::as_object)
        .filter(|_| body.get("schema").is_some())
        .ok_or_else(|| CallbackError::UnknownShape("not a schema 2.0 event".into()))?;
    let event_id = string_field(header.get("event_id"), "header.event_id")?;
    let event_type = string_field(header.get("event_type"), "header.event_type")?;
    let created_at = create_time(header);
    let event = take_field(body, "event");
    if event_type == "card.action.trigger" {
        return card_v2(event_id, &event);
    }
    Ok(Inbound::Event(EventDelivery {
        event: Event::from_v2(&event_type, event),
        event_id,
        event_type,
        created_at,
    }))
}

fn signed_with_token(
    secrets: &CallbackSecrets<'_>,
    ts: &str,
    nonce: &str,
    sig: &str,
    raw_body: &[u8],
) -> bool {
    let expected = crypto::card_v1_signature(ts, nonce, secrets.verification_token, raw_body);
    crypto::signature_matches(sig, &expected)
}

/// The body to classify: the decrypted plaintext of `{"encrypt": …}` (not yet read, so a card
/// action can take the typed reading), or a plain body, already read as a tree.
enum Opened {
    Decrypted(Vec<u8>),
    Plain(Value),
}

/// Decrypts the body when it is `{"encrypt": …}`. The common case reads the one field straight
/// from the request (Lark's base64 carries no escapes, so nothing is copied and no JSON tree is
/// built); anything else takes the general reading, which names what is wrong.
fn open(secrets: &CallbackSecrets<'_>, raw_body: &[u8]) -> Result<Opened, CallbackError> {
    if let Some((_, cipher)) = secrets.encrypt
        && let Ok(Encrypted { encrypt }) = serde_json::from_slice::<Encrypted<'_>>(raw_body)
    {
        return Ok(Opened::Decrypted(cipher.decrypt(&encrypt)?));
    }
    let outer: Value =
        serde_json::from_slice(raw_body).map_err(|e| CallbackError::MalformedJson(e.to_string()))?;
    match outer.get("encrypt") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(CallbackError::UnknownShape("`encrypt` must be a string".into())),
        None => return Ok(Opened::Plain(outer)),
    }
    let Some((_, cipher)) = secrets.encrypt else {
        return Err(CallbackError::EncryptedWithoutKey);
    };
    let EncryptedBody { encrypt } =
        serde_json::from_value(outer).map_err(|e| CallbackError::UnknownShape(e.to_string()))?;
    Ok(Opened::Decrypted(cipher.decrypt(&encrypt)?))
}

/// Moves one field out of a JSON object (events can be large: no copy).
fn take_field(object: Value, name: &str) -> Value {
    match object {
        Value::Object(mut map) => map.remove(name).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The three signature headers, or the first one missing.
fn signature_headers(h: &SignatureHeaders) -> Result<(&str, &str, &str), CallbackError> {
    Ok((
        h.timestamp
            .as_deref()
            .ok_or(CallbackError::MissingSignatureHeader("X-Lark-Request-Timestamp"))?,
        h.nonce
            .as_deref()
            .ok_or(CallbackError::MissingSignatureHeader("X-Lark-Request-Nonce"))?,
        h.signature
            .as_deref()
            .ok_or(CallbackError::MissingSignatureHeader("X-Lark-Signature"))?,
    ))
}

fn check_fresh(timestamp: &str, now_secs: i64, window_secs: i64) -> Result<(), CallbackError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CallbackError::BadTimestamp)?;
    // A crafted timestamp must not overflow the subtraction (issue 12.4).
    let age = now_secs.checked_sub(ts).ok_or(CallbackError::BadTimestamp)?;
    if age > window_secs || age < -MAX_FUTURE_SKEW_SECS {
        return Err(CallbackError::Stale { age_secs: age });
    }
    Ok(())
}

fn check_token(sent: Option<&str>, expected: &str) -> Result<(), CallbackError> {
    match sent {
        Some(token) if crypto::constant_time_eq(token, expected) => Ok(()),
        _ => Err(CallbackError::BadToken),
    }
}

fn string_field(v: Option<&Value>, name: &str) -> Result<String, CallbackError> {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(CallbackError::UnknownShape(format!("missing {name}"))),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Where a card action's fields sit in the body of each callback version.
struct CardPaths {
    open_id: &'static str,
    user_id: &'static str,
    union_id: &'static str,
    message: &'static str,
    chat: &'static str,
    token: &'static str,
}

fn card_action(
    version: CardCallbackVersion,
    delivery_id: String,
    root: &Value,
    action: &Value,
    p: &CardPaths,
) -> Inbound {
    let text = |pointer: &str| str_at(root, pointer).map(str::to_string);
    Inbound::CardAction(CardAction {
        version,
        delivery_id,
        operator: Operator {
            open_id: text(p.open_id),
            user_id: text(p.user_id),
            union_id: text(p.union_id),
        },
        open_message_id: text(p.message),
        open_chat_id: text(p.chat),
        update_token: text(p.token),
        tag: action
            .get("tag")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        value: action.get("value").cloned().unwrap_or(Value::Null),
        form_value: action.get("form_value").cloned(),
        option: action.get("option").and_then(Value::as_str).map(str::to_string),
    })
}

fn card_v2(event_id: String, event: &Value) -> Result<Inbound, CallbackError> {
    let action = event
        .get("action")
        .ok_or_else(|| CallbackError::UnknownShape("card.action.trigger without event.action".into()))?;
    let paths = CardPaths {
        open_id: "/operator/open_id",
        user_id: "/operator/user_id",
        union_id: "/operator/union_id",
        message: "/context/open_message_id",
        chat: "/context/open_chat_id",
        token: "/token",
    };
    Ok(card_action(
        CardCallbackVersion::V2,
        event_id,
        event,
        action,
        &paths,
    ))
}

fn card_v1(body: &Value, timestamp: &str, nonce: &str) -> Result<Inbound, CallbackError> {
    let action = body.get("action").cloned().unwrap_or(Value::Null);
    let paths = CardPaths {
        open_id: "/open_id",
        user_id: "/user_id",
        // The old request carries no union_id.
        union_id: "/union_id",
        message: "/open_message_id",
        chat: "/open_chat_id",
        token: "/token",
    };
    // The old request has no event id; the signed (timestamp, nonce) pair identifies it.
    let delivery_id = format!("v1:{timestamp}:{nonce}");
    Ok(card_action(
        CardCallbackVersion::V1,
        delivery_id,
        body,
        &action,
        &paths,
    ))
}

#[cfg(test)]
mod tests;
