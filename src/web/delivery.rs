//! The delivery engine's admin API: the operation log, the outbox's jobs (and re-triggering a
//! failed one), an integration's quota report, and sending a message through the outbox (one or a
//! batch), which admins use to check an integration and load tests use to make load.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::http::StatusCode;

use super::body;
use super::error::{ApiError, ErrorCode};
use super::reply::Json;
use crate::delivery::job::{Job, JobState};
use crate::delivery::oplog::{self, OpEntry, OpQuery};
use crate::delivery::{DeliveryError, JobKind, NewJob, Priority};
use crate::lark::{MessageContent, ReceiveIdType};
use crate::route_table;
use crate::services::Services;

/// Lark's size limits of a message's content (reference §5: text 150 KB, card 30 KB).
const TEXT_LIMIT_BYTES: usize = 150 * 1024;
const CARD_LIMIT_BYTES: usize = 30 * 1024;
/// Most messages one batch request may carry.
pub const MAX_BATCH: usize = 1000;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NoSuchJob(_) => ApiError::not_found(e.to_string()),
            DeliveryError::NotFailed(_) => ApiError::conflict(ErrorCode::NotFailed, e.to_string()),
            DeliveryError::Store(s) => s.into(),
        }
    }
}

/// One message to send, as the API takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub receive_id_type: ReceiveIdType,
    pub receive_id: String,
    pub text: Option<String>,
    /// An interactive card: Lark's card JSON, any JSON object (Lark checks its shape).
    #[schema(value_type = Option<Object>)]
    pub card: Option<serde_json::Value>,
    #[serde(default = "info")]
    pub priority: Priority,
}

fn info() -> Priority {
    Priority::Info
}

/// Up to [`MAX_BATCH`] messages.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    messages: Vec<MessageInput>,
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidField, format!("{field}: {reason}"))
}

impl MessageInput {
    /// The outbox job this message becomes; `at` prefixes field names (`messages[3].`).
    fn into_job(self, integration_id: &str, at: &str) -> Result<NewJob, ApiError> {
        if self.receive_id.trim().is_empty() {
            return Err(invalid(&format!("{at}receive_id"), "must not be empty"));
        }
        let content = match (self.text, self.card) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &format!("{at}text"),
                    "give either text or card, not both",
                ));
            }
            (None, None) => return Err(invalid(&format!("{at}text"), "give text or card")),
            (Some(text), None) => {
                if text.is_empty() {
                    return Err(invalid(&format!("{at}text"), "must not be empty"));
                }
                let content = MessageContent::text(&text);
                if content.content.len() > TEXT_LIMIT_BYTES {
                    return Err(invalid(
                        &format!("{at}text"),
                        format!(
                            "is {} bytes; Lark takes at most {TEXT_LIMIT_BYTES}",
                            content.content.len()
                        ),
                    ));
                }
                content
            }
            (None, Some(card)) => {
                if !card.is_object() {
                    return Err(invalid(&format!("{at}card"), "must be a JSON object"));
                }
                let content = MessageContent::card(&card);
                if content.content.len() > CARD_LIMIT_BYTES {
                    return Err(invalid(
                        &format!("{at}card"),
                        format!(
                            "is {} bytes; Lark takes at most {CARD_LIMIT_BYTES}",
                            content.content.len()
                        ),
                    ));
                }
                content
            }
        };
        Ok(NewJob {
            integration_id: integration_id.to_string(),
            incident_id: None,
            priority: self.priority,
            cosmetic: false,
            kind: JobKind::Send {
                receive_id_type: self.receive_id_type,
                receive_id: self.receive_id,
                msg_type: content.msg_type,
                content: content.content,
            },
        })
    }
}

