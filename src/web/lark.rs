//! Lark-facing routes on the public listener: the Message Card Request URL
//! `POST /lark/{integration_id}/callback` (events and card callbacks).

use std::sync::Arc;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::body;
use super::error::{ApiError, respond};
use crate::integration::inbound::InboundError;
use crate::lark::callback::SignatureHeaders;
use crate::services::Services;

/// The one answer to every refused callback, whatever the reason: an unknown integration, a bad
/// signature, a body that does not decrypt or parse. Telling them apart would make the endpoint a
/// padding oracle (issue 12.1); the reason goes to the integration's `callback_stats` instead.
fn refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "callback_refused",
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

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    warp::path!("lark" / String / "callback")
        .and(warp::post())
        .and(warp::any().map(move || app.clone()))
        .and(warp::header::headers_cloned())
        .and(body::raw(limit))
        .then(
            |id: String, app: Arc<Services>, headers: HeaderMap, body: Bytes| {
                callback(app, id, headers, body)
            },
        )
        .map(respond)
        .boxed()
}
