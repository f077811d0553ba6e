//! `/api/v1/bot-webhooks`: custom group-bot webhooks as notification targets. The URL and the
//! signing secret are write-only: answers say only whether they are set.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::body;
use super::error::{ApiError, json, respond};
use super::integrations::guarded;
use crate::bot_webhook::{BotWebhookError, BotWebhookInput};
use crate::services::Services;

impl From<BotWebhookError> for ApiError {
    fn from(e: BotWebhookError) -> Self {
        match e {
            BotWebhookError::Invalid { .. } => ApiError::bad_request("invalid_field", e.to_string()),
            BotWebhookError::NotFound(_) => ApiError::not_found(e.to_string()),
            BotWebhookError::Secret(s) => ApiError::internal(s.to_string()),
            BotWebhookError::Store(s) => s.into(),
        }
    }
}

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = guarded(app);
    let list = warp::path!("api" / "v1" / "bot-webhooks")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            json(
                StatusCode::OK,
                &serde_json::json!({ "items": app.bot_webhooks.list() }),
            )
        });
    let create = warp::path!("api" / "v1" / "bot-webhooks")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<BotWebhookInput>(limit))
        .then(|app: Arc<Services>, input| async move {
            let hook = app.bot_webhooks.create(input).await?;
            tracing::info!(bot_webhook = %hook.id, "bot webhook created");
            Ok(json(StatusCode::CREATED, &hook))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "bot-webhooks" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>| {
            respond(
                app.bot_webhooks
                    .get(&id)
                    .map(|h| json(StatusCode::OK, &h))
                    .map_err(ApiError::from),
            )
        });
    let update = warp::path!("api" / "v1" / "bot-webhooks" / String)
        .and(warp::patch().or(warp::put()).unify())
        .and(auth.clone())
        .and(body::json::<BotWebhookInput>(limit))
        .then(|id: String, app: Arc<Services>, input| async move {
            let hook = app.bot_webhooks.update(&id, input).await?;
            Ok(json(StatusCode::OK, &hook))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "bot-webhooks" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            app.bot_webhooks.delete(&id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}
