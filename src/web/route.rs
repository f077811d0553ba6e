//! The route table: [`route_table!`] turns one line per route (method, path, who may call it,
//! extra extractors, body, named handler, answer) into the warp filter of a resource and into its
//! [`RouteSpec`] entries, which the OpenAPI document (`web::openapi`) and the tests read. The
//! gate that checks who is calling the admin API (session cookie + CSRF token + same origin, or a
//! bearer token within its scope) lives here too.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use utoipa::openapi::{RefOr, Schema};
use warp::filters::path::FullPath;
use warp::host::Authority;
use warp::http::Method;
use warp::{Filter, Rejection};

use super::error::{ApiError, ErrorCode};
use crate::auth::Principal;
use crate::services::Services;

/// Which socket serves a route: the public one (Lark, browsers in Lark, calendar apps) or the
/// admin one (the admin API and UI). Without `server.admin_listen` one socket serves both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Public,
    Admin,
    /// Every listener (health).
    Both,
}

/// Who may call a route; the OpenAPI document's `security` says the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone: health, login, the OpenAPI document, the UI's files, a calendar feed by its secret.
    Public,
    /// An admin session (cookie, CSRF token on writes, same origin) or an API token within its
    /// scope.
    Admin,
    /// An alert source's integration key (`?integration_key=` or `Authorization: Bearer`).
    IntegrationKey,
    /// Lark itself: a request signed (and encrypted) with the integration's keys.
    LarkSignature,
    /// A person in the Lark client: the homepage's session cookie, opened by the OAuth sign-in.
    HomepageSession,
}

/// Collects a type's schema and the schemas it refers to.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

/// The documented parameters of a typed query string.
pub type ParamsFn = fn() -> Vec<utoipa::openapi::path::Parameter>;

/// The query parameters of `T`.
pub fn params_of<T: utoipa::IntoParams>() -> Vec<utoipa::openapi::path::Parameter> {
    T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
}

/// A request or answer body, as documented.
#[derive(Clone, Copy)]
pub enum Content {
    Empty,
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// An HTML form post (`application/x-www-form-urlencoded`).
    Form,
    /// An HTML page.
    Html,
    /// Another media type, not described by a schema (calendar, metrics, a backup, a file).
    Other(&'static str),
    /// A redirect (`Location`).
    Redirect,
    /// The error body every refusal carries (`Error`, a code of the catalog).
    Error,
}

/// One route of the table.
pub struct RouteSpec {
    pub listener: Listener,
    /// Upper case: `GET`, `POST`, …; one handler may serve two (`PATCH` and `PUT`).
    pub methods: &'static [&'static str],
    /// OpenAPI style: `/api/v1/webhooks/{id}`; a catch-all tail is one `{name}` too.
    pub path: &'static str,
    pub access: Access,
    /// The handler's module path within `web` and its name: `webhooks::update`.
    pub handler: &'static str,
    /// The handler's doc line in the table.
    pub summary: &'static str,
    /// The query string's parameters, when the route takes typed ones.
    pub query: Option<ParamsFn>,
    pub request: Content,
    pub status: u16,
    pub response: Content,
    /// The route's other known answers (a merge's 200 beside a create's 201, a 503 while not
    /// ready), each with its body.
    pub also: &'static [(u16, Content)],
}

impl RouteSpec {
    /// The resource, i.e. the module under `web` that owns the route.
    pub fn resource(&self) -> &'static str {
        self.handler.split("::").next().unwrap_or(self.handler)
    }
}

