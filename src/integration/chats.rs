//! The group chats each integration's bot is in, as last listed from Lark and kept current by
//! Lark's chat events: what rules choose from. A refresh replaces the list; a chat the bot has
//! left stays, marked `left`, one Lark says the bot was removed from stays, marked
//! `bot_removed`, and a disbanded chat stays, marked `disbanded`, so rules that name it can be
//! flagged. `im.chat.member.bot.added_v1` adds a chat at once (with who added the bot), and
//! `im.chat.updated_v1` renames it; each is idempotent by chat id (the inbound pipeline dedups
//! event ids), and an event older than what a chat already shows changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tables;
use crate::lark::{LarkClient, LarkError};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// The bot is in the chat (as of the last refresh).
    Active,
    /// The last refresh did not list it: the bot was removed.
    Left,
    /// Lark told us the chat was disbanded.
    Disbanded,
    /// Lark told us the bot was removed from the chat.
    BotRemoved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnownChat {
    pub chat_id: String,
    pub name: String,
    pub description: String,
    pub external: bool,
    pub status: ChatStatus,
    pub seen_at: DateTime<Utc>,
    /// The open_id of whoever added the bot, when Lark said so.
    #[serde(default)]
    pub added_by: Option<String>,
    /// The open_id of whoever removed the bot, when Lark said so.
    #[serde(default)]
    pub removed_by: Option<String>,
    /// When Lark made the last chat event applied to this row (events are ordered by it).
    #[serde(default)]
    pub event_at: Option<DateTime<Utc>>,
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
                let before = w.get(&tables::CHATS, key(&integration, &chat.chat_id).as_str())?;
                let row = KnownChat {
                    chat_id: chat.chat_id.clone(),
                    name: chat.name.clone(),
                    description: chat.description.clone(),
                    external: chat.external,
                    status,
                    seen_at: now,
                    added_by: before.as_ref().and_then(|b| b.added_by.clone()),
                    removed_by: None,
                    event_at: before.and_then(|b| b.event_at),
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
                    added_by: None,
                    removed_by: None,
                    event_at: None,
                },
            };
            w.put(&tables::CHATS, key.as_str(), &row)
        })
        .await
}

/// Why the bot cannot post to `chat_id` as far as we know, as the operation log words it;
/// `None` when it can (unknown chats count as usable: Lark is the judge then).
pub fn unusable_reason(
    store: &Store,
    integration: &str,
    chat_id: &str,
) -> Result<Option<&'static str>, StoreError> {
    let known = store.read(|r| r.get(&tables::CHATS, key(integration, chat_id).as_str()))?;
    Ok(match known.map(|c| c.status) {
        None | Some(ChatStatus::Active) => None,
        Some(ChatStatus::Disbanded) => Some("chat_disbanded"),
        Some(ChatStatus::BotRemoved) => Some("bot_removed"),
        Some(ChatStatus::Left) => Some("bot_not_in_chat"),
    })
}

/// Handles `im.chat.disbanded_v1`: the chat is marked disbanded, so nothing more is addressed
/// to it and the rules naming it show as needing attention.
pub struct DisbandedHandler {
    pub store: Store,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Where the sends still waiting for the chat are ended.
    pub delivery: std::sync::Arc<crate::delivery::Delivery>,
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
                    tracing::info!(integration = %integration.id(), chat = %d.chat_id, "Lark chat disbanded");
                    end_waiting_sends(&self.delivery, integration.id(), &d.chat_id, "chat_disbanded").await;
                }
                Err(e) => tracing::error!(error = %e, chat = %d.chat_id, "cannot record a disbanded chat"),
            }
        })
    }
}

/// What a chat event says about a chat.
#[derive(Debug, Clone)]
pub enum ChatChange {
    /// The bot was added by `by` (an open_id).
    BotAdded {
        name: Option<String>,
        external: bool,
        by: Option<String>,
    },
    /// The bot was removed by `by`: nothing more is addressed to the chat.
    BotRemoved {
        name: Option<String>,
        by: Option<String>,
    },
    /// The chat was renamed.
    Renamed { name: String },
}

