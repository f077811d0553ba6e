//! Chats that keep themselves current (issue 17.2), through the simulator's event pushes to the
//! appliance's Request URL: adding the bot to a chat makes it appear in the integration's chat
//! list within a second, named and with who added it, without a refresh; removing the bot
//! marks the chat `bot_removed`, flags the rules naming it and stops sends to it (no 230002);
//! a rename shows.

mod common;

use std::time::{Duration, Instant};

use common::inprocess::Harness;
use common::{oplog, worlds};
use lark_oncall::sim::CardCallbackVersion;
use reqwest::Method;
use serde_json::{Value, json};

const APP_ID: &str = "cli_chatevents01";
const APP_SECRET: &str = "chat-events-secret";

async fn start() -> Harness {
    Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .sim_config(|config| config.world = worlds::with_a_chat_without_the_bot(4, APP_ID))
        .start()
        .await
}

impl Harness {
    /// The integration's chat list as stored (no refresh from Lark).
    async fn known_chats(&self) -> Vec<Value> {
        let (status, body) = self
            .api(
                Method::GET,
                &format!("/api/v1/integrations/{}/chats", self.integration),
                Value::Null,
            )
            .await;
        assert!(status.is_success(), "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// Polls the stored chat list until `chat_id` matches `done`; fails after a second.
    async fn chat_within_a_second(&self, chat_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let chats = self.known_chats().await;
            if let Some(chat) = chats.iter().find(|c| c["chat_id"] == chat_id && done(c)) {
                return chat.clone();
            }
            assert!(Instant::now() < deadline, "not within a second: {chats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn adding_the_bot_lists_the_chat_at_once_with_who_added_it() {
    let h = start().await;
    let owner = h.sim.world().users[0].open_id.clone();
    assert!(
        h.known_chats()
            .await
            .iter()
            .all(|c| c["chat_id"] != "oc_without_bot")
    );
    h.sim
        .add_bot_to_chat("oc_without_bot", APP_ID, None)
        .await
        .unwrap();
    let chat = h
        .chat_within_a_second("oc_without_bot", |c| c["status"] == "active")
        .await;
    assert_eq!(chat["name"], "No bot here");
    assert_eq!(chat["added_by"], owner.as_str());

    // Removed and added again: still one row, active again.
    h.sim
        .remove_bot_from_chat("oc_without_bot", APP_ID, None)
        .await
        .unwrap();
    h.chat_within_a_second("oc_without_bot", |c| c["status"] == "bot_removed")
        .await;
    h.sim
        .add_bot_to_chat("oc_without_bot", APP_ID, None)
        .await
        .unwrap();
    h.chat_within_a_second("oc_without_bot", |c| c["status"] == "active")
        .await;
    let rows = h
        .known_chats()
        .await
        .into_iter()
        .filter(|c| c["chat_id"] == "oc_without_bot")
        .count();
    assert_eq!(rows, 1);
    let pushes = h.sim.pushes();
    assert!(
        pushes.iter().all(|p| p.ok),
        "every push was acknowledged: {pushes:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn removing_the_bot_flags_rules_and_stops_sends() {
    let h = start().await;
    let chat = h.chat();
    let rule = h.rule(json!([{"chats": [chat]}])).await;
    h.sim.remove_bot_from_chat(&chat, APP_ID, None).await.unwrap();
    h.chat_within_a_second(&chat, |c| c["status"] == "bot_removed")
        .await;
    let (_, view) = h
        .api(Method::GET, &format!("/api/v1/rules/{rule}"), Value::Null)
        .await;
    let flagged = view["needs_attention"].to_string();
    assert!(flagged.contains("removed") && flagged.contains(&chat), "{view}");

    for i in 0..3 {
        h.create(
            "/api/v1/incidents",
            json!({"title": format!("outage {i}"), "severity": "critical"}),
        )
        .await;
    }
    h.app().incidents.tick().await.unwrap();
    let unsent = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=bot_removed",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        unsent
            .iter()
            .all(|e| e["receiver"] == format!("chat:{chat}").as_str())
    );
    h.settle().await;
    assert!(h.cards_to(&chat).is_empty(), "nothing was sent to the chat");
    let refused = h
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.code == Some(230002))
        .count();
    assert_eq!(refused, 0, "no send was tried against Lark");
    h.stop().await;
}

#[tokio::test]
async fn a_rename_shows() {
    let h = start().await;
    let chat = h.chat();
    // The bot is in the chat: the list knows it once refreshed.
    let (status, _) = h
        .api(
            Method::GET,
            &format!("/api/v1/integrations/{}/chats?refresh=true", h.integration),
            Value::Null,
        )
        .await;
    assert!(status.is_success());
    h.sim.rename_chat(&chat, "SRE 值班", None).await.unwrap();
    h.chat_within_a_second(&chat, |c| c["name"] == "SRE 值班").await;
    assert_eq!(h.sim.world().chats[0].name, "SRE 值班");
    h.stop().await;
}

#[tokio::test]
async fn removing_the_bot_ends_the_sends_already_waiting_for_the_chat() {
    let h = start().await;
    let chat = h.chat();
    h.rule(json!([{"chats": [chat]}])).await;
    // The tenant's month is spent (other tools of the tenant used it): the first send is refused
    // with 99991403 and every send of the integration waits, held, in the outbox.
    h.sim.spend_quota(10_000 - h.sim.quota_used());
    for i in 0..3 {
        h.create(
            "/api/v1/incidents",
            json!({"title": format!("disk {i}"), "severity": "critical"}),
        )
        .await;
    }
    let held = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=held_quota",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        held.iter()
            .all(|e| e["receiver"] == format!("chat_id:{chat}").as_str())
    );

    h.sim.remove_bot_from_chat(&chat, APP_ID, None).await.unwrap();
    let ended = oplog::wait(
        &h.http,
        &h.admin,
        &h.token,
        "outcome=bot_removed",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(ended.len(), 3, "{ended:?}");
    assert!(
        ended.iter().all(|e| e["job_id"].is_u64()),
        "queued jobs, ended: {ended:?}"
    );
    let (_, jobs) = h.api(Method::GET, "/api/v1/jobs", Value::Null).await;
    let failed: Vec<&Value> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"]["reason"] == "bot_removed")
        .collect();
    assert_eq!(failed.len(), 3, "kept for re-trigger: {jobs}");

    // A new month's quota (a plan change releases the holds): nothing is left to try the chat.
    let (status, body) = h
        .api(
            Method::PATCH,
            &format!("/api/v1/integrations/{}", h.integration),
            json!({"plan": "paid"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    h.settle().await;
    let refused = h
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.code == Some(230002))
        .count();
    assert_eq!(refused, 0, "no waiting send was tried against Lark");
    h.stop().await;
}
