//! `serve` as an operator sees it: HTTPS with certificate reload on SIGHUP, config errors that
//! name the key, draining on SIGTERM, crash safety under kill -9, and backup/restore under load.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Instance, client, install_crypto_provider};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn write_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.pem())
}

fn trusting(pem: &str) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_and_certificate_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first_pem) = write_cert(dir.path(), "first");
    let inst = Instance::new(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    let server = inst.serve();
    assert!(server.base.starts_with("https://"));
    let url = format!("{}/healthz", server.base.replace("127.0.0.1", "localhost"));

    let old_client = trusting(&first_pem);
    let res = old_client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), reqwest::Version::HTTP_11);

    // Replace the files in place, then SIGHUP.
    let (new_cert, new_key, second_pem) = write_cert(dir.path(), "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let new_client = trusting(&second_pem);
    assert!(
        new_client.get(&url).send().await.is_err(),
        "new cert served before SIGHUP"
    );
    server.signal(Signal::SIGHUP);

    let mut switched = false;
    for _ in 0..100 {
        if new_client.get(&url).send().await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "new connections never saw the new certificate");
    // The open keep-alive connection of the old client survived the reload...
    assert_eq!(
        old_client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    // ...while a fresh connection that trusts only the old certificate is refused.
    assert!(trusting(&first_pem).get(&url).send().await.is_err());

    // A broken file on SIGHUP keeps the current certificate.
    std::fs::write(&cert, "garbage").unwrap();
    server.signal(Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        trusting(&second_pem).get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(server.log_text().contains("certificate reload failed"));

    // Secure cookies under TLS.
    let http = trusting(&second_pem);
    let res = http
        .post(format!(
            "{}/api/v1/session",
            server.admin.replace("127.0.0.1", "localhost")
        ))
        .json(&json!({"username": "admin", "password": server.initial_password()}))
        .send()
        .await
        .unwrap();
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
}

fn expect_config_error(inst: &Instance, key: &str) {
    for cmd in [&["check-config"][..], &["serve"][..]] {
        let out = inst.cli(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 78 (EX_CONFIG) is what the systemd unit's RestartPreventExitStatus= expects.
        assert_eq!(out.status.code(), Some(78), "{cmd:?} with a bad {key}: {stderr}");
        assert!(stderr.contains(key), "{cmd:?}: {stderr:?} does not name {key}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let inst = Instance::new("lisen = \"127.0.0.1:0\"");
    expect_config_error(&inst, "server.lisen");

    let inst = Instance::new("");
    let text = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("127.0.0.1:0", "127.0.0.1:notaport");
    std::fs::write(&inst.config, text).unwrap();
    expect_config_error(&inst, "server.listen");

    let inst = Instance::new("tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"");
    expect_config_error(&inst, "server.tls_cert");

    let inst = Instance::new("");
    let text = std::fs::read_to_string(&inst.config).unwrap();
    let text = text.replace(inst.state_path().to_str().unwrap(), "/nonexistent-dir/state.redb");
    std::fs::write(&inst.config, text).unwrap();
    expect_config_error(&inst, "storage.path");

    // Environment overrides are validated the same way.
    let inst = Instance::new("");
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&inst.config)
        .env("LARK_ONCALL_SERVER__ADMIN_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.admin_listen"));

    // And a good config prints the effective settings.
    let inst = Instance::new("");
    let out = inst.cli(&["check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public_url = \"https://oncall.example.com\""));
}

#[tokio::test]
async fn sigterm_drains_and_the_store_reopens() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let res = http
        .post(format!("{}/api/v1/tokens", server.admin))
        .bearer_auth(&token)
        .json(&json!({"name": "before-stop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // A request still uploading its body when SIGTERM arrives is finished, not cut off.
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let slow = tokio::spawn(
        http.post(format!("{}/api/v1/tokens", server.admin))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(stream_from(body_rx)))
            .send(),
    );
    body_tx.send(Ok(b"{\"name\": ".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    body_tx.send(Ok(b"\"in-flight\"}".to_vec())).await.unwrap();
    drop(body_tx);
    let res = slow.await.unwrap().expect("in-flight request answered");
    assert_eq!(res.status(), StatusCode::CREATED);
    let status = server.stop();
    assert!(status.success(), "serve exited with {status}");
    assert!(
        !inst.dir.path().join("cli-token").exists(),
        "runtime files left behind"
    );
    // The state file is closed cleanly: the CLI can open it, and the write is there.
    let out = inst.cli(&[
        "backup",
        "--out",
        inst.dir.path().join("b.redb").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn create_tokens_until_stopped(
    admin: String,
    token: String,
    writer: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    let http = client();
    let mut acknowledged = Vec::new();
    let mut i = 0;
    while !*stop.borrow() {
        let name = format!("load-{writer}-{i}");
        i += 1;
        let sent = http
            .post(format!("{admin}/api/v1/tokens"))
            .bearer_auth(&token)
            .json(&json!({ "name": name }))
            .send()
            .await;
        match sent {
            Ok(res) if res.status() == StatusCode::CREATED => {
                acknowledged.push(name);
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            _ => break,
        }
    }
    acknowledged
}

async fn token_names(admin: &str, token: &str) -> Vec<String> {
    let list: Value = client()
        .get(format!("{admin}/api/v1/tokens"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Writes acknowledged before a SIGKILL are all there after restart.
#[tokio::test]
async fn kill_9_keeps_every_acknowledged_write() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    for round in 0..3 {
        let server = inst.serve();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                tokio::spawn(create_tokens_until_stopped(
                    server.admin.clone(),
                    token.clone(),
                    writer,
                    stop_rx.clone(),
                    progress.clone(),
                ))
            })
            .collect();
        // Kill after a number of acknowledged writes (not after a time, which a loaded machine
        // stretches), at a different point each round.
        let kill_after = 40 + 37 * round as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while progress.load(std::sync::atomic::Ordering::SeqCst) < kill_after {
            assert!(std::time::Instant::now() < deadline, "writes did not progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill9();
        let _ = stop_tx.send(true);
        let mut acknowledged = Vec::new();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        assert!(
            acknowledged.len() > 10,
            "too few writes to mean anything: {}",
            acknowledged.len()
        );

        let server = inst.serve();
        let present = token_names(&server.admin, &token).await;
        let missing: Vec<_> = acknowledged.iter().filter(|n| !present.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: lost {} acknowledged writes: {missing:?}",
            missing.len()
        );
        server.stop();
    }
}

#[tokio::test]
async fn online_backup_under_writes_then_restore_round_trips() {
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn(create_tokens_until_stopped(
        server.admin.clone(),
        token.clone(),
        0,
        stop_rx,
        progress.clone(),
    ));
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before_backup = token_names(&server.admin, &token).await;

    let backup = inst.dir.path().join("online.redb");
    let cli = std::process::Command::new(common::BIN)
        .args(["backup", "--out", backup.to_str().unwrap(), "--config"])
        .arg(&inst.config)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let after_backup = token_names(&server.admin, &token).await;
    let _ = stop_tx.send(true);
    let written = writer.await.unwrap();
    assert!(!written.is_empty());

    // Restore refuses while the service holds the state file.
    let out = inst.cli(&["restore", "--from", backup.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop the service"));
    assert_eq!(server.stop().code(), Some(0));

    let out = inst.cli(&["restore", "--from", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        inst.dir.path().join("state.pre-restore").exists(),
        "replaced state not kept"
    );

    let server = inst.serve();
    let restored = token_names(&server.admin, &token).await;
    // Everything listed before the backup started is in it; nothing written after it finished is.
    for name in &before_backup {
        assert!(restored.contains(name), "{name} missing from the restored state");
    }
    for name in after_backup.iter().filter(|n| !restored.contains(n)) {
        assert!(name.starts_with("load-"), "{name}");
    }
    assert!(restored.len() <= after_backup.len());
    assert!(restored.len() >= before_backup.len());
}
