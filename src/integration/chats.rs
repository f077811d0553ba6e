//! The group chats each integration's bot is in, as last listed from Lark: what rules choose
//! from. A refresh replaces the list; a chat the bot has left stays, marked `left`, and a
//! disbanded chat stays, marked `disbanded`, so rules that name it can be flagged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tables;
use crate::lark::{LarkClient, LarkError};
use crate::store::{Store, StoreError};

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

/// Records that Lark disbanded a chat (kept, so rules that name it can be flagged).
pub async fn mark_disbanded(
    store: &Store,
    integration: &str,
    chat_id: &str,
    name: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = key(integration, chat_id);
    let (chat_id, name) = (chat_id.to_string(), name.map(str::to_string));
    store
        .write(move |w| {
            let row = match w.get(&tables::CHATS, key.as_str())? {
                Some(mut known) => {
                    known.status = ChatStatus::Disbanded;
                    known.seen_at = now;
                    known
                }
                None => KnownChat {
                    chat_id,
                    name: name.unwrap_or_default(),
                    description: String::new(),
                    external: false,
                    status: ChatStatus::Disbanded,
                    seen_at: now,
                },
            };
            w.put(&tables::CHATS, key.as_str(), &row)
        })
        .await
}

/// Whether the bot can still post to `chat_id` as far as we know (unknown chats count as usable:
/// Lark is the judge then).
pub fn is_usable(store: &Store, integration: &str, chat_id: &str) -> Result<bool, StoreError> {
    Ok(store
        .read(|r| r.get(&tables::CHATS, key(integration, chat_id).as_str()))?
        .is_none_or(|c| c.status == ChatStatus::Active))
}

/// Handles `im.chat.disbanded_v1`: the chat is marked disbanded, so nothing more is addressed
/// to it and the rules naming it show as needing attention.
pub struct DisbandedHandler {
    pub store: Store,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl super::inbound::EventHandler for DisbandedHandler {
    fn handle<'a>(
        &'a self,
        integration: &'a std::sync::Arc<super::Live>,
        event: &'a crate::lark::callback::EventDelivery,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let crate::lark::event::Event::ChatDisbanded(d) = &event.event else {
                return;
            };
            match mark_disbanded(
                &self.store,
                integration.id(),
                &d.chat_id,
                d.name.as_deref(),
                self.clock.now(),
            )
            .await
            {
                Ok(()) => {
                    tracing::info!(integration = %integration.id(), chat = %d.chat_id, "Lark chat disbanded")
                }
                Err(e) => tracing::error!(error = %e, chat = %d.chat_id, "cannot record a disbanded chat"),
            }
        })
    }
}
