//! Issue 12, what a credential reaches: one test per point, each over real HTTP against the
//! running service (`serve` as a process, or the appliance in-process beside the Lark simulator
//! where cards and bot messages are involved).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::inprocess::{Harness, call as send};
use common::{Instance, Server, client};
use lark_oncall::sim::CardCallbackVersion;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP server that answers every request with `response` and counts requests.
async fn canned(response: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                read_request(&mut socket).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (base, hits)
}

/// Reads one request's head and its Content-Length body.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

fn answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or_default().to_string()
}

/// Replaces `from` by `to` in the instance's config file (the service reads it at start).
fn edit_config(inst: &Instance, from: &str, to: &str) {
    let text = std::fs::read_to_string(&inst.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&inst.config, text.replace(from, to)).unwrap();
}

/// Logs in as admin with `password`; returns (cookie, csrf token).
async fn login(http: &reqwest::Client, server: &Server, password: &str) -> (String, String) {
    let res = http
        .post(format!("{}/api/v1/session", server.admin))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    (cookie, csrf)
}

const INTEGRATION: &str = r#"{"name": "Ops", "app_id": "cli_sec0001", "app_secret": "the-app-secret",
                              "verification_token": "vt"}"#;

#[tokio::test]
async fn point6_the_app_secret_goes_only_where_the_config_allows_and_nothing_comes_back() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let url = |p: &str| format!("{}{p}", server.admin);

    // A "metadata service" the attacker wants reached, and a redirect pointing at it.
    let (metadata, metadata_hits) = canned(answer("200 OK", "text/plain", "instance-role-credentials")).await;
    let (redirector, _) = canned(format!(
        "HTTP/1.1 302 Found\r\nlocation: {metadata}/latest/meta-data\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    let (_, created) = send(
        &http,
        Method::POST,
        url("/api/v1/integrations"),
        &token,
        serde_json::from_str(INTEGRATION).unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let integration = url(&format!("/api/v1/integrations/{id}"));

    // Moving the integration to another host or domain without its App Secret is refused.
    for change in [json!({"api_base_url": redirector}), json!({"domain": "lark"})] {
        let (status, body) = send(&http, Method::PATCH, integration.clone(), &token, change).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message(&body).starts_with("app_secret:"), "{body}");
    }
    // With the secret, the override is allowed here (this config switches it on) …
    let (status, body) = send(
        &http,
        Method::PATCH,
        integration.clone(),
        &token,
        json!({"api_base_url": redirector, "app_secret": "the-app-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // … but a redirect is not followed.
    let (status, body) = send(
        &http,
        Method::POST,
        format!("{integration}/check"),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        metadata_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );

    // What a non-Lark host answers stays in the log, not in the API answer.
    let (status, _) = send(
        &http,
        Method::PATCH,
        integration.clone(),
        &token,
        json!({"api_base_url": metadata, "app_secret": "the-app-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        &http,
        Method::POST,
        format!("{integration}/check"),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(!body.to_string().contains("instance-role-credentials"), "{body}");
    assert_eq!(metadata_hits.load(Ordering::SeqCst), 1);
    assert!(server.log_text().contains("instance-role-credentials"));
    drop(server);

    // Without lark.allow_api_base_url_override, no override can be set.
    edit_config(
        &inst,
        "allow_api_base_url_override = true",
        "allow_api_base_url_override = false",
    );
    let server = inst.serve();
    let (status, body) = send(
        &http,
        Method::PATCH,
        format!("{}/api/v1/integrations/{id}", server.admin),
        &token,
        json!({"api_base_url": "https://attacker.example", "app_secret": "the-app-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).starts_with("api_base_url:"), "{body}");
    assert!(
        message(&body).contains("lark.allow_api_base_url_override"),
        "{body}"
    );
}

#[tokio::test]
async fn point7_tokens_have_scopes_expiry_and_last_use_and_password_changes_end_sessions() {
    let inst = Instance::new("");
    let admin = inst.offline_token();
    // A metrics token, a token as stored before scopes existed, an expired token and an expired
    // session, written while the service is down.
    let out = inst.cli(&["admin", "create-token", "prometheus", "--scope", "metrics"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let store = lark_oncall::store::Store::open(&inst.state_path()).unwrap();
    let (mut stale, expired) =
        lark_oncall::auth::new_token("old", lark_oncall::auth::Scope::Admin, Some(1)).unwrap();
    stale.expires_at = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
    let session = lark_oncall::auth::Session {
        username: "admin".into(),
        secret_hash: "0".repeat(64),
        csrf_token: "c".into(),
        created_at: chrono::Utc::now() - chrono::Duration::hours(13),
        expires_at: chrono::Utc::now() - chrono::Duration::hours(1),
    };
    let legacy_secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let legacy = json!({"id": "01dfeeab3c2d", "name": "from-last-year", "created_at": "2026-01-01T00:00:00Z",
                        "last_used_at": null,
                        "secret_hash": lark_oncall::ids::sha256_hex(legacy_secret.as_bytes())});
    let legacy_token = format!("lko_01dfeeab3c2d_{legacy_secret}");
    // The same table, read as plain JSON rows: the stored form has no `scope`.
    const RAW_TOKENS: lark_oncall::store::Table<String, Value> =
        lark_oncall::store::Table::new("api_tokens_v1");
    store
        .write_blocking(move |w| {
            w.put(&RAW_TOKENS, "01dfeeab3c2d", &legacy)?;
            w.put(&lark_oncall::auth::tables::API_TOKENS, stale.id.as_str(), &stale)?;
            w.put(&lark_oncall::auth::tables::SESSIONS, "expiredsession", &session)
        })
        .unwrap();
    store.close();

    let server = inst.serve();
    let http = client();
    let url = |p: &str| format!("{}{p}", server.admin);
    let status_of = |method: Method, path: &str, token: &str, body: Value| {
        let (http, url, token) = (http.clone(), url(path), token.to_string());
        async move { send(&http, method, url, &token, body).await }
    };

    // A new token is read-only unless asked otherwise.
    let (status, read) = status_of(
        Method::POST,
        "/api/v1/tokens",
        &admin,
        json!({"name": "dashboards"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{read}");
    assert_eq!(read["scope"], "read");
    let read_token = read["token"].as_str().unwrap().to_string();
    let (status, body) = status_of(
        Method::POST,
        "/api/v1/tokens",
        &admin,
        json!({"name": "x", "expires_in_days": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).starts_with("expires_in_days:"), "{body}");
    let (status, body) = status_of(
        Method::POST,
        "/api/v1/tokens",
        &admin,
        json!({"name": "x", "scope": "root"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).starts_with("scope:"), "{body}");

    // metrics reaches /metrics only; read reaches GETs; neither changes anything.
    assert_eq!(
        status_of(Method::GET, "/metrics", &metrics, Value::Null).await.0,
        StatusCode::OK
    );
    let (status, body) = status_of(Method::GET, "/api/v1/tokens", &metrics, Value::Null).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope"))
    );
    assert_eq!(
        status_of(Method::GET, "/api/v1/tokens", &read_token, Value::Null)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status_of(Method::GET, "/metrics", &read_token, Value::Null)
            .await
            .0,
        StatusCode::OK
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "escalate", "scope": "admin"}),
        ),
        (
            Method::PUT,
            "/api/v1/account/password",
            json!({"password": "a brand new passphrase"}),
        ),
        (Method::POST, "/api/v1/backup", Value::Null),
    ] {
        for token in [&metrics, &read_token] {
            let (status, _) = status_of(method.clone(), path, token, body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    // A token from before scopes was a full admin and still is.
    let (status, listed) = status_of(Method::GET, "/api/v1/tokens", &legacy_token, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let old = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "from-last-year")
        .cloned();
    assert_eq!(old.unwrap()["scope"], "admin");
    let (status, _) = status_of(
        Method::POST,
        "/api/v1/tokens",
        &legacy_token,
        json!({"name": "minted"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // An expired token is refused.
    assert_eq!(
        status_of(Method::GET, "/api/v1/version", &expired, Value::Null)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Use is recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = status_of(Method::GET, "/api/v1/tokens", &admin, Value::Null).await;
        let items = list["items"].as_array().unwrap();
        let dashboards = items.iter().find(|t| t["name"] == "dashboards").unwrap();
        if !dashboards["last_used_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "last_used_at never set: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Expired sessions are pruned by a scheduled job.
    let (status, job) = status_of(
        Method::POST,
        "/api/v1/scheduler/session_prune/run",
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert!(
        job["last_outcome"]
            .as_str()
            .unwrap()
            .starts_with("ok: 1 expired sessions removed"),
        "{job}"
    );

    // A password change from a session needs the current password and ends the other sessions.
    let password = server.initial_password();
    let (cookie, csrf) = login(&http, &server, &password).await;
    let (other, _) = login(&http, &server, &password).await;
    let change = |body: Value| {
        http.put(url("/api/v1/account/password"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
    };
    let res = change(json!({"password": "a brand new passphrase"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(message(&res.json().await.unwrap()).starts_with("current_password:"));
    let res = change(json!({"password": "a brand new passphrase", "current_password": "not it at all"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = change(json!({"password": "a brand new passphrase", "current_password": password}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let whoami = |cookie: String| {
        let http = http.clone();
        let url = url("/api/v1/session");
        async move {
            http.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        whoami(cookie.clone()).await,
        StatusCode::OK,
        "the changing session stays"
    );
    assert_eq!(
        whoami(other).await,
        StatusCode::UNAUTHORIZED,
        "other sessions end"
    );
}

/// One login attempt as `client` (named in X-Forwarded-For).
async fn guess(http: &reqwest::Client, server: &Server, client: &str, password: &str) -> reqwest::Response {
    http.post(format!("{}/api/v1/session", server.admin))
        .header("x-forwarded-for", client)
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn point8_login_throttling_bounds_guessing_without_locking_the_admin_out() {
    let http = client();
    // Behind a trusted proxy, each client is throttled by its own address.
    let inst = Instance::new("trusted_proxies = [\"127.0.0.1/32\"]");
    let server = inst.serve();
    let password = server.initial_password();
    for _ in 0..10 {
        let res = guess(&http, &server, "198.51.100.7", "wrong password!").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = guess(&http, &server, "198.51.100.7", &password).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The admin elsewhere is not locked out by that.
    assert_eq!(
        guess(&http, &server, "203.0.113.5", &password).await.status(),
        StatusCode::OK
    );
    // IPv6 clients are one client per /64.
    for i in 0..10 {
        let res = guess(
            &http,
            &server,
            &format!("2001:db8::{}", i % 2 + 1),
            "wrong password!",
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        guess(&http, &server, "2001:db8::99", "wrong password!")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        guess(&http, &server, "2001:db8:0:1::1", &password).await.status(),
        StatusCode::OK
    );
    drop(server);

    // From a peer that is not a trusted proxy, X-Forwarded-For buys no new attempts.
    let inst = Instance::new("");
    let server = inst.serve();
    for i in 0..10 {
        let res = guess(&http, &server, &format!("192.0.2.{i}"), "wrong password!").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        guess(&http, &server, "192.0.2.200", "wrong password!")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn point9_webhook_urls_are_redacted_and_internal_targets_can_be_refused() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let (receiver, hits) = canned(answer("200 OK", "application/json", "{}")).await;
    let with_secrets = receiver.replace("http://", "http://hookuser:hookpass@") + "/hook?token=querysecret";
    let (status, created) = send(
        &http,
        Method::POST,
        format!("{}/api/v1/webhooks", server.admin),
        &token,
        json!({"name": "ops", "url": with_secrets}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (_, listed) = send(
        &http,
        Method::GET,
        format!("{}/api/v1/webhooks", server.admin),
        &token,
        Value::Null,
    )
    .await;
    let (_, one) = send(
        &http,
        Method::GET,
        format!("{}/api/v1/webhooks/{id}", server.admin),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(
        one["url"],
        format!("{}/hook?***", receiver.replace("http://", "http://***@"))
    );
    let incident = |title: &str| json!({"title": title, "severity": "info"});
    let (status, _) = send(
        &http,
        Method::POST,
        format!("{}/api/v1/incidents", server.admin),
        &token,
        incident("one"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(15);
    let oplog = loop {
        let (_, oplog) = send(
            &http,
            Method::GET,
            format!("{}/api/v1/oplog", server.admin),
            &token,
            Value::Null,
        )
        .await;
        if oplog["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "delivered")
        {
            break oplog;
        }
        assert!(Instant::now() < deadline, "no delivery: {oplog}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    for shown in [
        created.to_string(),
        listed.to_string(),
        one.to_string(),
        oplog.to_string(),
        server.log_text(),
    ] {
        assert!(
            !shown.contains("hookpass") && !shown.contains("querysecret"),
            "{shown}"
        );
    }
    drop(server);

    // With webhooks.allow_private_targets = false: refused when saved, and at send time.
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        format!("{text}[webhooks]\nallow_private_targets = false\n"),
    )
    .unwrap();
    let server = inst.serve();
    for target in [
        "http://127.0.0.1:9/x",
        "http://[::1]:9/x",
        "http://169.254.169.254/latest",
        "http://localhost:9/",
    ] {
        let (status, body) = send(
            &http,
            Method::POST,
            format!("{}/api/v1/webhooks", server.admin),
            &token,
            json!({"name": "internal", "url": target}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}: {body}");
        assert!(message(&body).starts_with("url:"), "{body}");
    }
    let (status, _) = send(
        &http,
        Method::POST,
        format!("{}/api/v1/incidents", server.admin),
        &token,
        incident("two"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, oplog) = send(
            &http,
            Method::GET,
            format!("{}/api/v1/oplog", server.admin),
            &token,
            Value::Null,
        )
        .await;
        let refused = oplog["items"].as_array().unwrap().iter().any(|e| {
            e["outcome"] == "failed"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("internal addresses"))
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the send to an internal target was not refused: {oplog}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "nothing reached the internal receiver"
    );
}

const APP_ID: &str = "cli_securitytest01";
const APP_SECRET: &str = "security-test-secret";

#[tokio::test]
async fn point10_alert_text_cannot_mention_link_or_break_out_of_a_card() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice]}])).await;
    let source = env.create("/api/v1/sources", json!({"name": "prometheus"})).await;
    let key = source["integration_key"].as_str().unwrap();
    let res = env
        .http
        .post(format!(
            "{}/api/v1/alerts/standard?integration_key={key}",
            env.admin
        ))
        .json(&json!({
            "title_rule": "Disk full", "event_status": "Critical", "alert_key": "disk",
            "description": "[Log in to fix](http://evil.example/login) <at id=all></at> ``` x",
            "labels": {"team": "<at id=all></at>", "cmd": "`rm -rf /`", "url": "http://evil.example"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    env.app().incidents.tick().await.unwrap();
    let alice_id = env.open_id("alice@example.com");
    env.wait_for("the card", |e| e.cards_to(&alice_id).len() == 1)
        .await;
    let content = env.cards_to(&alice_id)[0].content.clone();
    for planted in ["<at", "](http", "`", "http://evil"] {
        assert!(
            !content.contains(planted),
            "{planted:?} reached the card: {content}"
        );
    }
    assert!(
        content.contains("Log in to fix"),
        "the text is still shown: {content}"
    );
    env.stop().await;
}

#[tokio::test]
async fn point11_every_ingest_path_has_the_same_field_limits() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let (_, source) = send(
        &http,
        Method::POST,
        format!("{}/api/v1/sources", server.admin),
        &token,
        json!({"name": "am"}),
    )
    .await;
    let key = source["integration_key"].as_str().unwrap().to_string();
    let alertmanager = |summary: String, labels: Value| {
        json!({"version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": "firing",
               "commonLabels": labels, "commonAnnotations": {"summary": summary},
               "alerts": [{"status": "firing", "labels": {}, "annotations": {}}]})
    };
    let many: serde_json::Map<String, Value> = (0..2000).map(|i| (format!("l{i}"), json!("v"))).collect();
    for (body, field) in [
        (
            alertmanager("x".repeat(300_000), json!({})),
            "commonAnnotations.summary",
        ),
        (alertmanager("ok".into(), Value::Object(many)), "commonLabels"),
    ] {
        let res = http
            .post(format!("{}/api/v1/alerts/alertmanager", server.admin))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: Value = res.json().await.unwrap();
        assert!(message(&body).starts_with(field), "{body}");
    }
    let (status, body) = send(
        &http,
        Method::POST,
        format!("{}/api/v1/incidents", server.admin),
        &token,
        json!({"title": "t".repeat(513), "severity": "info"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).starts_with("title:"), "{body}");
    let (_, list) = send(
        &http,
        Method::GET,
        format!("{}/api/v1/incidents", server.admin),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn point13_login_takes_json_only_and_cookie_requests_must_be_same_origin() {
    let inst = Instance::new("");
    let server = inst.serve();
    let password = server.initial_password();
    let http = client();
    let body = json!({"username": "admin", "password": password}).to_string();
    let post = |content_type: &'static str, headers: Vec<(&'static str, String)>| {
        let mut req = http
            .post(format!("{}/api/v1/session", server.admin))
            .header("content-type", content_type)
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    // A cross-site form can post text/plain, never application/json without a preflight.
    let res = post("text/plain", vec![]).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for header in [
        ("origin", "https://evil.example".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
    ] {
        let res = post("application/json", vec![header.clone()]).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{header:?}");
    }
    let res = post(
        "application/json",
        vec![
            ("origin", server.admin.clone()),
            ("sec-fetch-site", "same-origin".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // A cookie-authenticated change from another origin is refused even with the CSRF token.
    let (cookie, csrf) = login(&http, &server, &password).await;
    let create = |origin: &str| {
        http.post(format!("{}/api/v1/tokens", server.admin))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
            .json(&json!({"name": "from-the-ui"}))
            .send()
    };
    let res = create("https://evil.example").await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "cross_origin"
    );
    assert_eq!(create(&server.admin).await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn point14_the_cookie_is_secure_when_the_public_url_is_https() {
    let inst = Instance::new("");
    let http = client();
    let set_cookie = |server: &Server, password: String| {
        let (http, url) = (http.clone(), format!("{}/api/v1/session", server.admin));
        async move {
            let res = http
                .post(url)
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .unwrap();
            res.headers()["set-cookie"].to_str().unwrap().to_string()
        }
    };
    // No in-process TLS: a TLS-terminating proxy serves https://oncall.example.com.
    let server = inst.serve();
    let password = server.initial_password();
    assert!(set_cookie(&server, password.clone()).await.contains("; Secure"));
    drop(server);
    edit_config(&inst, "https://oncall.example.com", "http://oncall.example.com");
    let server = inst.serve();
    assert!(!set_cookie(&server, password).await.contains("Secure"));
}

#[tokio::test]
async fn point15_bot_replies_are_info_level_and_rate_limited_per_sender() {
    // Info-level sends wait whenever any quota is used, so a held reply proves its priority (a
    // critical reply to a person would go out).
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .tune(|s| s.delivery.degradation.info_below_pct = 100)
        .start()
        .await;
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/integrations/{}/check", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (alice, bob) = (env.open_id("alice@example.com"), env.open_id("bob@example.com"));
    for _ in 0..lark_oncall::incident::actions::REPLY_BURST + 2 {
        env.sim.send_text(&alice, None, "help", false).await.unwrap();
    }
    env.sim.send_text(&bob, None, "help", false).await.unwrap();
    let expected = lark_oncall::incident::actions::REPLY_BURST as usize + 1;
    let deadline = Instant::now() + Duration::from_secs(15);
    while held_jobs(&env).await < expected {
        assert!(Instant::now() < deadline, "replies were not queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        held_jobs(&env).await,
        expected,
        "alice's replies past the burst were dropped, bob's was not"
    );
    let replies = env
        .sim
        .messages()
        .into_iter()
        .filter(|m| matches!(m.sender, lark_oncall::sim::MessageSender::App { .. }))
        .count();
    assert_eq!(replies, 0, "info-level replies wait while the quota is reserved");
    env.stop().await;
}

/// How many outbox jobs are held.
async fn held_jobs(env: &Harness) -> usize {
    let (status, jobs) = env.api(Method::GET, "/api/v1/jobs?state=held", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    jobs["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn point16_whitespace_and_common_passwords_are_refused() {
    let inst = Instance::new("");
    let out = inst.cli_with_stdin(&["admin", "set-password"], "            \n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("whitespace"));
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let url = format!("{}/api/v1/account/password", server.admin);
    for (password, why) in [
        ("            ", "whitespace"),
        ("Password1234", "common"),
        ("qwerty123456", "common"),
    ] {
        let (status, body) = send(
            &http,
            Method::PUT,
            url.clone(),
            &token,
            json!({"password": password}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{password:?}");
        assert!(
            message(&body).starts_with("password:") && message(&body).contains(why),
            "{body}"
        );
    }
    let (status, _) = send(
        &http,
        Method::PUT,
        url,
        &token,
        json!({"password": "seven wombats juggling"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
