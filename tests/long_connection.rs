//! Long-connection mode over real sockets: the appliance (no public URL configured in the
//! simulated app) holds a WebSocket to the simulator and receives events and card clicks on it;
//! a drop mid-storm loses and doubles nothing; a 51st connection is refused and says so on the
//! integration; two appliances on one app handle each event once between them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::inprocess::{Harness, call};
use lark_oncall::app;
use lark_oncall::clock::ShiftedClock;
use lark_oncall::config::Config;
use lark_oncall::lark::long_connection::ServerClientConfig;
use lark_oncall::services::Services;
use lark_oncall::sim::{RedeliverySchedule, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_longconn01";
const APP_SECRET: &str = "long-connection-secret";

/// Lark's settings scaled for a test: reconnect at once, then every second.
fn quick(config: &mut SimConfig) {
    config.long_connection.client_config = ServerClientConfig {
        reconnect_count: -1,
        reconnect_interval: 1,
        reconnect_nonce: 0,
        ping_interval: 1,
    };
    config.long_connection.ack_timeout = Duration::from_secs(1);
    config.redelivery = RedeliverySchedule::scaled_down(100);
    // Group messages without a mention reach the bot and need no reply: a storm costs no calls.
    config.apps[0].group_messages = true;
}

async fn connected(env: &Harness) -> Value {
    let view = wait_view(env, "the long connection", |v| {
        v["long_connection"]["status"]["state"] == "connected"
    })
    .await;
    assert!(
        view["long_connection"]["status"]["connected_since"].is_string(),
        "{view}"
    );
    view
}

async fn view(env: &Harness) -> Value {
    let (status, view) = env
        .api(
            Method::GET,
            &format!("/api/v1/integrations/{}", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

async fn wait_view(env: &Harness, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = view(env).await;
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn received(view: &Value, event_type: &str) -> u64 {
    view["callback_stats"]["events_by_type"][event_type]
        .as_u64()
        .unwrap_or(0)
}

async fn long_connection_env(fragment_bytes: usize) -> Harness {
    Harness::builder(APP_ID, APP_SECRET)
        .sim_config(move |c| {
            quick(c);
            c.long_connection.fragment_bytes = fragment_bytes;
        })
        .integration_fields(json!({"receive_modes": ["long_connection"]}))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_card_clicks_arrive_over_the_long_connection() {
    let env = long_connection_env(16 * 1024).await;
    let view = connected(&env).await;
    assert_eq!(view["receive_modes"], json!(["long_connection"]));
    assert!(
        view["long_connection"]["console_steps"][0]
            .as_str()
            .unwrap()
            .contains("Start the appliance")
    );
    // Lark's console saves the mode only now that a client is connected.
    env.sim.console_save_long_connection(APP_ID).unwrap();
    assert_eq!(env.sim.long_connections().len(), 1);

    let alice = env.member("Alice", "alice@example.com").await;
    let alice_open_id = env.open_id("alice@example.com");
    env.sim
        .send_text(&alice_open_id, Some(&env.chat()), "disk is filling up", false)
        .await
        .unwrap();
    wait_view(&env, "the message event", |v| {
        received(v, "im.message.receive_v1") == 1
    })
    .await;

    // A card click: the toast and the new card come back in the ack and show in Lark.
    env.rule(json!([{"members": [alice]}])).await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Disk full", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    env.wait_for("Alice's card", |e| !e.cards_to(&alice_open_id).is_empty())
        .await;
    let card = env.cards_to(&alice_open_id)[0].message_id.clone();
    let outcome = env
        .sim
        .press_button(&alice_open_id, &card, json!({"action": "ack", "incident": id}))
        .await
        .unwrap();
    assert_eq!(outcome.client_error, None, "{outcome:?}");
    assert!(outcome.toast.is_some(), "{outcome:?}");
    assert!(outcome.card_replaced, "{outcome:?}");
    let shown = env
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == card)
        .unwrap();
    assert_eq!(shown.updates, 1);
    let pushes = env.sim.pushes();
    let click = pushes.iter().find(|p| p.kind == "card_callback").unwrap();
    assert!(click.ok, "{click:?}");
    let (_, incident) = env
        .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
        .await;
    assert_eq!(incident["status"], "acknowledged", "{incident}");

    env.sim.disband_chat(&env.chat()).await.unwrap();
    let v = wait_view(&env, "the disbanded event", |v| {
        received(v, "im.chat.disbanded_v1") == 1
    })
    .await;
    assert_eq!(v["callback_stats"]["card_actions"], 1, "{v}");
    // Nothing came over HTTP: every push was over the connection.
    assert!(pushes.iter().all(|p| p.kind != "event"), "{pushes:?}");

    // Lark's new settings in a pong replace the client's.
    let slower = ServerClientConfig {
        reconnect_count: 5,
        reconnect_interval: 2,
        reconnect_nonce: 0,
        ping_interval: 1,
    };
    env.sim.push_client_config(APP_ID, slower);
    wait_view(&env, "the pushed settings", |v| {
        v["long_connection"]["status"]["settings"]["ReconnectCount"] == 5
    })
    .await;
    let metrics = env
        .http
        .get(format!("{}/metrics", env.admin))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "lark_oncall_long_connection_connected{{integration=\"{}\"}} 1",
            env.integration
        )),
        "{metrics}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mid_storm_loses_nothing_and_handles_nothing_twice() {
    // Small fragments: every event arrives in several frames.
    let env = long_connection_env(200).await;
    connected(&env).await;
    let user = env.open_id("alice@example.com");
    let chat = env.chat();
    let mut sends = Vec::new();
    for i in 0..200 {
        let sim = env.sim.clone();
        let (user, chat) = (user.clone(), chat.clone());
        sends.push(tokio::spawn(async move {
            sim.send_text(&user, Some(&chat), &format!("storm {i}"), false)
                .await
                .unwrap();
        }));
        if i == 100 {
            assert_eq!(env.sim.drop_long_connections(Some(APP_ID)), 1);
        }
    }
    for s in sends {
        s.await.unwrap();
    }
    let v = wait_view(&env, "all 200 events", |v| {
        received(v, "im.message.receive_v1") >= 200
    })
    .await;
    // Redeliveries still pending land as duplicates, never as a second handling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v2 = view(&env).await;
    assert_eq!(received(&v2, "im.message.receive_v1"), 200, "{v2}");
    assert!(
        v["long_connection"]["status"]["reconnects"].as_u64().unwrap() >= 1,
        "{v}"
    );
    let pushes = env.sim.pushes();
    let delivered: std::collections::HashSet<_> = pushes
        .iter()
        .filter(|p| p.ok && p.event_type == "im.message.receive_v1")
        .filter_map(|p| p.event_id.clone())
        .collect();
    assert_eq!(delivered.len(), 200, "every event acked at last");
    let redelivered = pushes.iter().filter(|p| p.attempt > 0).count();
    eprintln!(
        "storm: {redelivered} redeliveries, {} duplicates dropped",
        v2["callback_stats"]["duplicates"]
    );
    env.stop().await;
}

/// Opens one raw connection as another client of the app would.
async fn raw_client(
    http: &reqwest::Client,
    sim_base: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let answer: Value = http
        .post(format!("{sim_base}/callback/ws/endpoint"))
        .json(&json!({"AppID": APP_ID, "AppSecret": APP_SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], 0, "{answer}");
    let url = answer["data"]["URL"].as_str().unwrap();
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_51st_connection_is_refused_and_the_reason_shows_on_the_integration() {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .sim_config(quick)
        .start()
        .await;
    let mut others = Vec::new();
    for _ in 0..50 {
        others.push(raw_client(&env.http, &env.sim.base_url()).await);
    }
    assert_eq!(env.sim.long_connections().len(), 50);
    // A wrong secret is refused at the endpoint with a code, not a URL.
    let refused: Value = env
        .http
        .post(format!("{}/callback/ws/endpoint", env.sim.base_url()))
        .json(&json!({"AppID": APP_ID, "AppSecret": "wrong"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(refused["code"], 0, "{refused}");

    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/integrations/{}", env.integration),
            json!({"receive_modes": ["webhook", "long_connection"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = wait_view(&env, "the refusal", |v| {
        v["long_connection"]["status"]["state"] == "stopped"
    })
    .await;
    let error = &v["long_connection"]["status"]["last_error"];
    assert_eq!(error["reason"], "too_many_connections", "{v}");
    assert_eq!(error["retrying"], false, "{v}");
    assert!(error["fix"].as_str().unwrap().contains("50"), "{v}");
    assert_eq!(env.sim.long_connections().len(), 50);

    // Bad modes are refused with the field named.
    for bad in [
        json!([]),
        json!(["carrier_pigeon"]),
        json!(["webhook", "webhook"]),
    ] {
        let (status, body) = env
            .api(
                Method::PATCH,
                &format!("/api/v1/integrations/{}", env.integration),
                json!({"receive_modes": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains("receive_modes"), "{body}");
    }

    // Once another client goes, saving the integration connects it.
    drop(others.pop());
    env.wait_for("the simulator to see the close", |e| {
        e.sim.long_connections().len() == 49
    })
    .await;
    let (status, _) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/integrations/{}", env.integration),
            json!({"receive_modes": ["long_connection"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    connected(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appliances_on_one_integration_handle_200_events_once_between_them() {
    let env = long_connection_env(16 * 1024).await;
    connected(&env).await;
    // The standby: its own state file, the same app, the same Lark.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.public_url = Some("https://standby.example.com".into());
    config.storage.path = dir.path().join("state.redb");
    config.lark.allow_api_base_url_override = true;
    let settings = config.validate().unwrap();
    let standby = app::start(
        Services::open_with_clock(settings, Arc::new(ShiftedClock::default()))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let (_, token) = standby
        .app
        .auth
        .create_token("tests", lark_oncall::auth::Scope::Admin, None)
        .await
        .unwrap();
    let admin = standby.addresses.admin_url();
    let (status, created) = call(
        &env.http,
        Method::POST,
        format!("{admin}/api/v1/integrations"),
        &token,
        json!({"name": "Ops standby", "app_id": APP_ID, "app_secret": APP_SECRET,
               "verification_token": common::inprocess::VERIFICATION_TOKEN,
               "api_base_url": env.sim.base_url(), "receive_modes": ["long_connection"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let standby_id = created["id"].as_str().unwrap().to_string();
    env.wait_for("both connections", |e| e.sim.long_connections().len() == 2)
        .await;

    let user = env.open_id("alice@example.com");
    let chat = env.chat();
    let mut sends = Vec::new();
    for i in 0..200 {
        let sim = env.sim.clone();
        let (user, chat) = (user.clone(), chat.clone());
        sends.push(tokio::spawn(async move {
            sim.send_text(&user, Some(&chat), &format!("event {i}"), false)
                .await
                .unwrap();
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    let standby_count = || async {
        let (_, v) = call(
            &env.http,
            Method::GET,
            format!("{admin}/api/v1/integrations/{standby_id}"),
            &token,
            Value::Null,
        )
        .await;
        received(&v, "im.message.receive_v1")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (a, b) = (
            received(&view(&env).await, "im.message.receive_v1"),
            standby_count().await,
        );
        if a + b >= 200 {
            assert_eq!(a + b, 200, "active {a} + standby {b}");
            assert!(a > 0 && b > 0, "Lark spreads events over both: {a} and {b}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {a} + {b} of 200 handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    standby.shutdown().await;
    env.stop().await;
}
