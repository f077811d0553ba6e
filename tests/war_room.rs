//! War rooms end to end (issue 16): the real appliance in-process, the simulator pushing card
//! callbacks and events to its Request URL, everything checked over HTTP and in the simulated
//! tenant — one chat per incident however often and by whomever it is pressed, refused people
//! listed with the reason, messages and id-less commands in the room, escalation inviting the
//! next level, resolve renaming the room, disbanding closing it, the switch and `war_room: "auto"`.

mod common;

use common::inprocess::Harness;
use lark_oncall::incident::war_room::WarRoomState;
use lark_oncall::sim::{CardCallbackVersion, Faults, SimChat};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_warroomtest001";
const APP_SECRET: &str = "war-room-test-secret";

async fn start(war_room: bool) -> Harness {
    Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .integration_fields(json!({ "war_room": war_room }))
        .start()
        .await
}

impl Harness {
    /// Opens a critical incident and waits until its level-1 cards are delivered and recorded.
    async fn paged(&self, title: &str, cards: usize) -> String {
        let inc = self
            .create(
                "/api/v1/incidents",
                json!({"title": title, "severity": "critical"}),
            )
            .await;
        let id = inc["id"].as_str().unwrap().to_string();
        self.app().incidents.tick().await.unwrap();
        self.wait_for("the level-1 cards to be recorded", |e| {
            e.app().incidents.cards(&id).unwrap().len() == cards
        })
        .await;
        id
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(Method::GET, path, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `POST /api/v1/incidents/{incident}/war-room` with `body` (who asks, or nothing).
    async fn open_room(&self, incident: &str, body: Value) -> (StatusCode, Value) {
        self.api(
            Method::POST,
            &format!("/api/v1/incidents/{incident}/war-room"),
            body,
        )
        .await
    }

    async fn room(&self, incident: &str) -> Value {
        self.get(&format!("/api/v1/incidents/{incident}/war-room")).await
    }

    fn chats_named(&self, prefix: &str) -> Vec<SimChat> {
        self.sim
            .world()
            .chats
            .into_iter()
            .filter(|c| c.name.starts_with(prefix))
            .collect()
    }

    fn chat_by_id(&self, chat_id: &str) -> SimChat {
        self.sim
            .world()
            .chats
            .into_iter()
            .find(|c| c.chat_id == chat_id)
            .unwrap()
    }

    fn texts_in(&self, chat_id: &str) -> Vec<String> {
        self.sim
            .messages()
            .into_iter()
            .filter(|m| m.chat_id == chat_id && m.msg_type == "text")
            .map(|m| m.content)
            .collect()
    }

    async fn press(&self, user: &str, message_id: &str, incident: &str) -> Value {
        let outcome = self
            .sim
            .press_button(
                user,
                message_id,
                json!({"action": "war_room", "incident": incident}),
            )
            .await
            .unwrap();
        assert_eq!(outcome.status, Some(200), "{outcome:?}");
        outcome.toast.unwrap()
    }

    /// A rule opening a room for every critical incident, with `member` on its only level.
    async fn auto_rule(&self, member: &str) {
        self.create(
            "/api/v1/rules",
            json!({"name": "critical", "integration_id": self.integration, "war_room": "auto",
                   "match": {"severities": ["critical"]}, "levels": [{"members": [member]}]}),
        )
        .await;
    }

    async fn wait_for_room(&self, incident: &str, state: WarRoomState) {
        self.wait_for("the room's state", |e| {
            e.app()
                .incidents
                .war_room(incident)
                .unwrap()
                .is_some_and(|r| r.state == state)
        })
        .await;
    }

    async fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(chrono::Duration::minutes(minutes));
        self.app().incidents.tick().await.unwrap();
    }
}

#[tokio::test]
async fn a_press_opens_one_room_and_more_presses_only_join() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice], "chats": [env.chat()]}]))
        .await;
    let id = env.paged("db-1 disk 97%", 2).await;
    let number = env.get(&format!("/api/v1/incidents/{id}")).await["number"].clone();
    let name = format!("[P1] #{number} db-1 disk 97%");
    let (alice_ou, bob, zhang) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.open_id("zhang.wei@example.com"),
    );
    let group_card = env.cards_to(&env.chat())[0].clone();
    assert!(
        group_card.content.contains(r#""action":"war_room""#) && group_card.content.contains("War room"),
        "{}",
        group_card.content
    );

    // Bob (in the group, not a member) presses "War room": the room opens with the responder
    // and him, the bot owning it.
    let toast = env.press(&bob, &group_card.message_id, &id).await;
    assert_eq!(toast["type"], "success", "{toast}");
    let rooms = env.chats_named(&name);
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let chat = rooms[0].clone();
    assert_eq!(chat.owner_open_id, "", "the bot owns the room");
    assert!(
        chat.members.contains(&alice_ou) && chat.members.contains(&bob),
        "{chat:?}"
    );
    let room = env.room(&id).await;
    assert_eq!(room["state"], "open", "{room}");
    assert_eq!(room["chat_id"], chat.chat_id.as_str());
    assert_eq!(room["name"], name.as_str());
    assert_eq!(room["created_by"], bob.as_str());
    // The shared incident card is in the room, pinned and the top notice.
    let room_cards = env.cards_to(&chat.chat_id);
    assert_eq!(room_cards.len(), 1);
    let pins = env.sim.pins(&chat.chat_id);
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].message_id, room_cards[0].message_id);
    assert_eq!(
        env.sim.top_notice(&chat.chat_id).as_deref(),
        Some(room_cards[0].message_id.as_str())
    );
    assert_eq!(room["pinned"], true);
    assert_eq!(room["top_notice"], true);
    // Every copy now offers "Join war room" with the chat's AppLink.
    env.wait_for("every card to offer joining", |e| {
        e.app().incidents.cards(&id).unwrap().iter().all(|c| {
            e.sim
                .messages()
                .iter()
                .any(|m| m.message_id == c.message_id && m.content.contains("Join war room"))
        })
    })
    .await;
    let applink = format!("openChatId={}", chat.chat_id);
    assert!(env.cards_to(&alice_ou)[0].content.contains(&applink));
    // The incident page lists the room.
    let incident = env.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(incident["war_room"]["chat_id"], chat.chat_id.as_str());

    // A second press by another person adds that person and creates nothing.
    let toast = env.press(&zhang, &group_card.message_id, &id).await;
    assert_eq!(toast["type"], "success", "{toast}");
    assert!(
        toast["content"].as_str().unwrap().contains("You are now in"),
        "{toast}"
    );
    assert_eq!(env.chats_named(&name).len(), 1);
    assert!(env.chat_by_id(&chat.chat_id).members.contains(&zhang));
    let toast = env.press(&zhang, &group_card.message_id, &id).await;
    assert!(
        toast["content"].as_str().unwrap().contains("already in"),
        "{toast}"
    );

    // Ten concurrent presses on a fresh incident create one chat with everyone who pressed.
    let second = env.paged("api latency", 2).await;
    let number = env.get(&format!("/api/v1/incidents/{second}")).await["number"].clone();
    let second_name = format!("[P1] #{number} api latency");
    let card = env
        .cards_to(&env.chat())
        .into_iter()
        .find(|m| m.content.contains("api latency"))
        .unwrap();
    let pressers = [
        bob.clone(),
        zhang.clone(),
        alice_ou.clone(),
        env.open_id("li.na@example.com"),
    ];
    let presses = (0..10).map(|i| {
        let sim = env.sim.clone();
        let (user, message, incident) = (pressers[i % 4].clone(), card.message_id.clone(), second.clone());
        async move {
            sim.press_button(
                &user,
                &message,
                json!({"action": "war_room", "incident": incident}),
            )
            .await
            .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(presses).await;
    assert!(outcomes.iter().all(|o| o.status == Some(200)), "{outcomes:?}");
    env.wait_for("everyone in the second room", |e| {
        let rooms = e.chats_named(&second_name);
        rooms.len() == 1 && pressers.iter().all(|p| rooms[0].members.contains(p))
    })
    .await;
    assert_eq!(env.chats_named(&second_name).len(), 1);
    let creates = env
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.api == "im.v1.chat.create" && c.status == 200)
        .count();
    assert_eq!(creates, 2, "one create per incident");
    // Adds were serialised per chat: Lark never had to refuse one as concurrent.
    assert!(
        !env.sim.calls().iter().any(|c| c.code == Some(232019)),
        "no 232019"
    );
    env.stop().await;
}

#[tokio::test]
async fn people_lark_refuses_are_listed_with_the_reason() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    let hidden = env.open_id("chen.jing@example.com");
    let chen = env
        .create(
            "/api/v1/members",
            json!({"name": "Chen Jing", "lark_open_ids": {env.integration.clone(): hidden}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.rule(json!([{"members": [alice, chen]}])).await;
    let id = env.paged("payments 500s", 1).await;

    // Opened from the API by Alice: created with everyone else; Chen Jing is refused, in words.
    let (status, opened) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["presser"]["result"], "added");
    let room = &opened["war_room"];
    let chat = env.chat_by_id(room["chat_id"].as_str().unwrap());
    assert!(chat.members.contains(&env.open_id("alice@example.com")));
    assert!(!chat.members.contains(&hidden));
    let refused = room["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{room}");
    assert_eq!(refused[0]["who"], "Chen Jing");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("availability scope"),
        "{room}"
    );
    let timeline = env.get(&format!("/api/v1/incidents/{id}")).await["timeline"].clone();
    let opened_entry = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "war_room_opened")
        .unwrap()
        .clone();
    assert!(
        opened_entry["detail"].as_str().unwrap().contains("Chen Jing"),
        "{opened_entry}"
    );
    // An unknown member is a bad request naming the field.
    let (status, bad) = env.open_room(&id, json!({"member_id": "mem_nobody"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().starts_with("member_id"),
        "{bad}"
    );
    // Asking again returns the same room (200, nothing created).
    let (status, again) = env.open_room(&id, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["war_room"]["chat_id"], room["chat_id"]);
    // Joining someone Lark will not add answers with the chat's share link instead.
    let (status, join) = env.open_room(&id, json!({"member_id": chen})).await;
    assert_eq!(status, StatusCode::OK, "{join}");
    assert_eq!(join["presser"]["result"], "share_link", "{join}");
    assert!(
        join["presser"]["link"]
            .as_str()
            .unwrap()
            .starts_with("https://applink."),
        "{join}"
    );
    // A reassignment invites the new assignee.
    let zhang = env.member("Zhang Wei", "zhang.wei@example.com").await;
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/reassign"),
            json!({"assignees": [zhang]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let zhang_ou = env.open_id("zhang.wei@example.com");
    let chat_id = room["chat_id"].as_str().unwrap().to_string();
    env.wait_for("the new assignee invited", |e| {
        e.chat_by_id(&chat_id).members.contains(&zhang_ou)
    })
    .await;

    // When the one asking is the invisible person, Lark refuses the whole create (232043): the
    // room is created without her and she is listed.
    let second = env.paged("queue backlog", 1).await;
    let (status, opened) = env.open_room(&second, json!({"member_id": chen})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["presser"]["result"], "not_in_lark", "{opened}");
    let creates: Vec<Option<i64>> = env
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.api == "im.v1.chat.create")
        .map(|c| c.code)
        .collect();
    assert_eq!(creates, vec![Some(0), Some(232043), Some(0)], "{creates:?}");
    let chat = env.chat_by_id(opened["war_room"]["chat_id"].as_str().unwrap());
    assert!(chat.members.contains(&env.open_id("alice@example.com")));
    assert!(
        opened["war_room"]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["who"] == "Chen Jing"),
        "{opened}"
    );
    // The operation log has the refused create, with the reason in words.
    let failed = common::oplog::all(
        &env.http,
        &env.admin,
        &env.token,
        &format!("incident={second}&outcome=failed"),
    )
    .await;
    assert!(
        failed.iter().any(|e| e["kind"] == "create_chat"
            && e["lark_code"] == 232043
            && e["job_id"].is_u64()
            && e["lark_message"].as_str().unwrap().contains("unavailable ids")),
        "{failed:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_room_follows_the_incident_until_it_is_disbanded() {
    // The app is granted `im:message.group_msg`: it receives every message of the room.
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .integration_fields(json!({ "war_room": true }))
        .sim_config(|c| c.apps[0].group_messages = true)
        .start()
        .await;
    let alice = env.member("Alice", "alice@example.com").await;
    let zhang = env.member("Zhang Wei", "zhang.wei@example.com").await;
    env.rule(json!([
        {"members": [alice], "escalate_after_minutes": 5},
        {"members": [zhang]}
    ]))
    .await;
    let id = env.paged("checkout errors", 1).await;
    let (status, opened) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let chat_id = opened["war_room"]["chat_id"].as_str().unwrap().to_string();
    let (alice_ou, zhang_ou) = (
        env.open_id("alice@example.com"),
        env.open_id("zhang.wei@example.com"),
    );
    assert!(!env.chat_by_id(&chat_id).members.contains(&zhang_ou));

    // Escalation to level 2 invites level 2's people, and says so in the room.
    env.advance_minutes(6).await;
    env.wait_for("Zhang Wei invited", |e| {
        e.chat_by_id(&chat_id).members.contains(&zhang_ou)
    })
    .await;
    env.wait_for("the escalation line", |e| {
        e.texts_in(&chat_id).iter().any(|t| t.contains("escalated"))
    })
    .await;

    // A message in the room (no @-mention needed with the scope) appears on the timeline with
    // its author.
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "disk cleaned on db-1", false)
        .await
        .unwrap();
    env.wait_for("the note", |e| {
        let inc = e.app().incidents.get(&id).unwrap();
        inc.timeline.iter().any(|t| {
            t.kind == "note"
                && t.detail.as_deref() == Some("disk cleaned on db-1")
                && t.actor.name.as_deref() == Some("Alice")
        })
    })
    .await;

    // `note <text>` and `snooze 1h` need no id either.
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "note rolled back deploy 1432", true)
        .await
        .unwrap();
    env.wait_for("the explicit note", |e| {
        let inc = e.app().incidents.get(&id).unwrap();
        inc.timeline
            .iter()
            .any(|t| t.kind == "note" && t.detail.as_deref() == Some("rolled back deploy 1432"))
    })
    .await;
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "snooze 1h", true)
        .await
        .unwrap();
    env.wait_for("snoozed", |e| {
        e.app().incidents.get(&id).unwrap().snoozed_until.is_some()
    })
    .await;
    env.wait_for("the snooze line", |e| {
        e.texts_in(&chat_id)
            .iter()
            .any(|t| t.contains("snoozed by Alice"))
    })
    .await;

    // `ack` without an id acknowledges the room's incident; every copy updates.
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "ack", true)
        .await
        .unwrap();
    env.wait_for("acknowledged", |e| {
        e.app().incidents.get(&id).unwrap().status.as_str() == "acknowledged"
    })
    .await;
    env.wait_for("every copy updated", |e| {
        let cards = e.app().incidents.cards(&id).unwrap();
        let messages = e.sim.messages();
        cards.len() >= 3
            && cards.iter().all(|c| {
                messages
                    .iter()
                    .any(|m| m.message_id == c.message_id && !m.content.contains(r#""action":"ack""#))
            })
    })
    .await;
    env.wait_for("the state line and the reply", |e| {
        let texts = e.texts_in(&chat_id);
        texts.iter().any(|t| t.contains("acknowledged by Alice"))
            && texts.iter().any(|t| t.contains("escalation stops"))
    })
    .await;
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "status", true)
        .await
        .unwrap();
    env.wait_for("the status answer", |e| {
        e.texts_in(&chat_id)
            .iter()
            .any(|t| t.contains("[acknowledged] checkout errors"))
    })
    .await;

    // `resolve` there resolves: the summary is posted and the room renamed.
    env.sim
        .send_text(&alice_ou, Some(&chat_id), "resolve", true)
        .await
        .unwrap();
    env.wait_for("the summary", |e| {
        e.texts_in(&chat_id).iter().any(|t| {
            t.contains("Duration") && t.contains("Acknowledged by: Alice") && t.contains("Resolved by: Alice")
        })
    })
    .await;
    env.wait_for("the rename", |e| {
        e.chat_by_id(&chat_id).name.starts_with("[Resolved] [P1] #")
    })
    .await;
    env.wait_for("the room marked resolved", |e| {
        e.app()
            .incidents
            .war_room(&id)
            .unwrap()
            .is_some_and(|r| r.state == lark_oncall::incident::war_room::WarRoomState::Resolved)
    })
    .await;
    assert_eq!(env.room(&id).await["state"], "resolved");

    // Disbanding marks it closed; reopened, the incident offers a new room.
    env.sim.disband_chat(&chat_id).await.unwrap();
    env.wait_for("the room closed", |e| {
        e.app()
            .incidents
            .war_room(&id)
            .unwrap()
            .is_some_and(|r| r.state == lark_oncall::incident::war_room::WarRoomState::Closed)
    })
    .await;
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/reopen"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, reopened) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{reopened}");
    assert_ne!(reopened["war_room"]["chat_id"], chat_id.as_str());
    assert_eq!(reopened["war_room"]["generation"], 2);
    env.stop().await;
}

