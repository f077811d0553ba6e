//! The admin API under `/api/v1`: authentication (session cookie + CSRF, or bearer token),
//! sessions, API tokens, the account password, online backup, scheduled jobs, metrics and the
//! OpenAPI document.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::body;
use super::error::{ApiError, json, respond};
use super::server::PeerAddr;
use crate::app::App;
use crate::auth::{AuthError, Principal};

pub const SESSION_COOKIE: &str = "lark_oncall_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::InvalidCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::Throttled => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", e.to_string())
            }
            AuthError::Invalid(m) => ApiError::bad_request("invalid_field", m),
            AuthError::NoSuchToken => ApiError::not_found(e.to_string()),
            AuthError::Store(s) => s.into(),
        }
    }
}

fn authenticate(
    app: &App,
    method: &Method,
    authorization: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
) -> Result<Principal, ApiError> {
    if let Some(value) = authorization {
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        return Ok(app.auth.bearer(token.trim())?);
    }
    let Some(cookie) = cookie else {
        return Err(ApiError::unauthorized(
            "log in, or send an API token as `Authorization: Bearer <token>`",
        ));
    };
    let principal = app.auth.session(&cookie)?;
    let safe = matches!(*method, Method::GET | Method::HEAD);
    if let (false, Principal::Session { csrf_token, .. }) = (safe, &principal) {
        let sent = csrf.unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(csrf_token.as_bytes())) {
            return Err(ApiError::forbidden(
                "csrf_failed",
                format!("state-changing requests need the session's CSRF token in {CSRF_HEADER}"),
            ));
        }
    }
    Ok(principal)
}

/// Extracts the authenticated principal, or rejects with 401/403.
pub fn authenticated(app: Arc<App>) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and(warp::header::optional::<String>(CSRF_HEADER))
        .and_then(move |method, authz, cookie, csrf| {
            let app = app.clone();
            async move { authenticate(&app, &method, authz, cookie, csrf).map_err(warp::reject::custom) }
        })
}

fn peer_ip() -> impl Filter<Extract = (IpAddr,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .map(|p: Option<PeerAddr>| p.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.0.ip()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct SessionView {
    username: String,
    csrf_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    password: String,
}

fn session_cookie(app: &App, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.settings.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie is ASCII")
}

async fn login(app: Arc<App>, peer: IpAddr, req: LoginRequest) -> Result<Response, ApiError> {
    let (cookie, session) = app.auth.login(peer, &req.username, &req.password).await?;
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

fn whoami(principal: Principal) -> Result<Response, ApiError> {
    match principal {
        Principal::Session { username, csrf_token } => {
            Ok(json(StatusCode::OK, &SessionView { username, csrf_token }))
        }
        other => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"principal": other.describe()}),
        )),
    }
}

async fn logout(app: Arc<App>, cookie: Option<String>) -> Result<Response, ApiError> {
    if let Some(c) = cookie {
        app.auth.logout(&c).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    Ok(response)
}

async fn create_token(app: Arc<App>, req: TokenRequest) -> Result<Response, ApiError> {
    let (token, plain) = app.auth.create_token(&req.name).await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"id": token.id, "name": token.name, "created_at": token.created_at, "token": plain}),
    ))
}

fn list_tokens(app: &App) -> Result<Response, ApiError> {
    let tokens: Vec<TokenView> = app
        .auth
        .list_tokens()?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": tokens })))
}

