//! A press on a card costs one Lark call per *other* copy of the incident's card: the pressed
//! copy gets its new card from the callback answer, the others are PATCHed through the outbox.
//! Counted at the simulator, per message, for both callback versions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::inprocess::Harness;
use lark_oncall::sim::CardCallbackVersion;
use serde_json::{Value, json};

const APP_ID: &str = "cli_pressedcards01";
const APP_SECRET: &str = "pressed-cards-secret";

impl Harness {
    /// PATCHes of each message that Lark accepted, by message id.
    fn patches(&self) -> HashMap<String, usize> {
        let mut by_message = HashMap::new();
        for call in self.sim.calls() {
            if call.method == "PATCH" && call.status == 200 {
                let id = call.path.rsplit('/').next().unwrap().to_string();
                *by_message.entry(id).or_default() += 1;
            }
        }
        by_message
    }

    /// How often Lark changed each message's card (answers and PATCHes alike).
    fn updates(&self, ids: &[String]) -> Vec<u32> {
        let messages = self.sim.messages();
        ids.iter()
            .map(|id| messages.iter().find(|m| &m.message_id == id).unwrap().updates)
            .collect()
    }

    /// Lets every update the press caused go out, and a wrongly queued one show up.
    async fn quiet(&self) {
        self.settle().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.settle().await;
    }
}

async fn each_press_updates_every_other_copy_once(version: CardCallbackVersion) {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(version)
        .start()
        .await;
    let alice = env.member("Alice", "alice@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    env.rule(json!([{"members": [alice, carol], "chats": [env.chat()]}]))
        .await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Disk full", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    env.wait_for("the three cards to be recorded", |e| {
        e.app().incidents.cards(&id).unwrap().len() == 3
    })
    .await;
    let alice_open_id = env.open_id("alice@example.com");
    let group = env.cards_to(&env.chat())[0].message_id.clone();
    let own = env.cards_to(&alice_open_id)[0].message_id.clone();
    let carols = env.cards_to(&env.open_id("carol@example.com"))[0]
        .message_id
        .clone();
    let copies = [group.clone(), own.clone(), carols.clone()];
    env.quiet().await;
    assert!(env.patches().is_empty(), "{:?}", env.patches());

    // Acknowledge on the group's copy: the answer replaces it, the two others are PATCHed.
    let ack = json!({"action": "ack", "incident": id});
    let outcome = env.sim.press_button(&alice_open_id, &group, ack).await.unwrap();
    assert!(outcome.card_replaced, "{outcome:?}");
    env.quiet().await;
    let patches = env.patches();
    assert_eq!(patches.get(&group), None, "{patches:?}");
    assert_eq!((patches.get(&own), patches.get(&carols)), (Some(&1), Some(&1)));
    assert_eq!(patches.values().sum::<usize>(), copies.len() - 1);
    assert_eq!(env.updates(&copies), vec![1, 1, 1]);

    // Resolve on her own copy: again one change per copy, none of them twice.
    let resolve = json!({"action": "resolve", "incident": id});
    let outcome = env.sim.press_button(&alice_open_id, &own, resolve).await.unwrap();
    assert!(outcome.card_replaced, "{outcome:?}");
    env.quiet().await;
    let patches = env.patches();
    assert_eq!(
        (patches.get(&group), patches.get(&own), patches.get(&carols)),
        (Some(&1), Some(&1), Some(&2)),
        "{patches:?}"
    );
    assert_eq!(env.updates(&copies), vec![2, 2, 2]);
    let messages = env.sim.messages();
    for copy in &copies {
        let card = &messages.iter().find(|m| &m.message_id == copy).unwrap().content;
        assert!(card.contains("[Resolved]"), "{card}");
    }
    let incident: Value = env.app().incidents.get(&id).unwrap().status.as_str().into();
    assert_eq!(incident, "resolved");
    env.stop().await;
}

#[tokio::test]
async fn a_press_with_the_new_callback_patches_only_the_other_copies() {
    each_press_updates_every_other_copy_once(CardCallbackVersion::V2).await;
}

#[tokio::test]
async fn a_press_with_the_old_callback_patches_only_the_other_copies() {
    each_press_updates_every_other_copy_once(CardCallbackVersion::V1).await;
}
