//! `/api/v1/bot-webhooks`: custom group-bot webhooks as notification targets. The URL and the
//! signing secret are write-only: answers say only whether they are set.

use std::sync::Arc;

use warp::http::StatusCode;

use super::error::{ApiError, ErrorCode};
use super::reply::{Created, Json, Page};
use crate::bot_webhook::{BotWebhookError, BotWebhookInput, BotWebhookView};
use crate::route_table;
use crate::services::Services;

impl From<BotWebhookError> for ApiError {
    fn from(e: BotWebhookError) -> Self {
        match e {
            BotWebhookError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, e.to_string()),
            BotWebhookError::NotFound(_) => ApiError::not_found(e.to_string()),
            BotWebhookError::Secret(s) => ApiError::internal(s.to_string()),
            BotWebhookError::Store(s) => s.into(),
        }
    }
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Lists the group-bot webhooks.
    GET ["api" / "v1" / "bot-webhooks"] admin => list -> 200 json(Page<BotWebhookView>);
    /// Adds a group-bot webhook (name and url required).
    POST ["api" / "v1" / "bot-webhooks"] admin, json(BotWebhookInput)
        => create -> 201 json(BotWebhookView);
    /// One group-bot webhook.
    GET ["api" / "v1" / "bot-webhooks" / {id}] admin => get -> 200 json(BotWebhookView);
    /// Changes the given fields; an empty `secret` or `keyword` clears it.
    PATCH | PUT ["api" / "v1" / "bot-webhooks" / {id}] admin, json(BotWebhookInput)
        => update -> 200 json(BotWebhookView);
    /// Deletes a group-bot webhook.
    DELETE ["api" / "v1" / "bot-webhooks" / {id}] admin => delete -> 204;
}

async fn list(app: Arc<Services>) -> Result<Page<BotWebhookView>, ApiError> {
    Ok(Page::new(app.bot_webhooks.list()))
}

async fn create(app: Arc<Services>, input: BotWebhookInput) -> Result<Created<BotWebhookView>, ApiError> {
    let hook = app.bot_webhooks.create(input).await?;
    tracing::info!(bot_webhook = %hook.id, "bot webhook created");
    Ok(Created(hook))
}

async fn get(app: Arc<Services>, id: String) -> Result<Json<BotWebhookView>, ApiError> {
    Ok(Json(app.bot_webhooks.get(&id)?))
}

async fn update(
    app: Arc<Services>,
    id: String,
    input: BotWebhookInput,
) -> Result<Json<BotWebhookView>, ApiError> {
    Ok(Json(app.bot_webhooks.update(&id, input).await?))
}

async fn delete(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.bot_webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
