//! The admin API under `/api/v1`: logging in and out (the gate that checks sessions and tokens
//! is `web::route`'s), API tokens, the account password, online backup, scheduled jobs, metrics
//! and the OpenAPI document.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::body;
use super::error::{ApiError, ErrorCode, json};
use super::reply::{Created, Json, Page};
use super::route::{RequestOrigin, SESSION_COOKIE, check_same_origin, request_origin};
use crate::auth::{ApiToken, AuthError, Principal, Scope};
use crate::listener::server::PeerAddr;
use crate::route_table;
use crate::scheduler::JobStatus;
use crate::services::Services;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::InvalidCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::Throttled { .. } => ApiError::new(ErrorCode::TooManyAttempts, e.to_string()),
            AuthError::InsufficientScope(_) => {
                ApiError::forbidden(ErrorCode::InsufficientScope, e.to_string())
            }
            AuthError::WrongCurrentPassword => ApiError::forbidden(ErrorCode::WrongPassword, e.to_string()),
            AuthError::Invalid(m) => ApiError::bad_request(ErrorCode::InvalidField, m),
            AuthError::NoSuchToken => ApiError::not_found(e.to_string()),
            AuthError::Store(s) => s.into(),
        }
    }
}

/// The client's address: the peer, or the `X-Forwarded-For` client when the peer is one of
/// `server.trusted_proxies`.
fn client_ip(app: Arc<Services>) -> impl Filter<Extract = (IpAddr,), Error = Rejection> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .map(move |p: Option<PeerAddr>, forwarded: Option<String>| {
            let peer = p.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.0.ip());
            crate::auth::client_ip::client_ip(peer, forwarded.as_deref(), &app.settings.trusted_proxies)
        })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

/// The session's user and the CSRF token its state-changing requests send in `x-csrf-token`.
#[derive(Serialize, ToSchema)]
struct SessionView {
    username: String,
    csrf_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    /// `admin`, `read` (the default) or `metrics`.
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct TokenView {
    id: String,
    name: String,
    scope: Scope,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new API token with its secret, shown this once.
#[derive(Serialize, ToSchema)]
struct TokenCreated {
    #[serde(flatten)]
    view: TokenView,
    token: String,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            scope: t.scope,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    password: String,
    /// Required when the change comes from a browser session.
    #[serde(default)]
    current_password: Option<String>,
}

/// `Secure` whenever browsers reach us over https: in-process TLS, or a TLS-terminating proxy in
/// front (`server.public_url` is https).
fn session_cookie(app: &Services, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.settings.tls.is_some() || app.settings.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// A form post cannot send `application/json` across origins without a CORS preflight (which we
/// never grant), so requiring it closes login CSRF for browsers that send no `Origin`.
fn require_json(content_type: Option<&str>) -> Result<(), ApiError> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type: the login takes application/json",
        ))
    }
}

async fn login(
    app: Arc<Services>,
    peer: IpAddr,
    origin: RequestOrigin,
    content_type: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_same_origin(&app, &origin)?;
    require_json(content_type.as_deref())?;
    let req: LoginRequest = body::decode_json(&body)?;
    let (cookie, session) = match app.auth.login(peer, &req.username, &req.password).await {
        Ok(opened) => opened,
        Err(AuthError::Throttled { retry_after }) => {
            let seconds = retry_after.as_secs().max(1);
            let mut response = ApiError::from(AuthError::Throttled { retry_after }).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return Ok(response);
        }
        Err(e) => return Err(e.into()),
    };
    let max_age = (session.expires_at - session.created_at).num_seconds();
    let mut response = json(
        StatusCode::OK,
        &SessionView {
            username: session.username,
            csrf_token: session.csrf_token,
        },
    );
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, &cookie, max_age));
    Ok(response)
}

/// Who is calling: a session, or an API token (described, never shown).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum WhoAmI {
    Session(SessionView),
    Token(TokenCaller),
}

#[derive(Serialize, ToSchema)]
struct TokenCaller {
    /// `token:<name>`.
    principal: String,
}

async fn whoami(_app: Arc<Services>, principal: Principal) -> Result<Response, ApiError> {
    let caller = match principal {
        Principal::Session {
            username, csrf_token, ..
        } => WhoAmI::Session(SessionView { username, csrf_token }),
        other => WhoAmI::Token(TokenCaller {
            principal: other.describe(),
        }),
    };
    Ok(json(StatusCode::OK, &caller))
}

