//! The Message Card Request URL against `serve` over real HTTP: integrations and their console
//! URLs, challenges, every event and callback type with right and wrong credentials, dedup
//! across a restart, and every bad-input case with its status and JSON error.

mod common;

use common::{Instance, Server, client, file_contains};
use lark_oncall::lark::crypto::{Cipher, card_v1_signature, event_signature};
use reqwest::StatusCode;
use serde_json::{Value, json};

const APP_SECRET: &str = "app-secret-0123456789abcdef";
const TOKEN: &str = "verification-token-xyz";
const KEY: &str = "encrypt-key-secret-42";

struct Lark {
    http: reqwest::Client,
    base: String,
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

impl Lark {
    fn url(&self, id: &str) -> String {
        format!("{}/lark/{id}/callback", self.base)
    }

    async fn post(&self, id: &str, body: Vec<u8>, headers: &[(&str, String)]) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(self.url(id))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Encrypted with `key` and signed with the SHA-256 scheme, as Lark sends to an app with an
    /// Encrypt Key.
    async fn encrypted(&self, id: &str, key: &str, payload: &Value) -> (StatusCode, Value) {
        self.encrypted_at(id, key, payload, &now()).await
    }

    async fn encrypted_at(&self, id: &str, key: &str, payload: &Value, ts: &str) -> (StatusCode, Value) {
        let body =
            serde_json::to_vec(&json!({"encrypt": Cipher::new(key).encrypt(payload.to_string().as_bytes())}))
                .unwrap();
        let nonce = lark_oncall::ids::random_hex(8);
        let sig = event_signature(ts, &nonce, key, &body);
        self.post(
            id,
            body,
            &[
                ("x-lark-request-timestamp", ts.to_string()),
                ("x-lark-request-nonce", nonce),
                ("x-lark-signature", sig),
            ],
        )
        .await
    }
}

fn envelope(event_id: &str, event_type: &str, token: &str, event: Value) -> Value {
    json!({"schema": "2.0",
           "header": {"event_id": event_id, "event_type": event_type, "create_time": "1700000000000",
                      "token": token, "app_id": "cli_a1b2c3d4e5f6", "tenant_key": "tenant-1"},
           "event": event})
}

fn message(event_id: &str, message_id: &str) -> Value {
    envelope(
        event_id,
        "im.message.receive_v1",
        TOKEN,
        json!({"sender": {"sender_id": {"open_id": "ou_alice"}, "sender_type": "user", "tenant_key": "tenant-1"},
               "message": {"message_id": message_id, "chat_id": "oc_ops", "chat_type": "p2p", "message_type": "text",
                           "content": "{\"text\":\"help\"}", "create_time": "1700000000000"}}),
    )
}

fn card_v2(event_id: &str) -> Value {
    envelope(
        event_id,
        "card.action.trigger",
        TOKEN,
        json!({"operator": {"open_id": "ou_alice", "tenant_key": "tenant-1"}, "token": "c-update-token",
               "action": {"tag": "button", "value": {"action": "ack", "incident": "1"}},
               "host": "im_message", "context": {"open_message_id": "om_card", "open_chat_id": "oc_ops"}}),
    )
}

async fn stats(server: &Server, api: &str, id: &str) -> Value {
    let res = client()
        .get(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(api)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["callback_stats"].clone()
}

/// Every refusal gets this one answer; why is for the admin (`callback_stats.last_error`).
const REFUSED: (StatusCode, Option<&str>) = (StatusCode::UNAUTHORIZED, Some("callback_refused"));

async fn last_reason(server: &Server, api: &str, id: &str) -> String {
    stats(server, api, id).await["last_error"]["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn create(server: &Server, api: &str, body: Value) -> (StatusCode, Value) {
    let res = client()
        .post(format!("{}/api/v1/integrations", server.admin))
        .bearer_auth(api)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn integrations_are_validated_and_never_show_their_secrets() {
    let inst = Instance::new("");
    let api = inst.offline_token();
    let server = inst.serve();

    let (status, created) = create(
        &server,
        &api,
        json!({"name": "Ops", "app_id": "cli_a1b2c3d4e5f6", "app_secret": APP_SECRET,
               "verification_token": TOKEN, "encrypt_key": KEY, "domain": "lark"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["urls"],
        json!({"web_configuration": format!("https://oncall.example.com/lark/{id}/app"),
               "redirect": format!("https://oncall.example.com/lark/{id}/oauth/callback"),
               "message_card_request": format!("https://oncall.example.com/lark/{id}/callback")})
    );
    assert_eq!(
        created["secrets"],
        json!({"app_secret": true, "verification_token": true, "encrypt_key": true})
    );
    assert_eq!(
        (created["plan"].as_str(), created["monthly_quota"].as_u64()),
        (Some("basic_free"), Some(10_000))
    );
    let text = created.to_string();
    for secret in [APP_SECRET, TOKEN, KEY] {
        assert!(!text.contains(secret), "a secret leaked into the response");
    }

    // Each bad input is a 400 naming the field.
    for (body, field) in [
        (
            json!({"name": "x", "app_secret": "s", "verification_token": "t"}),
            "app_id",
        ),
        (
            json!({"name": "x", "app_id": "not-an-app", "app_secret": "s", "verification_token": "t"}),
            "app_id",
        ),
        (
            json!({"name": "x", "app_id": "cli_b1", "app_secret": "s", "verification_token": "t", "domain": "moon"}),
            "domain",
        ),
        (
            json!({"name": "x", "app_id": "cli_b1", "app_secret": "s", "verification_token": "t", "api_base_url": "not a url"}),
            "api_base_url",
        ),
        (
            json!({"name": "x", "app_id": "cli_b1", "verification_token": "t"}),
            "app_secret",
        ),
        (
            json!({"name": "", "app_id": "cli_b1", "app_secret": "s", "verification_token": "t"}),
            "name",
        ),
        (
            json!({"name": "x", "app_id": "cli_b1", "app_secret": "s", "verification_token": "t", "plan": "gold"}),
            "plan",
        ),
        (
            json!({"name": "x", "app_id": "cli_b1", "app_secret": "s", "verification_token": "t", "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, err) = create(&server, &api, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message} should name {field}");
    }
    // The same App ID twice is a conflict.
    let (status, _) = create(
        &server,
        &api,
        json!({"name": "Again", "app_id": "cli_a1b2c3d4e5f6", "app_secret": "s", "verification_token": "t"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Update: switch to the paid plan and clear the Encrypt Key.
    let res = client()
        .patch(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(&api)
        .json(&json!({"plan": "paid", "encrypt_key": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(
        (updated["plan"].as_str(), updated["monthly_quota"].is_null()),
        (Some("paid"), true)
    );
    assert_eq!(updated["secrets"]["encrypt_key"], false);
    let list: Value = client()
        .get(format!("{}/api/v1/integrations", server.admin))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let anonymous = client()
        .get(format!("{}/api/v1/integrations", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Secrets are sealed at rest: neither the state file nor the log holds them.
    let log = server.log_text();
    server.stop();
    for secret in [APP_SECRET, TOKEN, KEY] {
        assert!(
            !file_contains(&inst.state_path(), secret.as_bytes()),
            "{secret} in the state file"
        );
        assert!(!log.contains(secret), "{secret} in the log");
    }
    // And they survive a restart (the key file opens them again).
    let server = inst.serve();
    let res = client()
        .get(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["secrets"]["app_secret"], true);
    let res = client()
        .delete(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let lark = Lark {
        http: client(),
        base: server.base.clone(),
    };
    // A removed (or never existing) integration answers like any other refusal, so the
    // endpoint does not tell strangers which ids exist.
    let (status, err) = lark.post(&id, b"{}".to_vec(), &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
}

#[tokio::test]
async fn challenges_events_and_card_callbacks_with_right_and_wrong_credentials() {
    let inst = Instance::new("max_body_bytes = 4096");
    let api = inst.offline_token();
    let server = inst.serve();
    let (_, enc) = create(
        &server,
        &api,
        json!({"name": "Encrypted", "app_id": "cli_enc1", "app_secret": APP_SECRET, "verification_token": TOKEN, "encrypt_key": KEY}),
    )
    .await;
    let (_, plain) = create(
        &server,
        &api,
        json!({"name": "Plain", "app_id": "cli_plain1", "app_secret": APP_SECRET, "verification_token": TOKEN}),
    )
    .await;
    let enc = enc["id"].as_str().unwrap().to_string();
    let plain = plain["id"].as_str().unwrap().to_string();
    let lark = Lark {
        http: client(),
        base: server.base.clone(),
    };

    // Challenges: plain, and encrypted (answered in plain text, no signature needed).
    let challenge = json!({"challenge": "ch-1", "token": TOKEN, "type": "url_verification"});
    let (status, body) = lark.post(&plain, challenge.to_string().into_bytes(), &[]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"challenge": "ch-1"})));
    let sealed = json!({"encrypt": Cipher::new(KEY).encrypt(challenge.to_string().as_bytes())});
    let (status, body) = lark.post(&enc, sealed.to_string().into_bytes(), &[]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"challenge": "ch-1"})));
    let wrong = json!({"challenge": "ch-1", "token": "nope", "type": "url_verification"});
    let (status, body) = lark.post(&plain, wrong.to_string().into_bytes(), &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &plain).await, "bad_token");

    // Every event type, encrypted and signed: accepted; with a wrong signature or key: refused.
    let disbanded = envelope(
        "ev-disband",
        "im.chat.disbanded_v1",
        TOKEN,
        json!({"chat_id": "oc_ops", "operator_id": {"open_id": "ou_alice"}, "external": false, "name": "ops"}),
    );
    let unknown = envelope(
        "ev-unknown",
        "contact.user.created_v3",
        TOKEN,
        json!({"object": {}}),
    );
    for payload in [message("ev-msg", "om_1"), disbanded.clone(), unknown] {
        let (status, body) = lark.encrypted(&enc, KEY, &payload).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"msg": "success"})),
            "{payload}"
        );
    }
    // Encrypted and signed with another key: refused by the signature, never decrypted.
    let (status, body) = lark.encrypted(&enc, "wrong key", &message("ev-x", "om_x")).await;
    assert_eq!((status, body["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &enc).await, "bad_signature");
    let mut tampered = message("ev-y", "om_y");
    tampered["header"]["token"] = json!("wrong token");
    let (status, body) = lark.encrypted(&enc, KEY, &tampered).await;
    assert_eq!((status, body["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &enc).await, "bad_token");
    let body = serde_json::to_vec(
        &json!({"encrypt": Cipher::new(KEY).encrypt(message("ev-z", "om_z").to_string().as_bytes())}),
    )
    .unwrap();
    let ts = now();
    let (status, err) = lark
        .post(
            &enc,
            body.clone(),
            &[
                ("x-lark-request-timestamp", ts.clone()),
                ("x-lark-request-nonce", "n".into()),
                ("x-lark-signature", event_signature(&ts, "n", "other key", &body)),
            ],
        )
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &enc).await, "bad_signature");
    let (status, err) = lark.post(&enc, body, &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &enc).await, "missing_signature");
    // A captured request replayed after the dedup window is refused.
    let old = (chrono::Utc::now().timestamp() - 25 * 3600).to_string();
    let (status, err) = lark
        .encrypted_at(&enc, KEY, &message("ev-old", "om_old"), &old)
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &enc).await, "stale_timestamp");

    // Token-only integration: schema 2.0 and 1.0 events, checked by their token.
    let (status, _) = lark
        .post(&plain, message("ev-p1", "om_p1").to_string().into_bytes(), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let v1_event = json!({"ts": "1700000000.000", "uuid": "uuid-1", "token": TOKEN, "type": "event_callback", "event": {"type": "message_read", "app_id": "cli_plain1"}});
    let (status, _) = lark.post(&plain, v1_event.to_string().into_bytes(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let mut v1_wrong = v1_event.clone();
    v1_wrong["token"] = json!("nope");
    v1_wrong["uuid"] = json!("uuid-2");
    let (status, body) = lark.post(&plain, v1_wrong.to_string().into_bytes(), &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), REFUSED);

    // card.action.trigger, encrypted and signed: 200 with a JSON body.
    let (status, body) = lark.encrypted(&enc, KEY, &card_v2("card-ev-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_object(), "{body}");
    let (status, body) = lark.encrypted(&enc, "wrong key", &card_v2("card-ev-2")).await;
    assert_eq!((status, body["error"]["code"].as_str()), REFUSED);

    // card.action.trigger_v1: SHA-1 over the Verification Token.
    let v1 = json!({"open_id": "ou_alice", "tenant_key": "tenant-1", "open_message_id": "om_card", "open_chat_id": "oc_ops",
                    "token": "c-update", "action": {"tag": "button", "value": {"action": "ack"}}})
    .to_string();
    let ts = now();
    let sign = |token: &str| card_v1_signature(&ts, "nonce-v1", token, v1.as_bytes());
    let (status, _) = lark
        .post(
            &plain,
            v1.clone().into_bytes(),
            &[
                ("x-lark-request-timestamp", ts.clone()),
                ("x-lark-request-nonce", "nonce-v1".into()),
                ("x-lark-signature", sign(TOKEN)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = lark
        .post(
            &plain,
            v1.clone().into_bytes(),
            &[
                ("x-lark-request-timestamp", ts.clone()),
                ("x-lark-request-nonce", "nonce-v1b".into()),
                ("x-lark-signature", sign("wrong")),
            ],
        )
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
    assert_eq!(last_reason(&server, &api, &plain).await, "bad_signature");

    // Malformed input: the same refusal, the reason in the stats; oversized: 413.
    for (body, reason) in [
        (b"{not json".to_vec(), "malformed_json"),
        (br#"{"encrypt": "%%%not base64"}"#.to_vec(), "bad_base64"),
        (br#"{"encrypt": "AAAA"}"#.to_vec(), "bad_ciphertext_length"),
        (br#"[1, 2, 3]"#.to_vec(), "unknown_shape"),
    ] {
        let (status, err) = lark.post(&enc, body, &[]).await;
        assert_eq!((status, err["error"]["code"].as_str()), REFUSED);
        assert_eq!(last_reason(&server, &api, &enc).await, reason);
    }
    let (status, err) = lark.post(&plain, vec![b' '; 5000], &[]).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );

    // The disbanded chat is recorded as such (handled after the response, so poll briefly).
    let mut disbanded = false;
    for _ in 0..100 {
        let chats: Value = client()
            .get(format!("{}/api/v1/integrations/{enc}/chats", server.admin))
            .bearer_auth(&api)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        disbanded = chats["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["chat_id"] == "oc_ops" && c["status"] == "disbanded");
        if disbanded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(disbanded, "im.chat.disbanded_v1 did not mark oc_ops disbanded");

    // The admin API shows what Lark sent and the last refusal, without reading logs.
    let s = stats(&server, &api, &enc).await;
    assert_eq!(s["events_by_type"]["im.message.receive_v1"], 1, "{s}");
    assert_eq!(s["events_by_type"]["im.chat.disbanded_v1"], 1, "{s}");
    assert_eq!(s["events_by_type"]["contact.user.created_v3"], 1, "{s}");
    // Messages go to the bot commands and disbanded chats to the chat list: only the contact
    // event has no handler.
    assert_eq!(s["unhandled_events"], 1, "{s}");
    assert_eq!(s["card_actions"], 1, "{s}");
    assert_eq!(s["challenges"], 1, "{s}");
    assert!(s["rejected"].as_u64().unwrap() >= 8, "{s}");
    assert_eq!(s["last_error"]["reason"], "unknown_shape", "{s}");
    let log = server.log_text();
    assert!(log.contains("Lark callback refused") && log.contains(&enc));
    for secret in [APP_SECRET, TOKEN, KEY] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn redeliveries_are_dropped_also_after_a_restart() {
    let inst = Instance::new("");
    let api = inst.offline_token();
    let server = inst.serve();
    let (_, enc) = create(
        &server,
        &api,
        json!({"name": "Encrypted", "app_id": "cli_enc1", "app_secret": APP_SECRET, "verification_token": TOKEN, "encrypt_key": KEY}),
    )
    .await;
    let id = enc["id"].as_str().unwrap().to_string();
    let lark = Lark {
        http: client(),
        base: server.base.clone(),
    };

    // The same event three times, and the same message under a new event id (WS backfill).
    for _ in 0..3 {
        let (status, _) = lark.encrypted(&id, KEY, &message("ev-1", "om_1")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = lark.encrypted(&id, KEY, &message("ev-1-backfill", "om_1")).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..2 {
        let (status, _) = lark.encrypted(&id, KEY, &card_v2("card-1")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let s = stats(&server, &api, &id).await;
    assert_eq!(
        (s["accepted"].as_u64(), s["duplicates"].as_u64()),
        (Some(2), Some(4)),
        "{s}"
    );
    assert_eq!(s["events_by_type"]["im.message.receive_v1"], 1, "{s}");

    // Concurrent redeliveries: exactly one passes.
    let sends = (0..8).map(|_| {
        let lark = Lark {
            http: client(),
            base: server.base.clone(),
        };
        let id = id.clone();
        tokio::spawn(async move { lark.encrypted(&id, KEY, &message("ev-burst", "om_burst")).await.0 })
    });
    for s in sends {
        assert_eq!(s.await.unwrap(), StatusCode::OK);
    }
    let s = stats(&server, &api, &id).await;
    assert_eq!(
        (s["accepted"].as_u64(), s["duplicates"].as_u64()),
        (Some(3), Some(11)),
        "{s}"
    );

    // After a restart the seen-set is still there.
    server.stop();
    let server = inst.serve();
    let lark = Lark {
        http: client(),
        base: server.base.clone(),
    };
    let (status, _) = lark.encrypted(&id, KEY, &message("ev-1", "om_1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = lark.encrypted(&id, KEY, &message("ev-2", "om_2")).await;
    assert_eq!(status, StatusCode::OK);
    // Card deliveries have a seen-set of their own (a journal beside the state file).
    let (status, _) = lark.encrypted(&id, KEY, &card_v2("card-1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = lark.encrypted(&id, KEY, &card_v2("card-2")).await;
    assert_eq!(status, StatusCode::OK);
    let s = stats(&server, &api, &id).await;
    assert_eq!(
        (s["accepted"].as_u64(), s["duplicates"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );

    // The prune job is scheduled and keeps entries younger than the time-to-live.
    let res = client()
        .post(format!("{}/api/v1/scheduler/dedup_prune/run", server.admin))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let job: Value = res.json().await.unwrap();
    assert_eq!(
        job["last_outcome"], "ok: 0 expired dedup entries removed",
        "{job}"
    );
    let (status, _) = lark.encrypted(&id, KEY, &message("ev-2", "om_2")).await;
    assert_eq!(status, StatusCode::OK);
    let s = stats(&server, &api, &id).await;
    assert_eq!(s["duplicates"], 3, "{s}");
}
