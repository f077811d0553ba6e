//! Lark's side of delivery to an app's Request URL (reference §2, §3): schema-2.0 events with
//! fresh event ids, card callbacks (new and v1) whose answer may replace the card, and the
//! `url_verification` challenge; bodies encrypted and signed as Lark does; failed event pushes
//! redelivered with the same event id on the configured schedule.
//!
//! The chat events a member's change to a group sends (disbanded, bot added or removed,
//! renamed) are in `chats`.

mod chats;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::state::{CardToken, Shared, stopped};
use super::{
    CallbackOutcome, CardCallbackVersion, MessageSender, PushRecord, SimApp, SimError, SimMessage, SimUser,
};
use crate::ids::random_hex;
use crate::lark::crypto::{Cipher, card_v1_signature, event_signature};

pub(crate) use chats::{add_bot, disband_chat, remove_bot, rename_chat};

/// Lark waits this long for an event or callback answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// And this long for the challenge answer.
const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which signature a push carries.
#[derive(Clone, Copy)]
enum Signing {
    /// SHA-256 over timestamp + nonce + Encrypt Key + body, when the app has an Encrypt Key.
    EncryptKey,
    /// SHA-1 over timestamp + nonce + Verification Token + body (old card callback).
    VerificationToken,
}

struct Sealed {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// Encrypts (when the app has an Encrypt Key) and signs a plaintext body.
fn seal(shared: &Shared, app: &SimApp, plaintext: &[u8], signing: Signing) -> Sealed {
    let body = match &app.encrypt_key {
        Some(key) => serde_json::to_vec(&json!({"encrypt": Cipher::new(key).encrypt(plaintext)}))
            .expect("a JSON object serializes"),
        None => plaintext.to_vec(),
    };
    let timestamp = shared.clock.now().timestamp().to_string();
    let nonce = random_hex(8);
    let signature = match (signing, &app.encrypt_key) {
        (Signing::EncryptKey, Some(key)) => Some(event_signature(&timestamp, &nonce, key, &body)),
        (Signing::EncryptKey, None) => None,
        (Signing::VerificationToken, _) => Some(card_v1_signature(
            &timestamp,
            &nonce,
            &app.verification_token,
            &body,
        )),
    };
    let mut headers = vec![
        ("X-Lark-Request-Timestamp", timestamp),
        ("X-Lark-Request-Nonce", nonce),
    ];
    if let Some(signature) = signature {
        headers.push(("X-Lark-Signature", signature));
    }
    Sealed { body, headers }
}

enum PostError {
    Timeout,
    Connect(String),
    Other(String),
    /// A card callback over a long connection failed with this client error code.
    LongConnection(u32),
}

impl PostError {
    fn describe(&self) -> String {
        match self {
            PostError::Timeout => "no answer in time".to_string(),
            PostError::Connect(e) => format!("connection failed: {e}"),
            PostError::Other(e) => e.clone(),
            PostError::LongConnection(code) => format!("long connection: client error {code}"),
        }
    }
}

async fn post(
    shared: &Shared,
    url: &str,
    sealed: Sealed,
    timeout: Duration,
) -> Result<(u16, bytes::Bytes), PostError> {
    let mut request = shared
        .http
        .post(url)
        .timeout(timeout)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(sealed.body);
    for (name, value) in sealed.headers {
        request = request.header(name, value);
    }
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            PostError::Timeout
        } else if e.is_connect() {
            PostError::Connect(e.to_string())
        } else {
            PostError::Other(e.to_string())
        }
    };
    let response = request.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(classify)?;
    Ok((status, body))
}

/// A schema-2.0 envelope around `event` with a fresh event id.
fn envelope(
    shared: &Shared,
    app: &SimApp,
    tenant_key: &str,
    event_type: &str,
    event: Value,
) -> (String, Value) {
    let event_id = random_hex(16);
    let now = shared.clock.now();
    // Card callbacks carry microseconds, other events milliseconds (reference §2.3, §3.2).
    let create_time = if event_type == "card.action.trigger" {
        now.timestamp_micros()
    } else {
        now.timestamp_millis()
    };
    let body = json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id, "event_type": event_type, "create_time": create_time.to_string(),
            "token": app.verification_token, "app_id": app.app_id, "tenant_key": tenant_key
        },
        "event": event
    });
    (event_id, body)
}

fn record_push(shared: &Shared, record: PushRecord) {
    shared.lock().pushes.push(record);
}

