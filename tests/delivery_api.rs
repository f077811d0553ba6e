//! The delivery engine through the real `serve` binary and its admin API, against the Lark
//! simulator over HTTP: sending one message or a batch, the operation log and its paging, the
//! jobs list and re-triggering, the quota report, and exactly-once delivery across a kill -9.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Instance, Server, client, oplog, worlds};
use lark_oncall::sim::{Faults, Outage, SimApp, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const APP_ID: &str = "cli_delivery01";
const APP_SECRET: &str = "delivery-secret";

/// A simulator with `users` people and 10 chats around the app, plus one chat without the bot.
async fn simulator(users: usize, enforce_limits: bool) -> Simulator {
    let mut config = SimConfig::new(vec![SimApp::new(APP_ID, APP_SECRET, "verification")]);
    config.world = worlds::with_a_chat_without_the_bot(users, APP_ID);
    config.enforce_limits = enforce_limits;
    if !enforce_limits {
        config.monthly_quota = None;
    }
    Simulator::start(config).await.unwrap()
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server, token: &str) -> Api {
        Api {
            base: server.admin.clone(),
            token: token.to_string(),
            http: client(),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn create_integration(&self, sim: &Simulator, extra: Value) -> String {
        let mut body = json!({"name": "Ops", "app_id": APP_ID, "app_secret": APP_SECRET,
                              "verification_token": "verification", "domain": "feishu",
                              "api_base_url": sim.base_url()});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, created) = self.post("/api/v1/integrations", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    /// Every operation-log entry matching `filter` (a query string), walking the pages back.
    async fn oplog_all(&self, filter: &str) -> Vec<Value> {
        oplog::all(&self.http, &self.base, &self.token, filter).await
    }

    async fn wait_oplog(&self, filter: &str, count: usize) -> Vec<Value> {
        oplog::wait(
            &self.http,
            &self.base,
            &self.token,
            filter,
            count,
            Duration::from_secs(30),
        )
        .await
    }
}

/// The texts of the app's messages in the simulator, with how often each arrived.
fn delivered_texts(sim: &Simulator) -> HashMap<String, usize> {
    let mut texts = HashMap::new();
    for m in sim.messages() {
        if m.msg_type == "text"
            && let Ok(content) = serde_json::from_str::<Value>(&m.content)
            && let Some(text) = content["text"].as_str()
        {
            *texts.entry(text.to_string()).or_default() += 1;
        }
    }
    texts
}

#[tokio::test]
async fn messages_jobs_oplog_and_quota_over_the_admin_api() {
    let sim = simulator(20, true).await;
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let api = Api::new(&server, &token);
    let id = api.create_integration(&sim, json!({})).await;
    let users: Vec<String> = sim.world().users.iter().map(|u| u.open_id.clone()).collect();
    let team = sim.world().chats[0].chat_id.clone();

    // Unknown integration: 404 on every integration route.
    let text = json!({"receive_id_type": "open_id", "receive_id": users[0], "text": "hi"});
    for (status, body) in [
        api.post("/api/v1/integrations/nope/messages", &text).await,
        api.post(
            "/api/v1/integrations/nope/messages/batch",
            &json!({"messages": [text]}),
        )
        .await,
        api.get("/api/v1/integrations/nope/quota").await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }

    // Bad input: 400 naming the field.
    let big_card = json!({"elements": [{"tag": "markdown", "content": "x".repeat(31 * 1024)}]});
    let messages = format!("/api/v1/integrations/{id}/messages");
    for (body, field) in [
        (json!({"receive_id": "ou_x", "text": "hi"}), "receive_id_type"),
        (
            json!({"receive_id_type": "phone", "receive_id": "ou_x", "text": "hi"}),
            "receive_id_type",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "", "text": "hi"}),
            "receive_id",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x"}),
            "text",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x", "text": "a", "card": {}}),
            "text",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x", "card": "not an object"}),
            "card",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x", "card": big_card}),
            "card",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x", "text": "a", "priority": "urgent"}),
            "priority",
        ),
        (
            json!({"receive_id_type": "open_id", "receive_id": "ou_x", "text": "a", "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, answer) = api.post(&messages, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field} not named in {message}");
    }
    let batch = format!("/api/v1/integrations/{id}/messages/batch");
    let ok = json!({"receive_id_type": "open_id", "receive_id": users[1], "text": "fine"});
    let (status, answer) = api
        .post(
            &batch,
            &json!({"messages": [ok, ok, {"receive_id_type": "open_id", "receive_id": "ou_x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages[2].text"),
        "{answer}"
    );
    let too_many: Vec<Value> = (0..1001).map(|_| ok.clone()).collect();
    let (status, answer) = api.post(&batch, &json!({"messages": too_many})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        api.post(&batch, &json!({"messages": []})).await.0,
        StatusCode::BAD_REQUEST
    );
    // Nothing invalid was queued.
    let (_, jobs) = api.get("/api/v1/jobs").await;
    assert_eq!(jobs["items"], json!([]));

    // One text, one card, a batch of 3: all delivered, the log says so.
    let (status, answer) = api
        .post(
            &messages,
            &json!({"receive_id_type": "open_id", "receive_id": users[0], "text": "api-one", "priority": "critical"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let one = answer["job_id"].as_u64().unwrap();
    let card = json!({"header": {"title": {"tag": "plain_text", "content": "check"}}, "elements": []});
    let (status, _) = api
        .post(
            &messages,
            &json!({"receive_id_type": "chat_id", "receive_id": team, "card": card}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let three: Vec<Value> = (0..3)
        .map(|i| json!({"receive_id_type": "open_id", "receive_id": users[2 + i], "text": format!("api-batch-{i}")}))
        .collect();
    let (status, answer) = api.post(&batch, &json!({"messages": three})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let ids: Vec<u64> = answer["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > one);
    let delivered = api
        .wait_oplog(&format!("integration={id}&outcome=delivered"), 5)
        .await;
    assert_eq!(delivered.len(), 5);
    let entry = delivered.iter().find(|e| e["job_id"] == one).unwrap();
    assert_eq!(entry["receiver"], format!("open_id:{}", users[0]));
    assert!(entry["message_id"].as_str().unwrap().starts_with("om_"));
    let texts = delivered_texts(&sim);
    for t in ["api-one", "api-batch-0", "api-batch-1", "api-batch-2"] {
        assert_eq!(texts.get(t), Some(&1), "{t}");
    }
    assert!(
        sim.messages()
            .iter()
            .any(|m| m.chat_id == team && m.msg_type == "interactive")
    );

    // Paging: newest first, `before` continues where the last page ended.
    let (_, first) = api.get("/api/v1/oplog?outcome=delivered&limit=2").await;
    let (_, second) = api
        .get(&format!(
            "/api/v1/oplog?outcome=delivered&limit=2&before={}",
            first["next_before"]
        ))
        .await;
    let seqs: Vec<u64> = [&first, &second]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(seqs.len(), 4);
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(
        api.get("/api/v1/oplog?integration=other").await.1["items"],
        json!([])
    );
    assert_eq!(
        api.get("/api/v1/oplog?colour=red").await.0,
        StatusCode::BAD_REQUEST
    );

    // A permanent error fails the job; it is listed, and re-triggering it tries once more.
    let (_, answer) = api
        .post(
            &messages,
            &json!({"receive_id_type": "chat_id", "receive_id": "oc_without_bot", "text": "lost"}),
        )
        .await;
    let lost = answer["job_id"].as_u64().unwrap();
    let failed = api.wait_oplog("outcome=failed", 1).await;
    assert_eq!(failed[0]["job_id"], lost);
    assert_eq!(failed[0]["reason"], "bot_not_in_chat");
    assert_eq!(failed[0]["lark_code"], 230002);
    let (_, jobs) = api.get("/api/v1/jobs?state=failed").await;
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], lost);
    assert_eq!(items[0]["state"]["reason"], "bot_not_in_chat");
    assert_eq!(api.get("/api/v1/jobs?state=held").await.1["items"], json!([]));
    assert_eq!(
        api.get("/api/v1/jobs?state=gone").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, answer) = api.post(&format!("/api/v1/jobs/{lost}/retry"), &json!({})).await;
    assert_eq!(
        (status, answer["job_id"].as_u64()),
        (StatusCode::ACCEPTED, Some(lost))
    );
    api.wait_oplog("outcome=failed", 2).await;
    let to_lost = |sim: &Simulator| sim.calls().iter().filter(|c| c.code == Some(230002)).count();
    assert_eq!(to_lost(&sim), 2);
    // Unknown, delivered (gone from the outbox) and malformed ids are 404.
    for path in ["999999", &one.to_string(), "abc"] {
        let (status, _) = api.post(&format!("/api/v1/jobs/{path}/retry"), &json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // A job still pending (Lark is down, so it waits for its retry) is not failed: 409.
    sim.set_faults(Faults {
        outage: Some(Outage::Unavailable),
        ..Faults::default()
    });
    let (_, answer) = api
        .post(
            &messages,
            &json!({"receive_id_type": "open_id", "receive_id": users[5], "text": "api-later"}),
        )
        .await;
    let later = answer["job_id"].as_u64().unwrap();
    let (_, jobs) = api.get("/api/v1/jobs?state=pending").await;
    assert_eq!(jobs["items"][0]["id"], later, "{jobs}");
    let (status, answer) = api.post(&format!("/api/v1/jobs/{later}/retry"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "not_failed");
    sim.set_faults(Faults::default());
    api.wait_oplog("outcome=delivered", 6).await;
    assert_eq!(delivered_texts(&sim).get("api-later"), Some(&1));

    // The quota report counts what went out, by class.
    let (status, quota) = api.get(&format!("/api/v1/integrations/{id}/quota")).await;
    assert_eq!(status, StatusCode::OK, "{quota}");
    assert_eq!(quota["limit"], 10_000);
    assert_eq!(quota["by_class"]["send_to_person"], 5);
    assert_eq!(quota["by_class"]["send_to_chat"], 3);
    assert!(quota["by_class"]["token"].as_u64().unwrap() >= 1);
    let used = quota["used"].as_u64().unwrap();
    assert_eq!(
        used,
        quota["by_class"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    );
    assert_eq!(used, sim.quota_used(), "the ledger agrees with Lark's count");
    assert!(quota["resets_at"].as_str().is_some());
    assert_eq!(quota["warnings"], json!([]));
    sim.shutdown().await;
}

/// 2,000 messages; the service is killed with SIGKILL midway and restarted; Lark receives each
/// exactly once (retries after the crash carry the job's uuid, which Lark dedups).
///
/// Lark's limits would stretch 2,000 sends over 80 s, so the simulator runs without them and the
/// outbox is configured with higher limits: this test is about the crash, not the limits.
#[tokio::test]
async fn each_message_is_delivered_exactly_once_across_a_kill_9() {
    const TOTAL: usize = 2000;
    let sim = simulator(200, false).await;
    let inst = Instance::new("[delivery]\nper_api_per_second = 5000\nsends_per_minute = 1000000\n");
    let token = inst.offline_token();
    let server = inst.serve();
    let api = Api::new(&server, &token);
    let id = api.create_integration(&sim, json!({"plan": "paid"})).await;
    let users: Vec<String> = sim.world().users.iter().map(|u| u.open_id.clone()).collect();
    let batch = format!("/api/v1/integrations/{id}/messages/batch");
    for half in 0..2 {
        let messages: Vec<Value> = (half * 1000..(half + 1) * 1000)
            .map(|i| json!({"receive_id_type": "open_id", "receive_id": users[i % users.len()], "text": format!("crash-{i}")}))
            .collect();
        let (status, answer) = api.post(&batch, &json!({"messages": messages})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    // Kill once a part has gone out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.messages().len() < 300 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let at_kill = sim.messages().len();
    assert!(at_kill < TOTAL, "all were delivered before the kill");

    let server = inst.serve();
    let api = Api::new(&server, &token);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, pending) = api.get("/api/v1/jobs?limit=1").await;
        if pending["items"] == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outbox not drained: {} messages",
            sim.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let texts = delivered_texts(&sim);
    let missing: Vec<usize> = (0..TOTAL)
        .filter(|i| !texts.contains_key(&format!("crash-{i}")))
        .collect();
    let twice: Vec<(&String, &usize)> = texts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(sim.messages().len(), TOTAL);
    // The log agrees: one delivered entry per job, none failed.
    let delivered = api.oplog_all("outcome=delivered").await;
    assert_eq!(delivered.len(), TOTAL);
    assert_eq!(api.oplog_all("outcome=failed").await, Vec::<Value>::new());
    eprintln!(
        "kill -9 after {at_kill} of {TOTAL} messages; {} uuid-deduplicated resends",
        sim.calls()
            .iter()
            .filter(|c| c.summary.contains("uuid duplicate"))
            .count()
    );
    sim.shutdown().await;
}
