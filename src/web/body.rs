//! Request bodies read under `server.max_body_bytes` (413 past it, with or without a
//! Content-Length) and within [`BODY_READ_TIMEOUT`] (408 past it), and JSON decoding whose errors
//! name the offending field.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use warp::{Filter, Rejection};

use super::error::{ApiError, ErrorCode};

/// The whole body must arrive within this, however slowly it trickles (issue 12.3).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A body over the limit is still read and thrown away up to this much, so that clients which
/// send the whole body before reading the answer (Python's urllib) get the 413 rather than a
/// reset (issue 18.4). Larger ones are cut off.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn too_large(limit: u64) -> Rejection {
    warp::reject::custom(ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("request body exceeds the {limit}-byte limit (server.max_body_bytes)"),
    ))
}

async fn collect_limited<S, B>(declared: Option<u64>, stream: S, limit: u64) -> Result<Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    if declared.is_some_and(|n| n > limit) {
        if declared.is_some_and(|n| n <= DRAIN_MAX_BYTES) {
            drain(stream, 0).await;
        }
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            warp::reject::custom(ApiError::bad_request(
                ErrorCode::BodyRead,
                format!("cannot read request body: {e}"),
            ))
        })?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            drain(stream, buf.len() as u64 + chunk.remaining() as u64).await;
            return Err(too_large(limit));
        }
        buf.extend_from_slice(chunk.chunk());
    }
    Ok(buf.freeze())
}

/// Reads and discards the rest of a refused body, within [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIMEOUT`].
async fn drain<S, B>(mut stream: std::pin::Pin<&mut S>, mut seen: u64)
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let discard = async {
        while seen <= DRAIN_MAX_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => seen += chunk.remaining() as u64,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// The raw body bytes, at most `limit` of them.
pub fn raw(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared, stream| async move {
            tokio::time::timeout(BODY_READ_TIMEOUT, collect_limited(declared, stream, limit))
                .await
                .unwrap_or_else(|_| {
                    Err(warp::reject::custom(ApiError::new(
                        ErrorCode::BodyTimeout,
                        format!(
                            "the request body did not arrive within {} s",
                            BODY_READ_TIMEOUT.as_secs()
                        ),
                    )))
                })
        })
}

/// Decodes JSON, naming the field in the error (`missing field `app_id``, `name: invalid type`).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiError::bad_request(ErrorCode::InvalidJson, message)
    })
}

/// A JSON body of type `T`, size-limited.
pub fn json<T: DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    raw(limit).and_then(|bytes: Bytes| async move { decode_json::<T>(&bytes).map_err(warp::reject::custom) })
}
