//! Lark-facing routes on the public listener: the Message Card Request URL
//! `POST /lark/{integration_id}/callback` (events and card callbacks). The homepage's pages and
//! its OAuth sign-in under `/lark/{integration_id}/…` are `web::homepage`'s.

use std::sync::Arc;

use bytes::Bytes;
use warp::Reply;
use warp::http::HeaderMap;
use warp::reply::Response;

use super::error::{ApiError, ErrorCode};
use super::route::AnyJson;
use crate::integration::inbound::InboundError;
use crate::lark::callback::SignatureHeaders;
use crate::route_table;
use crate::services::Services;

/// The one answer to every refused callback, whatever the reason: an unknown integration, a bad
/// signature, a body that does not decrypt or parse. Telling them apart would make the endpoint a
/// padding oracle (issue 12.1); the reason goes to the integration's `callback_stats` instead.
fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::CallbackRefused,
        "the request is not a valid Lark request for this URL",
    )
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::UnknownIntegration(_) | InboundError::Rejected(_) => refused(),
            InboundError::Store(s) => s.into(),
        }
    }
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Public;
    /// The Message Card Request URL: Lark posts events, card callbacks and the URL challenge here,
    /// signed (and encrypted) with the integration's keys.
    POST ["lark" / {integration_id} / "callback"] lark with(warp::header::headers_cloned()), raw(AnyJson)
        => callback -> 200 json(AnyJson);
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn callback(
    app: Arc<Services>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signature = SignatureHeaders {
        timestamp: header(&headers, "x-lark-request-timestamp"),
        nonce: header(&headers, "x-lark-request-nonce"),
        signature: header(&headers, "x-lark-signature"),
    };
    let reply = app.inbound.handle(&id, &signature, &body).await?;
    Ok(warp::reply::json(&reply).into_response())
}
