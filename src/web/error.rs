//! The one JSON error shape every HTTP error takes: `{"error": {"code", "message"}}` with a stable
//! code from the one catalog ([`CATALOG`]: code, status, meaning), and the mapping of warp's own
//! rejections onto it.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

/// One entry of the error catalog: the stable code a client branches on, its HTTP status, and
/// what it means.
#[derive(Debug, Clone, Copy)]
pub struct ErrorSpec {
    pub code: ErrorCode,
    pub name: &'static str,
    pub status: StatusCode,
    pub meaning: &'static str,
}

/// Declares [`ErrorCode`] and [`CATALOG`] from one list, so a code cannot exist without its
/// status and meaning.
macro_rules! error_catalog {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal, $status:ident;)+) => {
        /// Every code an [`ApiError`] can carry; [`CATALOG`] says its status and meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        /// The error catalog, in [`ErrorCode`]'s order; the OpenAPI document enumerates it.
        pub const CATALOG: &[ErrorSpec] = &[
            $(ErrorSpec {
                code: ErrorCode::$variant,
                name: $name,
                status: StatusCode::$status,
                meaning: concat!($($doc),+),
            },)+
        ];
    };
}

error_catalog! {
    /// A field of the body or query is missing or invalid; the message names it.
    InvalidField = "invalid_field", BAD_REQUEST;
    /// The body is not JSON of the expected shape; the message names the field.
    InvalidJson = "invalid_json", BAD_REQUEST;
    /// The query string does not parse.
    InvalidQuery = "invalid_query", BAD_REQUEST;
    /// A required header is missing.
    MissingHeader = "missing_header", BAD_REQUEST;
    /// A header does not parse.
    InvalidHeader = "invalid_header", BAD_REQUEST;
    /// The request body could not be read.
    BodyRead = "body_read", BAD_REQUEST;
    /// No credentials, or credentials that are wrong or expired.
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// A Lark callback that does not verify (whatever the reason, on purpose).
    CallbackRefused = "callback_refused", UNAUTHORIZED;
    /// The API token's scope does not cover the request.
    InsufficientScope = "insufficient_scope", FORBIDDEN;
    /// The current password given is wrong.
    WrongPassword = "wrong_password", FORBIDDEN;
    /// A cookie-authenticated request from another site.
    CrossOrigin = "cross_origin", FORBIDDEN;
    /// A state-changing request without the session's CSRF token.
    CsrfFailed = "csrf_failed", FORBIDDEN;
    /// No such route or resource.
    NotFound = "not_found", NOT_FOUND;
    /// The route does not take this method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The whole body did not arrive in time.
    BodyTimeout = "body_timeout", REQUEST_TIMEOUT;
    /// The request conflicts with the current state.
    Conflict = "conflict", CONFLICT;
    /// Another integration already has this App ID.
    DuplicateApp = "duplicate_app", CONFLICT;
    /// Only a failed job can be re-triggered.
    NotFailed = "not_failed", CONFLICT;
    /// The integration has war rooms turned off.
    WarRoomDisabled = "war_room_disabled", CONFLICT;
    /// An escalation rule names the schedule.
    ScheduleInUse = "schedule_in_use", CONFLICT;
    /// The body is larger than `server.max_body_bytes`.
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE;
    /// The body must be `application/json`.
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    /// Too many failed logins; `Retry-After` says when to try again.
    TooManyAttempts = "too_many_attempts", TOO_MANY_REQUESTS;
    /// Something failed on our side; the server log has the details.
    Internal = "internal", INTERNAL_SERVER_ERROR;
    /// Not ready to serve this yet.
    Unavailable = "unavailable", SERVICE_UNAVAILABLE;
    /// Lark refused or failed a call made for the request.
    LarkError = "lark_error", BAD_GATEWAY;
    /// Lark: the app's rate limit was hit.
    LarkRateLimited = "rate_limited", BAD_GATEWAY;
    /// Lark: the monthly API quota is used up.
    LarkQuotaExhausted = "quota_exhausted", BAD_GATEWAY;
    /// Lark: the access token was refused.
    LarkInvalidToken = "invalid_token", BAD_GATEWAY;
    /// Lark: the App ID or App Secret is wrong.
    LarkWrongCredentials = "wrong_credentials", BAD_GATEWAY;
    /// Lark: the app is not enabled or not available to the tenant.
    LarkAppUnavailable = "app_unavailable", BAD_GATEWAY;
    /// Lark: the bot is not in the chat.
    LarkBotNotInChat = "bot_not_in_chat", BAD_GATEWAY;
    /// Lark: no such user.
    LarkUserNotFound = "user_not_found", BAD_GATEWAY;
    /// Lark: the user is outside the app's visibility.
    LarkUserNotVisible = "user_not_visible", BAD_GATEWAY;
    /// Lark: the chat was disbanded.
    LarkChatDisbanded = "chat_disbanded", BAD_GATEWAY;
    /// Lark: the app lacks a permission (scope); the message names it.
    LarkPermissionMissing = "permission_missing", BAD_GATEWAY;
    /// Lark could not be reached, or failed for now.
    LarkTransient = "transient", BAD_GATEWAY;
    /// Lark answered something that does not parse.
    LarkMalformedResponse = "malformed_response", BAD_GATEWAY;
    /// The Lark client is misconfigured (e.g. its base URL).
    LarkClientConfig = "client_config", BAD_GATEWAY;
}

impl ErrorCode {
    fn spec(self) -> &'static ErrorSpec {
        &CATALOG[self as usize]
    }
    /// The code on the wire (`invalid_field`).
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
    pub fn status(self) -> StatusCode {
        self.spec().status
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// An error with its code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message)
    }
    /// `invalid_field`: the message starts with the field's name.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}

impl warp::reject::Reject for ApiError {}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error while serving a request");
        ApiError::internal("storage error; see the server log")
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}
#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
            },
        };
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// A JSON body with a status.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// Turns a handler's result into a response, so handler errors never fall through to other routes.
pub fn respond<T: Reply>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Maps any rejection left at the end of the filter chain to the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::not_found("no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(ErrorCode::InvalidQuery, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(ErrorCode::MissingHeader, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(ErrorCode::InvalidHeader, e.to_string())
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(ErrorCode::UnsupportedMediaType, "send application/json")
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::internal("unhandled request error")
    };
    Ok(err.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_in_the_codes_order_and_names_each_code_once() {
        let mut names = std::collections::HashSet::new();
        for (i, spec) in CATALOG.iter().enumerate() {
            assert_eq!(spec.code as usize, i, "{}", spec.name);
            assert!(names.insert(spec.name), "{} twice", spec.name);
            assert!(!spec.meaning.trim().is_empty(), "{}", spec.name);
            assert!(spec.status.is_client_error() || spec.status.is_server_error());
        }
    }

    #[test]
    fn an_error_answers_its_codes_status_and_name() {
        let response = ApiError::new(ErrorCode::BodyTooLarge, "too big").into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ErrorCode::BodyTooLarge.as_str(), "body_too_large");
    }
}