async fn logout(app: Arc<Services>, cookie: Option<String>) -> Result<Response, ApiError> {
    if let Some(c) = cookie {
        app.auth.logout(&c).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    Ok(response)
}

async fn create_token(app: Arc<Services>, req: TokenRequest) -> Result<Created<TokenCreated>, ApiError> {
    let scope = match req.scope.as_deref() {
        None => Scope::Read,
        Some(word) => word.parse()?,
    };
    let (token, plain) = app
        .auth
        .create_token(&req.name, scope, req.expires_in_days)
        .await?;
    Ok(Created(TokenCreated {
        view: TokenView::from(token),
        token: plain,
    }))
}

async fn list_tokens(app: Arc<Services>) -> Result<Page<TokenView>, ApiError> {
    Ok(Page::new(
        app.auth.list_tokens()?.into_iter().map(TokenView::from).collect(),
    ))
}

/// From a session the current password is asked again, and the user's other sessions end; from
/// an admin token or the local CLI (a reset) every session ends.
async fn set_password(
    app: Arc<Services>,
    principal: Principal,
    peer: IpAddr,
    req: PasswordRequest,
) -> Result<StatusCode, ApiError> {
    match principal {
        Principal::Session { id, username, .. } => {
            crate::auth::check_new_password(&req.password)?;
            app.auth
                .verify_current_password(peer, &username, req.current_password.as_deref())
                .await?;
            app.auth.set_password(&username, &req.password, Some(&id)).await?;
        }
        _ => {
            app.auth
                .set_password(crate::auth::ADMIN_USER, &req.password, None)
                .await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn backup(app: Arc<Services>) -> Result<Response, ApiError> {
    let dir = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(app.settings.state_dir())
        .map_err(|e| ApiError::internal(format!("cannot create a staging directory: {e}")))?;
    let out = dir.path().join("backup.redb");
    let store = app.store.clone();
    let target = out.clone();
    let rows = tokio::task::spawn_blocking(move || store.backup_to(&target))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let bytes = tokio::fs::read(&out)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the backup: {e}")))?;
    tracing::info!(rows, bytes = bytes.len(), "online backup taken");
    let mut response = Response::new(bytes.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-backup-rows", HeaderValue::from(rows));
    Ok(response)
}

/// The product and its version.
#[derive(Serialize, ToSchema)]
struct VersionView {
    name: &'static str,
    version: &'static str,
}

/// The scheduled jobs with their last outcomes.
#[derive(Serialize, ToSchema)]
struct SchedulerView {
    jobs: Vec<JobStatus>,
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Logs in; sets the session cookie and answers the CSRF token (429 with `Retry-After`
    /// while too many attempts failed).
    POST ["api" / "v1" / "session"] public
        with(client_ip(app.clone()), request_origin(), warp::header::optional::<String>("content-type")),
        raw(LoginRequest)
        => login -> 200 json(SessionView), 429 error;
    /// This document.
    GET ["api" / "openapi.json"] public => openapi -> 200 other("application/json");
    /// Who is calling: the session's user and CSRF token, or the token's description.
    GET ["api" / "v1" / "session"] admin_as => whoami -> 200 json(WhoAmI);
    /// Logs out: ends the session and clears its cookie.
    DELETE ["api" / "v1" / "session"] admin with(warp::cookie::optional::<String>(SESSION_COOKIE))
        => logout -> 204;
    /// The product and its version.
    GET ["api" / "v1" / "version"] admin => version -> 200 json(VersionView);
    /// Lists the API tokens (never their secrets).
    GET ["api" / "v1" / "tokens"] admin => list_tokens -> 200 json(Page<TokenView>);
    /// Creates an API token; the answer carries the token, this once.
    POST ["api" / "v1" / "tokens"] admin, json(TokenRequest) => create_token -> 201 json(TokenCreated);
    /// Revokes an API token.
    DELETE ["api" / "v1" / "tokens" / {id}] admin => revoke_token -> 204;
    /// Sets the admin password (from a session, the current one is asked again).
    PUT ["api" / "v1" / "account" / "password"] admin_as with(client_ip(app.clone())), json(PasswordRequest)
        => set_password -> 204;
    /// An online backup of the state file.
    POST ["api" / "v1" / "backup"] admin => backup -> 200 other("application/octet-stream");
    /// The scheduled jobs and their last outcomes.
    GET ["api" / "v1" / "scheduler"] admin => scheduler -> 200 json(SchedulerView);
    /// Runs a scheduled job now.
    POST ["api" / "v1" / "scheduler" / {name} / "run"] admin => run_job -> 200 json(JobStatus);
    /// The metrics, in the OpenMetrics text format.
    GET ["metrics"] admin => metrics -> 200 other("application/openmetrics-text");
}

async fn openapi(_app: Arc<Services>) -> Result<Response, ApiError> {
    let mut r = Response::new(super::openapi::document_json().into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

async fn version(_app: Arc<Services>) -> Result<Json<VersionView>, ApiError> {
    Ok(Json(VersionView {
        name: "lark-oncall",
        version: env!("CARGO_PKG_VERSION"),
    }))
}

async fn revoke_token(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.auth.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn scheduler(app: Arc<Services>) -> Result<Json<SchedulerView>, ApiError> {
    Ok(Json(SchedulerView {
        jobs: app.scheduler.status(),
    }))
}

async fn run_job(app: Arc<Services>, name: String) -> Result<Json<JobStatus>, ApiError> {
    match app.scheduler.run(&name).await {
        Ok(status) => Ok(Json(status)),
        Err(e) => Err(ApiError::not_found(e.to_string())),
    }
}

async fn metrics(app: Arc<Services>) -> Result<Response, ApiError> {
    let mut r = Response::new(app.metrics.render().into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}
