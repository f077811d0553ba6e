//! Incidents end to end: the real appliance in-process on a clock the test moves, driven over
//! HTTP, sending through the Lark simulator — alert ingest (Alertmanager, standard events),
//! escalation (levels, repeats, delay windows, acknowledgement), card updates, card size, and
//! members Lark does not know.

mod common;

use std::time::Duration;

use common::inprocess::Harness;
use lark_oncall::delivery::oplog::{self, OpQuery};
use lark_oncall::incident::DemoPerson;
use lark_oncall::sim::Faults;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_incidenttest01";
const APP_SECRET: &str = "incident-test-secret";

impl Harness {
    async fn post_alert(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}?integration_key={key}", self.admin))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap())
    }

    async fn incident(&self, title: &str, description: &str) -> Value {
        self.create(
            "/api/v1/incidents",
            json!({"title": title, "description": description, "severity": "critical",
                   "labels": {"service": "db"}}),
        )
        .await
    }

    /// Moves the clock and runs the escalation tick at the new time.
    async fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(chrono::Duration::minutes(minutes));
        self.app().incidents.tick().await.unwrap();
    }
}

fn alertmanager(status: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "status": status, "receiver": "lark",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "warning", "instance": "db-1"},
        "commonAnnotations": {"summary": "Disk almost full on db-1"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": {"alertname": "DiskFull", "instance": "db-1"},
                    "annotations": {"description": "95% used"}, "startsAt": "2026-11-30T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "abc"}]
    })
}

