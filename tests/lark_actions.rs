//! Acting on incidents from Lark, end to end: the real appliance in-process with the simulator
//! pushing to its Request URL — card buttons (both callback versions), linked and unlinked
//! people, presses that already happened.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::inprocess::Harness;
use lark_oncall::sim::{CardCallbackVersion, SimMessage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_actiontest0001";
const APP_SECRET: &str = "action-test-secret";

/// The appliance with the simulator pushing card callbacks of `version` to its Request URL.
async fn start(version: CardCallbackVersion) -> Harness {
    Harness::builder(APP_ID, APP_SECRET)
        .callbacks(version)
        .start()
        .await
}

impl Harness {
    /// A member Alice paged with a card to her and one to the group; returns the incident.
    async fn paged_incident(&self) -> Value {
        let alice = self.member("Alice", "alice@example.com").await;
        self.rule(json!([{"members": [alice], "chats": [self.chat()]}]))
            .await;
        let inc = self
            .create(
                "/api/v1/incidents",
                json!({"title": "DB down", "severity": "critical"}),
            )
            .await;
        let id = inc["id"].as_str().unwrap().to_string();
        self.app().incidents.tick().await.unwrap();
        let (alice_id, chat) = (self.open_id("alice@example.com"), self.chat());
        self.wait_for("both cards", |e| {
            e.cards_to(&alice_id).len() == 1 && e.cards_to(&chat).len() == 1
        })
        .await;
        self.wait_for("the cards to be recorded", |e| {
            e.app().incidents.cards(&id).unwrap().len() == 2
        })
        .await;
        inc
    }

    async fn incident(&self, id: &str) -> Value {
        let (status, inc) = self
            .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{inc}");
        inc
    }
}

async fn buttons_act_for_linked_people_only(version: CardCallbackVersion) {
    let env = start(version).await;
    let inc = env.paged_incident().await;
    let id = inc["id"].as_str().unwrap();
    let (alice, bob, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.chat(),
    );
    let group_card = env.cards_to(&chat)[0].clone();
    let ack = json!({"action": "ack", "incident": id});

    // Bob is in the group but no member is linked to him: he is told how to link, nothing changes.
    let outcome = env
        .sim
        .press_button(&bob, &group_card.message_id, ack.clone())
        .await
        .unwrap();
    assert_eq!(outcome.status, Some(200), "{outcome:?}");
    let toast = outcome.toast.clone().unwrap();
    assert_eq!(toast["type"], "warning");
    let hint = format!("https://oncall.example.com/lark/{}/app", env.integration);
    assert!(toast["content"].as_str().unwrap().contains(&hint), "{toast}");
    assert!(!outcome.card_replaced);
    assert_eq!(env.incident(id).await["status"], "triggered");

    // Alice (linked when she was paged) acknowledges from the group card.
    let outcome = env
        .sim
        .press_button(&alice, &group_card.message_id, ack.clone())
        .await
        .unwrap();
    assert_eq!(outcome.status, Some(200), "{outcome:?}");
    assert_eq!(outcome.client_error, None);
    let toast = outcome.toast.clone().unwrap();
    assert_eq!(toast["type"], "success", "{toast}");
    assert!(outcome.card_replaced);
    let after = env.incident(id).await;
    assert_eq!(after["status"], "acknowledged");
    assert_eq!(after["acknowledged_by"], json!(["Alice"]));
    let pressed = env
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == group_card.message_id)
        .unwrap();
    assert!(
        !pressed.content.contains(r#""action":"ack""#),
        "{}",
        pressed.content
    );
    // Her own copy is brought up to date through the outbox.
    env.wait_for("Alice's copy updated", |e| {
        e.cards_to(&alice)
            .iter()
            .all(|m| m.updates >= 1 && !m.content.contains(r#""action":"ack""#))
    })
    .await;
    env.settle().await;
    let version_after = after["version"].clone();

    // A second press (a stale card) changes nothing and says what already happened.
    let outcome = env
        .sim
        .press_button(&alice, &group_card.message_id, ack)
        .await
        .unwrap();
    let toast = outcome.toast.clone().unwrap();
    assert_eq!(toast["type"], "info");
    assert!(
        toast["content"]
            .as_str()
            .unwrap()
            .contains("already acknowledged by Alice"),
        "{toast}"
    );
    let again = env.incident(id).await;
    assert_eq!(again["version"], version_after);
    assert_eq!(
        again["timeline"].as_array().unwrap().len(),
        after["timeline"].as_array().unwrap().len()
    );

    // Resolving from her own card resolves, and pressing it again only says so.
    let own = env.cards_to(&alice)[0].message_id.clone();
    let resolve = json!({"action": "resolve", "incident": id});
    let outcome = env.sim.press_button(&alice, &own, resolve.clone()).await.unwrap();
    assert_eq!(outcome.toast.unwrap()["type"], "success");
    assert_eq!(env.incident(id).await["status"], "resolved");
    let outcome = env.sim.press_button(&alice, &own, resolve).await.unwrap();
    let toast = outcome.toast.unwrap();
    assert!(
        toast["content"]
            .as_str()
            .unwrap()
            .contains("already resolved by Alice"),
        "{toast}"
    );
    env.wait_for("the group card shows it resolved", |e| {
        e.cards_to(&chat).iter().all(|m| m.content.contains("[Resolved]"))
    })
    .await;
    // Every press reached the appliance in the callback version under test.
    let expected = match version {
        CardCallbackVersion::V1 => "card.action.trigger_v1",
        CardCallbackVersion::V2 => "card.action.trigger",
    };
    let callbacks: Vec<String> = env
        .sim
        .pushes()
        .into_iter()
        .filter(|p| p.kind == "card_callback")
        .map(|p| p.event_type)
        .collect();
    assert_eq!(callbacks.len(), 5, "{callbacks:?}");
    assert!(callbacks.iter().all(|t| t == expected), "{callbacks:?}");
    env.stop().await;
}

#[tokio::test]
async fn card_buttons_with_the_new_callback() {
    buttons_act_for_linked_people_only(CardCallbackVersion::V2).await;
}

#[tokio::test]
async fn card_buttons_with_the_old_callback() {
    buttons_act_for_linked_people_only(CardCallbackVersion::V1).await;
}

type Received = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on 127.0.0.1:0 keeping (event header, signature header, body).
async fn webhook_receiver() -> (String, Received) {
    use warp::Filter;
    let seen: Received = Arc::default();
    let log = seen.clone();
    let route = warp::post()
        .and(warp::header::<String>(lark_oncall::webhook::EVENT_HEADER))
        .and(warp::header::<String>(lark_oncall::webhook::SIGNATURE_HEADER))
        .and(warp::body::bytes())
        .map(move |event: String, sig: String, body: bytes::Bytes| {
            let body = String::from_utf8(body.to_vec()).unwrap();
            log.lock().unwrap().push((event, sig, body));
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn incident_events_reach_webhooks_signed_and_in_order() {
    let env = start(CardCallbackVersion::V2).await;
    let (url, seen) = webhook_receiver().await;
    let (status, sub) = env
        .api(
            Method::POST,
            "/api/v1/webhooks",
            json!({"name": "upstream", "url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    let secret = sub["secret"].as_str().unwrap().to_string();
    let inc = env.paged_incident().await;
    let id = inc["id"].as_str().unwrap();
    let alice = env.open_id("alice@example.com");
    let own = env.cards_to(&alice)[0].message_id.clone();
    for action in ["ack", "resolve"] {
        let outcome = env
            .sim
            .press_button(&alice, &own, json!({"action": action, "incident": id}))
            .await
            .unwrap();
        assert_eq!(outcome.toast.unwrap()["type"], "success");
    }
    env.wait_for("three webhook events", |_| seen.lock().unwrap().len() >= 3)
        .await;
    let seen = seen.lock().unwrap().clone();
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["i_new", "i_ack", "i_rslv"]);
    let bodies: Vec<Value> = seen
        .iter()
        .map(|(_, sig, body)| {
            assert_eq!(sig, &lark_oncall::webhook::signature(&secret, body.as_bytes()));
            serde_json::from_str(body).unwrap()
        })
        .collect();
    assert!(bodies.iter().all(|b| b["incident"]["id"] == id));
    assert_eq!(bodies[0]["incident"]["status"], "triggered");
    assert_eq!(bodies[1]["operator"]["source"], "card");
    assert_eq!(bodies[1]["operator"]["name"], "Alice");
    assert!(bodies[1]["operator"]["id"].is_string());
    assert_eq!(bodies[1]["incident"]["status"], "acknowledged");
    assert_eq!(bodies[2]["incident"]["status"], "resolved");
    env.stop().await;
}

#[tokio::test]
async fn a_disbanded_chat_flags_its_rules_and_gets_no_more_cards() {
    let env = start(CardCallbackVersion::V2).await;
    env.paged_incident().await;
    let chat = env.chat();
    let (_, rules) = env.api(Method::GET, "/api/v1/rules", Value::Null).await;
    assert_eq!(rules["items"][0]["needs_attention"], json!([]));

    env.sim.disband_chat(&chat).await.unwrap();
    let flag = json!([format!("chat {chat} disbanded")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, rules) = env.api(Method::GET, "/api/v1/rules", Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        if rules["items"][0]["needs_attention"] == flag {
            let rule_id = rules["items"][0]["id"].as_str().unwrap().to_string();
            let (_, rule) = env
                .api(Method::GET, &format!("/api/v1/rules/{rule_id}"), Value::Null)
                .await;
            assert_eq!(rule["needs_attention"], flag);
            break;
        }
        assert!(Instant::now() < deadline, "the rule was never flagged: {rules}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second incident on the same rule pages Alice but not the disbanded group.
    let (status, second) = env
        .api(
            Method::POST,
            "/api/v1/incidents",
            json!({"title": "DB down again", "severity": "critical"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    let alice = env.open_id("alice@example.com");
    env.wait_for("Alice's second card", |e| e.cards_to(&alice).len() == 2)
        .await;
    env.settle().await;
    assert_eq!(env.cards_to(&chat).len(), 1, "only the first incident's card");
    let skipped = lark_oncall::delivery::oplog::query(
        &env.app().store,
        &lark_oncall::delivery::oplog::OpQuery {
            incident: Some(second_id),
            outcome: Some("chat_disbanded".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(
        skipped[0].receiver.as_deref(),
        Some(format!("chat:{chat}").as_str())
    );
    env.stop().await;
}

impl Harness {
    /// The bot's text replies so far, oldest first.
    fn replies(&self) -> Vec<SimMessage> {
        let mut replies: Vec<SimMessage> = self
            .sim
            .messages()
            .into_iter()
            .filter(|m| m.msg_type == "text" && m.parent_id.is_some())
            .filter(|m| matches!(m.sender, lark_oncall::sim::MessageSender::App { .. }))
            .collect();
        replies.sort_by_key(|m| m.created_at);
        replies
    }

    /// Sends `text` as `user` and returns the bot's reply text.
    async fn ask(&self, user: &str, chat: Option<&str>, text: &str) -> String {
        let before = self.replies().len();
        self.sim
            .send_text(user, chat, text, chat.is_some())
            .await
            .unwrap();
        self.wait_for(&format!("a reply to {text:?}"), |e| e.replies().len() > before)
            .await;
        let reply = self.replies().pop().unwrap();
        if let Some(chat) = chat {
            assert_eq!(reply.chat_id, chat);
        }
        let content: Value = serde_json::from_str(&reply.content).unwrap();
        content["text"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn bot_commands_act_and_answer_in_the_thread() {
    let env = start(CardCallbackVersion::V2).await;
    let first = env.paged_incident().await;
    let (alice, bob, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.chat(),
    );
    let (_, members) = env.api(Method::GET, "/api/v1/members", Value::Null).await;
    let alice_member = members["items"][0]["id"].clone();
    let (status, second) = env
        .api(
            Method::POST,
            "/api/v1/incidents",
            json!({"title": "Queue backlog", "severity": "warning", "assignees": [alice_member]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (n1, n2) = (
        first["number"].as_u64().unwrap(),
        second["number"].as_u64().unwrap(),
    );
    let id1 = first["id"].as_str().unwrap();

    assert!(
        env.ask(&alice, None, "help")
            .await
            .contains("snooze <id> <duration>")
    );
    assert!(
        env.ask(&alice, None, "what is going on")
            .await
            .contains("On-call commands")
    );
    let list = env.ask(&alice, None, "list").await;
    assert!(
        list.contains(&format!("#{n2} [triggered] Queue backlog")),
        "{list}"
    );
    assert!(
        list.contains(&format!("#{n1} [triggered] DB down")),
        "paged, so a responder: {list}"
    );

    // Bob is not linked: told how to link, nothing changes.
    let hint = env.ask(&bob, None, &format!("ack {n1}")).await;
    assert!(hint.contains(&format!("/lark/{}/app", env.integration)), "{hint}");
    assert_eq!(env.incident(id1).await["status"], "triggered");

    // In the group, with a mention.
    let done = env.ask(&alice, Some(&chat), &format!("ack #{n1}")).await;
    assert!(done.contains("acknowledged"), "{done}");
    let inc = env.incident(id1).await;
    assert_eq!(inc["status"], "acknowledged");
    assert_eq!(
        inc["timeline"].as_array().unwrap().last().unwrap()["actor"]["via"],
        "bot"
    );
    let again = env.ask(&alice, None, &format!("ack {n1}")).await;
    assert!(again.contains("already acknowledged by Alice"), "{again}");

    let snoozed = env.ask(&alice, None, &format!("snooze {n1} 2h")).await;
    assert!(snoozed.contains("snoozed for 2h"), "{snoozed}");
    assert!(env.incident(id1).await["snoozed_until"].is_string());
    let bad = env.ask(&alice, None, &format!("snooze {n1} soon")).await;
    assert!(bad.contains("30m, 2h or 1d"), "{bad}");

    let resolved = env.ask(&alice, None, &format!("resolve {id1}")).await;
    assert!(resolved.contains("resolved"), "{resolved}");
    assert_eq!(env.incident(id1).await["status"], "resolved");
    let missing = env.ask(&alice, None, "resolve 999").await;
    assert!(missing.contains("no incident 999"), "{missing}");
    env.stop().await;
}

#[tokio::test]
async fn a_viewer_is_told_whom_to_ask_and_nothing_changes_until_made_a_responder() {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .tune(|s| s.admin_contact = Some("the SRE desk (sre@example.com)".into()))
        .start()
        .await;
    let inc = env.paged_incident().await;
    let id = inc["id"].as_str().unwrap();
    let (alice, chat) = (env.open_id("alice@example.com"), env.chat());
    let (_, members) = env.api(Method::GET, "/api/v1/members", Value::Null).await;
    let alice_member = members["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(members["items"][0]["role"], "responder", "the default role");

    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/members/{alice_member}"),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an unknown role is refused: {body}"
    );
    let (status, viewer) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/members/{alice_member}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{viewer}");
    assert_eq!(viewer["role"], "viewer");
    let before = env.incident(id).await;

    // A press on the group card: a toast naming her role and whom to ask; nothing changes.
    let group_card = env.cards_to(&chat)[0].clone();
    let ack = json!({"action": "ack", "incident": id});
    let outcome = env
        .sim
        .press_button(&alice, &group_card.message_id, ack.clone())
        .await
        .unwrap();
    let toast = outcome.toast.clone().unwrap();
    assert_eq!(toast["type"], "warning", "{toast}");
    let text = toast["content"].as_str().unwrap();
    assert!(text.contains("role is viewer"), "{text}");
    assert!(text.contains("the SRE desk (sre@example.com)"), "{text}");
    assert!(!outcome.card_replaced);
    let after = env.incident(id).await;
    assert_eq!(after["status"], "triggered");
    assert_eq!(after["version"], before["version"], "the incident did not change");
    let refused = after["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(refused["kind"], "action_refused", "{refused}");
    assert_eq!(refused["actor"]["who"], alice_member.as_str());
    assert_eq!(refused["detail"], "acknowledge refused: role viewer");
    let (_, log) = env
        .api(
            Method::GET,
            &format!("/api/v1/oplog?incident={id}&outcome=refused_role"),
            Value::Null,
        )
        .await;
    let entry = &log["items"][0];
    assert_eq!(entry["receiver"], alice_member.as_str(), "{log}");
    assert_eq!(entry["kind"], "acknowledge");
    assert_eq!(entry["reason"], "viewer");

    // The bot answers a command likewise.
    let number = inc["number"].as_u64().unwrap();
    let reply = env.ask(&alice, Some(&chat), &format!("ack {number}")).await;
    assert!(reply.contains("role is viewer"), "{reply}");
    assert_eq!(env.incident(id).await["status"], "triggered");

    // Made a responder, the same press acts.
    let (status, _) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/members/{alice_member}"),
            json!({"role": "responder"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let outcome = env
        .sim
        .press_button(&alice, &group_card.message_id, ack)
        .await
        .unwrap();
    assert_eq!(outcome.toast.unwrap()["type"], "success");
    assert_eq!(env.incident(id).await["status"], "acknowledged");
    env.stop().await;
}
