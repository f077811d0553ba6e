//! The scheduler's Lark jobs against the real appliance (in-process, on a clock the test moves)
//! and the simulator: tenant tokens are refreshed ahead of expiry where they will be used, and
//! the retry sweep puts back outbox jobs the dispatcher does not know. Each job's last run and
//! outcome is read through the admin API.

use std::sync::Arc;

use lark_oncall::app::App;
use lark_oncall::clock::{Clock, ShiftedClock};
use lark_oncall::config::Config;
use lark_oncall::delivery::job::JobState;
use lark_oncall::delivery::{Job, JobKind, Priority};
use lark_oncall::lark::ReceiveIdType;
use lark_oncall::sim::{SimApp, SimConfig, Simulator};
use lark_oncall::store::tables;
use reqwest::StatusCode;
use serde_json::{Value, json};

const APP_ID: &str = "cli_sched0test01";
const APP_SECRET: &str = "sched-app-secret";

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> (StatusCode, Value) {
    let res = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

fn token_fetches(sim: &Simulator) -> usize {
    sim.calls()
        .iter()
        .filter(|c| c.path == "/open-apis/auth/v3/tenant_access_token/internal" && c.status == 200)
        .count()
}

#[tokio::test]
async fn token_refresh_and_retry_sweep() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(ShiftedClock::default());
    let mut sim_config = SimConfig::new(vec![SimApp::new(APP_ID, APP_SECRET, "verification")]);
    sim_config.clock = clock.clone();
    let sim = Simulator::start(sim_config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.public_url = Some("https://oncall.example.com".into());
    cfg.storage.path = dir.path().join("state.redb");
    let app = App::open_with_clock(cfg.validate().unwrap(), clock.clone())
        .await
        .unwrap();
    let (_, token) = app.auth.create_token("tests").await.unwrap();
    let running = lark_oncall::app::start(app).await.unwrap();
    let admin = running.addresses.admin_url();
    let http = reqwest::Client::new();
    let (status, created) = post(
        &http,
        format!("{admin}/api/v1/integrations"),
        &token,
        json!({"name": "Ops", "app_id": APP_ID, "app_secret": APP_SECRET, "verification_token": "verification",
               "api_base_url": sim.base_url(), "plan": "paid"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let run = |name: &str| {
        let (http, url, token) = (
            http.clone(),
            format!("{admin}/api/v1/scheduler/{name}/run"),
            token.clone(),
        );
        async move { post(&http, url, &token, Value::Null).await }
    };

    // A fresh token (2 h) is not due: nothing is fetched.
    let (status, _) = post(
        &http,
        format!("{admin}/api/v1/integrations/{id}/check"),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_fetches(&sim), 1);
    let (_, job) = run("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 0 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(&sim), 1);

    // With under 30 minutes left the paid plan's token is refreshed ahead of expiry.
    clock.advance(chrono::Duration::minutes(95));
    let (_, job) = run("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 1 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(&sim), 2);

    // On Basic Free with nothing waiting, a due token is left to lapse (it would cost quota).
    let res = http
        .patch(format!("{admin}/api/v1/integrations/{id}"))
        .bearer_auth(&token)
        .json(&json!({"plan": "basic_free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (status, _) = post(
        &http,
        format!("{admin}/api/v1/integrations/{id}/check"),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let fetched = token_fetches(&sim);
    clock.advance(chrono::Duration::minutes(95));
    let (_, job) = run("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 0 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(&sim), fetched);

    // The retry sweep finds nothing to do in a healthy outbox, and schedules a job the outbox
    // holds but the dispatcher does not know, which then goes out.
    let (_, job) = run("retry_sweep").await;
    assert_eq!(
        job["last_outcome"], "ok: 0 unscheduled outbox jobs put back",
        "{job}"
    );
    let chat = sim
        .world()
        .chats
        .into_iter()
        .find(|c| c.name.contains("SRE"))
        .unwrap()
        .chat_id;
    let orphan = Job {
        id: 9_999,
        integration_id: id.clone(),
        incident_id: None,
        priority: Priority::Critical,
        cosmetic: false,
        kind: JobKind::Send {
            receive_id_type: ReceiveIdType::ChatId,
            receive_id: chat,
            msg_type: "text".into(),
            content: json!({"text": "swept"}).to_string(),
        },
        uuid: "lko-sweep-test".into(),
        created_at: clock.now(),
        first_attempt_at: None,
        attempts: 0,
        next_attempt_at: None,
        state: JobState::Pending,
    };
    running
        .app
        .store
        .write(move |w| w.put(&tables::OUTBOX, &orphan.id, &orphan))
        .await
        .unwrap();
    let (_, job) = run("retry_sweep").await;
    assert_eq!(
        job["last_outcome"], "ok: 1 unscheduled outbox jobs put back",
        "{job}"
    );
    let mut delivered = false;
    for _ in 0..200 {
        delivered = sim.messages().iter().any(|m| m.content.contains("swept"));
        if delivered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(delivered, "the swept job was not delivered");
    let (status, jobs) = {
        let res = http
            .get(format!("{admin}/api/v1/scheduler"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    for expected in [
        "dedup_prune",
        "oplog_prune",
        "quota_month",
        "retry_sweep",
        "token_refresh",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    running.shutdown().await;
    sim.shutdown().await;
}