async fn incidents(env: &Harness) -> Vec<Value> {
    let (status, list) = env.api(Method::GET, "/api/v1/incidents", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    list["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn alerts_open_merge_and_resolve_one_incident() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (status, source) = env
        .api(Method::POST, "/api/v1/sources", json!({"name": "prometheus"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = source["integration_key"].as_str().unwrap().to_string();
    let (_, listed) = env.api(Method::GET, "/api/v1/sources", Value::Null).await;
    assert!(!listed.to_string().contains(&key), "the key is shown once only");

    for _ in 0..10 {
        let (status, body) = env
            .post_alert("/api/v1/alerts/alertmanager", &key, &alertmanager("firing"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let open = incidents(&env).await;
    assert_eq!(open.len(), 1, "ten repeats make one incident");
    assert_eq!(open[0]["alert_count"], 10);
    assert_eq!(open[0]["title"], "Disk almost full on db-1");
    assert_eq!(open[0]["severity"], "warning");
    assert_eq!(open[0]["status"], "triggered");
    let (status, body) = env
        .post_alert("/api/v1/alerts/alertmanager", &key, &alertmanager("resolved"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], "resolved");
    let all = incidents(&env).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "resolved");

    // Alertmanager's http_config sends the key as a bearer token.
    let res = env
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", env.admin))
        .bearer_auth(&key)
        .json(&alertmanager("firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let after_resolve = incidents(&env).await;
    assert_eq!(
        after_resolve.len(),
        2,
        "a firing group after resolution opens a new incident"
    );

    let event = |status: &str| {
        json!({"title_rule": "订单服务错误率高", "event_status": status,
                                      "alert_key": "orders-5xx", "description": "5xx > 5%",
                                      "labels": {"service": "orders"}})
    };
    for _ in 0..3 {
        let (status, body) = env
            .post_alert("/api/v1/alerts/standard", &key, &event("Critical"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["request_id"].is_string());
        assert_eq!(body["data"]["alert_key"], "orders-5xx");
    }
    let (status, body) = env
        .post_alert("/api/v1/alerts/standard", &key, &event("Ok"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["result"], "resolved");
    let all = incidents(&env).await;
    assert_eq!(all.len(), 3);
    let orders = &all[0];
    assert_eq!(orders["title"], "订单服务错误率高");
    assert_eq!(orders["severity"], "critical");
    assert_eq!(orders["alert_count"], 3);
    assert_eq!(orders["status"], "resolved");

    // Bad payloads name the field; a wrong or missing key is 401.
    let (status, body) = env
        .post_alert(
            "/api/v1/alerts/standard",
            &key,
            &json!({"title_rule": "x", "event_status": "Fatal"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidParameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_status"),
        "{body}"
    );
    let (status, body) = env
        .post_alert("/api/v1/alerts/standard", &key, &json!({"event_status": "Ok"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("title_rule"),
        "{body}"
    );
    let (status, body) = env
        .post_alert("/api/v1/alerts/standard", "wrong", &event("Critical"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "Unauthorized");
    let mut no_group = alertmanager("firing");
    no_group.as_object_mut().unwrap().remove("groupKey");
    let (status, body) = env
        .post_alert("/api/v1/alerts/alertmanager", &key, &no_group)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("groupKey"),
        "{body}"
    );
    let res = env
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", env.admin))
        .json(&alertmanager("firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    env.stop().await;
}

#[tokio::test]
async fn unacknowledged_incidents_repeat_then_escalate() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let ghost = env.member("Ghost", "nobody@example.com").await;
    env.rule(json!([
        {"members": [alice, ghost], "chats": [env.chat()], "repeat_every_minutes": 5, "repeat_count": 1,
         "escalate_after_minutes": 10},
        {"members": [carol]}
    ]))
    .await;
    let inc = env.incident("DB primary down", "replication lag").await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    let (alice_id, carol_id, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("carol@example.com"),
        env.chat(),
    );
    env.wait_for("level 1 cards", |e| {
        e.cards_to(&alice_id).len() == 1 && e.cards_to(&chat).len() == 1
    })
    .await;
    assert!(env.cards_to(&alice_id)[0].content.contains("DB primary down"));

    // The member Lark does not know ends app_not_linked; the others got their cards.
    let entries = oplog::query(
        &env.app().store,
        &OpQuery {
            incident: Some(id.clone()),
            outcome: Some("app_not_linked".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0].receiver.as_deref(),
        Some(format!("member:{ghost}").as_str())
    );

    env.advance_minutes(5).await;
    env.wait_for("the repeat", |e| e.cards_to(&alice_id).len() == 2)
        .await;
    env.advance_minutes(3).await;
    env.settle().await;
    assert_eq!(env.cards_to(&alice_id).len(), 2, "one repeat only");
    assert!(
        env.cards_to(&carol_id).is_empty(),
        "not escalated before the wait"
    );
    env.advance_minutes(2).await;
    env.wait_for("level 2", |e| e.cards_to(&carol_id).len() == 1)
        .await;
    let (_, detail) = env
        .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
        .await;
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "triggered",
            "responders_added",
            "notified",
            "notified",
            "escalated",
            "responders_added",
            "notified"
        ]
    );
    env.stop().await;
}

#[tokio::test]
async fn acknowledged_incidents_do_not_escalate_and_closed_ones_in_the_delay_window_notify_nobody() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    env.rule(json!([
        {"members": [alice], "repeat_every_minutes": 5, "repeat_count": 3, "escalate_after_minutes": 10},
        {"members": [carol]}
    ]))
    .await;
    let (alice_id, carol_id) = (env.open_id("alice@example.com"), env.open_id("carol@example.com"));
    let inc = env.incident("API latency", "").await;
    env.app().incidents.tick().await.unwrap();
    env.wait_for("the first card", |e| e.cards_to(&alice_id).len() == 1)
        .await;
    let (status, acked) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/acknowledge", inc["number"]),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], json!(["token:tests"]));
    env.advance_minutes(30).await;
    env.settle().await;
    assert_eq!(env.cards_to(&alice_id).len(), 1, "no repeats once acknowledged");
    assert!(
        env.cards_to(&carol_id).is_empty(),
        "no escalation once acknowledged"
    );

    let (status, _) = env
        .api(
            Method::POST,
            "/api/v1/rules",
            json!({"name": "delayed", "integration_id": env.integration, "position": 0,
              "match": {"severities": ["warning"]}, "levels": [{"members": [carol], "delay_minutes": 5}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, warning) = env
        .api(
            Method::POST,
            "/api/v1/incidents",
            json!({"title": "flaky", "severity": "warning"}),
        )
        .await;
    env.advance_minutes(3).await;
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/resolve", warning["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    env.advance_minutes(10).await;
    env.settle().await;
    assert!(
        env.cards_to(&carol_id).is_empty(),
        "closed inside the delay window"
    );

    // When a snooze ends, level 1 hears again and the escalation wait starts over.
    let (status, snoozed) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/snooze", inc["id"].as_str().unwrap()),
            json!({"minutes": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{snoozed}");
    env.advance_minutes(59).await;
    env.settle().await;
    assert_eq!(env.cards_to(&alice_id).len(), 1);
    env.advance_minutes(2).await;
    env.wait_for("the card after the snooze", |e| e.cards_to(&alice_id).len() == 2)
        .await;
    let (_, after) = env
        .api(
            Method::GET,
            &format!("/api/v1/incidents/{}", inc["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(after["status"], "triggered");
    assert!(after["snoozed_until"].is_null());
    assert!(
        env.cards_to(&carol_id).is_empty(),
        "the escalation wait starts over"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_repeated_alert_that_is_more_urgent_raises_the_incident_and_its_cards() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let chat = env.chat();
    env.create(
        "/api/v1/rules",
        json!({"name": "all", "integration_id": env.integration,
               "match": {"severities": ["warning", "critical"]}, "levels": [{"chats": [chat]}]}),
    )
    .await;
    let source = env.create("/api/v1/sources", json!({"name": "grafana"})).await;
    let key = source["integration_key"].as_str().unwrap().to_string();
    let event = |status: &str| {
        json!({"title_rule": "Checkout latency high", "event_status": status,
               "alert_key": "checkout-p99", "labels": {"service": "checkout"}})
    };
    let (status, body) = env
        .post_alert("/api/v1/alerts/standard", &key, &event("Warning"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.app().incidents.tick().await.unwrap();
    env.wait_for("the warning card", |e| e.cards_to(&chat).len() == 1)
        .await;
    assert!(env.cards_to(&chat)[0].content.contains("Warning"));
    let id = incidents(&env).await[0]["id"].as_str().unwrap().to_string();
    env.wait_for("the card to be recorded", |e| {
        e.app().incidents.cards(&id).unwrap().len() == 1
    })
    .await;

    let (status, body) = env
        .post_alert("/api/v1/alerts/standard", &key, &event("Critical"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, incident) = env
        .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
        .await;
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["alert_count"], 2);
    let raised: Vec<&Value> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "severity_raised")
        .collect();
    assert_eq!(raised.len(), 1, "{incident}");
    assert_eq!(
        raised[0]["detail"],
        "severity raised from warning to critical by a repeated alert"
    );
    env.wait_for("the card updated to critical", |e| {
        let card = &e.cards_to(&chat)[0];
        card.updates >= 1 && card.content.contains("Critical") && card.content.contains("red")
    })
    .await;
    assert_eq!(env.cards_to(&chat).len(), 1, "updated in place, not sent again");

    // A less urgent repeat counts but never lowers the incident.
    env.post_alert("/api/v1/alerts/standard", &key, &event("Warning"))
        .await;
    let (_, incident) = env
        .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
        .await;
    assert_eq!(
        (incident["severity"].as_str(), incident["alert_count"].as_u64()),
        (Some("critical"), Some(3))
    );
    env.stop().await;
}

#[tokio::test]
async fn resolving_updates_every_card_and_old_cards_are_superseded() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice], "chats": [env.chat()]}]))
        .await;
    let (alice_id, chat) = (env.open_id("alice@example.com"), env.chat());
    // A 100 KB description in Chinese still makes a card Lark accepts.
    let description = "数据库连接池耗尽，订单写入失败，请立即排查。".repeat(2400);
    assert!(description.len() > 100 * 1024);
    let inc = env.incident("订单库故障", &description).await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    env.wait_for("both cards", |e| {
        e.cards_to(&alice_id).len() == 1 && e.cards_to(&chat).len() == 1
    })
    .await;
    let card = &env.cards_to(&chat)[0];
    assert!(card.content.len() < 30 * 1024, "{} bytes", card.content.len());
    assert!(card.content.contains("View in app for the full text"));
    assert!(card.content.contains(&format!(
        "https://oncall.example.com/lark/{}/app/incidents/{id}",
        env.integration
    )));
    env.wait_for("the cards to be recorded", |e| {
        e.app().incidents.cards(&id).unwrap().len() == 2
    })
    .await;

    let (status, resolved) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    env.wait_for("both cards updated", |e| {
        [&alice_id, &chat].iter().all(|r| {
            e.cards_to(r)
                .iter()
                .all(|m| m.updates >= 1 && m.content.contains("[Resolved]"))
        })
    })
    .await;
    let patches = env
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.status == 200)
        .count();
    assert_eq!(patches, 2);
    assert!(env.cards_to(&chat)[0].content.contains(r#""action":"reopen""#));

    // Fifteen days on, Lark no longer updates those cards: a reopen sends fresh ones.
    env.clock.advance(chrono::Duration::days(15));
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/reopen"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    env.wait_for("fresh cards", |e| {
        e.cards_to(&chat).len() >= 2 && e.cards_to(&alice_id).len() >= 2
    })
    .await;
    env.settle().await;
    let failed = oplog::query(
        &env.app().store,
        &OpQuery {
            outcome: Some("failed".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        failed.is_empty(),
        "no update was tried past the window: {failed:?}"
    );
    let (_, detail) = env
        .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
        .await;
    for card in detail["cards"].as_array().unwrap() {
        let old = [
            &env.cards_to(&chat)[0].message_id,
            &env.cards_to(&alice_id)[0].message_id,
        ];
        assert!(!old.contains(&&card["message_id"].as_str().unwrap().to_string()));
    }
    env.stop().await;
}

#[tokio::test]
async fn the_admin_api_checks_what_it_is_given() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let (status, body) = env
        .api(
            Method::POST,
            "/api/v1/incidents",
            json!({"title": "x", "severity": "fatal"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("severity"),
        "{body}"
    );
    let (status, body) = env
        .api(
            Method::POST,
            "/api/v1/rules",
            json!({"name": "r", "integration_id": env.integration,
              "levels": [{"chats": ["oc_not_a_chat_of_the_bot"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("levels[0].chats"),
        "{body}"
    );
    let (status, body) = env
        .api(
            Method::POST,
            "/api/v1/rules",
            json!({"name": "r", "integration_id": "nope", "levels": [{"chats": [env.chat()]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let inc = env.incident("x", "").await;
    let path = format!("/api/v1/incidents/{}/snooze", inc["number"]);
    let (status, body) = env.api(Method::POST, &path, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("minutes"),
        "{body}"
    );
    let (status, body) = env.api(Method::POST, &path, json!({"minutes": 60})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["snoozed_until"].is_string());
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/explode", inc["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/reopen", inc["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = env.api(Method::GET, "/api/v1/incidents/999", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, filtered) = env
        .api(Method::GET, "/api/v1/incidents?status=resolved", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(filtered["items"].as_array().unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn the_demo_seed_routes_an_alert_to_people_and_chats() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let world = env.sim.world();
    let people: Vec<DemoPerson> = world
        .users
        .iter()
        .take(3)
        .map(|u| DemoPerson {
            name: u.name.clone(),
            email: u.email.clone(),
            mobile: u.mobile.clone(),
        })
        .collect();
    let chats: Vec<String> = world
        .chats
        .iter()
        .filter(|c| c.apps.iter().any(|a| a == APP_ID))
        .map(|c| c.chat_id.clone())
        .collect();
    let seed = env
        .app()
        .incidents
        .seed_demo(&env.integration, &people, &chats)
        .await
        .unwrap();
    assert_eq!(seed.member_ids.len(), 3);
    let (_, members) = env.api(Method::GET, "/api/v1/members", Value::Null).await;
    for m in members["items"].as_array().unwrap() {
        assert!(
            m["lark"][&env.integration]["open_id"].is_string(),
            "linked by look-up: {m}"
        );
    }
    let (status, body) = env
        .post_alert(
            "/api/v1/alerts/standard",
            &seed.integration_key,
            &json!({"title_rule": "demo: checkout errors", "event_status": "Critical"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.app().incidents.tick().await.unwrap();
    let first = world.users[0].open_id.clone();
    env.wait_for("the demo cards", |e| {
        chats.iter().all(|c| e.cards_to(c).len() == 1) && e.cards_to(&first).len() == 1
    })
    .await;
    assert!(
        env.cards_to(&chats[0])[0]
            .content
            .contains("demo: checkout errors")
    );
    env.stop().await;
}

#[tokio::test]
async fn escalation_resumes_after_a_restart() {
    let mut env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    env.rule(json!([
        {"members": [alice], "escalate_after_minutes": 10},
        {"members": [carol], "delay_minutes": 5}
    ]))
    .await;
    let (alice_id, carol_id) = (env.open_id("alice@example.com"), env.open_id("carol@example.com"));
    env.incident("disk full", "").await;
    env.app().incidents.tick().await.unwrap();
    env.wait_for("level 1", |e| e.cards_to(&alice_id).len() == 1)
        .await;
    env.advance_minutes(10).await;
    env.settle().await;
    assert!(env.cards_to(&carol_id).is_empty(), "level 2 waits out its delay");
    env.restart().await;
    env.advance_minutes(5).await;
    env.wait_for("level 2 after the restart", |e| e.cards_to(&carol_id).len() == 1)
        .await;
    assert_eq!(env.cards_to(&alice_id).len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_card_delivered_after_its_incident_changed_is_brought_up_to_date() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice]}])).await;
    let alice_id = env.open_id("alice@example.com");
    env.api(
        Method::POST,
        &format!("/api/v1/members/link?integration_id={}", env.integration),
        Value::Null,
    )
    .await;
    // Lark answers slowly, so the acknowledgement lands while the first card is in flight.
    env.sim.set_faults(Faults {
        latency: Duration::from_millis(800),
        ..Faults::default()
    });
    let inc = env.incident("slow Lark", "").await;
    env.app().incidents.tick().await.unwrap();
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{}/acknowledge", inc["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(env.cards_to(&alice_id).is_empty(), "the card was still in flight");
    env.wait_for("the card to show the acknowledgement", |e| {
        e.cards_to(&alice_id)
            .first()
            .is_some_and(|m| m.updates >= 1 && !m.content.contains(r#""action":"ack""#))
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn a_responder_finds_their_incidents_behind_a_page_of_other_peoples() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let member = env.create("/api/v1/members", json!({"name": "Wang Fang"})).await;
    let mine = env
        .create(
            "/api/v1/incidents",
            json!({"title": "mine", "severity": "warning", "assignees": [member["id"]]}),
        )
        .await;
    // More newer incidents than one default page (50), none of them hers.
    for i in 0..60 {
        env.create(
            "/api/v1/incidents",
            json!({"title": format!("other {i}"), "severity": "info"}),
        )
        .await;
    }
    let path = format!(
        "/api/v1/incidents?status=triggered&assignee={}",
        member["id"].as_str().unwrap()
    );
    let (status, list) = env.api(Method::GET, &path, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, vec![&mine["id"]]);
    let (_, nobody) = env
        .api(Method::GET, "/api/v1/incidents?assignee=mem_nobody", Value::Null)
        .await;
    assert!(nobody["items"].as_array().unwrap().is_empty(), "{nobody}");
    env.stop().await;
}

#[tokio::test]
async fn the_open_view_follows_every_change_and_is_rebuilt_for_an_older_state_file() {
    use lark_oncall::incident::tables::OPEN_INCIDENTS;
    use lark_oncall::store::tables::META;

    let mut env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let mut made = Vec::new();
    for title in ["a", "b", "c", "d", "e"] {
        let inc = env
            .create(
                "/api/v1/incidents",
                json!({"title": title, "severity": "warning"}),
            )
            .await;
        made.push((
            inc["id"].as_str().unwrap().to_string(),
            inc["number"].as_u64().unwrap(),
        ));
    }
    let act = |i: usize, action: &'static str| {
        let path = format!("/api/v1/incidents/{}/{action}", made[i].0);
        let env = &env;
        async move {
            let (status, body) = env.api(Method::POST, &path, Value::Null).await;
            assert_eq!(status, StatusCode::OK, "{action}: {body}");
        }
    };
    act(1, "acknowledge").await;
    act(2, "resolve").await;
    act(3, "resolve").await;
    act(3, "reopen").await;
    assert_eq!(listed(&env, "status=open").await, ["e", "d", "b", "a"]);
    assert_eq!(listed(&env, "status=triggered").await, ["e", "d", "a"]);
    assert_eq!(listed(&env, "status=acknowledged").await, ["b"]);
    assert_eq!(listed(&env, "status=resolved").await, ["c"]);
    assert_eq!(listed(&env, "status=open&limit=2").await, ["e", "d"]);
    assert_eq!(
        listed(&env, &format!("status=open&before={}", made[3].1)).await,
        ["b", "a"]
    );

    // A state file written before the open index existed has neither the index nor its marker.
    let numbers: Vec<u64> = made.iter().map(|(_, n)| *n).collect();
    env.app()
        .store
        .write(move |w| {
            for n in &numbers {
                w.remove(&OPEN_INCIDENTS, n)?;
            }
            w.remove(&META, "incident_open_index_built").map(drop)
        })
        .await
        .unwrap();
    assert!(
        listed(&env, "status=open").await.is_empty(),
        "the open view reads the index"
    );
    env.restart().await;
    assert_eq!(listed(&env, "status=open").await, ["e", "d", "b", "a"]);
    let (status, body) = env
        .api(Method::GET, "/api/v1/incidents?status=closed", Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.to_string()
            .contains("open, triggered, acknowledged or resolved"),
        "{body}"
    );
    env.stop().await;
}

/// The titles `GET /api/v1/incidents?{query}` lists, in order.
async fn listed(env: &Harness, query: &str) -> Vec<String> {
    let (status, list) = env
        .api(Method::GET, &format!("/api/v1/incidents?{query}"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_string())
        .collect()
}