async fn set_password(
    app: Arc<App>,
    principal: Principal,
    req: PasswordRequest,
) -> Result<Response, ApiError> {
    let username = match principal {
        Principal::Session { username, .. } => username,
        _ => crate::auth::ADMIN_USER.to_string(),
    };
    app.auth.set_password(&username, &req.password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn backup(app: Arc<App>) -> Result<Response, ApiError> {
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

fn openapi() -> Response {
    let mut r = Response::new(OPENAPI.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The OpenAPI 3 document of the admin API; `tests/openapi.rs` checks it against the routes.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let auth = authenticated(app.clone());

    let login = warp::path!("api" / "v1" / "session")
        .and(warp::post())
        .and(with_app.clone())
        .and(peer_ip())
        .and(body::json::<LoginRequest>(limit))
        .then(login)
        .map(respond);
    let openapi = warp::path!("api" / "openapi.json").and(warp::get()).map(openapi);

    let whoami = warp::path!("api" / "v1" / "session")
        .and(warp::get())
        .and(auth.clone())
        .map(|p| respond(whoami(p)));
    let logout = warp::path!("api" / "v1" / "session")
        .and(warp::delete())
        .and(auth.clone())
        .and(with_app.clone())
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .then(|_p: Principal, app, cookie| logout(app, cookie))
        .map(respond);
    let version = warp::path!("api" / "v1" / "version")
        .and(warp::get())
        .and(auth.clone())
        .map(|_p: Principal| {
            json(
                StatusCode::OK,
                &serde_json::json!({"name": "lark-oncall", "version": env!("CARGO_PKG_VERSION")}),
            )
        });
    let tokens_list = warp::path!("api" / "v1" / "tokens")
        .and(warp::get())
        .and(auth.clone())
        .and(with_app.clone())
        .map(|_p: Principal, app: Arc<App>| respond(list_tokens(&app)));
    let tokens_create = warp::path!("api" / "v1" / "tokens")
        .and(warp::post())
        .and(auth.clone())
        .and(with_app.clone())
        .and(body::json::<TokenRequest>(limit))
        .then(|_p: Principal, app, req| create_token(app, req))
        .map(respond);
    let tokens_revoke = warp::path!("api" / "v1" / "tokens" / String)
        .and(warp::delete())
        .and(auth.clone())
        .and(with_app.clone())
        .then(|id: String, _p: Principal, app: Arc<App>| async move {
            app.auth.revoke_token(&id).await.map_err(ApiError::from)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    let password = warp::path!("api" / "v1" / "account" / "password")
        .and(warp::put())
        .and(auth.clone())
        .and(with_app.clone())
        .and(body::json::<PasswordRequest>(limit))
        .then(|p, app, req| set_password(app, p, req))
        .map(respond);
    let backup = warp::path!("api" / "v1" / "backup")
        .and(warp::post())
        .and(auth.clone())
        .and(with_app.clone())
        .then(|_p: Principal, app| backup(app))
        .map(respond);
    let scheduler = warp::path!("api" / "v1" / "scheduler")
        .and(warp::get())
        .and(auth.clone())
        .and(with_app.clone())
        .map(|_p: Principal, app: Arc<App>| {
            json(
                StatusCode::OK,
                &serde_json::json!({ "jobs": app.scheduler.status() }),
            )
        });
    let scheduler_run = warp::path!("api" / "v1" / "scheduler" / String / "run")
        .and(warp::post())
        .and(auth.clone())
        .and(with_app.clone())
        .then(|name: String, _p: Principal, app: Arc<App>| async move {
            match app.scheduler.run(&name).await {
                Ok(status) => Ok(json(StatusCode::OK, &status)),
                Err(e) => Err(ApiError::not_found(e.to_string())),
            }
        })
        .map(respond);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(auth.clone())
        .and(with_app.clone())
        .map(|_p: Principal, app: Arc<App>| {
            let mut r = Response::new(app.metrics.render().into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        });

    login
        .or(openapi)
        .unify()
        .or(whoami)
        .unify()
        .or(logout)
        .unify()
        .or(version)
        .unify()
        .or(tokens_list)
        .unify()
        .or(tokens_create)
        .unify()
        .or(tokens_revoke)
        .unify()
        .or(password)
        .unify()
        .or(backup)
        .unify()
        .or(scheduler)
        .unify()
        .or(scheduler_run)
        .unify()
        .or(metrics)
        .unify()
        .boxed()
}