/// One push of an event; true when the app answered 200 in time.
async fn push_event_once(
    shared: &Shared,
    app: &SimApp,
    event_id: &str,
    event_type: &str,
    plaintext: &[u8],
    attempt: u32,
) -> bool {
    let Some(url) = &app.request_url else {
        return false;
    };
    let at = shared.clock.now();
    let sealed = seal(shared, app, plaintext, Signing::EncryptKey);
    let result = post(shared, url, sealed, ANSWER_TIMEOUT).await;
    let (status, error) = match &result {
        Ok((status, _)) => (Some(*status), None),
        Err(e) => (None, Some(e.describe())),
    };
    let ok = status == Some(200);
    record_push(
        shared,
        PushRecord {
            at,
            app_id: app.app_id.clone(),
            kind: "event".to_string(),
            event_id: Some(event_id.to_string()),
            event_type: event_type.to_string(),
            attempt,
            status,
            error,
            ok,
        },
    );
    ok
}

/// Pushes an event now; when that fails, redelivers it in the background on the schedule.
async fn deliver_event(shared: &Arc<Shared>, app: &SimApp, event_type: &str, event: Value) {
    // Without a Request URL the app is in long-connection mode: Lark keeps its events until a
    // client connects.
    let over_connection = app.request_url.is_none() || shared.long_connections.connected(&app.app_id);
    let tenant_key = shared.lock().world.tenant_key.clone();
    let (event_id, body) = envelope(shared, app, &tenant_key, event_type, event);
    let plaintext = serde_json::to_vec(&body).expect("JSON serializes");
    // An app with a client connected receives its events that way (plaintext, §7).
    if over_connection {
        super::long_connection::deliver(shared, app, event_id, event_type, plaintext).await;
        return;
    }
    if push_event_once(shared, app, &event_id, event_type, &plaintext, 0).await {
        return;
    }
    let shared = shared.clone();
    let app = app.clone();
    let event_type = event_type.to_string();
    tokio::spawn(async move {
        let mut stop = shared.stop.subscribe();
        for (i, delay) in shared.redelivery.delays.clone().into_iter().enumerate() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            let attempt = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if push_event_once(&shared, &app, &event_id, &event_type, &plaintext, attempt).await {
                return;
            }
        }
    });
}

fn user_ids(user: &SimUser) -> Value {
    json!({"open_id": user.open_id, "union_id": user.union_id, "user_id": user.user_id})
}

pub(crate) async fn send_text(
    shared: &Arc<Shared>,
    user_open_id: &str,
    chat_id: Option<&str>,
    text: &str,
    mention_bot: bool,
) -> Result<(), SimError> {
    let now = shared.clock.now();
    let (user, tenant_key, chat_id, chat_type, bot) = {
        let mut st = shared.lock();
        let user = st
            .world
            .user(user_open_id)
            .cloned()
            .ok_or_else(|| SimError::UnknownUser(user_open_id.to_string()))?;
        match chat_id {
            None => {
                let app = shared.apps.first().ok_or(SimError::NoApps)?;
                if !user.app_visible {
                    return Err(SimError::NotInChat {
                        user: user.open_id,
                        chat: format!("p2p with {}", app.app_id),
                    });
                }
                let chat = st.p2p_chat(&app.app_id, &user.open_id);
                (user, st.world.tenant_key.clone(), chat, "p2p", Some(app.clone()))
            }
            Some(id) => {
                let chat = st
                    .world
                    .chat(id)
                    .ok_or_else(|| SimError::UnknownChat(id.to_string()))?;
                if chat.disbanded {
                    return Err(SimError::Disbanded(id.to_string()));
                }
                if !chat.members.contains(&user.open_id) {
                    return Err(SimError::NotInChat {
                        user: user.open_id,
                        chat: id.to_string(),
                    });
                }
                let bot = chat
                    .apps
                    .iter()
                    .find_map(|a| shared.app(a))
                    .filter(|app| mention_bot || app.group_messages)
                    .cloned();
                (user, st.world.tenant_key.clone(), id.to_string(), "group", bot)
            }
        }
    };
    let mention = bot.clone().filter(|_| chat_type == "group" && mention_bot);
    let shown = match mention {
        Some(_) => format!("@_user_1 {text}"),
        None => text.to_string(),
    };
    let content = json!({ "text": shown }).to_string();
    let message = SimMessage {
        message_id: format!("om_{}", random_hex(16)),
        chat_id: chat_id.clone(),
        chat_type: chat_type.to_string(),
        user_open_id: (chat_type == "p2p").then(|| user.open_id.clone()),
        sender: MessageSender::User {
            open_id: user.open_id.clone(),
        },
        msg_type: "text".to_string(),
        content: content.clone(),
        updates: 0,
        uuid: None,
        parent_id: None,
        created_at: now,
        updated_at: now,
    };
    let message_id = message.message_id.clone();
    shared.lock().push_message(message);
    let Some(bot) = bot else {
        return Ok(());
    };
    let mentions: Vec<Value> = mention
        .as_ref()
        .map(|b| {
            json!({"key": "@_user_1", "id": {"open_id": b.bot_open_id(), "union_id": "", "user_id": ""},
                   "name": b.app_id, "tenant_key": tenant_key})
        })
        .into_iter()
        .collect();
    let millis = now.timestamp_millis().to_string();
    let event = json!({
        "sender": {"sender_id": user_ids(&user), "sender_type": "user", "tenant_key": tenant_key},
        "message": {
            "message_id": message_id, "root_id": "", "parent_id": "", "create_time": millis,
            "update_time": millis, "chat_id": chat_id, "chat_type": chat_type, "message_type": "text",
            "content": content, "mentions": mentions, "user_agent": "lark-sim"
        }
    });
    deliver_event(shared, &bot, "im.message.receive_v1", event).await;
    Ok(())
}

