//! The [`Executor`] that makes outbox jobs real Open API calls: one [`LarkClient`] per integration,
//! looked up in a [`LarkClients`] registry, and Lark's errors mapped to what the engine does next.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::engine::Executor;
use super::job::{CallFailure, CallOutcome, FailureKind, Job, JobKind};
use crate::lark::{LarkClient, LarkError, MessageContent, NewChat};

/// What the engine should do about a failed call. Token trouble reaches here only after the
/// client's own refresh-and-retry failed, so it is retried later like any transient fault.
impl From<&LarkError> for CallFailure {
    fn from(error: &LarkError) -> CallFailure {
        let kind = match error {
            LarkError::RateLimited { retry_after, .. } => FailureKind::RateLimited {
                retry_after: *retry_after,
            },
            LarkError::QuotaExhausted(_) => FailureKind::QuotaExhausted,
            LarkError::Transient { .. } | LarkError::InvalidToken(_) => FailureKind::Transient,
            // The chat is busy: being created (232068), or another add to it is under way (232019).
            other if matches!(other.code(), Some(232068 | 232019)) => FailureKind::Transient,
            other => FailureKind::Permanent {
                reason: other.reason(),
            },
        };
        CallFailure {
            kind,
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// The Lark client of each integration, replaced when its settings change.
#[derive(Debug, Default)]
pub struct LarkClients {
    by_integration: RwLock<HashMap<String, Arc<LarkClient>>>,
}

impl LarkClients {
    pub fn new() -> LarkClients {
        LarkClients::default()
    }

    pub fn insert(&self, integration_id: impl Into<String>, client: Arc<LarkClient>) {
        self.by_integration
            .write()
            .expect("lark clients lock")
            .insert(integration_id.into(), client);
    }

    pub fn remove(&self, integration_id: &str) -> Option<Arc<LarkClient>> {
        self.by_integration
            .write()
            .expect("lark clients lock")
            .remove(integration_id)
    }

    pub fn get(&self, integration_id: &str) -> Option<Arc<LarkClient>> {
        self.by_integration
            .read()
            .expect("lark clients lock")
            .get(integration_id)
            .cloned()
    }
}

pub struct LarkExecutor {
    clients: Arc<LarkClients>,
}

impl LarkExecutor {
    pub fn new(clients: Arc<LarkClients>) -> LarkExecutor {
        LarkExecutor { clients }
    }

    async fn call(client: &LarkClient, job: &Job) -> Result<Option<String>, LarkError> {
        let uuid = Some(job.uuid.as_str());
        match &job.kind {
            JobKind::Send {
                receive_id_type,
                receive_id,
                msg_type,
                content,
            } => {
                let content = MessageContent {
                    msg_type: msg_type.clone(),
                    content: content.clone(),
                };
                let sent = client
                    .send_message(*receive_id_type, receive_id, &content, uuid)
                    .await?;
                Ok(Some(sent.message_id))
            }
            JobKind::Reply {
                message_id,
                msg_type,
                content,
            } => {
                let content = MessageContent {
                    msg_type: msg_type.clone(),
                    content: content.clone(),
                };
                let sent = client.reply_message(message_id, &content, false, uuid).await?;
                Ok(Some(sent.message_id))
            }
            JobKind::UpdateCard { message_id, content } => {
                client.update_card(message_id, content).await.map(|()| None)
            }
            JobKind::CreateChat {
                name,
                owner_open_id,
                member_open_ids,
                description,
                dedup_uuid,
            } => {
                let chat = NewChat {
                    name: name.clone(),
                    description: description.clone(),
                    owner_id: owner_open_id.clone(),
                    member_open_ids: member_open_ids.clone(),
                };
                let created = client.create_chat(&chat, dedup_uuid.as_deref().or(uuid)).await?;
                Ok(Some(created.chat_id))
            }
            JobKind::AddMembers { chat_id, open_ids } => {
                let added = client.add_chat_members(chat_id, open_ids).await?;
                let refused = added.invalid_id_list.len() + added.not_existed_id_list.len();
                if refused > 0 {
                    tracing::warn!(job = job.id, chat_id, refused, "Lark did not add some members");
                }
                Ok(Some(serde_json::to_string(&added).expect("id lists serialise")))
            }
            JobKind::Pin { message_id, .. } => client.pin_message(message_id).await.map(|()| None),
            JobKind::TopNotice { chat_id, message_id } => {
                client.set_top_notice(chat_id, message_id).await.map(|()| None)
            }
            JobKind::RenameChat { chat_id, name } => client.rename_chat(chat_id, name).await.map(|()| None),
            JobKind::BotHook { .. } => unreachable!("execute hands group-bot posts elsewhere"),
        }
    }
}

impl Executor for LarkExecutor {
    async fn execute(&self, job: &Job) -> CallOutcome {
        if matches!(job.kind, JobKind::BotHook { .. }) {
            // Not a call of the app: the group-bot sender wraps this executor and takes these.
            return CallOutcome::Failed(CallFailure {
                kind: FailureKind::Permanent {
                    reason: "no_bot_webhook_sender",
                },
                code: None,
                message: "group-bot webhook posts need the bot-webhook sender".into(),
            });
        }
        let Some(client) = self.clients.get(&job.integration_id) else {
            return CallOutcome::Failed(CallFailure {
                kind: FailureKind::Permanent {
                    reason: "integration_unknown",
                },
                code: None,
                message: format!("no Lark client for integration {}", job.integration_id),
            });
        };
        match Self::call(&client, job).await {
            Ok(returned_id) => CallOutcome::Delivered { returned_id },
            Err(error) => CallOutcome::Failed(CallFailure::from(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lark::Answer;
    use std::time::Duration;

    fn answer(code: i64) -> Answer {
        Answer {
            http_status: 400,
            code: Some(code),
            msg: "m".into(),
            log_id: Some("log-9".into()),
        }
    }

    #[test]
    fn errors_map_to_what_the_engine_does_next() {
        let limited = LarkError::RateLimited {
            retry_after: Duration::from_secs(3),
            answer: answer(99991400),
        };
        let failure = CallFailure::from(&limited);
        assert_eq!(
            failure.kind,
            FailureKind::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(failure.code, Some(99991400));
        assert!(failure.message.contains("log-9"), "{}", failure.message);
        let cases = [
            (
                LarkError::QuotaExhausted(answer(99991403)),
                FailureKind::QuotaExhausted,
            ),
            (LarkError::InvalidToken(answer(99991663)), FailureKind::Transient),
            (
                LarkError::Transient {
                    cause: "timed out".into(),
                    http_status: None,
                },
                FailureKind::Transient,
            ),
            (
                LarkError::BotNotInChat(answer(230002)),
                FailureKind::Permanent {
                    reason: "bot_not_in_chat",
                },
            ),
            (
                LarkError::PermissionMissing {
                    scope: Some("im:message"),
                    answer: answer(99991672),
                },
                FailureKind::Permanent {
                    reason: "permission_missing",
                },
            ),
            (LarkError::Other(answer(232019)), FailureKind::Transient),
            (LarkError::Other(answer(232068)), FailureKind::Transient),
            (
                LarkError::Other(answer(232043)),
                FailureKind::Permanent { reason: "lark_error" },
            ),
            (
                LarkError::WrongCredentials(answer(99991543)),
                FailureKind::Permanent {
                    reason: "wrong_credentials",
                },
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(CallFailure::from(&error).kind, kind, "{error:?}");
        }
    }
}
