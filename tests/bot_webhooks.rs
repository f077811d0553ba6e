//! Custom group-bot webhooks as a notification target (issue 17.1), the appliance against the
//! simulator's hook endpoint over HTTP: a rule's card arrives signed and state changes follow
//! as short messages spaced a minute apart; a wrong secret ends `sign_mismatch` without retries;
//! 150 notifications in a minute are spread within 5/s and 100/min with no 11232; the URL and
//! the secret never appear in an API answer or the log.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::inprocess::Harness;
use common::{Instance, client, oplog};
use lark_oncall::sim::{SimApp, SimBotHook, SimBotHookSetup, SimConfig, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_botwebhooks01";
const APP_SECRET: &str = "bot-webhooks-secret";

impl Harness {
    fn hook_setup(&self, secret: Option<&str>, keywords: &[&str]) -> (SimBotHook, String) {
        let hook = self
            .sim
            .add_bot_hook(SimBotHookSetup {
                name: "ops-bot".into(),
                chat_id: None,
                secret: secret.map(str::to_string),
                keywords: keywords.iter().map(|k| k.to_string()).collect(),
                ip_whitelist: Vec::new(),
            })
            .unwrap();
        let url = self.sim.bot_hook_url(&hook);
        (hook, url)
    }

    fn hook(&self, token: &str) -> SimBotHook {
        self.sim
            .bot_hooks()
            .into_iter()
            .find(|h| h.token == token)
            .unwrap()
    }

    async fn bot_webhook(&self, body: Value) -> String {
        let created = self.create("/api/v1/bot-webhooks", body).await;
        created["id"].as_str().unwrap().to_string()
    }

    async fn hook_rule(&self, webhook: &str) {
        self.rule(json!([{"bot_webhooks": [webhook]}])).await;
    }

    async fn open_incident(&self, title: &str) -> Value {
        let incident = self
            .create(
                "/api/v1/incidents",
                json!({"title": title, "severity": "critical", "description": "disk /var is 99% full"}),
            )
            .await;
        self.app().incidents.tick().await.unwrap();
        incident
    }
}

#[tokio::test]
async fn a_signed_card_arrives_and_state_changes_follow_a_minute_apart() {
    let h = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (hook, url) = h.hook_setup(Some("hook-signing-secret"), &["[oncall]"]);
    let created = h
        .create(
            "/api/v1/bot-webhooks",
            json!({"name": "Ops group", "url": url, "secret": "hook-signing-secret", "keyword": "[oncall]"}),
        )
        .await;
    assert_eq!(created["url_set"], true);
    assert_eq!(created["secret_set"], true);
    assert_eq!(created["keyword"], "[oncall]");
    let id = created["id"].as_str().unwrap().to_string();
    h.hook_rule(&id).await;
    let incident = h.open_incident("Disk full").await;
    h.wait_for("the card at the hook", |h| h.hook(&hook.token).delivered() == 1)
        .await;

    let post = &h.hook(&hook.token).posts[0];
    assert!(post.signed, "the post carries timestamp and sign");
    assert_eq!(post.msg_type.as_deref(), Some("interactive"));
    let card = h
        .sim
        .messages()
        .into_iter()
        .find(|m| m.chat_id == hook.chat_id && m.msg_type == "interactive")
        .expect("the card is in the hook's group");
    let card: Value = serde_json::from_str(&card.content).unwrap();
    let title = card["header"]["title"]["content"].as_str().unwrap();
    assert!(
        title.starts_with("[oncall] #"),
        "the keyword leads the title: {title}"
    );
    let incident_url = format!(
        "https://oncall.example.com/lark/{}/app/incidents/{}",
        h.integration,
        incident["id"].as_str().unwrap()
    );
    let buttons: Vec<&Value> = card["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tag"] == "action")
        .flat_map(|e| e["actions"].as_array().unwrap())
        .collect();
    assert!(buttons.len() >= 2, "{card}");
    for button in buttons {
        assert_eq!(button["multi_url"]["url"], incident_url.as_str());
    }

    // Acknowledged, then resolved at once: the first change goes now, the second waits a minute.
    let number = incident["number"].as_u64().unwrap();
    for action in ["acknowledge", "resolve"] {
        let (status, body) = h
            .api(
                Method::POST,
                &format!("/api/v1/incidents/{number}/{action}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    h.wait_for("the acknowledgement at the hook", |h| {
        h.hook(&hook.token).delivered() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.hook(&hook.token).delivered(),
        2,
        "the second change waits for its minute"
    );
    h.clock.advance(chrono::Duration::seconds(61));
    h.app().delivery.tick();
    h.wait_for("the resolution at the hook", |h| {
        h.hook(&hook.token).delivered() == 3
    })
    .await;
    let texts: Vec<String> = h
        .sim
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == hook.chat_id && m.msg_type == "text")
        .map(|m| m.content)
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("acknowledged") && texts[0].contains("[oncall]"),
        "{}",
        texts[0]
    );
    assert!(texts[1].contains("resolved"), "{}", texts[1]);

    // The sim records a post before the appliance commits its outcome: wait for the third.
    let delivered = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=delivered",
        3,
        Duration::from_secs(10),
    )
    .await;
    let hook_posts = delivered.iter().filter(|e| e["kind"] == "bot_hook").count();
    assert_eq!(hook_posts, 3);
    // Not the app's calls: their own line, none of the quota.
    let (_, quota) = h
        .api(
            Method::GET,
            &format!("/api/v1/integrations/{}/quota", h.integration),
            Value::Null,
        )
        .await;
    assert_eq!(quota["bot_webhooks"][0]["id"], id.as_str());
    assert_eq!(quota["bot_webhooks"][0]["calls"], 3);
    assert_eq!(quota["bot_webhooks"][0]["counts_against_quota"], false);
    assert!(quota["by_class"].get("bot_webhook").is_none(), "{quota}");
    assert_eq!(quota["used"], 0, "no app call was made: {quota}");
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_ends_sign_mismatch_without_retries() {
    let h = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (hook, url) = h.hook_setup(Some("the-right-secret"), &[]);
    let id = h
        .bot_webhook(json!({"name": "Ops", "url": url, "secret": "a-wrong-secret"}))
        .await;
    h.hook_rule(&id).await;
    h.open_incident("Disk full").await;
    let failed = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=failed",
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(failed[0]["kind"], "bot_hook");
    assert_eq!(failed[0]["reason"], "sign_mismatch");
    assert_eq!(failed[0]["lark_code"], 19021);
    let words = failed[0]["lark_message"].as_str().unwrap();
    assert!(words.contains("signing secret"), "{words}");
    h.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = h.hook(&hook.token).posts;
    assert_eq!(posts.len(), 1, "a permanent refusal is not retried: {posts:?}");
    assert_eq!(posts[0].code, 19021);
    let retries = oplog::all(&h.http, &h.admin, &h.token, "outcome=retry").await;
    assert!(retries.is_empty(), "{retries:?}");
    h.stop().await;
}

