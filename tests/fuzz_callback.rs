//! Structure-aware fuzzing of the callback parser for a bounded time (`CALLBACK_FUZZ_SECONDS`,
//! 5 s by default; `.ci/run` gives it 60): valid Lark requests of every kind, mutated before
//! and after encryption, signed correctly, wrongly or not at all, must never panic, and a
//! request signed with the wrong secret is never accepted.

use std::time::{Duration, Instant};

use lark_oncall::lark::callback::{CallbackSecrets, SignatureHeaders, parse};
use lark_oncall::lark::crypto::{Cipher, card_v1_signature, event_signature};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

const TOKEN: &str = "fuzz-verification-token";
const KEY: &str = "fuzz-encrypt-key";
const NOW: i64 = 1_800_000_000;

fn seeds() -> Vec<Vec<u8>> {
    [
        json!({"schema":"2.0","header":{"event_id":"e1","event_type":"im.message.receive_v1","token":TOKEN},
               "event":{"sender":{"sender_id":{"open_id":"ou_1"},"sender_type":"user"},
                        "message":{"message_id":"om_1","chat_id":"oc_1","chat_type":"p2p","message_type":"text","content":"{\"text\":\"ack 1\"}"}}}),
        json!({"schema":"2.0","header":{"event_id":"e2","event_type":"card.action.trigger","token":TOKEN},
               "event":{"operator":{"open_id":"ou_1"},"token":"c-1","action":{"tag":"button","value":{"action":"ack","incident":"1"}},
                        "context":{"open_message_id":"om_1","open_chat_id":"oc_1"}}}),
        json!({"open_id":"ou_1","open_message_id":"om_1","open_chat_id":"oc_1","token":"c-1","action":{"tag":"button","value":{"a":1}}}),
        json!({"uuid":"u1","token":TOKEN,"type":"event_callback","event":{"type":"message_read"}}),
        json!({"challenge":"c","token":TOKEN,"type":"url_verification"}),
        json!({"schema":"2.0","header":{"event_id":"e3","event_type":"im.chat.disbanded_v1","token":TOKEN},"event":{"chat_id":"oc_1"}}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

#[derive(Debug, Clone)]
enum Signing {
    EncryptKey,
    Token,
    WrongKey,
    Missing,
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

#[test]
fn the_callback_parser_survives_mutated_requests() {
    let budget = Duration::from_secs(
        std::env::var("CALLBACK_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let cipher = Cipher::new(KEY);
    let seeds = seeds();
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6);
    let strategy = (
        0..seeds.len(),
        edits.clone(),
        edits,
        any::<bool>(),
        prop_oneof![
            Just(Signing::EncryptKey),
            Just(Signing::Token),
            Just(Signing::WrongKey),
            Just(Signing::Missing)
        ],
        -1_000_000i64..1_000_000,
        any::<bool>(),
    );
    let started = Instant::now();
    let mut cases = 0u64;
    while started.elapsed() < budget {
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(
                &strategy,
                |(seed, plain_edits, outer_edits, encrypted, signing, skew, allow_v1)| {
                    let plain = mutate(seeds[seed].clone(), &plain_edits);
                    let body = if encrypted {
                        serde_json::to_vec(&json!({"encrypt": cipher.encrypt(&plain)})).unwrap()
                    } else {
                        plain
                    };
                    // Mutations after signing break the signature; before it, they reach the parser.
                    let body = if outer_edits.len() % 2 == 0 {
                        body
                    } else {
                        mutate(body, &outer_edits)
                    };
                    let ts = (NOW + skew).to_string();
                    let signature = match signing {
                        Signing::EncryptKey => Some(event_signature(&ts, "n", KEY, &body)),
                        Signing::Token => Some(card_v1_signature(&ts, "n", TOKEN, &body)),
                        Signing::WrongKey => Some(event_signature(&ts, "n", "not the key", &body)),
                        Signing::Missing => None,
                    };
                    let headers = SignatureHeaders {
                        timestamp: Some(ts),
                        nonce: Some("n".into()),
                        signature,
                    };
                    let keyed = CallbackSecrets {
                        verification_token: TOKEN,
                        encrypt: Some((KEY, &cipher)),
                        allow_card_v1_token_signature: allow_v1,
                    };
                    let result = parse(&keyed, &headers, &body, NOW, 24 * 3600);
                    if matches!(signing, Signing::WrongKey) {
                        // A wrong signature is refused before the body is even opened.
                        prop_assert!(result.is_err(), "accepted with a wrong signature: {result:?}");
                    }
                    let token_only = CallbackSecrets {
                        verification_token: TOKEN,
                        encrypt: None,
                        allow_card_v1_token_signature: false,
                    };
                    let _ = parse(&token_only, &headers, &body, NOW, 24 * 3600);
                    Ok(())
                },
            )
            .unwrap();
        cases += 512;
    }
    eprintln!("{cases} mutated callback requests in {:?}", started.elapsed());
}