/// Applies a chat event Lark made at `at` (when known), seen `now`: a chat that already took a
/// later event keeps it, so a redelivered or late event cannot undo a newer one.
pub async fn apply_event(
    store: &Store,
    integration: &str,
    chat_id: &str,
    change: ChatChange,
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = key(integration, chat_id);
    let chat_id = chat_id.to_string();
    store
        .write(move |w| {
            let known = w.get(&tables::CHATS, key.as_str())?;
            let later_known = known
                .as_ref()
                .and_then(|k| k.event_at)
                .zip(at)
                .is_some_and(|(applied, this)| applied > this);
            if later_known {
                return Ok(());
            }
            let mut row = known.unwrap_or(KnownChat {
                chat_id,
                name: String::new(),
                description: String::new(),
                external: false,
                status: ChatStatus::Active,
                seen_at: now,
                added_by: None,
                removed_by: None,
                event_at: None,
            });
            if row.status == ChatStatus::Disbanded {
                return Ok(());
            }
            row.seen_at = now;
            row.event_at = at.or(row.event_at);
            match change {
                ChatChange::BotAdded { name, external, by } => {
                    row.status = ChatStatus::Active;
                    row.external = external;
                    row.added_by = by;
                    row.removed_by = None;
                    if let Some(name) = name {
                        row.name = name;
                    }
                }
                ChatChange::BotRemoved { name, by } => {
                    row.status = ChatStatus::BotRemoved;
                    row.removed_by = by;
                    if let Some(name) = name.filter(|_| row.name.is_empty()) {
                        row.name = name;
                    }
                }
                ChatChange::Renamed { name } => row.name = name,
            }
            w.put(&tables::CHATS, key.as_str(), &row)
        })
        .await
}

/// The chat events this domain keeps the list current with.
pub const MEMBERSHIP_EVENTS: [&str; 3] = [
    "im.chat.member.bot.added_v1",
    "im.chat.member.bot.deleted_v1",
    "im.chat.updated_v1",
];

/// Handles [`MEMBERSHIP_EVENTS`]: the bot added (the chat appears, named, with who added it),
/// removed (the chat is marked `bot_removed`, so sends to it stop and rules naming it are
/// flagged) and chat renames.
pub struct MembershipHandler {
    pub store: Store,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Where the sends still waiting for a chat the bot left are ended.
    pub delivery: std::sync::Arc<crate::delivery::Delivery>,
}

/// Ends the sends still queued for a chat the bot can no longer post to, so a backlog does not
/// turn into one refused call each (230002).
async fn end_waiting_sends(
    delivery: &crate::delivery::Delivery,
    integration: &str,
    chat_id: &str,
    reason: &str,
) {
    let receiver = format!("{}:{chat_id}", crate::lark::ReceiveIdType::ChatId.as_str());
    if let Err(e) = delivery.cancel_waiting_for(integration, &receiver, reason).await {
        tracing::error!(error = %e, chat = %chat_id, "cannot end the sends waiting for a chat");
    }
}

impl super::inbound::EventHandler for MembershipHandler {
    fn handle<'a>(
        &'a self,
        integration: &'a std::sync::Arc<super::Live>,
        event: &'a crate::lark::callback::EventDelivery,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        use crate::lark::event::Event;
        Box::pin(async move {
            let (chat_id, change) = match &event.event {
                Event::BotAdded(m) => (
                    &m.chat_id,
                    ChatChange::BotAdded {
                        name: m.name.clone(),
                        external: m.external,
                        by: m.operator.open_id.clone(),
                    },
                ),
                Event::BotRemoved(m) => (
                    &m.chat_id,
                    ChatChange::BotRemoved {
                        name: m.name.clone(),
                        by: m.operator.open_id.clone(),
                    },
                ),
                Event::ChatUpdated(u) => match &u.name {
                    Some(name) => (&u.chat_id, ChatChange::Renamed { name: name.clone() }),
                    None => return,
                },
                _ => return,
            };
            let (at, now) = (event.created_at, self.clock.now());
            match apply_event(&self.store, integration.id(), chat_id, change, at, now).await {
                Ok(()) => {
                    tracing::info!(integration = %integration.id(), chat = %chat_id, event = %event.event_type, "chat list updated");
                    // As the chat now stands: a stale removal after a newer add changed nothing.
                    if let Ok(Some(reason)) = unusable_reason(&self.store, integration.id(), chat_id) {
                        end_waiting_sends(&self.delivery, integration.id(), chat_id, reason).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, chat = %chat_id, "cannot record a chat event"),
            }
        })
    }
}
