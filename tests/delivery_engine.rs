//! The delivery engine in-process (`Services::open_with_clock` + `app::start`, so the clock can move
//! and settings can be tuned) against the Lark simulator over HTTP: a storm meets none of Lark's
//! limits, jobs past the quota are held and go out after the month resets, and faults and
//! permanent errors end as they should.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::inprocess::Harness;
use common::{oplog, worlds};
use lark_oncall::config::Settings;
use lark_oncall::delivery::{JobKind, NewJob, Priority};
use lark_oncall::sim::{CallRecord, FaultKind, Faults, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const APP_ID: &str = "cli_engine01";
const APP_SECRET: &str = "engine-secret";

/// Tests here measure Lark's per-second windows in real time; running two at once on a small
/// machine would only add jitter.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    users: usize,
    sim_quota: Option<u64>,
    integration: Value,
    tune: fn(&mut Settings),
}

impl Setup {
    async fn start(self) -> Harness {
        let Setup {
            users,
            sim_quota,
            integration,
            tune,
        } = self;
        Harness::builder(APP_ID, APP_SECRET)
            .sim_config(move |config| {
                config.world = worlds::with_a_chat_without_the_bot(users, APP_ID);
                config.monthly_quota = sim_quota;
            })
            .tune(tune)
            .integration_fields(json!({"domain": "feishu"}))
            .integration_fields(integration)
            .start()
            .await
    }
}

impl Harness {
    fn users(&self) -> Vec<String> {
        self.sim.world().users.iter().map(|u| u.open_id.clone()).collect()
    }

