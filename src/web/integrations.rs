//! `/api/v1/integrations`: create, list, get, update and delete Lark integrations, list the
//! chats their bot is in, and check their credentials. Secrets are write-only; responses carry
//! the three console URLs and the callback counters.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use warp::http::StatusCode;

use super::error::{ApiError, ErrorCode};
use super::reply::{Created, Json, Page};
use crate::integration::chats::{self, ChatsError, KnownChat};
use crate::integration::{IntegrationError, IntegrationInput, IntegrationView};
use crate::route_table;
use crate::services::Services;

impl From<IntegrationError> for ApiError {
    fn from(e: IntegrationError) -> Self {
        match e {
            IntegrationError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, e.to_string()),
            IntegrationError::NotFound(_) => ApiError::not_found(e.to_string()),
            IntegrationError::DuplicateApp(_) => ApiError::conflict(ErrorCode::DuplicateApp, e.to_string()),
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
            lark_code(&e),
            format!(
                "Lark call failed: {} ({detail}); the server log has the details",
                e.reason()
            ),
        )
    }
}

/// The catalog's code of a Lark failure: the same word as [`crate::lark::LarkError::reason`].
fn lark_code(e: &crate::lark::LarkError) -> ErrorCode {
    use crate::lark::LarkError as L;
    match e {
        L::RateLimited { .. } => ErrorCode::LarkRateLimited,
        L::QuotaExhausted(_) => ErrorCode::LarkQuotaExhausted,
        L::InvalidToken(_) => ErrorCode::LarkInvalidToken,
        L::WrongCredentials(_) => ErrorCode::LarkWrongCredentials,
        L::AppUnavailable(_) => ErrorCode::LarkAppUnavailable,
        L::BotNotInChat(_) => ErrorCode::LarkBotNotInChat,
        L::UserNotFound(_) => ErrorCode::LarkUserNotFound,
        L::UserNotVisible(_) => ErrorCode::LarkUserNotVisible,
        L::ChatDisbanded(_) => ErrorCode::LarkChatDisbanded,
        L::PermissionMissing { .. } => ErrorCode::LarkPermissionMissing,
        L::Transient { .. } => ErrorCode::LarkTransient,
        L::MalformedResponse { .. } => ErrorCode::LarkMalformedResponse,
        L::Config(_) => ErrorCode::LarkClientConfig,
        L::Other(_) => ErrorCode::LarkError,
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ChatsQuery {
    #[serde(default)]
    refresh: bool,
}

/// The answer of a credentials check.
#[derive(Serialize, ToSchema)]
pub struct CheckAnswer {
    pub ok: bool,
    pub token_expires_at: Option<DateTime<Utc>>,
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Lists the Lark integrations.
    GET ["api" / "v1" / "integrations"] admin => list -> 200 json(Page<IntegrationView>);
    /// Adds a Lark integration (its App ID and App Secret are checked with Lark).
    POST ["api" / "v1" / "integrations"] admin, json(IntegrationInput)
        => create -> 201 json(IntegrationView);
    /// One integration, with its console URLs and callback counters.
    GET ["api" / "v1" / "integrations" / {id}] admin => get -> 200 json(IntegrationView);
    /// Changes the given fields; an empty `encrypt_key` or `api_base_url` clears it.
    PATCH | PUT ["api" / "v1" / "integrations" / {id}] admin, json(IntegrationInput)
        => update -> 200 json(IntegrationView);
    /// Deletes an integration.
    DELETE ["api" / "v1" / "integrations" / {id}] admin => delete -> 204;
    /// The chats the bot is in: as last seen, or asked of Lark now with `?refresh=true`.
    GET ["api" / "v1" / "integrations" / {id} / "chats"] admin query(ChatsQuery)
        => chats -> 200 json(Page<KnownChat>);
    /// Fetches a tenant token: proves the App ID and App Secret and that Lark is reachable.
    POST ["api" / "v1" / "integrations" / {id} / "check"] admin => check -> 200 json(CheckAnswer);
}

fn client(app: &Services, id: &str) -> Result<Arc<crate::lark::LarkClient>, ApiError> {
    app.integrations
        .get(id)
        .and_then(|_| app.lark.get(id))
        .ok_or_else(|| IntegrationError::NotFound(id.to_string()).into())
}

async fn list(app: Arc<Services>) -> Result<Page<IntegrationView>, ApiError> {
    Ok(Page::new(
        app.integrations
            .all()
            .iter()
            .map(|l| app.integrations.view(l))
            .collect(),
    ))
}

async fn create(app: Arc<Services>, input: IntegrationInput) -> Result<Created<IntegrationView>, ApiError> {
    let live = app.integrations.create(input).await?;
    tracing::info!(integration = %live.id(), app_id = %live.record.app_id, "integration created");
    Ok(Created(app.integrations.view(&live)))
}

async fn get(app: Arc<Services>, id: String) -> Result<Json<IntegrationView>, ApiError> {
    match app.integrations.get(&id) {
        Some(live) => Ok(Json(app.integrations.view(&live))),
        None => Err(IntegrationError::NotFound(id).into()),
    }
}

async fn update(
    app: Arc<Services>,
    id: String,
    input: IntegrationInput,
) -> Result<Json<IntegrationView>, ApiError> {
    let live = app.integrations.update(&id, input).await?;
    Ok(Json(app.integrations.view(&live)))
}

async fn delete(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.integrations.delete(&id).await?;
    tracing::info!(integration = %id, "integration deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn chats(app: Arc<Services>, id: String, query: ChatsQuery) -> Result<Page<KnownChat>, ApiError> {
    let items = if query.refresh {
        let client = client(&app, &id)?;
        chats::refresh(&app.store, &client, &id, app.clock.now()).await?
    } else {
        client(&app, &id)?;
        chats::list(&app.store, &id)?
    };
    Ok(Page::new(items))
}

async fn check(app: Arc<Services>, id: String) -> Result<Json<CheckAnswer>, ApiError> {
    let client = client(&app, &id)?;
    client.ensure_tenant_token().await?;
    Ok(Json(CheckAnswer {
        ok: true,
        token_expires_at: client.token_expires_at(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lark::LarkError;

    #[test]
    fn a_lark_failure_carries_its_reason_as_the_code() {
        let cases = [
            LarkError::Transient {
                cause: "reset".into(),
                http_status: None,
            },
            LarkError::MalformedResponse {
                http_status: 200,
                cause: "not json".into(),
            },
            LarkError::Config("bad base".into()),
        ];
        for e in cases {
            assert_eq!(lark_code(&e).as_str(), e.reason(), "{e}");
        }
    }
}
