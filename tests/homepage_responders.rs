//! Responders are real: the people a level notifies become the incident's responders (on the
//! card, in the API and in the bot's `list`), whoever acknowledges joins them, and an escalation
//! adds the next level's people; the timeline records each change.

mod common;

use common::inprocess::Harness;
use lark_oncall::sim::CardCallbackVersion;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_responders00001";
const APP_SECRET: &str = "responders-secret";

impl Harness {
    async fn incident(&self, id: &str) -> Value {
        let (status, inc) = self
            .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{inc}");
        inc
    }

    /// The bot's answer to `text` sent by `user` in p2p.
    async fn ask(&self, user: &str, text: &str) -> String {
        let replies = |h: &Harness| {
            h.sim
                .messages()
                .into_iter()
                .filter(|m| m.msg_type == "text" && m.parent_id.is_some())
                .collect::<Vec<_>>()
        };
        let before = replies(self).len();
        self.sim.send_text(user, None, text, false).await.unwrap();
        self.wait_for("the bot's reply", |h| replies(h).len() > before)
            .await;
        let reply = replies(self).pop().unwrap();
        let content: Value = serde_json::from_str(&reply.content).unwrap();
        content["text"].as_str().unwrap().to_string()
    }
}

fn kinds(inc: &Value) -> Vec<(String, String)> {
    inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn paged_people_acknowledgers_and_escalations_make_the_responders() {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .start()
        .await;
    let alice = env.member("Alice Chen", "alice@example.com").await;
    let bob = env.member("Bob Smith", "bob@example.com").await;
    let carol = env.member("张伟", "zhang.wei@example.com").await;
    let (status, report) = env
        .api(
            Method::POST,
            &format!("/api/v1/members/link?integration_id={}", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    env.rule(json!([
        {"members": [alice], "chats": [env.chat()], "escalate_after_minutes": 10},
        {"members": [bob]}
    ]))
    .await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Disk full", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    assert_eq!(inc["assignees"], json!([]));
    env.app().incidents.tick().await.unwrap();
    let (alice_open, bob_open, carol_open, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.open_id("zhang.wei@example.com"),
        env.chat(),
    );
    env.wait_for("Alice's card", |h| h.cards_to(&alice_open).len() == 1)
        .await;

    // Level 1 paged Alice: she is a responder on the card, in the API and in `list`.
    let card = env.cards_to(&alice_open)[0].content.clone();
    assert!(
        card.contains("Responders") && card.contains("Alice Chen"),
        "{card}"
    );
    let now = env.incident(&id).await;
    assert_eq!(now["assignees"], json!([alice]));
    assert!(kinds(&now).contains(&("responders_added".into(), alice.clone())));
    let list = env.ask(&alice_open, "list").await;
    assert!(list.contains("Disk full"), "{list}");
    let carol_list = env.ask(&carol_open, "list").await;
    assert!(carol_list.contains("No open incidents"), "{carol_list}");

    // Nobody answers for 10 minutes: level 2 (Bob) joins, and Alice's card says so.
    env.clock.advance(chrono::Duration::minutes(11));
    env.app().incidents.tick().await.unwrap();
    env.wait_for("Bob's card", |h| h.cards_to(&bob_open).len() == 1)
        .await;
    let now = env.incident(&id).await;
    assert_eq!(now["assignees"], json!([alice, bob]));
    assert!(kinds(&now).contains(&("responders_added".into(), bob.clone())));
    assert!(env.cards_to(&bob_open)[0].content.contains("Bob Smith"));
    env.wait_for("Alice's card naming Bob", |h| {
        h.cards_to(&alice_open)[0].content.contains("Bob Smith")
    })
    .await;

    // Zhang Wei, in the group but never paged, acknowledges from the group's card: she joins.
    let group_card = env.cards_to(&chat)[0].message_id.clone();
    let outcome = env
        .sim
        .press_button(&carol_open, &group_card, json!({"action": "ack", "incident": id}))
        .await
        .unwrap();
    assert_eq!(outcome.status, Some(200), "{outcome:?}");
    let now = env.incident(&id).await;
    assert_eq!(now["status"], "acknowledged");
    assert_eq!(now["assignees"], json!([alice, bob, carol]));
    let added: Vec<_> = kinds(&now)
        .into_iter()
        .filter(|(k, _)| k == "responders_added")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(added, vec![alice.clone(), bob.clone(), carol.clone()]);
    let list = env.ask(&carol_open, "list").await;
    assert!(list.contains("Disk full"), "{list}");

    // A reassignment replaces them.
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/reassign"),
            json!({"assignees": [bob]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(env.incident(&id).await["assignees"], json!([bob]));
    env.stop().await;
}
