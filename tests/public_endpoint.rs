//! What a stranger on the internet can do to the public listener (issue 12), tried against
//! `serve` over real sockets: the callback endpoint is no padding oracle, request methods and
//! paths cannot grow metrics or logs, slow or idle clients and connection floods are bounded,
//! crafted timestamps and old-format card requests are refused, files are private, and every
//! answer carries the security headers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Instance, Server, client};
use lark_oncall::lark::crypto::{Cipher, card_v1_signature, event_signature};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "verification-token-xyz";
const KEY: &str = "encrypt-key-secret-42";

async fn create_integration(server: &Server, api: &str, app_id: &str) -> String {
    let res = client()
        .post(format!("{}/api/v1/integrations", server.admin))
        .bearer_auth(api)
        .json(
            &json!({"name": app_id, "app_id": app_id, "app_secret": "app-secret-0123456789",
                      "verification_token": TOKEN, "encrypt_key": KEY}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn integration(server: &Server, api: &str, id: &str) -> Value {
    client()
        .get(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn host(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// One raw HTTP/1.1 exchange on a fresh connection: the status line, headers (lower-cased, without
/// `date`) and body, exactly as sent.
async fn raw_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    text.split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes()
}

fn post(path: &str, addr: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn signature_headers(ts: &str, nonce: &str, signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("X-Lark-Request-Timestamp", ts.to_string()),
        ("X-Lark-Request-Nonce", nonce.to_string()),
        ("X-Lark-Signature", signature),
    ]
}

#[tokio::test]
async fn every_refused_callback_gets_the_same_bytes_signed_or_not() {
    let inst = Instance::new("");
    let api = inst.offline_token();
    let server = inst.serve();
    let id = create_integration(&server, &api, "cli_oracle1").await;
    let addr = host(&server.base);
    let cipher = Cipher::new(KEY);
    let event = json!({"schema":"2.0","header":{"event_id":"e1","event_type":"im.chat.disbanded_v1","token":TOKEN},"event":{}});
    let sealed = |blob: String| serde_json::to_vec(&json!({ "encrypt": blob })).unwrap();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "random blob",
            sealed(STANDARD.encode((0..48u8).map(|i| i.wrapping_mul(97)).collect::<Vec<_>>())),
        ),
        (
            "valid padding, garbage JSON",
            sealed(cipher.encrypt(b"this is not json at all")),
        ),
        (
            "valid padding, JSON that is no event",
            sealed(cipher.encrypt(b"[1,2,3]")),
        ),
        (
            "bad padding",
            sealed(Cipher::new("another key").encrypt(event.to_string().as_bytes())),
        ),
        ("bad base64", sealed("%%%".into())),
        ("not JSON", b"\x00\x01 random bytes".to_vec()),
        (
            "a real event",
            sealed(cipher.encrypt(event.to_string().as_bytes())),
        ),
    ];
    let ts = chrono::Utc::now().timestamp().to_string();
    let path = format!("/lark/{id}/callback");
    let mut answers = Vec::new();
    for (what, body) in &bodies {
        // Unsigned: only a url_verification would be answered.
        answers.push((
            format!("{what}, unsigned"),
            raw_exchange(&addr, &post(&path, &addr, &[], body)).await,
        ));
        // Signed with a wrong signature (the attacker has no Encrypt Key).
        let wrong = signature_headers(&ts, "n1", event_signature(&ts, "n1", "not the key", body));
        answers.push((
            format!("{what}, signed"),
            raw_exchange(&addr, &post(&path, &addr, &wrong, body)).await,
        ));
    }
    // An integration that does not exist answers the same.
    let unknown = post("/lark/int_nope/callback", &addr, &[], &bodies[0].1);
    answers.push(("unknown integration".into(), raw_exchange(&addr, &unknown).await));

    let (first_what, first) = &answers[0];
    let text = String::from_utf8_lossy(first);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains(r#""code":"callback_refused""#), "{text}");
    for (what, answer) in &answers[1..] {
        assert_eq!(
            String::from_utf8_lossy(answer),
            text,
            "{what} is answered differently from {first_what}"
        );
    }
    // The admin still learns why, from the integration's stats.
    let stats = &integration(&server, &api, &id).await["callback_stats"];
    assert_eq!(stats["rejected"], 14, "{stats}");
    assert_eq!(stats["last_error"]["reason"], "bad_signature", "{stats}");

    // A correctly signed event is still accepted, and the unsigned challenge still answered.
    let good = bodies.last().unwrap().1.clone();
    let signed = signature_headers(&ts, "n2", event_signature(&ts, "n2", KEY, &good));
    let answer = String::from_utf8(raw_exchange(&addr, &post(&path, &addr, &signed, &good)).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let challenge = json!({"challenge": "c-1", "token": TOKEN, "type": "url_verification"});
    let body = sealed(cipher.encrypt(challenge.to_string().as_bytes()));
    let answer = String::from_utf8(raw_exchange(&addr, &post(&path, &addr, &[], &body)).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(r#"{"challenge":"c-1"}"#),
        "{answer}"
    );
}

#[tokio::test]
async fn request_methods_and_paths_cannot_grow_metrics_or_logs() {
    let inst = Instance::new("");
    let api = inst.offline_token();
    let server = inst.serve();
    let addr = host(&server.base);
    for i in 0..40 {
        let answer = raw_exchange(
            &addr,
            format!("XMETHOD{i} /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 4"));
    }
    // An absurd request line is refused before any route sees it.
    let huge_method = "M".repeat(200_000);
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let _ = stream
        .write_all(format!("{huge_method} /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let long_path = format!("/{}", "p".repeat(5000));
    let answer = raw_exchange(
        &addr,
        format!("GET {long_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 404"));

    let metrics = client()
        .get(format!("{}/metrics", server.admin))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("XMETHOD"), "extension methods became labels");
    let other: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lark_oncall_http_requests_total") && l.contains(r#"method="other""#))
        .collect();
    assert_eq!(other.len(), 1, "{metrics}");
    assert!(other[0].ends_with(" 40"), "{other:?}");
    let log = server.log_text();
    assert!(!log.contains("XMETHOD") && !log.contains(&huge_method[..1000]));
    assert!(!log.contains(&long_path[..1000]), "the logged path is not capped");
    assert!(
        client()
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed_after_the_header_timeout() {
    let inst = Instance::new("");
    let server = inst.serve();
    let addr = host(&server.base);
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: 1\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "the connection was still open after 20 s");
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(12),
        "closed after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test]
async fn connections_over_the_cap_are_shed_while_open_ones_keep_working() {
    let inst = Instance::new("max_connections = 6");
    let server = inst.serve();
    let addr = host(&server.base);
    let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    first.write_all(healthz.as_bytes()).await.unwrap();
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Let the server accept the five before the one over the cap arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let _ = over.write_all(healthz.as_bytes()).await;
    let shed = tokio::time::timeout(Duration::from_secs(3), over.read(&mut buf)).await;
    assert!(
        matches!(shed, Ok(Ok(0)) | Ok(Err(_))),
        "connection 7 was served: {shed:?}"
    );
    // The connection accepted first still answers.
    first.write_all(healthz.as_bytes()).await.unwrap();
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Once the held ones go, new connections are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert!(server.log_text().contains("connection limit reached"));
}

#[tokio::test]
async fn crafted_timestamps_and_token_signed_card_requests_are_refused() {
    let inst = Instance::new("");
    let api = inst.offline_token();
    let server = inst.serve();
    let id = create_integration(&server, &api, "cli_ts1").await;
    let addr = host(&server.base);
    let path = format!("/lark/{id}/callback");
    let cipher = Cipher::new(KEY);
    let event = json!({"schema":"2.0","header":{"event_id":"e-ts","event_type":"im.chat.disbanded_v1","token":TOKEN},"event":{}});
    let body = serde_json::to_vec(&json!({"encrypt": cipher.encrypt(event.to_string().as_bytes())})).unwrap();
    let in_ten_minutes = (chrono::Utc::now().timestamp() + 600).to_string();
    for ts in [i64::MIN.to_string(), i64::MAX.to_string(), in_ten_minutes] {
        let headers = signature_headers(&ts, "n", event_signature(&ts, "n", KEY, &body));
        let answer =
            String::from_utf8(raw_exchange(&addr, &post(&path, &addr, &headers, &body)).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "timestamp {ts}: {answer}");
    }
    let stats = &integration(&server, &api, &id).await["callback_stats"];
    assert_eq!(stats["last_error"]["reason"], "stale_timestamp", "{stats}");

    // card.action.trigger_v1 in plain text, signed with the Verification Token only.
    let v1 = json!({"open_id": "ou_alice", "open_message_id": "om_card", "open_chat_id": "oc_ops",
                    "token": "c-update", "action": {"tag": "button", "value": {"action": "ack", "incident": "1"}}})
    .to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let send_v1 = |nonce: &'static str| {
        let headers = signature_headers(&ts, nonce, card_v1_signature(&ts, nonce, TOKEN, v1.as_bytes()));
        post(&path, &addr, &headers, v1.as_bytes())
    };
    let answer = String::from_utf8(raw_exchange(&addr, &send_v1("v1-a")).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let view = integration(&server, &api, &id).await;
    assert_eq!(
        view["callback_stats"]["last_error"]["reason"],
        "card_v1_token_signature_refused"
    );
    assert_eq!(view["warnings"], json!([]));

    // The admin may opt in; the integration then says what that costs.
    let res = client()
        .patch(format!("{}/api/v1/integrations/{id}", server.admin))
        .bearer_auth(&api)
        .json(&json!({"allow_card_v1_token_signature": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["allow_card_v1_token_signature"], true);
    assert!(
        view["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Verification Token"),
        "{view}"
    );
    let answer = String::from_utf8(raw_exchange(&addr, &send_v1("v1-b")).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_oversized_body_sent_in_full_still_gets_its_413() {
    let inst = Instance::new("max_body_bytes = 4096");
    let server = inst.serve();
    let addr = host(&server.base);
    // Like Python's urllib: write the whole body, then read the answer.
    let body = vec![b'x'; 6 * 1024 * 1024];
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(&post("/lark/int_x/callback", &addr, &[], &body))
        .await
        .expect("the server reads the body instead of resetting the connection");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .expect("no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test]
async fn answers_carry_the_security_headers() {
    let inst = Instance::new("");
    let server = inst.serve();
    for path in ["/healthz", "/", "/api/v1/incidents", "/lark/int_x/callback"] {
        let res = client()
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
            "{path}: {csp}"
        );
        // public_url is https in the harness, so browsers are told to stay on HTTPS.
        assert_eq!(h["strict-transport-security"], "max-age=31536000", "{path}");
    }
    // The homepage inside Lark may be framed by Lark's hosts, and only by them.
    let res = client()
        .get(format!("{}/lark/int_x/app", server.base))
        .send()
        .await
        .unwrap();
    let h = res.headers();
    assert!(h.get("x-frame-options").is_none());
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'self' https://*.feishu.cn https://*.larksuite.com"),
        "{csp}"
    );
}

#[tokio::test]
async fn the_state_file_and_backups_are_private() {
    let inst = Instance::new("");
    let server = inst.serve();
    server.stop();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&inst.state_path()), 0o600);
    let out = inst.dir.path().join("backup.redb");
    let done = inst.cli(&["backup", "--out", out.to_str().unwrap()]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(mode(&out), 0o600);
}

#[tokio::test]
async fn over_tls_an_unfinished_request_head_is_closed_too() {
    common::install_crypto_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let inst = Instance::new(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    let server = inst.serve();
    let addr = server.base.trim_start_matches("https://").to_string();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "the TLS connection was still open after 20 s");
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(12),
        "closed after {waited:?}"
    );
}
