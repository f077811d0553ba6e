//! The admin API's authentication, error shape and body limit, against `serve` (the OpenAPI
//! document: `tests/openapi.rs`).

mod common;

use common::{Instance, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn error_code(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.expect("JSON error body");
    (
        status,
        body["error"]["code"].as_str().expect("error.code").to_string(),
    )
}

#[tokio::test]
async fn authentication_tokens_sessions_and_csrf() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let url = |p: &str| format!("{}{p}", server.admin);

    // No credentials: 401 and no data.
    for path in ["/api/v1/version", "/api/v1/tokens", "/metrics"] {
        let (status, code) = error_code(http.get(url(path)).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{path}"
        );
    }
    // A garbage bearer token: 401.
    let res = http
        .get(url("/api/v1/version"))
        .bearer_auth("lko_nope_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The offline-created API token works.
    let res = http
        .get(url("/api/v1/version"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap()["version"],
        env!("CARGO_PKG_VERSION")
    );

    // Wrong password: 401, and the attempt is counted in the metrics.
    let res = http
        .post(url("/api/v1/session"))
        .json(&json!({"username": "admin", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let metrics = http
        .get(url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "lark_oncall_admin_login_failures_total 1"),
        "metrics:\n{metrics}"
    );
    // The start-up writes (schema, admin account, token) went through the group-commit writer.
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in metrics:\n{metrics}"))
    };
    let commits = count("lark_oncall_store_commit_seconds");
    assert!(commits >= 1, "metrics:\n{metrics}");
    assert_eq!(count("lark_oncall_store_commit_writes"), commits);

    // The right password opens a session.
    let password = server.initial_password();
    let res = http
        .post(url("/api/v1/session"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("Secure"),
        "Secure, since public_url is https even without in-process TLS: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Cookie GET works; cookie POST without the CSRF header is refused; with it, it works.
    let res = http
        .get(url("/api/v1/version"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let create = |csrf: Option<&str>| {
        let mut req = http
            .post(url("/api/v1/tokens"))
            .header("cookie", &cookie)
            .json(&json!({"name": "ci"}));
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        req.send()
    };
    let (status, code) = error_code(create(None).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "csrf_failed"));
    let (status, _) = error_code(create(Some("not-the-token")).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = create(Some(&csrf)).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let new_token = created["token"].as_str().unwrap().to_string();

    // The listing never shows secrets.
    let listing = http
        .get(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("\"ci\"") && !listing.contains(&new_token[4..]),
        "{listing}"
    );

    // The new token works until revoked, then fails.
    let ok = http
        .get(url("/api/v1/version"))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let id = created["id"].as_str().unwrap();
    let res = http
        .delete(url(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = http
        .get(url("/api/v1/version"))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Logging out ends the session.
    let res = http
        .delete(url("/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = http
        .get(url("/api/v1/version"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Neither API tokens nor session secrets reach the log.
    let log = server.log_text();
    for secret in [
        &new_token[4..],
        &token[4..],
        cookie.split('=').nth(1).unwrap(),
        csrf.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
}

#[tokio::test]
async fn set_password_works_offline_and_while_running() {
    let inst = Instance::new("");
    let http = client();
    let login = |admin: String, password: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("{admin}/api/v1/session"))
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let out = inst.cli_with_stdin(&["admin", "set-password"], "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
    let out = inst.cli_with_stdin(&["admin", "set-password"], "offline-password-1\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let server = inst.serve();
    assert_eq!(
        login(server.admin.clone(), "offline-password-1").await,
        StatusCode::OK
    );
    // While the service holds the state file, the CLI goes through its admin API.
    let out = inst.cli_with_stdin(&["admin", "set-password"], "online-password-22\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        login(server.admin.clone(), "online-password-22").await,
        StatusCode::OK
    );
    assert_eq!(
        login(server.admin.clone(), "offline-password-1").await,
        StatusCode::UNAUTHORIZED
    );
    let out = inst.cli(&["admin", "create-token", "online"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let res = http
        .get(format!("{}/api/v1/version", server.admin))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_attempts_are_throttled() {
    let inst = Instance::new("");
    let server = inst.serve();
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let res = http
            .post(format!("{}/api/v1/session", server.admin))
            .json(&json!({"username": "admin", "password": "guessing-password"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
}

#[tokio::test]
async fn errors_are_json_and_bodies_are_limited() {
    let inst = Instance::new("max_body_bytes = 2048");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let url = |p: &str| format!("{}{p}", server.admin);

    let (status, code) = error_code(http.get(url("/no/such/route")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "not_found"));

    // Over the limit, with a Content-Length and chunked without one: 413.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(4096));
    let res = http
        .post(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = http
        .post(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Bad JSON names the field.
    let res = http
        .post(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&json!({"nom": "x"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nom"),
        "{body}"
    );
    let res = http
        .post(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("name"),
        "{body}"
    );
    let res = http
        .post(url("/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field");
}

#[tokio::test]
async fn embedded_ui_is_served_with_caching_headers() {
    let inst = Instance::new("");
    let server = inst.serve();
    let http = client();
    let res = http.get(format!("{}/", server.admin)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(res.text().await.unwrap().contains("lark-oncall"));
    let res = http
        .get(format!("{}/", server.admin))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = http
        .get(format!("{}/admin/app.js", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
}

#[tokio::test]
async fn separate_admin_listener_keeps_the_admin_api_off_the_public_port() {
    let inst = Instance::new("admin_listen = \"127.0.0.1:0\"");
    let token = inst.offline_token();
    let server = inst.serve();
    assert_ne!(server.base, server.admin);
    let http = client();
    let public = http
        .get(format!("{}/api/v1/version", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let admin = http
        .get(format!("{}/api/v1/version", server.admin))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    for base in [&server.base, &server.admin] {
        let res = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}
