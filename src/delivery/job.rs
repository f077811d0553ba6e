//! Outbox jobs: one Lark call that changes something, persisted before it is attempted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::limits::CallShape;
use crate::lark::ReceiveIdType;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    Warning,
    Info,
}

/// What Lark's monthly quota counts, by class (the ledger keeps these apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallClass {
    Token,
    SendToPerson,
    SendToChat,
    CardUpdate,
    ChatManagement,
    UserLookup,
    Oauth,
    Other,
    /// Posts to group-bot webhooks: outside the app's quota, counted on the webhook's own line.
    BotWebhook,
}

impl CallClass {
    pub const ALL: [CallClass; 9] = [
        CallClass::Token,
        CallClass::SendToPerson,
        CallClass::SendToChat,
        CallClass::CardUpdate,
        CallClass::ChatManagement,
        CallClass::UserLookup,
        CallClass::Oauth,
        CallClass::Other,
        CallClass::BotWebhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Token => "token",
            CallClass::SendToPerson => "send_to_person",
            CallClass::SendToChat => "send_to_chat",
            CallClass::CardUpdate => "card_update",
            CallClass::ChatManagement => "chat_management",
            CallClass::UserLookup => "user_lookup",
            CallClass::Oauth => "oauth",
            CallClass::Other => "other",
            CallClass::BotWebhook => "bot_webhook",
        }
    }

    /// Whether Lark counts this class against the app's monthly quota (group-bot webhooks are
    /// not the app's calls).
    pub fn counts_against_quota(self) -> bool {
        self != CallClass::BotWebhook
    }
}

/// The receiver prefix of a group-bot webhook job (`bot_webhook:bwh_…`).
pub const BOT_WEBHOOK_RECEIVER: &str = "bot_webhook:";

/// The Lark call a job makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobKind {
    /// `POST /im/v1/messages`; `content` is the message content JSON string.
    Send {
        receive_id_type: ReceiveIdType,
        receive_id: String,
        msg_type: String,
        content: String,
    },
    /// `POST /im/v1/messages/:id/reply`.
    Reply {
        message_id: String,
        msg_type: String,
        content: String,
    },
    /// `PATCH /im/v1/messages/:id` of an interactive card.
    UpdateCard { message_id: String, content: String },
    /// `POST /im/v1/chats`.
    CreateChat {
        name: String,
        owner_open_id: Option<String>,
        member_open_ids: Vec<String>,
        #[serde(default)]
        description: String,
        /// Lark's create dedup key when the producer derives its own (a war room's, from its
        /// incident and generation), so a create repeated after a restart makes no second chat.
        #[serde(default)]
        dedup_uuid: Option<String>,
    },
    /// `POST /im/v1/chats/:id/members` (`succeed_type=1`). Delivered, it returns the ids Lark
    /// did not add as JSON (`invalid_id_list`, `not_existed_id_list`, `pending_approval_id_list`).
    AddMembers { chat_id: String, open_ids: Vec<String> },
    /// `POST /im/v1/pins` of a message of `chat_id`.
    Pin { chat_id: String, message_id: String },
    /// `POST /im/v1/chats/:id/top_notice/put_top_notice` with a message.
    TopNotice { chat_id: String, message_id: String },
    /// `PUT /im/v1/chats/:id` with a new name.
    RenameChat { chat_id: String, name: String },
    /// A post to a custom group bot's webhook: `body` is the message JSON before the keyword
    /// and signature are added at send time. A `state_change` waits for (and is merged into)
    /// the previous one of its incident, so each incident sends at most one a minute.
    BotHook {
        webhook_id: String,
        body: String,
        state_change: bool,
    },
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Send { .. } => "send",
            JobKind::Reply { .. } => "reply",
            JobKind::UpdateCard { .. } => "update_card",
            JobKind::CreateChat { .. } => "create_chat",
            JobKind::AddMembers { .. } => "add_members",
            JobKind::Pin { .. } => "pin",
            JobKind::TopNotice { .. } => "top_notice",
            JobKind::RenameChat { .. } => "rename_chat",
            JobKind::BotHook { .. } => "bot_hook",
        }
    }

    pub fn api(&self) -> &'static str {
        Self::api_of(self.name()).expect("every kind has an API")
    }

    /// The API a kind of job calls, by the kind's [`JobKind::name`] (as the operation log keeps it).
    pub fn api_of(name: &str) -> Option<&'static str> {
        Some(match name {
            "send" => "im.message.create",
            "reply" => "im.message.reply",
            "update_card" => "im.message.patch",
            "create_chat" => "im.chat.create",
            "add_members" => "im.chat.members.create",
            "pin" => "im.pin.create",
            "top_notice" => "im.chat.top_notice.put_top_notice",
            "rename_chat" => "im.chat.update",
            "bot_hook" => "bot.v2.hook",
            _ => return None,
        })
    }

    /// Whether a kind of job counts against the send-message minute budget, by its name.
    pub fn is_send(name: &str) -> bool {
        matches!(name, "send" | "reply" | "bot_hook")
    }

    pub fn class(&self) -> CallClass {
        match self {
            JobKind::Send {
                receive_id_type: ReceiveIdType::ChatId,
                ..
            } => CallClass::SendToChat,
            JobKind::Send { .. } | JobKind::Reply { .. } => CallClass::SendToPerson,
            JobKind::UpdateCard { .. } => CallClass::CardUpdate,
            JobKind::CreateChat { .. }
            | JobKind::AddMembers { .. }
            | JobKind::Pin { .. }
            | JobKind::TopNotice { .. }
            | JobKind::RenameChat { .. } => CallClass::ChatManagement,
            JobKind::BotHook { .. } => CallClass::BotWebhook,
        }
    }

    /// The user or chat this call is addressed to.
    pub fn receiver(&self) -> Option<String> {
        match self {
            JobKind::Send {
                receive_id_type,
                receive_id,
                ..
            } => Some(format!("{}:{receive_id}", receive_id_type.as_str())),
            JobKind::AddMembers { chat_id, .. }
            | JobKind::Pin { chat_id, .. }
            | JobKind::TopNotice { chat_id, .. }
            | JobKind::RenameChat { chat_id, .. } => Some(format!("chat_id:{chat_id}")),
            JobKind::BotHook { webhook_id, .. } => Some(format!("{BOT_WEBHOOK_RECEIVER}{webhook_id}")),
            _ => None,
        }
    }

    pub fn shape(&self) -> CallShape {
        CallShape {
            api: self.api(),
            is_send: Self::is_send(self.name()),
            receiver: self.receiver(),
            // Lark limits updates and pins of one message to 5/s each (230047 for pins).
            message: match self {
                JobKind::UpdateCard { message_id, .. } | JobKind::Pin { message_id, .. } => {
                    Some(message_id.clone())
                }
                _ => None,
            },
        }
    }
}