/// Validates a v2 callback answer's `card` and returns the content that replaces the card.
fn v2_card(card: &Value) -> Option<String> {
    match card.get("type").and_then(Value::as_str)? {
        "raw" => card.get("data").filter(|d| d.is_object()).map(Value::to_string),
        "template" => card
            .pointer("/data/template_id")
            .and_then(Value::as_str)
            .map(|_| json!({"type": "template", "data": card["data"]}).to_string()),
        _ => None,
    }
}

/// Keys that make a v1 answer a card (rather than `{}` or a bare toast).
const CARD_KEYS: &[&str] = &["elements", "header", "config", "i18n_elements", "body", "schema"];

pub(crate) async fn press_button(
    shared: &Arc<Shared>,
    user_open_id: &str,
    message_id: &str,
    value: Value,
) -> Result<CallbackOutcome, SimError> {
    let (app, url, user, chat_id, tenant_key) = {
        let st = shared.lock();
        let message = st
            .message(message_id)
            .ok_or_else(|| SimError::UnknownMessage(message_id.to_string()))?;
        let MessageSender::App { app_id } = &message.sender else {
            return Err(SimError::NotACard(message_id.to_string()));
        };
        if message.msg_type != "interactive" {
            return Err(SimError::NotACard(message_id.to_string()));
        }
        let user = st
            .world
            .user(user_open_id)
            .cloned()
            .ok_or_else(|| SimError::UnknownUser(user_open_id.to_string()))?;
        let sees = match &message.user_open_id {
            Some(recipient) => *recipient == user.open_id,
            None => st
                .world
                .chat(&message.chat_id)
                .is_some_and(|c| c.members.contains(&user.open_id)),
        };
        if !sees {
            return Err(SimError::NotInChat {
                user: user.open_id,
                chat: message.chat_id.clone(),
            });
        }
        let app = shared
            .app(app_id)
            .cloned()
            .ok_or_else(|| SimError::UnknownApp(app_id.clone()))?;
        // The new callback goes over a long connection when one is open; the old one is
        // webhook-only (§7).
        let over_connection =
            app.card_callback == CardCallbackVersion::V2 && shared.long_connections.connected(&app.app_id);
        let url = match (&app.request_url, over_connection) {
            (_, true) => None,
            (Some(url), false) => Some(url.clone()),
            (None, false) => return Err(SimError::NoRequestUrl(app.app_id.clone())),
        };
        (
            app,
            url,
            user,
            message.chat_id.clone(),
            st.world.tenant_key.clone(),
        )
    };
    let card_token = format!("c-{}", random_hex(16));
    shared.lock().card_tokens.insert(
        card_token.clone(),
        CardToken {
            app_id: app.app_id.clone(),
            message_id: message_id.to_string(),
            issued_at: shared.clock.now(),
            uses: 0,
        },
    );
    let action = json!({"value": value, "tag": "button"});
    let (event_id, body, signing, event_type) = match app.card_callback {
        CardCallbackVersion::V2 => {
            let event = json!({
                "operator": {"tenant_key": tenant_key, "user_id": user.user_id, "open_id": user.open_id,
                             "union_id": user.union_id},
                "token": card_token, "action": action, "host": "im_message",
                "context": {"open_message_id": message_id, "open_chat_id": chat_id}
            });
            let (id, body) = envelope(shared, &app, &tenant_key, "card.action.trigger", event);
            (Some(id), body, Signing::EncryptKey, "card.action.trigger")
        }
        CardCallbackVersion::V1 => {
            let body = json!({
                "open_id": user.open_id, "user_id": user.user_id, "tenant_key": tenant_key,
                "open_message_id": message_id, "open_chat_id": chat_id, "token": card_token,
                "action": action
            });
            (None, body, Signing::VerificationToken, "card.action.trigger_v1")
        }
    };
    let plaintext = serde_json::to_vec(&body).expect("JSON serializes");
    let at = shared.clock.now();
    let result = match url {
        Some(url) => {
            post(
                shared,
                &url,
                seal(shared, &app, &plaintext, signing),
                ANSWER_TIMEOUT,
            )
            .await
        }
        None => match super::long_connection::card_callback(shared, &app.app_id, &plaintext).await {
            Ok(answer) => Ok((200, bytes::Bytes::from(answer.to_string()))),
            Err(code) => Err(PostError::LongConnection(code)),
        },
    };
    let mut outcome = CallbackOutcome {
        status: None,
        toast: None,
        card_replaced: false,
        client_error: None,
    };
    let mut new_card = None;
    let mut error = None;
    match &result {
        Err(e) => {
            outcome.client_error = Some(match e {
                PostError::Timeout => 200341,
                PostError::Connect(_) => 200342,
                PostError::Other(_) => 200080,
                PostError::LongConnection(code) => *code,
            });
            error = Some(e.describe());
        }
        Ok((status, answer)) => {
            outcome.status = Some(*status);
            let parsed: Option<Value> = if answer.iter().all(u8::is_ascii_whitespace) {
                Some(json!({}))
            } else {
                serde_json::from_slice(answer).ok().filter(Value::is_object)
            };
            match (app.card_callback, *status, parsed) {
                (_, 200, None) => outcome.client_error = Some(200672),
                (CardCallbackVersion::V2, 200, Some(answer)) => {
                    outcome.toast = answer.get("toast").cloned();
                    if let Some(card) = answer.get("card") {
                        match v2_card(card) {
                            Some(content) => new_card = Some(content),
                            None => outcome.client_error = Some(200673),
                        }
                    }
                }
                (CardCallbackVersion::V1, 200, Some(mut answer)) => {
                    outcome.toast = answer.as_object_mut().and_then(|o| o.remove("toast"));
                    if CARD_KEYS.iter().any(|k| answer.get(k).is_some()) {
                        new_card = Some(answer.to_string());
                    }
                }
                // The v1 callback may answer 400 with a `{content, i18n}` error toast.
                (CardCallbackVersion::V1, 400, Some(answer)) if answer.get("content").is_some() => {
                    outcome.toast = Some(answer);
                }
                _ => outcome.client_error = Some(200671),
            }
        }
    }
    {
        let now = shared.clock.now();
        let mut st = shared.lock();
        if let Some(content) = new_card
            && let Some(message) = st.message_mut(message_id)
        {
            message.content = content;
            message.updates += 1;
            message.updated_at = now;
            outcome.card_replaced = true;
        }
        st.pushes.push(PushRecord {
            at,
            app_id: app.app_id.clone(),
            kind: "card_callback".to_string(),
            event_id,
            event_type: event_type.to_string(),
            attempt: 0,
            status: outcome.status,
            error,
            ok: outcome.client_error.is_none(),
        });
    }
    Ok(outcome)
}

