//! `/api/v1/integrations`: create, list, get, update and delete Lark integrations. Secrets are
//! write-only; responses carry the three console URLs and the callback counters.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::admin::authenticated;
use super::body;
use super::error::{ApiError, respond};
use crate::app::App;
use crate::auth::Principal;
use crate::integration::{IntegrationError, IntegrationInput};

impl From<IntegrationError> for ApiError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Invalid { .. } => ApiError::bad_request("invalid_field", e.to_string()),
            IntegrationError::NotFound(_) => ApiError::not_found(e.to_string()),
            IntegrationError::DuplicateApp(_) => ApiError::conflict("duplicate_app", e.to_string()),
            IntegrationError::Secret(s) => {
                tracing::error!(error = %s, "integration secrets unusable");
                ApiError::internal("integration secrets cannot be opened; see the server log")
            }
            IntegrationError::Store(s) => s.into(),
        }
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = guarded(app);

    let list = warp::path!("api" / "v1" / "integrations")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<App>| {
            let items: Vec<_> = app
                .integrations
                .all()
                .iter()
                .map(|l| app.integrations.view(l))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "items": items }))
        });
    let create = warp::path!("api" / "v1" / "integrations")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<IntegrationInput>(limit))
        .then(|app: Arc<App>, input| async move {
            let live = app.integrations.create(input).await?;
            app.integration_changed(&live);
            tracing::info!(integration = %live.id(), app_id = %live.record.app_id, "integration created");
            Ok(json(StatusCode::CREATED, &app.integrations.view(&live)))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "integrations" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<App>| {
            respond(
                app.integrations
                    .get(&id)
                    .map(|l| json(StatusCode::OK, &app.integrations.view(&l)))
                    .ok_or_else(|| ApiError::from(IntegrationError::NotFound(id))),
            )
        });
    let update = warp::path!("api" / "v1" / "integrations" / String)
        .and(warp::patch().or(warp::put()).unify())
        .and(auth.clone())
        .and(body::json::<IntegrationInput>(limit))
        .then(|id: String, app: Arc<App>, input| async move {
            let live = app.integrations.update(&id, input).await?;
            app.integration_changed(&live);
            Ok(json(StatusCode::OK, &app.integrations.view(&live)))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "integrations" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<App>| async move {
            app.integrations.delete(&id).await?;
            app.integration_removed(&id);
            tracing::info!(integration = %id, "integration deleted");
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

/// Authenticates, then hands the handler the app.
pub fn guarded(app: Arc<App>) -> BoxedFilter<(Arc<App>,)> {
    authenticated(app.clone())
        .map(move |_p: Principal| app.clone())
        .boxed()
}