#[tokio::test]
async fn with_the_switch_off_there_is_no_button_and_the_api_refuses() {
    let env = start(false).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice], "chats": [env.chat()]}]))
        .await;
    let id = env.paged("db-2 down", 2).await;
    for card in env.cards_to(&env.chat()) {
        assert!(!card.content.contains("war_room"), "{}", card.content);
    }
    let (status, body) = env.open_room(&id, Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "war_room_disabled");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("war_room"),
        "{body}"
    );
    // A stale card's button is refused too, and nothing is created.
    let card = env.cards_to(&env.chat())[0].clone();
    let toast = env
        .press(&env.open_id("bob@example.com"), &card.message_id, &id)
        .await;
    assert_eq!(toast["type"], "warning");
    assert!(
        !env.sim.calls().iter().any(|c| c.api == "im.v1.chat.create"),
        "no chat created"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_rule_with_war_room_auto_opens_a_room_without_a_press() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.create(
        "/api/v1/rules",
        json!({"name": "critical", "integration_id": env.integration, "war_room": "auto",
               "match": {"severities": ["critical"]}, "levels": [{"members": [alice]}]}),
    )
    .await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "core switch down", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    let name = format!("[P1] #{} core switch down", inc["number"]);
    env.wait_for("the automatic room", |e| {
        e.app()
            .incidents
            .war_room(&id)
            .unwrap()
            .is_some_and(|r| r.state == lark_oncall::incident::war_room::WarRoomState::Open)
    })
    .await;
    let rooms = env.chats_named(&name);
    assert_eq!(rooms.len(), 1);
    assert!(rooms[0].members.contains(&env.open_id("alice@example.com")));
    assert_eq!(env.sim.pins(&rooms[0].chat_id).len(), 1);
    let room = env.room(&id).await;
    assert_eq!(room["created_by"], "rule critical");
    // A warning matches the rule not: no room.
    let other = env
        .create(
            "/api/v1/incidents",
            json!({"title": "slow page", "severity": "warning"}),
        )
        .await;
    env.settle().await;
    let (status, _) = env
        .api(
            Method::GET,
            &format!("/api/v1/incidents/{}/war-room", other["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_set_up_resumes_it_with_one_chat() {
    let mut env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.auto_rule(&alice).await;
    // Every Lark answer takes a while, so the restart falls between the create and the rest.
    env.sim.set_faults(Faults {
        latency: std::time::Duration::from_millis(300),
        ..Faults::default()
    });
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "core router flapping", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    let name = format!("[P1] #{} core router flapping", inc["number"]);
    env.wait_for("the chat created in Lark", |e| e.chats_named(&name).len() == 1)
        .await;
    assert_ne!(
        env.app().incidents.war_room(&id).unwrap().unwrap().state,
        WarRoomState::Open
    );
    env.restart().await;
    env.sim.set_faults(Faults::default());
    env.wait_for_room(&id, WarRoomState::Open).await;

    let rooms = env.chats_named(&name);
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let chat = rooms[0].clone();
    assert!(chat.members.contains(&env.open_id("alice@example.com")));
    let room = env.room(&id).await;
    assert_eq!(room["chat_id"], chat.chat_id.as_str());
    assert_eq!(
        (room["pinned"].clone(), room["top_notice"].clone()),
        (json!(true), json!(true))
    );
    let room_cards = env.cards_to(&chat.chat_id);
    assert_eq!(room_cards.len(), 1, "one card in the room");
    assert_eq!(env.sim.pins(&chat.chat_id).len(), 1);
    // A create repeated after the restart was answered with the same chat (its uuid).
    let creates: Vec<_> = env
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.api == "im.v1.chat.create" && c.status == 200)
        .collect();
    assert!(
        creates
            .iter()
            .skip(1)
            .all(|c| c.summary.contains("uuid duplicate")),
        "{creates:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_set_up_calls_are_outbox_jobs_in_the_operation_log_and_the_quota() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    let zhang = env.member("Zhang Wei", "zhang.wei@example.com").await;
    env.rule(json!([{"members": [alice, zhang]}])).await;
    let id = env.paged("search index stale", 2).await;
    let quota_before = env
        .get(&format!("/api/v1/integrations/{}/quota", env.integration))
        .await["by_class"]["chat_management"]
        .as_u64()
        .unwrap_or(0);
    let (status, opened) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["war_room"]["state"], "open", "{opened}");
    let entries = common::oplog::all(&env.http, &env.admin, &env.token, &format!("incident={id}")).await;
    let chat_id = opened["war_room"]["chat_id"].as_str().unwrap();
    for kind in ["create_chat", "add_members", "pin", "top_notice"] {
        let entry = entries
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {entries:?}"));
        assert_eq!(entry["outcome"], "delivered", "{entry}");
        assert!(entry["job_id"].is_u64(), "{kind} is an outbox job: {entry}");
        assert_eq!(entry["chat_id"], chat_id, "{entry}");
    }
    let card = entries
        .iter()
        .find(|e| e["kind"] == "send" && e["receiver"] == format!("chat_id:{chat_id}"))
        .unwrap_or_else(|| panic!("no card for the room in {entries:?}"));
    assert!(card["job_id"].is_u64());
    let quota_after = env
        .get(&format!("/api/v1/integrations/{}/quota", env.integration))
        .await["by_class"]["chat_management"]
        .as_u64()
        .unwrap();
    assert_eq!(quota_after - quota_before, 4, "create, add, pin, top notice");
    env.stop().await;
}

#[tokio::test]
async fn without_the_im_chat_scope_no_room_is_created_and_the_incident_says_why() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice]}])).await;
    let id = env.paged("disk full on db-4", 1).await;
    env.sim.set_faults(Faults {
        missing_scopes: vec!["im:chat".into(), "im:chat:create".into()],
        ..Faults::default()
    });
    let (status, body) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scope missing: im:chat"),
        "{body}"
    );
    let room = env.room(&id).await;
    assert_eq!(room["state"], "opening", "{room}");
    assert!(room["chat_id"].is_null());
    assert!(
        room["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("scope missing: im:chat")),
        "{room}"
    );
    let timeline = env.get(&format!("/api/v1/incidents/{id}")).await["timeline"].clone();
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "war_room_failed"
                && e["detail"].as_str().unwrap().contains("scope missing: im:chat")),
        "{timeline}"
    );
    let failed = common::oplog::all(
        &env.http,
        &env.admin,
        &env.token,
        &format!("incident={id}&outcome=failed"),
    )
    .await;
    assert!(
        failed.iter().any(|e| e["kind"] == "create_chat"
            && e["lark_code"] == 99991672
            && e["reason"] == "permission_missing"
            && e["lark_message"].as_str().unwrap().contains("im:chat")),
        "{failed:?}"
    );
    // Refused for good: one create, no retries.
    env.settle().await;
    let creates = env
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.api == "im.v1.chat.create")
        .count();
    assert_eq!(creates, 1);
    assert!(env.chats_named("[P2]").is_empty() && env.chats_named("[P1]").is_empty());
    // Granted again, asking again resumes the set-up.
    env.sim.set_faults(Faults::default());
    let (status, body) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["war_room"]["state"], "open", "{body}");
    env.stop().await;
}

#[tokio::test]
async fn a_pin_the_chat_refuses_leaves_the_room_open_with_the_problem_in_words() {
    let env = start(true).await;
    let alice = env.member("Alice", "alice@example.com").await;
    env.rule(json!([{"members": [alice]}])).await;
    let id = env.paged("checkout latency", 1).await;
    env.sim.set_faults(Faults {
        pins_for_managers_only: true,
        ..Faults::default()
    });
    let (status, opened) = env.open_room(&id, json!({"member_id": alice})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let room = &opened["war_room"];
    assert_eq!(room["state"], "open", "{room}");
    assert_eq!(room["pinned"], false);
    assert_eq!(room["top_notice"], true, "the top notice goes on without the pin");
    assert!(
        room["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("pin not allowed")),
        "{room}"
    );
    let chat_id = room["chat_id"].as_str().unwrap();
    assert!(env.sim.pins(chat_id).is_empty());
    let failed = common::oplog::all(
        &env.http,
        &env.admin,
        &env.token,
        &format!("incident={id}&outcome=failed"),
    )
    .await;
    assert!(
        failed
            .iter()
            .any(|e| e["kind"] == "pin" && e["lark_code"] == 230046),
        "{failed:?}"
    );
    env.stop().await;
}
