//! The simulated tenant: its people and its group chats, loaded from JSON, built in, or generated
//! at any size (the storm benchmark uses 300 users in 10 chats).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SimError;

/// The app id the built-in world puts in its chats (see [`World::default_world_for`]).
pub const DEFAULT_APP_ID: &str = "cli_sim0oncall0001";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUser {
    pub open_id: String,
    pub user_id: String,
    pub union_id: String,
    pub email: String,
    pub mobile: String,
    pub name: String,
    #[serde(default)]
    pub en_name: String,
    /// Whether the user is inside the apps' availability scope; outside it, sends answer 230013.
    #[serde(default = "yes")]
    pub app_visible: bool,
    /// Left the company: invitations to chats refuse them (232022, or `invalid_id_list`).
    #[serde(default)]
    pub resigned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimChat {
    pub chat_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// open_id of the owner (a member).
    pub owner_open_id: String,
    /// open_ids of the human members.
    pub members: Vec<String>,
    /// app_ids of the bots in the chat.
    pub apps: Vec<String>,
    #[serde(default)]
    pub disbanded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    pub tenant_key: String,
    pub users: Vec<SimUser>,
    pub chats: Vec<SimChat>,
}

fn yes() -> bool {
    true
}

/// A stable id: `prefix` and 32 hex digits derived from `seed`.
pub(crate) fn derived_id(prefix: &str, seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    format!("{prefix}{}", &hex::encode(digest)[..32])
}

fn user(seed: &str, name: &str, en_name: &str, email: &str, mobile: &str) -> SimUser {
    SimUser {
        open_id: derived_id("ou_", &format!("open:{seed}")),
        user_id: derived_id("", &format!("user:{seed}"))[..8].to_string(),
        union_id: derived_id("on_", &format!("union:{seed}")),
        email: email.to_string(),
        mobile: mobile.to_string(),
        name: name.to_string(),
        en_name: en_name.to_string(),
        app_visible: true,
        resigned: false,
    }
}

impl World {
    /// Reads a world from a JSON file shaped like this struct.
    pub fn load(path: &Path) -> Result<World, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::World {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let world: World = serde_json::from_str(&text).map_err(|e| SimError::World {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        world.check().map_err(|reason| SimError::World {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(world)
    }

    /// The built-in world with [`DEFAULT_APP_ID`] as the bot.
    pub fn default_world() -> World {
        World::default_world_for(DEFAULT_APP_ID)
    }

    /// Seven people (Chinese and English names; one outside the app's availability) and three
    /// group chats; the bot `app_id` is in the first two and not in the third.
    pub fn default_world_for(app_id: &str) -> World {
        let mut users = vec![
            user(
                "zhangwei",
                "张伟",
                "Zhang Wei",
                "zhang.wei@example.com",
                "+8613800000001",
            ),
            user("lina", "李娜", "Li Na", "li.na@example.com", "+8613800000002"),
            user(
                "wangfang",
                "王芳",
                "Wang Fang",
                "wang.fang@example.com",
                "+8613800000003",
            ),
            user(
                "alice",
                "Alice Chen",
                "Alice Chen",
                "alice@example.com",
                "+14155550101",
            ),
            user("bob", "Bob Smith", "Bob Smith", "bob@example.com", "+14155550102"),
            user(
                "carol",
                "Carol Liu",
                "Carol Liu",
                "carol@example.com",
                "+14155550103",
            ),
            user(
                "chenjing",
                "陈静",
                "Chen Jing",
                "chen.jing@example.com",
                "+8613800000004",
            ),
        ];
        users[6].app_visible = false;
        let ids: Vec<String> = users.iter().map(|u| u.open_id.clone()).collect();
        let chats = vec![
            SimChat {
                chat_id: derived_id("oc_", "chat:sre"),
                name: "SRE 值班 On-call".to_string(),
                description: "Production on-call".to_string(),
                owner_open_id: ids[0].clone(),
                members: vec![ids[0].clone(), ids[1].clone(), ids[3].clone(), ids[4].clone()],
                apps: vec![app_id.to_string()],
                disbanded: false,
            },
            SimChat {
                chat_id: derived_id("oc_", "chat:payments"),
                name: "Payments Incidents 支付故障".to_string(),
                description: String::new(),
                owner_open_id: ids[3].clone(),
                members: vec![ids[2].clone(), ids[3].clone(), ids[5].clone()],
                apps: vec![app_id.to_string()],
                disbanded: false,
            },
            SimChat {
                chat_id: derived_id("oc_", "chat:random"),
                name: "Random 闲聊".to_string(),
                description: String::new(),
                owner_open_id: ids[1].clone(),
                members: ids.clone(),
                apps: Vec::new(),
                disbanded: false,
            },
        ];
        World {
            tenant_key: "sim_tenant_0001".to_string(),
            users,
            chats,
        }
    }

    /// A generated world with [`DEFAULT_APP_ID`] as the bot (see [`World::generated_for`]).
    pub fn generated(users: usize, chats: usize) -> World {
        World::generated_for(users, chats, DEFAULT_APP_ID)
    }

    /// `users` people and `chats` group chats, all with the bot `app_id`; user i belongs to chat
    /// i mod `chats`, and the first five users belong to every chat.
    pub fn generated_for(users: usize, chats: usize, app_id: &str) -> World {
        let people: Vec<SimUser> = (0..users)
            .map(|i| {
                let name = format!("User {i:04}");
                user(
                    &format!("gen-{i}"),
                    &name,
                    &name,
                    &format!("user{i:04}@example.com"),
                    &format!("+86139{i:08}"),
                )
            })
            .collect();
        let groups = (0..chats)
            .map(|c| {
                let members: Vec<String> = people
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i < 5 || i % chats == c)
                    .map(|(_, u)| u.open_id.clone())
                    .collect();
                SimChat {
                    chat_id: derived_id("oc_", &format!("gen-chat-{c}")),
                    name: format!("Team {c:02}"),
                    description: String::new(),
                    owner_open_id: members.first().cloned().unwrap_or_default(),
                    members,
                    apps: vec![app_id.to_string()],
                    disbanded: false,
                }
            })
            .collect();
        World {
            tenant_key: "sim_tenant_0001".to_string(),
            users: people,
            chats: groups,
        }
    }

    /// Ids unique and chat members known.
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if !seen.insert(u.open_id.as_str()) {
                return Err(format!("duplicate user open_id {}", u.open_id));
            }
        }
        for c in &self.chats {
            if let Some(m) = c.members.iter().find(|m| !seen.contains(m.as_str())) {
                return Err(format!("chat {} has unknown member {m}", c.chat_id));
            }
        }
        Ok(())
    }

    pub fn user(&self, open_id: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| u.open_id == open_id)
    }

    /// Finds a user by an id of the given `receive_id_type`/`user_id_type`.
    pub fn user_by(&self, id_type: &str, id: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| match id_type {
            "open_id" => u.open_id == id,
            "user_id" => u.user_id == id,
            "union_id" => u.union_id == id,
            "email" => u.email.eq_ignore_ascii_case(id),
            _ => false,
        })
    }

    pub fn chat(&self, chat_id: &str) -> Option<&SimChat> {
        self.chats.iter().find(|c| c.chat_id == chat_id)
    }

    pub(crate) fn chat_mut(&mut self, chat_id: &str) -> Option<&mut SimChat> {
        self.chats.iter_mut().find(|c| c.chat_id == chat_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_has_the_bot_in_some_chats_only() {
        let w = World::default_world_for("cli_x");
        assert!(w.check().is_ok());
        let with_bot = w
            .chats
            .iter()
            .filter(|c| c.apps.contains(&"cli_x".to_string()))
            .count();
        assert_eq!((with_bot, w.chats.len()), (2, 3));
        assert!(w.users.iter().any(|u| !u.app_visible));
        assert!(
            w.users
                .iter()
                .all(|u| u.open_id.starts_with("ou_") && u.union_id.starts_with("on_"))
        );
    }

    #[test]
    fn generated_world_and_json_round_trip() {
        let w = World::generated_for(300, 10, "cli_x");
        assert_eq!((w.users.len(), w.chats.len()), (300, 10));
        assert!(
            w.chats
                .iter()
                .all(|c| c.members.len() == 5 + 30 - 1 || c.members.len() == 5 + 30)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.json");
        std::fs::write(&path, serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(World::load(&path).unwrap(), w);
        std::fs::write(&path, "{\"tenant_key\":\"t\",\"users\":[],\"chats\":[{\"chat_id\":\"oc_1\",\"name\":\"x\",\"owner_open_id\":\"ou_1\",\"members\":[\"ou_1\"],\"apps\":[]}]}").unwrap();
        assert!(matches!(World::load(&path), Err(SimError::World { .. })));
    }
}
