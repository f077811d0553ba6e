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

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, Cipher, CryptoError};
use super::event::{CardAction, CardCallbackVersion, Event, Operator};

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
    let (body, encrypted) = open(secrets, raw_body)?;
    let Value::Object(map) = &body else {
        return Err(CallbackError::UnknownShape(
            "the body is not a JSON object".into(),
        ));
    };

    // The challenge is checked by its token only, like every SDK (§2.2).
    if map.get("type").and_then(Value::as_str) == Some("url_verification") {
        check_token(map.get("token"), secrets.verification_token)?;
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
        check_token(header.get("token"), secrets.verification_token)?;
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
        check_token(map.get("token"), secrets.verification_token)?;
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

/// Parses the body and decrypts it when it is `{"encrypt": …}`; says whether it was encrypted.
fn open(secrets: &CallbackSecrets<'_>, raw_body: &[u8]) -> Result<(Value, bool), CallbackError> {
    let outer: Value =
        serde_json::from_slice(raw_body).map_err(|e| CallbackError::MalformedJson(e.to_string()))?;
    match outer.get("encrypt") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(CallbackError::UnknownShape("`encrypt` must be a string".into())),
        None => return Ok((outer, false)),
    }
    let Some((_, cipher)) = secrets.encrypt else {
        return Err(CallbackError::EncryptedWithoutKey);
    };
    let EncryptedBody { encrypt } =
        serde_json::from_value(outer).map_err(|e| CallbackError::UnknownShape(e.to_string()))?;
    let plain = cipher.decrypt(&encrypt)?;
    let body = serde_json::from_slice::<Value>(&plain)
        .map_err(|e| CallbackError::MalformedDecrypted(e.to_string()))?;
    Ok((body, true))
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

fn check_token(sent: Option<&Value>, expected: &str) -> Result<(), CallbackError> {
    match sent.and_then(Value::as_str) {
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TOKEN: &str = "test-verification-token";
    const KEY: &str = "test key";
    const NOW: i64 = 1_700_000_000;
    const WINDOW: i64 = 24 * 3600;

    fn plain() -> CallbackSecrets<'static> {
        CallbackSecrets {
            verification_token: TOKEN,
            encrypt: None,
            allow_card_v1_token_signature: false,
        }
    }

    fn signed(body: &[u8], key: &str) -> SignatureHeaders {
        let ts = NOW.to_string();
        SignatureHeaders {
            signature: Some(crypto::event_signature(&ts, "nonce-123", key, body)),
            timestamp: Some(ts),
            nonce: Some("nonce-123".into()),
        }
    }

    fn encrypt(cipher: &Cipher, v: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"encrypt": cipher.encrypt(v.to_string().as_bytes())})).unwrap()
    }

    #[test]
    fn the_python_sdk_encrypted_challenge_is_answered_without_a_signature() {
        let cipher = Cipher::new(KEY);
        let secrets = CallbackSecrets {
            verification_token: TOKEN,
            encrypt: Some((KEY, &cipher)),
            allow_card_v1_token_signature: false,
        };
        let body = br#"{"encrypt":"AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHr2K2c4pSoIiYBFkqtMS3Sqnlmc4hUCPezYa4EJ2Oui0dGeyz2Fdc2fWjIHm30FqlWadyarSXVs9SYCpA01zevdrG79+JJR2rB3TcCAXPy/gQ=="}"#;
        let got = parse(&secrets, &SignatureHeaders::default(), body, NOW, WINDOW).unwrap();
        assert_eq!(
            got,
            Inbound::Challenge {
                challenge: "ajls384kdj".into()
            }
        );
        let wrong = CallbackSecrets {
            verification_token: "other",
            encrypt: Some((KEY, &cipher)),
            allow_card_v1_token_signature: false,
        };
        assert_eq!(
            parse(&wrong, &SignatureHeaders::default(), body, NOW, WINDOW),
            Err(CallbackError::BadToken)
        );
    }

    #[test]
    fn the_python_sdk_signed_plain_event_vector_is_accepted() {
        // §8.3 V3: an unencrypted body signed with the Encrypt Key, accepted by the Python SDK.
        let body = br#"{"schema":"2.0","header":{"event_id":"e1","event_type":"im.message.receive_v1","token":"v"},"event":{}}"#;
        let cipher = Cipher::new("encrypt_key_demo");
        let secrets = CallbackSecrets {
            verification_token: "v",
            encrypt: Some(("encrypt_key_demo", &cipher)),
            allow_card_v1_token_signature: false,
        };
        let headers = SignatureHeaders {
            timestamp: Some("1609459200".into()),
            nonce: Some("abc".into()),
            signature: Some("7e4cc6b52aada163322297906fa7837efd3e2e5ec07c1481746760f0aefb1449".into()),
        };
        let got = parse(&secrets, &headers, body, 1_609_459_200, WINDOW).unwrap();
        match got {
            Inbound::Event(e) => {
                assert_eq!(e.event_id, "e1");
                assert_eq!(e.event_type, "im.message.receive_v1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encrypted_signed_event_round_trip_and_every_rejection() {
        let cipher = Cipher::new(KEY);
        let secrets = CallbackSecrets {
            verification_token: TOKEN,
            encrypt: Some((KEY, &cipher)),
            allow_card_v1_token_signature: false,
        };
        let event = json!({"schema":"2.0","header":{"event_id":"ev-1","event_type":"im.chat.disbanded_v1","token":TOKEN,"create_time":"1","app_id":"cli_x","tenant_key":"t"},
            "event":{"chat_id":"oc_1","operator_id":{"open_id":"ou_1"},"external":false,"name":"ops"}});
        let body = encrypt(&cipher, &event);
        let headers = signed(&body, KEY);
        let got = parse(&secrets, &headers, &body, NOW, WINDOW).unwrap();
        assert_eq!(got.dedup_keys(), vec!["event:ev-1".to_string()]);

        let mut bad_sig = headers.clone();
        bad_sig.signature = Some("0".repeat(64));
        assert_eq!(
            parse(&secrets, &bad_sig, &body, NOW, WINDOW),
            Err(CallbackError::BadSignature)
        );
        let mut missing = headers.clone();
        missing.nonce = None;
        assert_eq!(
            parse(&secrets, &missing, &body, NOW, WINDOW),
            Err(CallbackError::MissingSignatureHeader("X-Lark-Request-Nonce"))
        );
        assert!(matches!(
            parse(&secrets, &headers, &body, NOW + WINDOW + 1, WINDOW),
            Err(CallbackError::Stale { .. })
        ));
        // A plain body to an integration with an Encrypt Key still needs the signature.
        let plain_body = event.to_string().into_bytes();
        assert!(parse(&secrets, &signed(&plain_body, KEY), &plain_body, NOW, WINDOW).is_ok());
        assert_eq!(
            parse(&secrets, &SignatureHeaders::default(), &plain_body, NOW, WINDOW),
            Err(CallbackError::MissingSignatureHeader("X-Lark-Request-Timestamp"))
        );
        // Encrypted with another key: the padding check fails.
        let other = encrypt(&Cipher::new("other key"), &event);
        assert_eq!(
            parse(&secrets, &signed(&other, KEY), &other, NOW, WINDOW),
            Err(CallbackError::Decrypt(CryptoError::BadPadding))
        );
        // An encrypted body to an integration without a key.
        assert_eq!(
            parse(&plain(), &headers, &body, NOW, WINDOW),
            Err(CallbackError::EncryptedWithoutKey)
        );
        // A right signature over a body whose token is wrong.
        let mut wrong = event.clone();
        wrong["header"]["token"] = json!("nope");
        let body = encrypt(&cipher, &wrong);
        assert_eq!(
            parse(&secrets, &signed(&body, KEY), &body, NOW, WINDOW),
            Err(CallbackError::BadToken)
        );
    }

    #[test]
    fn message_events_dedup_on_the_message_id_too() {
        let event = json!({"schema":"2.0","header":{"event_id":"ev-2","event_type":"im.message.receive_v1","token":TOKEN},
            "event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},
                     "message":{"message_id":"om_1","chat_id":"oc_1","chat_type":"p2p","message_type":"text","content":"{\"text\":\"help\"}"}}});
        let got = parse(
            &plain(),
            &SignatureHeaders::default(),
            event.to_string().as_bytes(),
            NOW,
            WINDOW,
        )
        .unwrap();
        assert_eq!(got.dedup_keys(), vec!["event:ev-2", "message:om_1"]);
    }

    #[test]
    fn schema_1_events_use_the_top_level_token_and_uuid() {
        let body = json!({"ts":"1700000000.000","uuid":"a1b2c3","token":TOKEN,"type":"event_callback","event":{"type":"message_read","app_id":"cli_x"}});
        let got = parse(
            &plain(),
            &SignatureHeaders::default(),
            body.to_string().as_bytes(),
            NOW,
            WINDOW,
        )
        .unwrap();
        match got {
            Inbound::Event(e) => {
                assert_eq!(
                    (e.event_id.as_str(), e.event_type.as_str()),
                    ("a1b2c3", "message_read")
                );
                assert_eq!(e.event, Event::Other);
            }
            other => panic!("{other:?}"),
        }
        let mut wrong = body.clone();
        wrong["token"] = json!("wrong");
        assert_eq!(
            parse(
                &plain(),
                &SignatureHeaders::default(),
                wrong.to_string().as_bytes(),
                NOW,
                WINDOW
            ),
            Err(CallbackError::BadToken)
        );
    }

    #[test]
    fn card_callbacks_of_both_versions() {
        let v2 = json!({"schema":"2.0","header":{"event_id":"c-ev","event_type":"card.action.trigger","token":TOKEN},
            "event":{"operator":{"open_id":"ou_9","user_id":"u9"},"token":"c-tok","action":{"tag":"button","value":{"k":"ack"}},
                     "context":{"open_message_id":"om_7","open_chat_id":"oc_7"}}});
        match parse(
            &plain(),
            &SignatureHeaders::default(),
            v2.to_string().as_bytes(),
            NOW,
            WINDOW,
        )
        .unwrap()
        {
            Inbound::CardAction(a) => {
                assert_eq!(a.version, CardCallbackVersion::V2);
                assert_eq!(a.operator.open_id.as_deref(), Some("ou_9"));
                assert_eq!(a.open_message_id.as_deref(), Some("om_7"));
                assert_eq!(a.value, json!({"k":"ack"}));
            }
            other => panic!("{other:?}"),
        }

        let v1 = json!({"open_id":"ou_9","user_id":"u9","tenant_key":"t","open_message_id":"om_7","open_chat_id":"oc_7","token":"c-tok","action":{"tag":"button","value":{"k":"ack"}}}).to_string();
        let ts = NOW.to_string();
        let headers = SignatureHeaders {
            signature: Some(crypto::card_v1_signature(&ts, "n1", TOKEN, v1.as_bytes())),
            timestamp: Some(ts.clone()),
            nonce: Some("n1".into()),
        };
        match parse(&plain(), &headers, v1.as_bytes(), NOW, WINDOW).unwrap() {
            Inbound::CardAction(a) => {
                assert_eq!(a.version, CardCallbackVersion::V1);
                assert_eq!(a.delivery_id, format!("v1:{ts}:n1"));
            }
            other => panic!("{other:?}"),
        }
        // The SHA-256 scheme does not sign a plain old-format request.
        let sha256 = SignatureHeaders {
            signature: Some(crypto::event_signature(&ts, "n1", TOKEN, v1.as_bytes())),
            ..headers.clone()
        };
        assert_eq!(
            parse(&plain(), &sha256, v1.as_bytes(), NOW, WINDOW),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            parse(&plain(), &SignatureHeaders::default(), v1.as_bytes(), NOW, WINDOW),
            Err(CallbackError::MissingSignatureHeader("X-Lark-Request-Timestamp"))
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let cipher = Cipher::new(KEY);
        let secrets = CallbackSecrets {
            verification_token: TOKEN,
            encrypt: Some((KEY, &cipher)),
            allow_card_v1_token_signature: false,
        };
        let h = SignatureHeaders::default();
        assert!(matches!(
            parse(&secrets, &h, b"{nope", NOW, WINDOW),
            Err(CallbackError::MalformedJson(_))
        ));
        assert_eq!(
            parse(&secrets, &h, br#"{"encrypt":"!!!"}"#, NOW, WINDOW),
            Err(CallbackError::Decrypt(CryptoError::BadBase64))
        );
        assert_eq!(
            parse(&secrets, &h, br#"{"encrypt":"AAAA"}"#, NOW, WINDOW),
            Err(CallbackError::Decrypt(CryptoError::BadLength(3)))
        );
        let not_json = serde_json::to_vec(&json!({"encrypt": cipher.encrypt(b"not json")})).unwrap();
        assert!(matches!(
            parse(&secrets, &h, &not_json, NOW, WINDOW),
            Err(CallbackError::MalformedDecrypted(_))
        ));
        assert!(matches!(
            parse(&plain(), &h, b"[1,2]", NOW, WINDOW),
            Err(CallbackError::UnknownShape(_))
        ));
    }

    fn keyed(cipher: &Cipher, allow_v1: bool) -> CallbackSecrets<'_> {
        CallbackSecrets {
            verification_token: TOKEN,
            encrypt: Some((KEY, cipher)),
            allow_card_v1_token_signature: allow_v1,
        }
    }

    #[test]
    fn with_an_encrypt_key_nothing_is_decrypted_before_the_signature_is_checked() {
        let cipher = Cipher::new(KEY);
        let secrets = keyed(&cipher, false);
        let event =
            json!({"schema":"2.0","header":{"event_id":"e","event_type":"x","token":TOKEN},"event":{}});
        let good = encrypt(&cipher, &event);
        let garbage_json = serde_json::to_vec(&json!({"encrypt": cipher.encrypt(b"not json")})).unwrap();
        let bad_padding = encrypt(&Cipher::new("other key"), &event);
        let random = br#"{"encrypt":"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="}"#.to_vec();
        let mut wrong = signed(&good, KEY);
        wrong.signature = Some("ab".repeat(32));
        for body in [&good, &garbage_json, &bad_padding, &random] {
            // A wrong signature is refused as such: the body is never opened.
            assert_eq!(
                parse(&secrets, &wrong, body, NOW, WINDOW),
                Err(CallbackError::BadSignature)
            );
            // Unsigned, the body is opened only to look for a challenge, which none of these is.
            assert!(parse(&secrets, &SignatureHeaders::default(), body, NOW, WINDOW).is_err());
        }
        assert_eq!(
            parse(&secrets, &SignatureHeaders::default(), &good, NOW, WINDOW),
            Err(CallbackError::MissingSignatureHeader("X-Lark-Request-Timestamp"))
        );
        // A signature made with the Verification Token does not stand in for the Encrypt Key's.
        let ts = NOW.to_string();
        let by_token = SignatureHeaders {
            signature: Some(crypto::card_v1_signature(&ts, "n", TOKEN, &good)),
            timestamp: Some(ts),
            nonce: Some("n".into()),
        };
        assert_eq!(
            parse(&secrets, &by_token, &good, NOW, WINDOW),
            Err(CallbackError::BadSignature)
        );
    }

    #[test]
    fn the_old_card_request_signed_by_the_token_alone_needs_an_opt_in_when_a_key_is_set() {
        let cipher = Cipher::new(KEY);
        let v1 = json!({"open_id":"ou_9","open_message_id":"om_7","open_chat_id":"oc_7","token":"c-tok","action":{"tag":"button","value":{"k":"ack"}}});
        let plain_body = v1.to_string().into_bytes();
        let ts = NOW.to_string();
        let token_signed = |body: &[u8]| SignatureHeaders {
            signature: Some(crypto::card_v1_signature(&ts, "n1", TOKEN, body)),
            timestamp: Some(ts.clone()),
            nonce: Some("n1".into()),
        };
        assert_eq!(
            parse(
                &keyed(&cipher, false),
                &token_signed(&plain_body),
                &plain_body,
                NOW,
                WINDOW
            ),
            Err(CallbackError::CardV1TokenSignatureRefused)
        );
        assert!(
            parse(
                &keyed(&cipher, true),
                &token_signed(&plain_body),
                &plain_body,
                NOW,
                WINDOW
            )
            .is_ok()
        );
        // Signed with the Encrypt Key, or encrypted (which needs the key), it is accepted.
        assert!(
            parse(
                &keyed(&cipher, false),
                &signed(&plain_body, KEY),
                &plain_body,
                NOW,
                WINDOW
            )
            .is_ok()
        );
        let encrypted = encrypt(&cipher, &v1);
        assert!(
            parse(
                &keyed(&cipher, false),
                &token_signed(&encrypted),
                &encrypted,
                NOW,
                WINDOW
            )
            .is_ok()
        );
        // Unsigned, never.
        assert_eq!(
            parse(
                &keyed(&cipher, true),
                &SignatureHeaders::default(),
                &plain_body,
                NOW,
                WINDOW
            ),
            Err(CallbackError::MissingSignatureHeader("X-Lark-Request-Timestamp"))
        );
    }

    #[test]
    fn crafted_timestamps_neither_overflow_nor_reach_into_the_future() {
        let cipher = Cipher::new(KEY);
        let secrets = keyed(&cipher, false);
        let body = encrypt(
            &cipher,
            &json!({"schema":"2.0","header":{"event_id":"e","event_type":"x","token":TOKEN},"event":{}}),
        );
        let at = |ts: String| SignatureHeaders {
            signature: Some(crypto::event_signature(&ts, "n", KEY, &body)),
            timestamp: Some(ts),
            nonce: Some("n".into()),
        };
        for extreme in [i64::MIN.to_string(), i64::MAX.to_string()] {
            assert!(parse(&secrets, &at(extreme), &body, NOW, WINDOW).is_err());
        }
        assert_eq!(
            parse(&secrets, &at(i64::MIN.to_string()), &body, 1, WINDOW),
            Err(CallbackError::BadTimestamp)
        );
        let ahead = NOW + MAX_FUTURE_SKEW_SECS;
        assert!(parse(&secrets, &at(ahead.to_string()), &body, NOW, WINDOW).is_ok());
        assert_eq!(
            parse(&secrets, &at((ahead + 1).to_string()), &body, NOW, WINDOW),
            Err(CallbackError::Stale {
                age_secs: -MAX_FUTURE_SKEW_SECS - 1
            })
        );
    }

    proptest! {
        #[test]
        fn random_bodies_and_headers_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            ts in proptest::option::of(".{0,12}"),
            nonce in proptest::option::of(".{0,12}"),
            sig in proptest::option::of("[0-9a-f]{0,64}"),
        ) {
            let cipher = Cipher::new(KEY);
            let headers = SignatureHeaders { timestamp: ts, nonce, signature: sig };
            for secrets in [plain(), CallbackSecrets { verification_token: TOKEN, encrypt: Some((KEY, &cipher)), allow_card_v1_token_signature: false }] {
                let _ = parse(&secrets, &headers, &body, NOW, WINDOW);
            }
        }

        #[test]
        fn random_json_shapes_never_panic(
            schema in proptest::option::of(prop_oneof![Just(json!("2.0")), Just(json!(2)), Just(Value::Null)]),
            header in prop_oneof![Just(json!({})), Just(json!({"token": TOKEN})), Just(json!({"token": TOKEN, "event_id": 1, "event_type": []})), Just(json!("x"))],
            event in prop_oneof![Just(Value::Null), Just(json!({"message": 5})), Just(json!({"sender": {"sender_id": 3}, "message": {"message_id": []}})), Just(json!({"action": "x"}))],
            kind in prop_oneof![Just(json!("url_verification")), Just(json!("event_callback")), Just(json!(7))],
        ) {
            let mut body = json!({"header": header, "event": event, "type": kind, "token": TOKEN, "uuid": "u", "action": {}, "open_message_id": 1});
            if let Some(s) = schema { body["schema"] = s; }
            let _ = parse(&plain(), &SignatureHeaders::default(), body.to_string().as_bytes(), NOW, WINDOW);
            let cipher = Cipher::new(KEY);
            let enc = encrypt(&cipher, &body);
            let secrets = CallbackSecrets { verification_token: TOKEN, encrypt: Some((KEY, &cipher)), allow_card_v1_token_signature: false };
            let _ = parse(&secrets, &signed(&enc, KEY), &enc, NOW, WINDOW);
        }
    }
}
