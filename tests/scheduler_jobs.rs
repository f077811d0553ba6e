//! The scheduler's Lark jobs against the real appliance (in-process, on a clock the test moves)
//! and the simulator: tenant tokens are refreshed ahead of expiry where they will be used, and
//! the retry sweep puts back outbox jobs the dispatcher does not know. Each job's last run and
//! outcome is read through the admin API.

mod common;

use common::inprocess::Harness;
use lark_oncall::clock::Clock;
use lark_oncall::delivery::job::JobState;
use lark_oncall::delivery::tables;
use lark_oncall::delivery::{Job, JobKind, Priority};
use lark_oncall::lark::ReceiveIdType;
use lark_oncall::sim::Simulator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_sched0test01";
const APP_SECRET: &str = "sched-app-secret";

fn token_fetches(sim: &Simulator) -> usize {
    sim.calls()
        .iter()
        .filter(|c| c.path == "/open-apis/auth/v3/tenant_access_token/internal" && c.status == 200)
        .count()
}

impl Harness {
    /// Runs a scheduler job now; returns its state after the run.
    async fn run_job(&self, name: &str) -> (StatusCode, Value) {
        self.api(
            Method::POST,
            &format!("/api/v1/scheduler/{name}/run"),
            Value::Null,
        )
        .await
    }
}

#[tokio::test]
async fn token_refresh_and_retry_sweep() {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .integration_fields(json!({"plan": "paid"}))
        .start()
        .await;
    let (sim, clock, id) = (&env.sim, &env.clock, &env.integration);
    let check = format!("/api/v1/integrations/{id}/check");

    // A fresh token (2 h) is not due: nothing is fetched.
    let (status, _) = env.api(Method::POST, &check, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_fetches(sim), 1);
    let (_, job) = env.run_job("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 0 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(sim), 1);

    // With under 30 minutes left the paid plan's token is refreshed ahead of expiry.
    clock.advance(chrono::Duration::minutes(95));
    let (_, job) = env.run_job("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 1 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(sim), 2);

    // On Basic Free with nothing waiting, a due token is left to lapse (it would cost quota).
    let (status, _) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            json!({"plan": "basic_free"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env.api(Method::POST, &check, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let fetched = token_fetches(sim);
    clock.advance(chrono::Duration::minutes(95));
    let (_, job) = env.run_job("token_refresh").await;
    assert_eq!(job["last_outcome"], "ok: 0 tenant tokens refreshed", "{job}");
    assert_eq!(token_fetches(sim), fetched);

    // The retry sweep finds nothing to do in a healthy outbox, and schedules a job the outbox
    // holds but the dispatcher does not know, which then goes out.
    let (_, job) = env.run_job("retry_sweep").await;
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
    env.app()
        .store
        .write(move |w| w.put(&tables::OUTBOX, &orphan.id, &orphan))
        .await
        .unwrap();
    let (_, job) = env.run_job("retry_sweep").await;
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
    let (status, jobs) = env.api(Method::GET, "/api/v1/scheduler", Value::Null).await;
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
    env.stop().await;
}
