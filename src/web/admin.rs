//! The admin API under `/api/v1`: authentication (session cookie + CSRF + same-origin check, or
//! a bearer token within its scope), sessions, API tokens, the account password, online backup,
//! scheduled jobs, metrics and the OpenAPI document.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::filters::path::FullPath;
use warp::host::Authority;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::body;
use super::error::{ApiError, json, respond};
use crate::auth::{ApiToken, AuthError, Principal, Scope};
use crate::listener::server::PeerAddr;
use crate::services::Services;

pub const SESSION_COOKIE: &str = "lark_oncall_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::InvalidCredentials => ApiError::unauthorized(e.to_string()),
            AuthError::Throttled { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", e.to_string())
            }
            AuthError::InsufficientScope(_) => ApiError::forbidden("insufficient_scope", e.to_string()),
            AuthError::WrongCurrentPassword => ApiError::forbidden("wrong_password", e.to_string()),
            AuthError::Invalid(m) => ApiError::bad_request("invalid_field", m),
            AuthError::NoSuchToken => ApiError::not_found(e.to_string()),
            AuthError::Store(s) => s.into(),
        }
    }
}

/// The browser-supplied signs of where a request was made from.
struct RequestOrigin {
    host: Option<Authority>,
    origin: Option<String>,
    fetch_site: Option<String>,
}

fn request_origin() -> impl Filter<Extract = (RequestOrigin,), Error = Rejection> + Clone {
    warp::host::optional()
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("sec-fetch-site"))
        .map(|host, origin, fetch_site| RequestOrigin {
            host,
            origin,
            fetch_site,
        })
}

/// Refuses what a browser says another site made it send: `Sec-Fetch-Site` other than
/// `same-origin`/`none`, or an `Origin` that is neither this listener nor `server.public_url`.
/// Non-browser clients send neither header, and need no such check (they hold no cookie).
fn check_same_origin(app: &Services, req: &RequestOrigin) -> Result<(), ApiError> {
    let refuse = |what: String| {
        ApiError::forbidden(
            "cross_origin",
            format!("{what}: the admin UI accepts cookie-authenticated requests from its own origin only"),
        )
    };
    if let Some(site) = &req.fetch_site
        && !matches!(site.as_str(), "same-origin" | "none")
    {
        return Err(refuse(format!("Sec-Fetch-Site {site:?}")));
    }
    let Some(origin) = &req.origin else {
        return Ok(());
    };
    let parsed = url::Url::parse(origin).ok();
    let same = parsed.as_ref().is_some_and(|o| {
        let public = &app.settings.public_url;
        let matches_public = o.origin() == public.origin();
        let matches_host = req.host.as_ref().is_some_and(|h| {
            o.host_str().is_some_and(|oh| oh.eq_ignore_ascii_case(h.host()))
                && h.port_u16().or(o.port_or_known_default()) == o.port_or_known_default()
        });
        matches_public || matches_host
    });
    if same {
        Ok(())
    } else {
        Err(refuse(format!("Origin {origin:?}")))
    }
}

fn authenticate(
    app: &Services,
    method: &Method,
    path: &str,
    authorization: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    origin: &RequestOrigin,
) -> Result<Principal, ApiError> {
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    if let Some(value) = authorization {
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let principal = app.auth.bearer(token.trim())?;
        principal.authorize(read_only, path)?;
        return Ok(principal);
    }
    let Some(cookie) = cookie else {
        return Err(ApiError::unauthorized(
            "log in, or send an API token as `Authorization: Bearer <token>`",
        ));
    };
    let principal = app.auth.session(&cookie)?;
    check_same_origin(app, origin)?;
    if let (false, Principal::Session { csrf_token, .. }) = (read_only, &principal) {
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

/// Extracts the authenticated principal, or rejects with 401/403 (403 also for a token whose
/// scope does not cover the request).
pub fn authenticated(app: Arc<Services>) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and(warp::header::optional::<String>(CSRF_HEADER))
        .and(request_origin())
        .and_then(
            move |method, path: FullPath, authz, cookie, csrf, origin: RequestOrigin| {
                let app = app.clone();
                async move {
                    authenticate(&app, &method, path.as_str(), authz, cookie, csrf, &origin)
                        .map_err(warp::reject::custom)
                }
            },
        )
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
    /// `admin`, `read` (the default) or `metrics`.
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    scope: Scope,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
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

#[derive(Deserialize)]
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
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
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

fn whoami(principal: Principal) -> Result<Response, ApiError> {
    match principal {
        Principal::Session {
            username, csrf_token, ..
        } => Ok(json(StatusCode::OK, &SessionView { username, csrf_token })),
        other => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"principal": other.describe()}),
        )),
    }
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

async fn create_token(app: Arc<Services>, req: TokenRequest) -> Result<Response, ApiError> {
    let scope = match req.scope.as_deref() {
        None => Scope::Read,
        Some(word) => word.parse()?,
    };
    let (token, plain) = app
        .auth
        .create_token(&req.name, scope, req.expires_in_days)
        .await?;
    let mut view = serde_json::to_value(TokenView::from(token)).expect("token view serializes");
    view["token"] = plain.into();
    Ok(json(StatusCode::CREATED, &view))
}

fn list_tokens(app: &Services) -> Result<Response, ApiError> {
    let tokens: Vec<TokenView> = app.auth.list_tokens()?.into_iter().map(TokenView::from).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": tokens })))
}

/// From a session the current password is asked again, and the user's other sessions end; from
/// an admin token or the local CLI (a reset) every session ends.
async fn set_password(
    app: Arc<Services>,
    principal: Principal,
    peer: IpAddr,
    req: PasswordRequest,
) -> Result<Response, ApiError> {
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
    Ok(StatusCode::NO_CONTENT.into_response())
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

fn openapi() -> Response {
    let mut r = Response::new(OPENAPI.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The OpenAPI 3 document of the admin API; `tests/openapi.rs` checks it against the routes.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let auth = authenticated(app.clone());

    let login = warp::path!("api" / "v1" / "session")
        .and(warp::post())
        .and(with_app.clone())
        .and(client_ip(app.clone()))
        .and(request_origin())
        .and(warp::header::optional::<String>("content-type"))
        .and(body::raw(limit))
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
        .map(|_p: Principal, app: Arc<Services>| respond(list_tokens(&app)));
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
        .then(|id: String, _p: Principal, app: Arc<Services>| async move {
            app.auth.revoke_token(&id).await.map_err(ApiError::from)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    let password = warp::path!("api" / "v1" / "account" / "password")
        .and(warp::put())
        .and(auth.clone())
        .and(with_app.clone())
        .and(client_ip(app.clone()))
        .and(body::json::<PasswordRequest>(limit))
        .then(|p, app, peer, req| set_password(app, p, peer, req))
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
        .map(|_p: Principal, app: Arc<Services>| {
            json(
                StatusCode::OK,
                &serde_json::json!({ "jobs": app.scheduler.status() }),
            )
        });
    let scheduler_run = warp::path!("api" / "v1" / "scheduler" / String / "run")
        .and(warp::post())
        .and(auth.clone())
        .and(with_app.clone())
        .then(|name: String, _p: Principal, app: Arc<Services>| async move {
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
        .map(|_p: Principal, app: Arc<Services>| {
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