    async fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        res.json().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends through the admin API in batches; returns the job ids.
    async fn send_all(&self, messages: &[Value]) -> Vec<u64> {
        let mut ids = Vec::new();
        for chunk in messages.chunks(1000) {
            let res = self
                .http
                .post(format!(
                    "{}/api/v1/integrations/{}/messages/batch",
                    self.admin, self.integration
                ))
                .bearer_auth(&self.token)
                .json(&json!({ "messages": chunk }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            let answer: Value = res.json().await.unwrap();
            ids.extend(
                answer["job_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap()),
            );
        }
        ids
    }

    /// Every operation-log entry with this outcome.
    async fn oplog(&self, outcome: &str) -> Vec<Value> {
        let filter = format!("outcome={outcome}");
        oplog::all(&self.http, &self.admin, &self.token, &filter).await
    }

    async fn wait_oplog(&self, outcome: &str, count: usize, within: Duration) -> Vec<Value> {
        let filter = format!("outcome={outcome}");
        oplog::wait(&self.http, &self.admin, &self.token, &filter, count, within).await
    }
}

fn text(receive_id_type: &str, receive_id: &str, text: &str, priority: &str) -> Value {
    json!({"receive_id_type": receive_id_type, "receive_id": receive_id, "text": text, "priority": priority})
}

/// Texts of the app's messages with how often each arrived.
fn delivered_texts(sim: &Simulator) -> HashMap<String, usize> {
    let mut texts = HashMap::new();
    for m in sim.messages() {
        if let Ok(content) = serde_json::from_str::<Value>(&m.content)
            && let Some(text) = content["text"].as_str()
        {
            *texts.entry(text.to_string()).or_default() += 1;
        }
    }
    texts
}

fn rate_limited(calls: &[CallRecord]) -> Vec<&CallRecord> {
    calls
        .iter()
        .filter(|c| c.status == 429 || matches!(c.code, Some(99991400 | 230020)))
        .collect()
}

/// The most calls satisfying `pred` within any 1 s of arrival time.
fn busiest_second(calls: &[CallRecord], pred: impl Fn(&CallRecord) -> bool) -> usize {
    let times: Vec<DateTime<Utc>> = calls.iter().filter(|c| pred(c)).map(|c| c.at).collect();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= chrono::Duration::seconds(1) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test]
async fn a_storm_of_sends_and_card_updates_meets_no_rate_limit() {
    let _serial = SERIAL.lock().await;
    let rig = Setup {
        users: 100,
        sim_quota: None,
        integration: json!({"plan": "paid"}),
        tune: |_| {},
    }
    .start()
    .await;
    let users = rig.users();
    let chats: Vec<String> = rig.sim.world().chats[..10]
        .iter()
        .map(|c| c.chat_id.clone())
        .collect();
    let hot = &users[..3];
    // 150 cards: half to 3 hot people (25 each: 5 s at 5/s), the rest spread over people and chats.
    let card = |i: usize| {
        json!({"header": {"title": {"tag": "plain_text", "content": format!("storm {i}")}},
                                 "config": {"update_multi": true}, "elements": []})
    };
    let messages: Vec<Value> = (0..150)
        .map(|i| {
            let (kind, to) = match i % 6 {
                0..=2 => ("open_id", hot[i % 3].clone()),
                3 => ("chat_id", chats[i % 10].clone()),
                _ => ("open_id", users[3 + i % 97].clone()),
            };
            json!({"receive_id_type": kind, "receive_id": to, "card": card(i)})
        })
        .collect();
    rig.send_all(&messages).await;
    let sent = rig.wait_oplog("delivered", 150, Duration::from_secs(30)).await;
    // Then a burst of updates to 20 of those cards (10 each, coalesced while they wait) while
    // 100 more texts go to the hot people and the chats.
    let delivery = rig.app().delivery.clone();
    for (n, entry) in sent.iter().take(20).enumerate() {
        let message_id = entry["message_id"].as_str().unwrap().to_string();
        for round in 0..10 {
            delivery
                .enqueue(NewJob {
                    integration_id: rig.integration.clone(),
                    incident_id: None,
                    priority: Priority::Info,
                    cosmetic: false,
                    kind: JobKind::UpdateCard {
                        message_id: message_id.clone(),
                        content: card(1000 * n + round).to_string(),
                    },
                })
                .await
                .unwrap();
        }
    }
    let more: Vec<Value> = (0..100)
        .map(|i| match i % 2 {
            0 => text("open_id", &hot[i % 3], &format!("storm-text-{i}"), "warning"),
            _ => text("chat_id", &chats[i % 10], &format!("storm-text-{i}"), "info"),
        })
        .collect();
    rig.send_all(&more).await;
    let updates_done = |rig: &Harness| {
        rig.sim
            .calls()
            .iter()
            .filter(|c| c.method == "PATCH" && c.status == 200)
            .count()
    };
    rig.wait_oplog("delivered", 250, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.app().delivery.pending_count() > 0 {
        assert!(Instant::now() < deadline, "updates still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let calls = rig.sim.calls();
    let limited = rate_limited(&calls);
    assert!(limited.is_empty(), "rate-limited answers: {limited:#?}");
    assert!(updates_done(&rig) >= 20, "every card got its update");
    assert!(calls.iter().all(|c| c.status == 200), "every call succeeded");
    // The storm did reach the limits the simulator enforces: a hot person got exactly 5 in some
    // second, never more.
    let to_hot = |c: &CallRecord| c.receiver.as_deref() == Some(hot[0].as_str()) && c.method == "POST";
    assert_eq!(busiest_second(&calls, to_hot), 5);
    // Each update's latest content won.
    for (n, entry) in sent.iter().take(20).enumerate() {
        let id = entry["message_id"].as_str().unwrap();
        let m = rig
            .sim
            .messages()
            .into_iter()
            .find(|m| m.message_id == id)
            .unwrap();
        assert!(
            m.content.contains(&format!("storm {}", 1000 * n + 9)),
            "{}",
            m.content
        );
    }
    rig.stop().await;
}

#[tokio::test]
async fn jobs_past_the_quota_are_held_and_go_out_after_the_month_resets() {
    let _serial = SERIAL.lock().await;
    const QUOTA: u64 = 30;
    let rig = Setup {
        users: 50,
        sim_quota: Some(QUOTA),
        integration: json!({"plan": "basic_free", "monthly_quota": QUOTA}),
        tune: |_| {},
    }
    .start()
    .await;
    // Mid-November in Shanghai, the quota's time zone.
    rig.clock
        .set("2026-11-20T04:00:00Z".parse::<DateTime<Utc>>().unwrap());
    let users = rig.users();
    // Critical pages to people spend the last of the budget (the degradation policy holds info
    // sends back earlier), so every job past the quota is held for quota, not reserved.
    let pages: Vec<Value> = (0..40)
        .map(|i| text("open_id", &users[i], &format!("page-{i}"), "critical"))
        .collect();
    rig.send_all(&pages).await;
    // One token fetch and 29 pages fit in 30 calls; 11 are held.
    let held = rig.wait_oplog("held_quota", 11, Duration::from_secs(20)).await;
    assert_eq!(held.len(), 11);
    let delivered = rig.oplog("delivered").await;
    assert_eq!(delivered.len(), 29);
    assert_eq!(rig.sim.quota_used(), QUOTA);
    // The outbox holds what the quota cannot pay for instead of sending it to be refused; only
    // the token fetch, which it cannot foresee, may cost one refusal.
    let refused = rig
        .sim
        .calls()
        .iter()
        .filter(|c| c.code == Some(99991403))
        .count();
    assert!(refused <= 1, "{refused} calls refused for quota");
    let jobs = rig.get("/api/v1/jobs?state=held").await;
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 11);
    assert!(jobs.iter().all(|j| j["state"]["reason"] == "quota_exhausted"));
    let quota = rig
        .get(&format!("/api/v1/integrations/{}/quota", rig.integration))
        .await;
    assert_eq!(quota["month"], "2026-11");
    assert_eq!(
        (quota["used"].as_u64(), quota["limit"].as_u64()),
        (Some(QUOTA), Some(QUOTA))
    );
    assert_eq!(quota["percent_used"], 100.0);
    assert_eq!(quota["warnings"], json!([80, 95]));
    assert_eq!(quota["by_class"], json!({"send_to_person": 29, "token": 1}));
    assert_eq!(quota["forecast_exhausted_on"], "2026-11-20");
    assert_eq!(quota["resets_at"], "2026-11-30T16:00:00Z");
    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("delivery_job_outcomes_total{kind=\"send\",outcome=\"held_quota\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("delivery_quota_warnings_total 2"), "{metrics}");
    // Nothing more goes out while the month lasts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.oplog("delivered").await.len(), 29);

    // December 1st, 00:01 in Shanghai: the held pages go out, on the new month's quota.
    rig.clock
        .set("2026-11-30T16:01:00Z".parse::<DateTime<Utc>>().unwrap());
    rig.wait_oplog("delivered", 40, Duration::from_secs(20)).await;
    let texts = delivered_texts(&rig.sim);
    assert!(
        (0..40).all(|i| texts.get(&format!("page-{i}")) == Some(&1)),
        "{texts:?}"
    );
    let quota = rig
        .get(&format!("/api/v1/integrations/{}/quota", rig.integration))
        .await;
    assert_eq!(quota["month"], "2026-12");
    assert_eq!(quota["by_class"]["send_to_person"], 11);
    assert_eq!(quota["used"].as_u64(), Some(rig.sim.quota_used()));
    assert_eq!(rig.get("/api/v1/jobs").await["items"], json!([]));
    rig.stop().await;
}

#[tokio::test]
async fn faults_are_retried_until_delivered_and_permanent_errors_end_at_once() {
    let _serial = SERIAL.lock().await;
    let rig = Setup {
        users: 60,
        sim_quota: None,
        integration: json!({"plan": "paid"}),
        tune: |s| {
            s.delivery.backoff_base = Duration::from_millis(20);
            s.delivery.backoff_max = Duration::from_millis(200);
        },
    }
    .start()
    .await;
    rig.sim.set_faults(Faults {
        error_rate: 0.2,
        kind: FaultKind::Mixed,
        latency: Duration::from_millis(20),
        hang: Duration::from_millis(300),
        outage: None,
        ..Faults::default()
    });
    let users = rig.users();
    let messages: Vec<Value> = (0..200)
        .map(|i| text("open_id", &users[i % 60], &format!("fault-{i}"), "info"))
        .collect();
    rig.send_all(&messages).await;
    let delivered = rig.wait_oplog("delivered", 200, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 200);
    let texts = delivered_texts(&rig.sim);
    assert!(
        (0..200).all(|i| texts.get(&format!("fault-{i}")) == Some(&1)),
        "{texts:?}"
    );
    let calls = rig.sim.calls();
    let faulted = calls.iter().filter(|c| c.status != 200).count();
    assert!(faulted >= 10, "only {faulted} faults injected");
    assert!(delivered.iter().any(|e| e["attempts"].as_u64() > Some(1)));
    assert!(rig.oplog("failed").await.is_empty());
    assert!(rate_limited(&calls).is_empty());

    // Permanent errors: a chat the bot is not in, a user the app cannot see. One call each.
    rig.sim.set_faults(Faults::default());
    let before = rig.sim.calls().len();
    rig.send_all(&[
        text("chat_id", "oc_without_bot", "nowhere", "critical"),
        text("open_id", "ou_nobody_here", "nobody", "critical"),
    ])
    .await;
    let failed = rig.wait_oplog("failed", 2, Duration::from_secs(10)).await;
    let reasons: HashMap<String, (String, i64, u64)> = failed
        .iter()
        .map(|e| {
            (
                e["receiver"].as_str().unwrap().to_string(),
                (
                    e["reason"].as_str().unwrap().to_string(),
                    e["lark_code"].as_i64().unwrap(),
                    e["attempts"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        reasons["chat_id:oc_without_bot"],
        ("bot_not_in_chat".to_string(), 230002, 1)
    );
    assert_eq!(
        reasons["open_id:ou_nobody_here"],
        ("user_not_visible".to_string(), 230013, 1)
    );
    // Give a wrongly scheduled retry the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<CallRecord> = rig.sim.calls().into_iter().skip(before).collect();
    let sends = after
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/messages"));
    assert_eq!(sends.count(), 2, "{after:#?}");
    let failed_jobs = rig.get("/api/v1/jobs?state=failed").await;
    assert_eq!(failed_jobs["items"].as_array().unwrap().len(), 2);
    let metrics = rig.metrics().await;
    assert!(metrics.contains("delivery_job_outcomes_total{kind=\"send\",outcome=\"failed\"} 2"));
    rig.stop().await;
}

#[tokio::test]
async fn one_quota_refusal_holds_every_job_and_raises_both_warnings() {
    let _serial = SERIAL.lock().await;
    const QUOTA: u64 = 100;
    let rig = Setup {
        users: 50,
        sim_quota: Some(QUOTA),
        integration: json!({"plan": "basic_free", "monthly_quota": QUOTA}),
        tune: |_| {},
    }
    .start()
    .await;
    rig.clock
        .set("2026-11-20T04:00:00Z".parse::<DateTime<Utc>>().unwrap());
    let users = rig.users();
    rig.send_all(&[text("open_id", &users[0], "before", "critical")])
        .await;
    rig.wait_oplog("delivered", 1, Duration::from_secs(10)).await;
    // Other tools of the tenant spend the rest of the month's quota: Lark's count (100) is now
    // far ahead of ours (a token fetch and one send), and a while passes.
    rig.sim.spend_quota(QUOTA - rig.sim.quota_used());
    rig.clock.advance(chrono::Duration::minutes(2));

    let pages: Vec<Value> = (1..=15)
        .map(|i| text("open_id", &users[i], &format!("page-{i}"), "critical"))
        .collect();
    rig.send_all(&pages).await;
    let held = rig.wait_oplog("held_quota", 15, Duration::from_secs(10)).await;
    assert_eq!(held.len(), 15);
    // Give a call that should not happen the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = rig
        .sim
        .calls()
        .iter()
        .filter(|c| c.code == Some(99991403))
        .count();
    assert_eq!(refused, 1, "one refusal teaches the whole integration");
    assert_eq!(rig.oplog("held_quota").await.len(), 15);
    let jobs = rig.get("/api/v1/jobs?state=held").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 15);
    // Our count jumped from 2 % to 100 % at once: both warnings are raised.
    let quota = rig
        .get(&format!("/api/v1/integrations/{}/quota", rig.integration))
        .await;
    assert_eq!(quota["percent_used"], 100.0);
    assert_eq!(quota["warnings"], json!([80, 95]));
    let metrics = rig.metrics().await;
    assert!(metrics.contains("delivery_quota_warnings_total 2"), "{metrics}");

    // December: the held pages go out, each once.
    rig.clock
        .set("2026-11-30T16:01:00Z".parse::<DateTime<Utc>>().unwrap());
    rig.wait_oplog("delivered", 16, Duration::from_secs(20)).await;
    let texts = delivered_texts(&rig.sim);
    assert!(
        (1..=15).all(|i| texts.get(&format!("page-{i}")) == Some(&1)),
        "{texts:?}"
    );
    assert_eq!(rig.get("/api/v1/jobs").await["items"], json!([]));
    rig.stop().await;
}
