//! `lark-oncall demo` does what the README promises: it starts on loopback, prints the admin URL
//! and login, the login works, and Ctrl-C stops it and removes its throwaway state.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `url` (with the API token when given) and reads the JSON answer.
async fn get_json(http: &reqwest::Client, url: String, token: Option<&str>) -> Value {
    let mut req = http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn demo_prints_a_working_login_and_cleans_up() {
    let port = free_port();
    let mut demo = common::ChildGuard(
        Command::new(common::BIN)
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !printed.iter().any(|l: &String| l.starts_with("Press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        printed.push(lines_rx.recv_timeout(left).expect("demo output"));
    }
    let field = |label: &str| {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label} in {printed:?}"))
    };
    let admin_url = field("admin UI:");
    let login = field("login:");
    let api_token = field("API token:");
    let virtual_lark = field("virtual Lark:");
    let integration = field("integration:");
    let integration_id = integration.split_whitespace().next().unwrap().to_string();
    let state_dir = printed
        .iter()
        .find_map(|l| l.split("state in ").nth(1))
        .map(|rest| rest.split(',').next().unwrap().to_string())
        .expect("state dir line");
    let (user, password) = login.split_once(" / ").expect("user / password");
    assert_eq!(admin_url, format!("http://127.0.0.1:{port}/"));

    let http = common::client();
    let res = http
        .post(format!("{admin_url}api/v1/session"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = http.get(&admin_url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>lark-oncall admin</title>"));
    let health: Value = http
        .get(format!("{admin_url}healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    // The integration reached the simulated Lark: a tenant token was fetched and the bot's chats
    // listed, as the simulator's record of calls shows and the stored chat list reflects.
    let sim_base = virtual_lark.trim_end_matches('/').trim_end_matches("/sim");
    let calls = get_json(&http, format!("{sim_base}/sim/api/calls"), None).await;
    let paths: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == 200)
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/open-apis/auth/v3/tenant_access_token/internal"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/open-apis/im/v1/chats"), "{paths:?}");
    let chats = get_json(
        &http,
        format!("{admin_url}api/v1/integrations/{integration_id}/chats"),
        Some(&api_token),
    )
    .await;
    let listed = chats["items"].as_array().unwrap();
    assert!(!listed.is_empty(), "{chats}");
    assert!(listed.iter().all(|c| c["status"] == "active"), "{chats}");
    // The printed curl line raises an incident whose card reaches the simulated Lark.
    let curl = printed
        .iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .expect("a curl line")
        .clone();
    let quoted: Vec<&str> = curl.split('\'').collect();
    let (alert_url, alert_body) = (quoted[1], quoted[5]);
    let res = http
        .post(alert_url)
        .header("content-type", "application/json")
        .body(alert_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let opened: Value = res.json().await.unwrap();
    assert_eq!(opened["data"]["result"], "opened", "{opened}");
    let mut cards = Vec::new();
    let reached = |cards: &[Value], chat_type: &str| cards.iter().any(|c| c["chat_type"] == chat_type);
    for _ in 0..200 {
        let messages = get_json(&http, format!("{sim_base}/sim/api/messages"), None).await;
        cards = messages
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["msg_type"] == "interactive"
                    && m["content"]
                        .as_str()
                        .unwrap()
                        .contains("Disk almost full on db-1")
            })
            .cloned()
            .collect();
        // Two people's cards can arrive before the chat's: wait for both kinds.
        if reached(&cards, "group") && reached(&cards, "p2p") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        reached(&cards, "group") && reached(&cards, "p2p"),
        "the incident's card reached neither a chat and a person: {cards:?}"
    );

    // Pressing Acknowledge on the person's card in the simulated Lark acknowledges the incident.
    let card = cards.iter().find(|c| c["chat_type"] == "p2p").unwrap();
    let incident_id = opened["data"]["incident_id"].as_str().unwrap();
    let pressed: Value = http
        .post(format!("{sim_base}/sim/api/press"))
        .json(
            &json!({"user_open_id": card["user_open_id"], "message_id": card["message_id"],
                      "value": {"action": "ack", "incident": incident_id}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pressed["status"], 200, "{pressed}");
    assert_eq!(pressed["card_replaced"], true, "{pressed}");
    assert_eq!(pressed["toast"]["type"], "success", "{pressed}");
    let incident = get_json(
        &http,
        format!("{admin_url}api/v1/incidents/{incident_id}"),
        Some(&api_token),
    )
    .await;
    assert_eq!(incident["status"], "acknowledged", "{incident}");

    let page = http.get(&virtual_lark).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    assert!(std::path::Path::new(&state_dir).exists());
    kill(Pid::from_raw(demo.0.id() as i32), Signal::SIGINT).unwrap();
    let status = common::wait_exit(&mut demo.0, Duration::from_secs(30));
    assert!(status.success(), "demo exited with {status}");
    assert!(
        !std::path::Path::new(&state_dir).exists(),
        "demo left {state_dir} behind"
    );
}

#[tokio::test]
async fn demo_on_port_zero_links_to_its_real_port_and_logs_no_other_password() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut demo = common::ChildGuard(
        Command::new(common::BIN)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(demo.0.stdout.take().unwrap());
    let mut printed = Vec::new();
    for line in stdout.lines().map_while(Result::ok) {
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let field = |label: &str| {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label} in {printed:?}"))
    };
    let admin_url = field("admin UI:");
    assert!(!admin_url.ends_with(":0/"), "{admin_url}");
    let api_token = field("API token:");
    let integration = field("integration:");
    let integration_id = integration.split_whitespace().next().unwrap();
    let http = common::client();
    let view = get_json(
        &http,
        format!("{admin_url}api/v1/integrations/{integration_id}"),
        Some(&api_token),
    )
    .await;
    let request_url = view["urls"]["message_card_request"].as_str().unwrap();
    assert!(
        request_url.starts_with(&admin_url),
        "{request_url} vs {admin_url}"
    );
    // The printed login is the only password: none is logged for the demo to replace.
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(!logged.contains("created the admin account"), "{logged}");
}

#[test]
fn demo_on_a_taken_port_says_which_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(common::BIN)
        .args(["demo", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--listen: cannot listen on {addr}")),
        "{stderr}"
    );
    // Nothing started before the refusal, so nothing else is said.
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
