//! The group chats each integration's bot is in, as last listed from Lark: what rules choose
//! from. A refresh replaces the list; a chat the bot has left stays, marked `left`, and a
//! disbanded chat stays, marked `disbanded`, so rules that name it can be flagged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lark::{LarkClient, LarkError};
use crate::store::{Store, StoreError, tables};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// The bot is in the chat (as of the last refresh).
    Active,
    /// The last refresh did not list it: the bot was removed.
    Left,
    /// Lark told us the chat was disbanded.
    Disbanded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownChat {
    pub chat_id: String,
    pub name: String,
    pub description: String,
    pub external: bool,
    pub status: ChatStatus,
    pub seen_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatsError {
    #[error(transparent)]
    Lark(#[from] LarkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key(integration: &str, chat_id: &str) -> String {
    format!("{integration}/{chat_id}")
}

/// The chats known for `integration`, by name.
pub fn list(store: &Store, integration: &str) -> Result<Vec<KnownChat>, StoreError> {
    let prefix = format!("{integration}/");
    let mut chats: Vec<KnownChat> = store
        .read(|r| r.scan_prefix(&tables::CHATS, &prefix, usize::MAX))?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    chats.sort_by(|a, b| a.name.cmp(&b.name).then(a.chat_id.cmp(&b.chat_id)));
    Ok(chats)
}

/// Lists the bot's chats from Lark (all pages) and stores them; returns the new list.
pub async fn refresh(
    store: &Store,
    client: &LarkClient,
    integration: &str,
    now: DateTime<Utc>,
) -> Result<Vec<KnownChat>, ChatsError> {
    let listed = client.list_chats().await?;
    let known = list(store, integration)?;
    let owner = integration.to_string();
    store
        .write(move |w| {
            let integration = owner;
            for chat in &listed {
                let status = if chat.chat_status.as_deref() == Some("dissolved") {
                    ChatStatus::Disbanded
                } else {
                    ChatStatus::Active
                };
                let row = KnownChat {
                    chat_id: chat.chat_id.clone(),
                    name: chat.name.clone(),
                    description: chat.description.clone(),
                    external: chat.external,
                    status,
                    seen_at: now,
                };
                w.put(&tables::CHATS, key(&integration, &chat.chat_id).as_str(), &row)?;
            }
            for mut gone in known {
                // Kept, not deleted: rules may still name it.
                if gone.status == ChatStatus::Active && !listed.iter().any(|c| c.chat_id == gone.chat_id) {
                    gone.status = ChatStatus::Left;
                    w.put(&tables::CHATS, key(&integration, &gone.chat_id).as_str(), &gone)?;
                }
            }
            Ok(())
        })
        .await?;
    Ok(list(store, integration)?)
}