/// The module path under `web` of a handler (`lark_oncall::web::webhooks` → `webhooks`).
pub const fn handler_name(full: &'static str) -> &'static str {
    const PREFIX: &[u8] = b"lark_oncall::web::";
    let bytes = full.as_bytes();
    let mut i = 0;
    while i < PREFIX.len() {
        if i >= bytes.len() || bytes[i] != PREFIX[i] {
            return full;
        }
        i += 1;
    }
    let (_, rest) = bytes.split_at(PREFIX.len());
    match std::str::from_utf8(rest) {
        Ok(s) => s,
        Err(_) => full,
    }
}

/// The schema of `T`: a reference to it when it has a name of its own, inline when it is generic
/// (`Page<WebhookView>`), with everything it refers to added to `schemas`.
pub fn schema_of<T: utoipa::ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(schemas);
    if std::any::type_name::<T>().contains('<') {
        return T::schema();
    }
    let name = T::name().into_owned();
    schemas.push((name.clone(), T::schema()));
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

/// The admin session's cookie.
pub const SESSION_COOKIE: &str = "lark_oncall_session";
/// The header carrying a session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The browser-supplied signs of where a request was made from.
pub struct RequestOrigin {
    host: Option<Authority>,
    origin: Option<String>,
    fetch_site: Option<String>,
}

pub fn request_origin() -> impl Filter<Extract = (RequestOrigin,), Error = Rejection> + Clone {
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
pub fn check_same_origin(app: &Services, req: &RequestOrigin) -> Result<(), ApiError> {
    let refuse = |what: String| {
        ApiError::forbidden(
            ErrorCode::CrossOrigin,
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
                ErrorCode::CsrfFailed,
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

/// The admin gate: rejects with 401/403 unless the caller is an admin within scope.
pub fn admin(app: Arc<Services>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    authenticated(app).map(|_: Principal| ()).untuple_one()
}

/// The admin gate that hands the handler who is calling.
pub fn admin_as(app: Arc<Services>) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    authenticated(app)
}

/// One path segment: a literal, a `{param}` (a `String` for the handler) or a `{*tail}`.
#[macro_export]
#[doc(hidden)]
macro_rules! __route_segment {
    ({* $name:ident}) => {
        ::warp::path::tail()
    };
    ({$name:ident}) => {
        ::warp::path::param::<String>()
    };
    ($lit:literal) => {
        ::warp::path($lit)
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_segment_doc {
    ({* $name:ident}) => {
        concat!("{", stringify!($name), "}")
    };
    ({$name:ident}) => {
        concat!("{", stringify!($name), "}")
    };
    ($lit:literal) => {
        $lit
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_method {
    (GET) => {
        ::warp::get()
    };
    (HEAD) => {
        ::warp::head()
    };
    (POST) => {
        ::warp::post()
    };
    (PUT) => {
        ::warp::put()
    };
    (PATCH) => {
        ::warp::patch()
    };
    (DELETE) => {
        ::warp::delete()
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_gate {
    (public, $app:ident) => {
        ::warp::any()
    };
    (key, $app:ident) => {
        ::warp::any()
    };
    (lark, $app:ident) => {
        ::warp::any()
    };
    (homepage, $app:ident) => {
        ::warp::any()
    };
    (admin, $app:ident) => {
        $crate::web::route::admin($app.clone())
    };
    (admin_as, $app:ident) => {
        $crate::web::route::admin_as($app.clone())
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_access {
    (public) => {
        $crate::web::route::Access::Public
    };
    (key) => {
        $crate::web::route::Access::IntegrationKey
    };
    (lark) => {
        $crate::web::route::Access::LarkSignature
    };
    (homepage) => {
        $crate::web::route::Access::HomepageSession
    };
    (admin) => {
        $crate::web::route::Access::Admin
    };
    (admin_as) => {
        $crate::web::route::Access::Admin
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_query_doc {
    () => {
        None
    };
    ($ty:ty) => {
        Some($crate::web::route::params_of::<$ty>)
    };
}

/// The request body's filter: `json(T)` decodes (400 naming the field), `raw(T)` hands the
/// handler the bytes it decodes itself (documented as `T`), `form` an HTML form's bytes.
#[macro_export]
#[doc(hidden)]
macro_rules! __route_body {
    (json($ty:ty), $limit:expr) => {
        $crate::web::body::json::<$ty>($limit)
    };
    (raw($ty:ty), $limit:expr) => {
        $crate::web::body::raw($limit)
    };
    (form, $limit:expr) => {
        $crate::web::body::raw($limit)
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __route_content {
    () => {
        $crate::web::route::Content::Empty
    };
    (json($ty:ty)) => {
        $crate::web::route::Content::Json($crate::web::route::schema_of::<$ty>)
    };
    (raw($ty:ty)) => {
        $crate::web::route::Content::Json($crate::web::route::schema_of::<$ty>)
    };
    (form) => {
        $crate::web::route::Content::Form
    };
    (html) => {
        $crate::web::route::Content::Html
    };
    (redirect) => {
        $crate::web::route::Content::Redirect
    };
    (other($mime:literal)) => {
        $crate::web::route::Content::Other($mime)
    };
    (error) => {
        $crate::web::route::Content::Error
    };
}

/// A resource's routes: `pub fn $fn(app) -> BoxedFilter<(Response,)>` and `pub const $table`.
///
/// ```text
/// route_table! {
///     pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
///     /// Updates a webhook.
///     PATCH | PUT ["api" / "v1" / "webhooks" / {id}] admin, json(SubscriptionInput)
///         => update -> 200 json(SubscriptionView);
///     /// Opens an incident, or merges it into the open one.
///     POST ["api" / "v1" / "incidents"] admin_as, json(NewIncident)
///         => open_incident -> 201 json(Incident), 200 json(Incident);
/// }
/// ```
///
/// After the answer, a comma lists each other answer the route knows (`, 503 json(T)`,
/// `, 429 error`); the document shows them beside the first.
///
/// The handler is an `async fn` taking `Arc<Services>`, then the path's parameters, then the
/// gate's output (`admin_as`: the `Principal`), then the `query(T)` (typed, documented through
/// `utoipa::IntoParams`), then each `with(..)` filter's output, then the body; it returns
/// `Result<impl Reply, ApiError>`. Routes are tried in the table's order.
#[macro_export]
macro_rules! route_table {
    (
        $vis:vis fn $fn_name:ident($app:ident, $limit:ident = $limit_expr:expr), const $table:ident, $listener:ident;
        $(
            $(#[doc = $doc:literal])*
            $method:ident $(| $more:ident)* [$($seg:tt)/+] $gate:ident
                $(query($qty:ty))?
                $(with($($extra:expr),+ $(,)?))?
                $(, $bkind:ident $(($bty:ty))?)?
                => $handler:ident -> $status:literal $($rkind:ident $(($($rarg:tt)+))?)?
                $(, $astatus:literal $($akind:ident $(($($aarg:tt)+))?)?)*;
        )+
    ) => {
        $vis const $table: &[$crate::web::route::RouteSpec] = &[
            $(
                $crate::web::route::RouteSpec {
                    listener: $crate::web::route::Listener::$listener,
                    methods: &[stringify!($method) $(, stringify!($more))*],
                    path: concat!($("/", $crate::__route_segment_doc!($seg)),+),
                    access: $crate::__route_access!($gate),
                    handler: $crate::web::route::handler_name(concat!(module_path!(), "::", stringify!($handler))),
                    summary: concat!($($doc),*),
                    query: $crate::__route_query_doc!($($qty)?),
                    request: $crate::__route_content!($($bkind $(($bty))?)?),
                    status: $status,
                    response: $crate::__route_content!($($rkind $(($($rarg)+))?)?),
                    also: &[$(($astatus, $crate::__route_content!($($akind $(($($aarg)+))?)?))),*],
                },
            )+
        ];

        $vis fn $fn_name(
            $app: ::std::sync::Arc<$crate::services::Services>,
        ) -> ::warp::filters::BoxedFilter<(::warp::reply::Response,)> {
            use ::warp::Filter as _;
            #[allow(unused_variables)]
            let $limit: u64 = $limit_expr;
            let routes: ::std::vec::Vec<::warp::filters::BoxedFilter<(::warp::reply::Response,)>> = vec![
                $(
                    {
                        let with_app = {
                            let $app = $app.clone();
                            ::warp::any().map(move || $app.clone())
                        };
                        with_app
                            $(.and($crate::__route_segment!($seg)))+
                            .and(::warp::path::end())
                            .and($crate::__route_method!($method) $(.or($crate::__route_method!($more)).unify())*)
                            .and($crate::__route_gate!($gate, $app))
                            $(.and(::warp::query::<$qty>()))?
                            $($(.and($extra))+)?
                            $(.and($crate::__route_body!($bkind $(($bty))?, $limit)))?
                            .then($handler)
                            .map($crate::web::error::respond)
                            .boxed()
                    },
                )+
            ];
            $crate::web::route::first_of(routes)
        }
    };
}

/// The routes tried in order, as one filter.
pub fn first_of(
    routes: Vec<warp::filters::BoxedFilter<(warp::reply::Response,)>>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let mut routes = routes.into_iter();
    let first = routes.next().expect("a table has routes");
    routes.fold(first, |all, next| all.or(next).unify().boxed())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use warp::http::StatusCode;

    use super::*;

    async fn services(dir: &std::path::Path) -> Arc<Services> {
        let mut config = crate::config::Config::default();
        config.server.listen = "127.0.0.1:0".into();
        config.server.public_url = Some("https://oncall.example.com".into());
        config.storage.path = dir.join("state.redb");
        Services::open(config.validate().expect("valid config"))
            .await
            .expect("services open")
    }

    fn body(response: &warp::http::Response<bytes::Bytes>) -> Value {
        serde_json::from_slice(response.body()).expect("a JSON body")
    }

    #[test]
    fn a_table_line_becomes_its_spec() {
        let get = super::super::webhooks::ROUTES
            .iter()
            .find(|r| r.handler == "webhooks::update")
            .expect("webhooks::update is in the table");
        assert_eq!(get.path, "/api/v1/webhooks/{id}");
        assert_eq!(get.methods, ["PATCH", "PUT"]);
        assert_eq!(get.access, Access::Admin);
        assert_eq!(get.listener, Listener::Admin);
        assert_eq!(get.summary.trim(), "Changes the given fields of a webhook.");
        assert_eq!(get.resource(), "webhooks");
        assert!(matches!(get.request, Content::Json(_)));
    }

    #[test]
    fn a_second_answer_is_in_the_spec() {
        let open = super::super::incidents::ROUTES
            .iter()
            .find(|r| r.handler == "incidents::open_incident")
            .expect("incidents::open_incident is in the table");
        assert_eq!(open.status, 201);
        assert!(matches!(open.also, [(200, Content::Json(_))]));
        let login = super::super::admin::ROUTES
            .iter()
            .find(|r| r.handler == "admin::login")
            .expect("admin::login is in the table");
        assert!(matches!(login.also, [(429, Content::Error)]));
    }

    #[tokio::test]
    async fn an_unknown_method_on_a_known_path_is_a_405_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let routes = super::super::all_routes(services(dir.path()).await);
        let response = warp::test::request()
            .method("TRACE")
            .path("/api/v1/webhooks")
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body(&response)["error"]["code"], "method_not_allowed");
    }

    #[tokio::test]
    async fn an_admin_route_without_credentials_is_a_401_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let routes = super::super::all_routes(services(dir.path()).await);
        let response = warp::test::request()
            .method("DELETE")
            .path("/api/v1/webhooks/wh_x")
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body(&response)["error"]["code"], "unauthorized");
    }

    #[tokio::test]
    async fn a_good_request_reaches_its_handler() {
        let dir = tempfile::tempdir().unwrap();
        let app = services(dir.path()).await;
        let (_, token) = app
            .auth
            .create_token("route tests", crate::auth::Scope::Admin, None)
            .await
            .unwrap();
        let routes = super::super::all_routes(app);
        let response = warp::test::request()
            .path("/api/v1/webhooks")
            .header("authorization", format!("Bearer {token}"))
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(&response), serde_json::json!({"items": []}));
        let response = warp::test::request()
            .method("POST")
            .path("/api/v1/webhooks")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(r#"{"name": 7}"#)
            .reply(&routes)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = body(&response);
        assert_eq!(error["error"]["code"], "invalid_json");
        assert!(
            error["error"]["message"].as_str().unwrap().starts_with("name"),
            "{error}"
        );
    }
}