/// Why a job is not going out right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The monthly quota is spent; released on the 1st or when the plan changes.
    QuotaExhausted,
    /// The degradation policy keeps the remaining quota for more important calls.
    QuotaReserved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Held {
        reason: HoldReason,
    },
    /// Gave up (permanent error, or retries exhausted); kept for admins to see and re-trigger.
    Failed {
        reason: String,
        code: Option<i64>,
        message: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: u64,
    pub integration_id: String,
    pub incident_id: Option<String>,
    pub priority: Priority,
    /// A card refresh that may be skipped when the quota runs low.
    pub cosmetic: bool,
    pub kind: JobKind,
    /// Lark-side dedup key (`uuid`), stable across retries and restarts; ≤ 50 characters.
    pub uuid: String,
    pub created_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub state: JobState,
}

impl Job {
    /// Whose limits, schedule and ledger the job is in: its integration's, or a group-bot
    /// webhook's own (Lark limits each custom bot apart from the app).
    pub fn lane(&self) -> &str {
        match &self.kind {
            JobKind::BotHook { webhook_id, .. } => webhook_id,
            _ => &self.integration_id,
        }
    }

    /// Scheduling rank: critical, then warning, then card updates, then info sends.
    pub fn rank(&self) -> u8 {
        match (self.priority, &self.kind) {
            (Priority::Critical, _) => 0,
            (Priority::Warning, _) => 1,
            (Priority::Info, JobKind::UpdateCard { .. }) => 2,
            (Priority::Info, _) => 3,
        }
    }
}

/// A job as the producer describes it; the outbox assigns id, uuid and times.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub integration_id: String,
    pub incident_id: Option<String>,
    pub priority: Priority,
    pub cosmetic: bool,
    pub kind: JobKind,
}

/// How a call ended, as the executor reports it.
#[derive(Debug, Clone)]
pub enum CallOutcome {
    /// Done; `returned_id` is the id Lark gave back: the message id of a send or reply, the
    /// chat id of a created chat.
    Delivered {
        returned_id: Option<String>,
    },
    Failed(CallFailure),
}

#[derive(Debug, Clone)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub code: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FailureKind {
    /// Lark's limit was hit anyway; retry after this long.
    RateLimited { retry_after: std::time::Duration },
    /// Lark says this month's quota is spent.
    QuotaExhausted,
    /// 5xx, timeouts, connection errors: retry with backoff.
    Transient,
    /// No retry can help (user not found, bot not in chat, permission missing, …): the reason
    /// is a stable snake_case word for the operation log.
    Permanent { reason: &'static str },
}
