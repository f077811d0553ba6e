//! `/api/v1/webhooks`: the outbound incident webhooks. The signing secret is in the creation
//! response only.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::body;
use super::error::{ApiError, json, respond};
use super::integrations::guarded;
use crate::services::Services;
use crate::webhook::{SubscriptionInput, SubscriptionView, WebhookError};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { .. } => ApiError::bad_request("invalid_field", e.to_string()),
            WebhookError::NotFound(_) => ApiError::not_found(e.to_string()),
            WebhookError::Store(s) => s.into(),
        }
    }
}

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = guarded(app);
    let list = warp::path!("api" / "v1" / "webhooks")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            respond(app.webhooks.list().map_err(ApiError::from).map(|subs| {
                let items: Vec<SubscriptionView> = subs.iter().map(SubscriptionView::from).collect();
                json(StatusCode::OK, &serde_json::json!({ "items": items }))
            }))
        });
    let create = warp::path!("api" / "v1" / "webhooks")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<SubscriptionInput>(limit))
        .then(|app: Arc<Services>, input| async move {
            let (sub, secret) = app.webhooks.create(input).await?;
            let mut view = serde_json::to_value(SubscriptionView::from(&sub)).expect("view serializes");
            view["secret"] = serde_json::Value::String(secret);
            Ok(json(StatusCode::CREATED, &view))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "webhooks" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>| {
            respond(
                app.webhooks
                    .get(&id)
                    .map(|s| json(StatusCode::OK, &SubscriptionView::from(&s)))
                    .map_err(ApiError::from),
            )
        });
    let update = warp::path!("api" / "v1" / "webhooks" / String)
        .and(warp::patch().or(warp::put()).unify())
        .and(auth.clone())
        .and(body::json::<SubscriptionInput>(limit))
        .then(|id: String, app: Arc<Services>, input| async move {
            let sub = app.webhooks.update(&id, input).await?;
            Ok(json(StatusCode::OK, &SubscriptionView::from(&sub)))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "webhooks" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            app.webhooks.delete(&id).await?;
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