fn known_integration(app: &Services, id: &str) -> Result<(), ApiError> {
    match app.integrations.get(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no integration {id}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    // Inline: a query parameter's schema has no way to add the component it would refer to.
    #[param(inline)]
    state: Option<JobStateFilter>,
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum JobStateFilter {
    Pending,
    Held,
    Failed,
}

impl JobStateFilter {
    fn matches(self, state: &JobState) -> bool {
        matches!(
            (self, state),
            (JobStateFilter::Pending, JobState::Pending)
                | (JobStateFilter::Held, JobState::Held { .. })
                | (JobStateFilter::Failed, JobState::Failed { .. })
        )
    }
}

/// A page of the operation log, newest first; `next_before` pages on.
#[derive(Serialize, ToSchema)]
pub struct OplogPage {
    pub items: Vec<OpEntry>,
    pub next_before: Option<u64>,
}

/// A page of the outbox's jobs, oldest first; `next_after` pages on.
#[derive(Serialize, ToSchema)]
pub struct JobsPage {
    pub items: Vec<Job>,
    pub next_after: Option<u64>,
}

/// The outbox job a message became.
#[derive(Serialize, ToSchema)]
pub struct Enqueued {
    pub job_id: u64,
}

/// The outbox jobs a batch became, in its order.
#[derive(Serialize, ToSchema)]
pub struct EnqueuedBatch {
    pub job_ids: Vec<u64>,
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// The operation log: every call made to Lark and every delivery decision.
    GET ["api" / "v1" / "oplog"] admin query(OpQuery)
        => list_oplog -> 200 json(OplogPage);
    /// The outbox's jobs, optionally of one state (`pending`, `held`, `failed`).
    GET ["api" / "v1" / "jobs"] admin query(JobsQuery)
        => list_jobs -> 200 json(JobsPage);
    /// Re-triggers a failed job.
    POST ["api" / "v1" / "jobs" / {id} / "retry"] admin => retry -> 202 json(Enqueued);
    /// This month's quota report with the limiter's state now.
    GET ["api" / "v1" / "integrations" / {id} / "quota"] admin => quota_report -> 200 json(QuotaAnswer);
    /// Sends one message through the outbox.
    POST ["api" / "v1" / "integrations" / {id} / "messages"] admin, raw(MessageInput)
        => send -> 202 json(Enqueued);
    /// Sends up to 1,000 messages through the outbox.
    POST ["api" / "v1" / "integrations" / {id} / "messages" / "batch"] admin, raw(BatchInput)
        => send_batch -> 202 json(EnqueuedBatch);
}

async fn list_oplog(app: Arc<Services>, q: OpQuery) -> Result<Json<OplogPage>, ApiError> {
    let page = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, oplog::MAX_PAGE);
    let items = oplog::query(
        &app.store,
        &OpQuery {
            limit: Some(page),
            ..q
        },
    )?;
    // A full page may have more behind it; the client pages back from its oldest entry.
    let next_before = (items.len() == page)
        .then(|| items.last().map(|e| e.seq))
        .flatten();
    Ok(Json(OplogPage { items, next_before }))
}

async fn list_jobs(app: Arc<Services>, q: JobsQuery) -> Result<Json<JobsPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut items = Vec::new();
    let mut cursor = q.after;
    // Page through in chunks, so a sparse state filter does not load the whole outbox at once.
    'pages: loop {
        let chunk = app.delivery.jobs(cursor, 1000)?;
        let Some(last) = chunk.last().map(|j| j.id) else {
            break;
        };
        for job in chunk {
            if q.state.is_none_or(|s| s.matches(&job.state)) {
                items.push(job);
                if items.len() == limit {
                    break 'pages;
                }
            }
        }
        cursor = Some(last);
    }
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|j| j.id))
        .flatten();
    Ok(Json(JobsPage { items, next_after }))
}

fn accepted(value: &impl Serialize) -> warp::reply::Response {
    super::error::json(StatusCode::ACCEPTED, value)
}

/// The id is parsed after authentication, so a bad one is a 404 to admins only.
async fn retry(app: Arc<Services>, id: String) -> Result<warp::reply::Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no job {id}")))?;
    app.delivery.retrigger(id).await?;
    tracing::info!(job = id, "failed job re-triggered");
    Ok(accepted(&Enqueued { job_id: id }))
}

async fn send(
    app: Arc<Services>,
    id: String,
    bytes: bytes::Bytes,
) -> Result<warp::reply::Response, ApiError> {
    known_integration(&app, &id)?;
    let input: MessageInput = body::decode_json(&bytes)?;
    let job_id = app.delivery.enqueue(input.into_job(&id, "")?).await?;
    Ok(accepted(&Enqueued { job_id }))
}

async fn send_batch(
    app: Arc<Services>,
    id: String,
    bytes: bytes::Bytes,
) -> Result<warp::reply::Response, ApiError> {
    known_integration(&app, &id)?;
    let input: BatchInput = body::decode_json(&bytes)?;
    if input.messages.is_empty() || input.messages.len() > MAX_BATCH {
        return Err(invalid(
            "messages",
            format!("give 1 to {MAX_BATCH} messages, not {}", input.messages.len()),
        ));
    }
    let jobs = input
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_job(&id, &format!("messages[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let job_ids = app.delivery.enqueue_many(jobs).await?;
    Ok(accepted(&EnqueuedBatch { job_ids }))
}

/// This month's quota report with the limiter's state now (queued, in flight, held, waiting).
#[derive(Serialize, ToSchema)]
pub struct QuotaAnswer {
    #[serde(flatten)]
    report: crate::delivery::quota::QuotaReport,
    limiter: crate::delivery::LimiterState,
    /// Group-bot webhooks have their own limits and do not count against the app's quota.
    bot_webhooks: Vec<BotWebhookCalls>,
}

#[derive(Serialize, ToSchema)]
pub struct BotWebhookCalls {
    id: String,
    name: String,
    calls: u64,
    counts_against_quota: bool,
}

async fn quota_report(app: Arc<Services>, id: String) -> Result<Json<QuotaAnswer>, ApiError> {
    known_integration(&app, &id)?;
    let bot_webhooks = app
        .bot_webhooks
        .list()
        .into_iter()
        .map(|hook| BotWebhookCalls {
            calls: app.delivery.quota_report(&hook.id).used,
            id: hook.id,
            name: hook.name,
            counts_against_quota: false,
        })
        .collect();
    Ok(Json(QuotaAnswer {
        report: app.delivery.quota_report(&id),
        limiter: app.delivery.limiter_state(&id),
        bot_webhooks,
    }))
}