pub(crate) async fn verify_url(shared: &Arc<Shared>, app_id: &str) -> Result<(), SimError> {
    let app = shared
        .app(app_id)
        .cloned()
        .ok_or_else(|| SimError::UnknownApp(app_id.to_string()))?;
    let url = app
        .request_url
        .clone()
        .ok_or_else(|| SimError::NoRequestUrl(app_id.to_string()))?;
    let challenge = random_hex(16);
    let plaintext = serde_json::to_vec(&json!({
        "challenge": challenge, "token": app.verification_token, "type": "url_verification"
    }))
    .expect("JSON serializes");
    let at = shared.clock.now();
    let sealed = seal(shared, &app, &plaintext, Signing::EncryptKey);
    let result = post(shared, &url, sealed, CHALLENGE_TIMEOUT).await;
    let verdict = match &result {
        Err(e) => Err(e.describe()),
        Ok((200, body)) => {
            let echoed = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("challenge").and_then(Value::as_str).map(str::to_string));
            if echoed.as_deref() == Some(challenge.as_str()) {
                Ok(())
            } else {
                Err("the answer does not echo the challenge".to_string())
            }
        }
        Ok((status, _)) => Err(format!("HTTP {status}")),
    };
    record_push(
        shared,
        PushRecord {
            at,
            app_id: app.app_id.clone(),
            kind: "url_verification".to_string(),
            event_id: None,
            event_type: "url_verification".to_string(),
            attempt: 0,
            status: result.as_ref().ok().map(|(s, _)| *s),
            error: verdict.as_ref().err().cloned(),
            ok: verdict.is_ok(),
        },
    );
    verdict.map_err(SimError::Verification)
}
