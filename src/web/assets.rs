//! The embedded admin UI: files from `assets/` with their content type, a strong ETag from the
//! embedded SHA-256, 304 on revalidation, `no-cache` for HTML and a day's caching for the rest.

use rust_embed::RustEmbed;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

fn serve(path: &str, if_none_match: Option<String>) -> Result<Response, ApiError> {
    let path = if path.is_empty() { "index.html" } else { path };
    let file = Assets::get(path).ok_or_else(|| ApiError::not_found(format!("no asset {path}")))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let mime = file.metadata.mimetype().to_string();
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("json")
    {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };
    let cache = if path.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=86400"
    };
    let mut response = if if_none_match.as_deref() == Some(etag.as_str()) {
        let mut r = Response::new(Vec::<u8>::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(file.data.into_owned().into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).expect("mime is ASCII"),
        );
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is ASCII"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// GET (and HEAD) of any embedded file; `/` is `index.html`.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|tail: warp::path::Tail, inm: Option<String>| async move {
            // A plain not-found ranks below other routes' rejections (e.g. an API route's 401).
            serve(tail.as_str(), inm).map_err(|_| warp::reject::not_found())
        })
}