/// The most posts within any `window` of arrival times.
fn most_in_any(times: &[DateTime<Utc>], window: chrono::Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut lo = 0;
    let mut best = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test]
async fn a_storm_of_150_is_spread_within_100_a_minute_without_11232() {
    let h = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (hook, url) = h.hook_setup(None, &[]);
    let id = h.bot_webhook(json!({"name": "Ops", "url": url})).await;
    h.hook_rule(&id).await;
    for i in 0..150 {
        h.create(
            "/api/v1/incidents",
            json!({"title": format!("host-{i} down"), "severity": "critical"}),
        )
        .await;
    }
    h.app().incidents.tick().await.unwrap();
    // The hook's windows run on the clock: move it a second at a time instead of waiting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.hook(&hook.token).posts.len() < 150 {
        assert!(
            Instant::now() < deadline,
            "{} of 150 posts",
            h.hook(&hook.token).posts.len()
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        h.clock.advance(chrono::Duration::seconds(1));
        h.app().delivery.tick();
    }
    let posts = h.hook(&hook.token).posts;
    assert_eq!(
        posts.iter().filter(|p| p.code == 11232).count(),
        0,
        "no post was refused"
    );
    assert_eq!(posts.iter().filter(|p| p.code == 0).count(), 150);
    let times: Vec<DateTime<Utc>> = posts.iter().map(|p| p.at).collect();
    assert!(most_in_any(&times, chrono::Duration::minutes(1)) <= 100);
    assert!(most_in_any(&times, chrono::Duration::seconds(1)) <= 5);
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        span >= chrono::Duration::seconds(60),
        "the last 50 waited for the minute: {span}"
    );
    h.stop().await;
}

