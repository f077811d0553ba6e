//! Lark's rate-limit windows outlive a restart of the appliance: the real `serve` binary is
//! killed with SIGKILL in the middle of a storm and started again at once, while the Lark
//! simulator (in this test process, so its windows carry on) enforces Lark's limits. The
//! restarted outbox seeds its windows from the operation log and holds back for the calls that
//! were in flight, so Lark answers no call with 99991400 or 230020.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Instance, Server, client, worlds};
use lark_oncall::sim::{CallRecord, SimApp, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const APP_ID: &str = "cli_restart01";
const APP_SECRET: &str = "restart-secret";

/// Both tests measure Lark's windows in real time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn simulator(users: usize) -> Simulator {
    let mut config = SimConfig::new(vec![SimApp::new(APP_ID, APP_SECRET, "verification")]);
    config.world = worlds::with_a_chat_without_the_bot(users, APP_ID);
    assert!(config.enforce_limits);
    Simulator::start(config).await.unwrap()
}

struct Storm {
    sim: Simulator,
    inst: Instance,
    token: String,
    integration: String,
    http: reqwest::Client,
}

impl Storm {
    /// The service with an integration on the simulator and `total` texts queued, 5 to each
    /// person; returns it running.
    async fn start(total: usize) -> (Storm, Server) {
        let sim = simulator(total / 5).await;
        let inst = Instance::new("");
        let token = inst.offline_token();
        let server = inst.serve();
        let http = client();
        let body = json!({"name": "Ops", "app_id": APP_ID, "app_secret": APP_SECRET,
                          "verification_token": "verification", "domain": "feishu",
                          "api_base_url": sim.base_url(), "plan": "paid"});
        let res = http
            .post(format!("{}/api/v1/integrations", server.admin))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let integration = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let storm = Storm {
            sim,
            inst,
            token,
            integration,
            http,
        };
        let users: Vec<String> = storm
            .sim
            .world()
            .users
            .iter()
            .map(|u| u.open_id.clone())
            .collect();
        let messages: Vec<Value> = (0..total)
            .map(|i| {
                json!({"receive_id_type": "open_id", "receive_id": users[i % users.len()],
                            "text": format!("storm-{i}")})
            })
            .collect();
        for chunk in messages.chunks(1000) {
            let res = storm
                .http
                .post(format!(
                    "{}/api/v1/integrations/{}/messages/batch",
                    server.admin, storm.integration
                ))
                .bearer_auth(&storm.token)
                .json(&json!({ "messages": chunk }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::ACCEPTED);
        }
        (storm, server)
    }

    async fn wait_for_messages(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.sim.messages().len() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} messages arrived",
                self.sim.messages().len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Kills the service with SIGKILL and starts it again on the same state at once.
    fn kill_and_restart(&self, server: Server) -> Server {
        server.kill9();
        let killed = Instant::now();
        let server = self.inst.serve();
        // Within a second on an idle machine; a loaded one (parallel builds) may take longer,
        // which only makes the test milder.
        eprintln!("restarted {:?} after the kill", killed.elapsed());
        server
    }

    /// Waits until the outbox is empty, then checks what Lark saw: every text exactly once,
    /// and no call refused for a rate limit.
    async fn drained(&self, server: &Server, total: usize, within: Duration) -> Vec<CallRecord> {
        let deadline = Instant::now() + within;
        loop {
            let res = self
                .http
                .get(format!("{}/api/v1/jobs?limit=1", server.admin))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            let jobs: Value = res.json().await.unwrap();
            if jobs["items"] == json!([]) {
                break;
            }
            assert!(Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut texts: HashMap<String, usize> = HashMap::new();
        for m in self.sim.messages() {
            let content: Value = serde_json::from_str(&m.content).unwrap();
            *texts
                .entry(content["text"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert!(
            (0..total).all(|i| texts.get(&format!("storm-{i}")) == Some(&1)),
            "not every text arrived exactly once"
        );
        let calls = self.sim.calls();
        let limited: Vec<&CallRecord> = calls
            .iter()
            .filter(|c| c.status == 429 || matches!(c.code, Some(99991400 | 230020)))
            .collect();
        assert!(
            limited.is_empty(),
            "{} rate-limited answers: {limited:#?}",
            limited.len()
        );
        calls
    }
}

/// The arrival times of the sends Lark accepted, in order.
fn sends(calls: &[CallRecord]) -> Vec<DateTime<Utc>> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/messages") && c.status == 200)
        .map(|c| c.at)
        .collect()
}

#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_storm_meets_no_rate_limit_after_the_restart() {
    let _serial = SERIAL.lock().await;
    const TOTAL: usize = 300;
    let (storm, server) = Storm::start(TOTAL).await;
    // A third out at 50/s: Lark's per-API window is full when the service dies.
    storm.wait_for_messages(TOTAL / 3, Duration::from_secs(30)).await;
    let server = storm.kill_and_restart(server);
    let calls = storm.drained(&server, TOTAL, Duration::from_secs(60)).await;
    let arrivals = sends(&calls);
    let busiest = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| *u >= t && **u - *t < chrono::Duration::seconds(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 50, "{busiest} sends within one second");
    server.stop();
    storm.sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_within_a_minute_of_1000_sends_waits_for_the_minute() {
    let _serial = SERIAL.lock().await;
    const TOTAL: usize = 1050;
    let (storm, server) = Storm::start(TOTAL).await;
    storm.wait_for_messages(1000, Duration::from_secs(40)).await;
    let server = storm.kill_and_restart(server);
    let calls = storm.drained(&server, TOTAL, Duration::from_secs(90)).await;
    // The 1,001st send reached Lark a full minute after the first, as Lark requires.
    let arrivals = sends(&calls);
    assert!(arrivals[1000] - arrivals[0] >= chrono::Duration::seconds(60));
    server.stop();
    storm.sim.shutdown().await;
}
