//! Simulated Lark worlds that more than one test file builds.

use lark_oncall::sim::{SimChat, World};

/// `users` people and 10 chats around the app `app_id`, plus one chat without the bot
/// (`oc_without_bot`), where sends fail for good.
pub fn with_a_chat_without_the_bot(users: usize, app_id: &str) -> World {
    let mut world = World::generated_for(users, 10, app_id);
    let owner = world.users[0].open_id.clone();
    world.chats.push(SimChat {
        chat_id: "oc_without_bot".into(),
        name: "No bot here".into(),
        description: String::new(),
        owner_open_id: owner.clone(),
        members: vec![owner],
        apps: vec![],
        disbanded: false,
    });
    world
}
