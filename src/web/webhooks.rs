//! `/api/v1/webhooks`: the outbound incident webhooks. The signing secret is in the creation
//! response only.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use warp::http::StatusCode;

use super::error::{ApiError, ErrorCode};
use super::reply::{Created, Json, Page};
use crate::route_table;
use crate::services::Services;
use crate::webhook::{SubscriptionInput, SubscriptionView, WebhookError};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, e.to_string()),
            WebhookError::NotFound(_) => ApiError::not_found(e.to_string()),
            WebhookError::Store(s) => s.into(),
        }
    }
}

/// A new webhook with its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionCreated {
    #[serde(flatten)]
    pub view: SubscriptionView,
    pub secret: String,
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Lists the outbound webhooks.
    GET ["api" / "v1" / "webhooks"] admin => list -> 200 json(Page<SubscriptionView>);
    /// Creates a webhook; the answer carries its signing secret, this once.
    POST ["api" / "v1" / "webhooks"] admin, json(SubscriptionInput)
        => create -> 201 json(SubscriptionCreated);
    /// One webhook.
    GET ["api" / "v1" / "webhooks" / {id}] admin => get -> 200 json(SubscriptionView);
    /// Changes the given fields of a webhook.
    PATCH | PUT ["api" / "v1" / "webhooks" / {id}] admin, json(SubscriptionInput)
        => update -> 200 json(SubscriptionView);
    /// Deletes a webhook.
    DELETE ["api" / "v1" / "webhooks" / {id}] admin => delete -> 204;
}

async fn list(app: Arc<Services>) -> Result<Page<SubscriptionView>, ApiError> {
    let subs = app.webhooks.list()?;
    Ok(Page::new(subs.iter().map(SubscriptionView::from).collect()))
}

async fn create(
    app: Arc<Services>,
    input: SubscriptionInput,
) -> Result<Created<SubscriptionCreated>, ApiError> {
    let (sub, secret) = app.webhooks.create(input).await?;
    Ok(Created(SubscriptionCreated {
        view: SubscriptionView::from(&sub),
        secret,
    }))
}

async fn get(app: Arc<Services>, id: String) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(SubscriptionView::from(&app.webhooks.get(&id)?)))
}

async fn update(
    app: Arc<Services>,
    id: String,
    input: SubscriptionInput,
) -> Result<Json<SubscriptionView>, ApiError> {
    let sub = app.webhooks.update(&id, input).await?;
    Ok(Json(SubscriptionView::from(&sub)))
}

async fn delete(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