#[tokio::test]
async fn posts_around_the_top_of_the_hour_go_one_a_second_without_11232() {
    let h = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (hook, url) = h.hook_setup(None, &[]);
    let id = h.bot_webhook(json!({"name": "Ops", "url": url})).await;
    h.hook_rule(&id).await;
    // Alerts fired by the same cron as everyone else's, 3 s before the next full hour (forward:
    // the hook's windows run on the clock).
    use lark_oncall::clock::Clock;
    let now = h.clock.now().timestamp();
    let mut start = (now / 3600 + 1) * 3600 - 3;
    if start <= now {
        start += 3600;
    }
    h.clock.set(DateTime::from_timestamp(start, 0).unwrap());
    for i in 0..20 {
        h.create(
            "/api/v1/incidents",
            json!({"title": format!("cron-{i} failed"), "severity": "critical"}),
        )
        .await;
    }
    h.app().incidents.tick().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.hook(&hook.token).posts.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "{} of 20 posts",
            h.hook(&hook.token).posts.len()
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        h.clock.advance(chrono::Duration::milliseconds(250));
        h.app().delivery.tick();
    }
    let posts = h.hook(&hook.token).posts;
    assert_eq!(posts.iter().filter(|p| p.code == 11232).count(), 0, "{posts:?}");
    assert_eq!(posts.iter().filter(|p| p.code == 0).count(), 20);
    let busy = |t: &DateTime<Utc>| {
        let s = t.timestamp().rem_euclid(1800);
        !(10..1798).contains(&s)
    };
    let in_busy: Vec<DateTime<Utc>> = posts.iter().map(|p| p.at).filter(busy).collect();
    assert!(in_busy.len() >= 2, "some posts went in the busy span: {posts:?}");
    assert!(
        most_in_any(&in_busy, chrono::Duration::seconds(1)) <= 1,
        "one a second around :00: {in_busy:?}"
    );
    let after: Vec<DateTime<Utc>> = posts.iter().map(|p| p.at).filter(|t| !busy(t)).collect();
    assert!(
        most_in_any(&after, chrono::Duration::seconds(1)) > 1,
        "the usual 5/s once the span is over: {after:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_post_from_outside_the_hooks_ip_whitelist_ends_ip_not_allowed() {
    let h = Harness::builder(APP_ID, APP_SECRET).start().await;
    let fenced = h
        .sim
        .add_bot_hook(SimBotHookSetup {
            name: "fenced".into(),
            ip_whitelist: vec!["10.20.30.*".into()],
            ..SimBotHookSetup::default()
        })
        .unwrap();
    let open = h
        .sim
        .add_bot_hook(SimBotHookSetup {
            name: "loopback".into(),
            ip_whitelist: vec!["127.0.0.0/8".into()],
            ..SimBotHookSetup::default()
        })
        .unwrap();
    let fenced_id = h
        .bot_webhook(json!({"name": "Fenced", "url": h.sim.bot_hook_url(&fenced)}))
        .await;
    let open_id = h
        .bot_webhook(json!({"name": "Loopback", "url": h.sim.bot_hook_url(&open)}))
        .await;
    h.rule(json!([{"bot_webhooks": [fenced_id, open_id]}])).await;
    h.open_incident("Disk full").await;
    let failed = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=failed",
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(failed[0]["reason"], "ip_not_allowed", "{failed:?}");
    assert_eq!(failed[0]["lark_code"], 19022);
    h.settle().await;
    let fenced_posts = h.hook(&fenced.token).posts;
    assert_eq!(fenced_posts.len(), 1, "not retried: {fenced_posts:?}");
    assert_eq!(fenced_posts[0].code, 19022);
    assert_eq!(
        h.hook(&open.token).delivered(),
        1,
        "a whitelisted address gets through"
    );
    let (status, _) = client()
        .post(format!("{}/sim/api/bot_hooks", h.sim.base_url()))
        .json(&json!({"name": "bad", "ip_whitelist": ["10.0.*.1"]}))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the simulator refuses a malformed entry"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_url_and_secret_never_appear_in_answers_or_the_log() {
    common::install_crypto_provider();
    let sim = Simulator::start(SimConfig::new(vec![SimApp::new(
        APP_ID,
        APP_SECRET,
        "verification",
    )]))
    .await
    .unwrap();
    let inst = Instance::new("");
    let token = inst.offline_token();
    let server = inst.serve();
    let http = client();
    let call = |method: Method, path: &str, body: Value| {
        let req = http
            .request(method, format!("{}{path}", server.admin))
            .bearer_auth(&token);
        let req = if body.is_null() { req } else { req.json(&body) };
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };
    let (status, created) = call(
        Method::POST,
        "/api/v1/integrations",
        json!({"name": "Ops", "app_id": APP_ID, "app_secret": APP_SECRET,
               "verification_token": "verification", "api_base_url": sim.base_url()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let integration = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = "s3cr3t-signing-value";
    let good = sim
        .add_bot_hook(SimBotHookSetup {
            name: "good".into(),
            secret: Some(secret.into()),
            ..SimBotHookSetup::default()
        })
        .unwrap();
    let bad = sim
        .add_bot_hook(SimBotHookSetup {
            name: "bad".into(),
            secret: Some("something-else".into()),
            ..SimBotHookSetup::default()
        })
        .unwrap();
    let mut answers = Vec::new();
    let mut ids = Vec::new();
    for hook in [&good, &bad] {
        let (status, body) = call(
            Method::POST,
            "/api/v1/bot-webhooks",
            json!({"name": hook.name, "url": sim.bot_hook_url(hook), "secret": secret}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(
            serde_json::from_str::<Value>(&body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        answers.push(body);
    }
    let (status, body) = call(
        Method::POST,
        "/api/v1/rules",
        json!({"name": "all", "integration_id": integration, "levels": [{"bot_webhooks": ids}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        Method::POST,
        "/api/v1/incidents",
        json!({"title": "Disk full", "severity": "critical"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hooks = sim.bot_hooks();
        if hooks.iter().all(|h| !h.posts.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no post reached both hooks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The failed one is recorded before its answer is looked at.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in [
        "/api/v1/bot-webhooks".to_string(),
        format!("/api/v1/bot-webhooks/{}", ids[0]),
        "/api/v1/oplog?limit=500".to_string(),
        "/api/v1/jobs".to_string(),
        format!("/api/v1/integrations/{integration}/quota"),
    ] {
        let (status, body) = call(Method::GET, &path, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        answers.push(body);
    }
    let (_, patched) = call(
        Method::PATCH,
        &format!("/api/v1/bot-webhooks/{}", ids[0]),
        json!({"keyword": "oncall"}),
    )
    .await;
    answers.push(patched);
    let oplog = &answers[4];
    assert!(oplog.contains("sign_mismatch"), "the bad hook failed: {oplog}");
    let log = server.log_text();
    for needle in [good.token.as_str(), bad.token.as_str(), secret] {
        for answer in &answers {
            assert!(!answer.contains(needle), "{needle} in an answer: {answer}");
        }
        assert!(!log.contains(needle), "{needle} in the log");
        // Sealed at rest: not in the state file either.
        assert!(
            !common::file_contains(&inst.state_path(), needle.as_bytes()),
            "{needle} in the state file"
        );
    }
    sim.shutdown().await;
}
