//! HTTP routes: the public listener (Lark-facing paths, health) and the admin listener (admin API,
//! UI, metrics, OpenAPI). Handlers call the domain; every error leaves as the JSON error shape
//! with a code from `error::CATALOG`.
//!
//! Each resource module declares its routes in one `route_table!` (see `route.rs`): a line per
//! route with its method(s), path, who may call it, extra extractors, body, named handler and
//! answer. The macro builds the resource's warp filter and its `ROUTES` list; [`routes()`] joins
//! every list, and the OpenAPI document (`openapi.rs`) is generated from it.
//!
//! To add a route:
//! 1. Write the handler as a named `async fn` taking `Arc<Services>`, the path's parameters, the
//!    gate's output (`admin_as`: the `Principal`), each `with(..)` filter's output and the body,
//!    returning `Result<impl Reply, ApiError>` (`reply::{Json, Created, Page}` for JSON).
//! 2. Add its line to the resource's table, e.g.
//!    `GET ["api" / "v1" / "things" / {id}] admin => get_thing -> 200 json(ThingView);`
//!    and derive `utoipa::ToSchema` on the body and answer types.
//! 3. A new resource module: add its table to [`TABLES`] and its filter to the listener below.
//! 4. Run `UPDATE_OPENAPI=1 cargo test --test openapi`, read the snapshot's diff, commit it.

pub mod admin;
pub mod assets;
pub mod body;
pub mod bot_webhooks;
pub mod delivery;
pub mod error;
pub mod health;
pub mod homepage;
pub mod incidents;
pub mod integrations;
pub mod lark;
pub mod openapi;
pub mod reply;
pub mod route;
pub mod schedules;
pub mod setup;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::services::Services;
use crate::telemetry::HttpLabels;
use route::RouteSpec;

/// Every resource's table, in the order the listeners try them (health first, the admin UI's
/// catch-all last).
const TABLES: &[&[RouteSpec]] = &[
    health::ROUTES,
    lark::ROUTES,
    homepage::ROUTES,
    schedules::PUBLIC_ROUTES,
    admin::ROUTES,
    integrations::ROUTES,
    webhooks::ROUTES,
    bot_webhooks::ROUTES,
    delivery::ROUTES,
    incidents::ROUTES,
    schedules::ROUTES,
    setup::ROUTES,
    homepage::ADMIN_ROUTES,
    assets::ROUTES,
];

/// Every route of every listener.
pub fn routes() -> impl Iterator<Item = &'static RouteSpec> {
    TABLES.iter().flat_map(|table| table.iter())
}

/// The HTTP method as a metric label and log field: the standard methods by name, any extension
/// method as `other` (issue 12.2).
pub fn method_label(method: &warp::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Longest request path written to the access log; the rest is cut (paths come from strangers).
const MAX_LOGGED_PATH_CHARS: usize = 200;

fn logged_path(path: &str) -> &str {
    match path.char_indices().nth(MAX_LOGGED_PATH_CHARS) {
        Some((cut, _)) => &path[..cut],
        None => path,
    }
}

/// What a page may load: only our own files. The frame ancestors differ by who may embed it:
/// the homepage is opened inside the Lark client, which frames it from these hosts; nothing
/// else may be framed. Whole values, so no answer builds or parses them.
macro_rules! csp {
    ($frame_ancestors:literal) => {
        concat!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; ",
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; ",
            $frame_ancestors
        )
    };
}
const CSP_HOMEPAGE: &str =
    csp!("frame-ancestors 'self' https://*.feishu.cn https://*.larksuite.com https://*.larkoffice.com");
const CSP_UNFRAMED: &str = csp!("frame-ancestors 'none'");

/// Response headers every answer carries (issue 12.13): no MIME sniffing, a content policy, no
/// framing except the homepage by Lark, and HSTS when Lark and browsers reach us over HTTPS.
fn security_headers(headers: &mut warp::http::HeaderMap, path: &str, https: bool) {
    use warp::http::HeaderValue;
    let homepage = path.starts_with("/lark/") && path.split('/').nth(3) == Some("app");
    let csp = if homepage {
        CSP_HOMEPAGE
    } else {
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        CSP_UNFRAMED
    };
    headers.insert("content-security-policy", HeaderValue::from_static(csp));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if https {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Wraps routes with the JSON error mapping and one log line (and metric) per request.
fn finish(
    routes: BoxedFilter<(Response,)>,
    app: Arc<Services>,
    listener: &'static str,
) -> BoxedFilter<(Response,)> {
    let https = app.settings.tls.is_some() || app.settings.public_url.scheme() == "https";
    let started = warp::any().map(Instant::now);
    started
        .and(warp::method())
        .and(warp::path::full())
        .and(routes.recover(error::recover).unify())
        .map(
            move |t0: Instant,
                  method: warp::http::Method,
                  path: warp::path::FullPath,
                  mut response: Response| {
                let elapsed = t0.elapsed();
                security_headers(response.headers_mut(), path.as_str(), https);
                let status = response.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
                    // The rest of the body may be unread, so this connection cannot carry another
                    // request; say so, or the client's next request on it fails mid-flight.
                    response.headers_mut().insert(
                        warp::http::header::CONNECTION,
                        warp::http::HeaderValue::from_static("close"),
                    );
                }
                let status = response.status().as_u16();
                let method = method_label(&method);
                app.metrics
                    .http_requests
                    .get_or_create(&HttpLabels {
                        listener,
                        method,
                        status,
                    })
                    .inc();
                app.metrics.http_latency.observe(elapsed.as_secs_f64());
                // The path only: query strings can carry integration keys.
                tracing::info!(
                    target: "lark_oncall::access",
                    listener,
                    method,
                    path = logged_path(path.as_str()),
                    status,
                    latency_ms = elapsed.as_secs_f64() * 1000.0,
                );
                response
            },
        )
        .boxed()
}

fn public_only(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    health::routes(app.clone())
        .or(lark::routes(app.clone()))
        .unify()
        .or(homepage::routes(app.clone()))
        .unify()
        .or(schedules::public_routes(app))
        .unify()
        .boxed()
}

fn admin_only(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    admin::routes(app.clone())
        .or(integrations::routes(app.clone()))
        .unify()
        .or(webhooks::routes(app.clone()))
        .unify()
        .or(bot_webhooks::routes(app.clone()))
        .unify()
        .or(delivery::routes(app.clone()))
        .unify()
        .or(incidents::routes(app.clone()))
        .unify()
        .or(schedules::routes(app.clone()))
        .unify()
        .or(setup::routes(app.clone()))
        .unify()
        .or(homepage::admin_routes(app))
        .unify()
        .or(assets::routes())
        .unify()
        .boxed()
}

/// Routes of the public listener when a separate admin listener exists.
pub fn public_routes(app: Arc<Services>, listener: &'static str) -> BoxedFilter<(Response,)> {
    finish(public_only(app.clone()), app, listener)
}

/// Routes of the separate admin listener.
pub fn admin_routes(app: Arc<Services>, listener: &'static str) -> BoxedFilter<(Response,)> {
    finish(
        health::routes(app.clone())
            .or(admin_only(app.clone()))
            .unify()
            .boxed(),
        app,
        listener,
    )
}

/// Everything on one socket (no `server.admin_listen`).
pub fn all_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    finish(
        public_only(app.clone())
            .or(admin_only(app.clone()))
            .unify()
            .boxed(),
        app,
        "main",
    )
}
