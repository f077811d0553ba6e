//! The callback reading's unit tests: the SDKs' vectors, every refusal, and random bodies.

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

/// The typed reading of a card action gives what the tree reading gives, and leaves to it
/// every body it does not fit.
#[test]
fn the_typed_card_reading_agrees_with_the_tree_reading() {
    let head =
        r#""schema":"2.0","header":{"event_id":"c-ev","event_type":"card.action.trigger","token":"tok"}"#;
    let fits = [
        r#"{"operator":{"open_id":"ou_9","user_id":"u9","union_id":"on_1"},"token":"c-tok","action":{"tag":"button","value":{"k":"ack"}},"context":{"open_message_id":"om_7","open_chat_id":"oc_7"}}"#,
        r#"{"operator":{"open_id":""},"action":{"tag":"select_static","option":"o1","form_value":null,"value":null}}"#,
        r#"{"action":{"form_value":{"f":1}},"extra":[1,2]}"#,
    ];
    for event in fits {
        let body = format!("{{{head},\"event\":{event}}}");
        let (token, typed) = typed_card_v2(body.as_bytes()).expect(&body);
        assert_eq!(token, "tok");
        let tree: Value = serde_json::from_str(&body).unwrap();
        let expected = card_v2("c-ev".into(), &tree["event"]).unwrap();
        assert_eq!(typed, expected, "{body}");
    }
    let others = [
        format!(r#"{{{head},"type":"url_verification","event":{{"action":{{}}}}}}"#),
        format!(r#"{{{head},"event":{{"action":{{"option":7}}}}}}"#),
        format!(r#"{{{head},"event":{{"operator":"ou_1","action":{{}}}}}}"#),
        format!(r#"{{{head},"event":{{"action":{{}}}},"event":{{"action":{{}}}}}}"#),
        r#"{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1","token":"tok"},"event":{"action":{}}}"#.to_string(),
        r#"{"schema":"2.0","header":{"event_id":"","event_type":"card.action.trigger","token":"tok"},"event":{"action":{}}}"#.to_string(),
        r#"{"header":{"event_id":"e","event_type":"card.action.trigger","token":"tok"},"event":{"action":{}}}"#.to_string(),
    ];
    for body in &others {
        assert!(typed_card_v2(body.as_bytes()).is_none(), "{body}");
    }
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
    let event = json!({"schema":"2.0","header":{"event_id":"e","event_type":"x","token":TOKEN},"event":{}});
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
