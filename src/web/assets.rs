//! The embedded web UIs: files from `assets/` with their content type, a strong ETag from the
//! embedded SHA-256, 304 on revalidation, `no-cache` for HTML and a day's caching for the rest.
//! Text files are gzipped once, on their first request, and kept for the life of the process.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use flate2::Compression;
use flate2::write::GzEncoder;
use rust_embed::RustEmbed;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;
use super::route::{Access, Content, Listener, RouteSpec};

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Gzipped bodies by path; the embedded set is fixed, so this grows to at most its size.
fn gzip_cache() -> &'static Mutex<HashMap<String, Bytes>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn gzipped(path: &str, data: &[u8]) -> Bytes {
    let mut cache = gzip_cache().lock().expect("gzip cache lock");
    if let Some(body) = cache.get(path) {
        return body.clone();
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::best());
    encoder.write_all(data).expect("gzip into memory");
    let body = Bytes::from(encoder.finish().expect("gzip into memory"));
    cache.insert(path.to_string(), body.clone());
    body
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.ends_with("javascript")
        || mime.ends_with("json")
        || mime.ends_with("svg+xml")
}

fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// One embedded file, gzipped when the client takes it, with its ETag (also for the homepage's
/// kit and page styles on the public listener).
pub fn serve(
    path: &str,
    if_none_match: Option<String>,
    accept_encoding: Option<String>,
) -> Result<Response, ApiError> {
    let path = if path.is_empty() { "index.html" } else { path };
    let file = Assets::get(path).ok_or_else(|| ApiError::not_found(format!("no asset {path}")))?;
    let mime = file.metadata.mimetype().to_string();
    let gzip = compressible(&mime) && accepts_gzip(accept_encoding.as_deref());
    let hash = hex::encode(&file.metadata.sha256_hash()[..16]);
    // Each encoding is its own representation, so it gets its own strong ETag.
    let etag = if gzip {
        format!("\"{hash}-gz\"")
    } else {
        format!("\"{hash}\"")
    };
    let content_type = if compressible(&mime) {
        format!("{mime}; charset=utf-8")
    } else {
        mime.clone()
    };
    let cache = if path.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=86400"
    };
    let revalidated = if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if revalidated {
        let mut r = Response::new(Vec::<u8>::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let body = if gzip {
            gzipped(path, &file.data)
        } else {
            Bytes::from(file.data.into_owned())
        };
        let mut r = Response::new(body.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).expect("mime is ASCII"),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is ASCII"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if compressible(&mime) {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// The catch-all of the admin listener, tried last; not a `route_table!` line because a file
/// that is not there must reject (so an API route's 401 outranks it), not answer.
pub const ROUTES: &[RouteSpec] = &[RouteSpec {
    listener: Listener::Admin,
    methods: &["GET", "HEAD"],
    path: "/{file}",
    access: Access::Public,
    handler: "assets::routes",
    summary: " The admin UI's files (`/` is `index.html`), with ETags (304 when `If-None-Match` names \
              the file's) and gzip.",
    query: None,
    request: Content::Empty,
    status: 200,
    response: Content::Other("text/html"),
    also: &[(304, Content::Empty)],
}];

/// GET (and HEAD) of any embedded file; `/` is `index.html`.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and_then(
            |tail: warp::path::Tail, inm: Option<String>, accept_encoding: Option<String>| async move {
                // A plain not-found ranks below other routes' rejections (e.g. an API route's 401).
                serve(tail.as_str(), inm, accept_encoding).map_err(|_| warp::reject::not_found())
            },
        )
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_chosen_only_when_offered_and_not_refused() {
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("br")));
        assert!(!accepts_gzip(None));
    }
}
