//! `/api/v1/integrations`: create, list, get, update and delete Lark integrations, list the
//! chats their bot is in, and check their credentials. Secrets are write-only; responses carry
//! the three console URLs and the callback counters.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::admin::authenticated;
use super::body;
use super::error::{ApiError, json, respond};
use crate::auth::Principal;
use crate::integration::chats::{self, ChatsError};
use crate::integration::{IntegrationError, IntegrationInput};
use crate::services::Services;

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

impl From<crate::lark::LarkError> for ApiError {
    fn from(e: crate::lark::LarkError) -> Self {
        tracing::warn!(error = %e, "Lark refused or failed a call made for an admin");
        // What came back stays in the log: the answer names its class and Lark's ids only.
        let detail = match e.answer() {
            Some(a) => format!(
                "HTTP {}, code {}, log_id {}",
                a.http_status,
                a.code.map_or("none".into(), |c| c.to_string()),
                a.log_id.as_deref().unwrap_or("none")
            ),
            None => match &e {
                crate::lark::LarkError::MalformedResponse { http_status, .. }
                | crate::lark::LarkError::Transient {
                    http_status: Some(http_status),
                    ..
                } => format!("HTTP {http_status}"),
                _ => "no HTTP answer".into(),
            },
        };
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            e.reason(),
            format!(
                "Lark call failed: {} ({detail}); the server log has the details",
                e.reason()
            ),
        )
    }
}

impl From<ChatsError> for ApiError {
    fn from(e: ChatsError) -> Self {
        match e {
            ChatsError::Lark(l) => l.into(),
            ChatsError::Store(s) => s.into(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatsQuery {
    #[serde(default)]
    refresh: bool,
}

fn client(app: &Services, id: &str) -> Result<Arc<crate::lark::LarkClient>, ApiError> {
    app.integrations
        .get(id)
        .and_then(|_| app.lark.get(id))
        .ok_or_else(|| IntegrationError::NotFound(id.to_string()).into())
}

async fn chats(app: Arc<Services>, id: String, query: ChatsQuery) -> Result<Response, ApiError> {
    let items = if query.refresh {
        let client = client(&app, &id)?;
        chats::refresh(&app.store, &client, &id, app.clock.now()).await?
    } else {
        client(&app, &id)?;
        chats::list(&app.store, &id)?
    };
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}

/// Fetches a tenant token: proves the App ID and App Secret and that Lark is reachable.
async fn check(app: Arc<Services>, id: String) -> Result<Response, ApiError> {
    let client = client(&app, &id)?;
    client.ensure_tenant_token().await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "ok": true, "token_expires_at": client.token_expires_at() }),
    ))
}

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = guarded(app);

    let list = warp::path!("api" / "v1" / "integrations")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
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
        .then(|app: Arc<Services>, input| async move {
            let live = app.integrations.create(input).await?;
            tracing::info!(integration = %live.id(), app_id = %live.record.app_id, "integration created");
            Ok(json(StatusCode::CREATED, &app.integrations.view(&live)))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "integrations" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>| {
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
        .then(|id: String, app: Arc<Services>, input| async move {
            let live = app.integrations.update(&id, input).await?;
            Ok(json(StatusCode::OK, &app.integrations.view(&live)))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "integrations" / String)
        .and(warp::delete())
        .and(auth.clone())
        .then(|id: String, app: Arc<Services>| async move {
            app.integrations.delete(&id).await?;
            tracing::info!(integration = %id, "integration deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    let chats = warp::path!("api" / "v1" / "integrations" / String / "chats")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<ChatsQuery>())
        .then(|id: String, app: Arc<Services>, q: ChatsQuery| chats(app, id, q))
        .map(respond);
    let check = warp::path!("api" / "v1" / "integrations" / String / "check")
        .and(warp::post())
        .and(auth)
        .then(|id: String, app: Arc<Services>| check(app, id))
        .map(respond);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(chats)
        .unify()
        .or(check)
        .unify()
        .boxed()
}

/// Authenticates, then hands the handler the app.
pub fn guarded(app: Arc<Services>) -> BoxedFilter<(Arc<Services>,)> {
    authenticated(app.clone())
        .map(move |_p: Principal| app.clone())
        .boxed()
}
