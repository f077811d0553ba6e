//! The app homepage inside Lark, on the public listener: `GET /lark/{id}/app[/…]` (the pages,
//! or a 302 to Lark's authorize page without a session), `GET /lark/{id}/oauth/callback`, the
//! page forms (`POST /lark/{id}/app/incidents/{inc}/act`, `…/app/oncall/cover`,
//! `…/app/oncall/requests/{req}`, `…/app/logout`) and the page's own
//! stylesheet `GET /lark/assets/{file}`; on the admin listener the session list and revocation
//! (`GET /api/v1/homepage/sessions`, `DELETE /api/v1/homepage/sessions/{id}`). Pages are rendered
//! here, phone-first, in zh_cn or en_us; the domain decides (`crate::homepage`).
//!
//! The parts: `pages` (the list pages, *Who am I* and the page dispatch), `incident` (one
//! incident's page and its actions), `oncall` (the on-call page and its cover forms) and `login`
//! (the OAuth callback, form sessions and logout); this file keeps the routes, the visit, the
//! page frame and the response helpers they share.

mod incident;
mod login;
mod oncall;
mod pages;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::ApiError;
use super::reply::Page;
use crate::homepage::{COOKIE, HomepageError};
use crate::route_table;
use crate::services::Services;
use incident::act;
use login::{callback, logout};
use oncall::{answer_cover, cover};
use pages::app_page;

/// The language cookie (`zh_cn` or `en_us`), set by the switch on every page.
const LANG_COOKIE: &str = "lko_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Zh,
    En,
}

impl Lang {
    fn pick(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    fn html(self) -> &'static str {
        self.pick("zh-CN", "en")
    }

    fn code(self) -> &'static str {
        self.pick("zh_cn", "en_us")
    }

    /// `?lang=`, then the cookie, then the browser's language (Lark sends the client's).
    fn choose(query: Option<&str>, cookie: Option<&str>, accept: Option<&str>) -> Lang {
        let parse = |v: &str| match v.to_ascii_lowercase().as_str() {
            "zh_cn" | "zh-cn" | "zh" => Some(Lang::Zh),
            "en_us" | "en-us" | "en" => Some(Lang::En),
            _ => None,
        };
        query
            .and_then(parse)
            .or_else(|| cookie.and_then(parse))
            .unwrap_or_else(|| {
                let first = accept.unwrap_or("").split(',').next().unwrap_or("").trim();
                if first.to_ascii_lowercase().starts_with("zh") {
                    Lang::Zh
                } else {
                    Lang::En
                }
            })
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What every request to a homepage path carries.
struct Visit {
    integration: String,
    lang: Lang,
    /// Set when `?lang=` switched the language.
    set_lang: bool,
    cookie: Option<String>,
}

impl Visit {
    fn base(&self) -> String {
        format!("/lark/{}/app", self.integration)
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(location: &str) -> Response {
    let mut r = Response::new(Vec::<u8>::new().into());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn see_other(location: &str) -> Response {
    let mut r = redirect(location);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

fn add_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn secure_flag(app: &Services) -> &'static str {
    if app.settings.tls.is_some() || app.settings.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    }
}

fn session_cookie(app: &Services, integration: &str, value: &str, max_age: i64) -> String {
    format!(
        "{COOKIE}={value}; Path=/lark/{integration}/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        secure_flag(app)
    )
}

/// The page frame: the navigation, the language switch and `main`.
fn page(visit: &Visit, title: &str, current: &str, main: &str) -> String {
    let l = visit.lang;
    let base = visit.base();
    let mut nav = String::new();
    if !current.is_empty() {
        for (key, href, label) in [
            ("mine", base.clone(), l.pick("我的事件", "My incidents")),
            ("open", format!("{base}/open"), l.pick("全部未关闭", "All open")),
            ("oncall", format!("{base}/oncall"), l.pick("值班", "On call")),
            ("me", format!("{base}/me"), l.pick("我是谁", "Who am I")),
        ] {
            let aria = if key == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{}\"{aria}>{}</a>", escape(&href), escape(label));
        }
    }
    let other = match l {
        Lang::Zh => ("en_us", "English"),
        Lang::En => ("zh_cn", "中文"),
    };
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/lark/assets/kit/kit.css\">\
         <link rel=\"stylesheet\" href=\"/lark/assets/home/home.css\"></head>\
         <body><header class=\"bar\"><nav aria-label=\"{navlabel}\">{nav}</nav>\
         <a class=\"lang\" href=\"?lang={code}\" lang=\"{code_html}\">{other_name}</a></header>\
         <main id=\"main\">{main}</main></body></html>",
        lang = l.html(),
        title = escape(title),
        navlabel = l.pick("导航", "Navigation"),
        code = other.0,
        code_html = if other.0 == "zh_cn" { "zh-CN" } else { "en" },
        other_name = other.1,
    )
}

/// A page that says what went wrong and what to do.
fn problem_page(visit: &Visit, status: StatusCode, title: &str, body: &str, retry: bool) -> Response {
    let mut main = format!(
        "<section class=\"problem\" role=\"alert\"><h1>{}</h1><p>{}</p>",
        escape(title),
        body
    );
    if retry {
        let _ = write!(
            main,
            "<p><a class=\"button primary\" href=\"{}\">{}</a></p>",
            escape(&visit.base()),
            visit.lang.pick("重新登录", "Log in again")
        );
    }
    main.push_str("</section>");
    html_response(status, page(visit, title, "", &main))
}

fn action_button(name: &str, label: &str, class: &str, extra: &str) -> String {
    format!(
        "<button type=\"submit\" name=\"action\" value=\"{name}\" class=\"{class}\"{extra}>{}</button>",
        escape(label)
    )
}

fn member_names(app: &Services, ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            app.incidents
                .members
                .get(id)
                .map(|m| m.name)
                .unwrap_or_else(|_| id.clone())
        })
        .collect()
}

fn unknown_integration(visit: &Visit) -> Response {
    tracing::warn!(integration = %visit.integration, reason = "unknown_integration", "homepage request refused");
    let l = visit.lang;
    problem_page(
        visit,
        StatusCode::NOT_FOUND,
        l.pick("没有这个应用", "Unknown app address"),
        l.pick(
            "这个地址不对应任何已配置的飞书应用。请检查开发者后台里的网页应用主页地址，或联系管理员。",
            "This address belongs to no configured Lark app. Check the homepage address in the Lark developer console, or ask your admin.",
        ),
        false,
    )
}

fn internal(e: HomepageError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn visit_filter() -> impl Filter<Extract = (VisitParts,), Error = warp::Rejection> + Clone {
    warp::cookie::optional::<String>(COOKIE)
        .and(warp::cookie::optional::<String>(LANG_COOKIE))
        .and(warp::header::optional::<String>("accept-language"))
        .map(|c, lang, accept| (c, lang, accept))
}

fn make_visit(integration: String, query: &HashMap<String, String>, parts: VisitParts) -> Visit {
    let (cookie, lang_cookie, accept) = parts;
    let asked = query.get("lang").map(String::as_str);
    let lang = Lang::choose(asked, lang_cookie.as_deref(), accept.as_deref());
    Visit {
        integration,
        lang,
        set_lang: asked.is_some(),
        cookie,
    }
}

fn finish(app: &Services, visit_lang: (bool, Lang), r: Result<Response, ApiError>) -> Response {
    match r {
        Ok(mut r) => {
            if visit_lang.0 {
                add_cookie(
                    &mut r,
                    format!(
                        "{LANG_COOKIE}={}; Path=/lark/; Max-Age=31536000; SameSite=Lax{}",
                        visit_lang.1.code(),
                        secure_flag(app)
                    ),
                );
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

fn form_body(bytes: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// The session list as the admin API shows it (never the secret's hash).
#[derive(Serialize, ToSchema)]
pub struct HomeSessionView {
    id: String,
    integration_id: String,
    member_id: String,
    open_id: String,
    lark_name: String,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// The cookies and language header a visit is read from.
type VisitParts = (Option<String>, Option<String>, Option<String>);

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes.min(64 * 1024)), const ROUTES, Public;
    /// The shared kit's and the homepage's own files (`kit` or `home`); the admin UI's stay on
    /// the admin listener. 304 when `If-None-Match` names the file's ETag.
    GET | HEAD ["lark" / "assets" / {dir} / {file}] public
        with(
            warp::header::optional::<String>("if-none-match"),
            warp::header::optional::<String>("accept-encoding"),
        )
        => asset -> 200 other("text/css"), 304;
    /// The OAuth redirect: opens a homepage session and sends the person on to the page asked for.
    /// A refused login gets a page in the person's language: 400 (an incomplete, expired, used or
    /// invalid link, or a code Lark refused), 403 (the login was not allowed, or the person is
    /// outside the app's availability), 404 (no such integration), 502 (Lark cannot be reached).
    GET ["lark" / {integration_id} / "oauth" / "callback"] public
        with(warp::query::<HashMap<String, String>>(), visit_filter())
        => oauth_callback -> 302 redirect, 400 html, 403 html, 404 html, 502 html;
    /// An action on an incident from its page (a form post).
    POST ["lark" / {integration_id} / "app" / "incidents" / {incident_id} / "act"] homepage
        with(visit_filter()), form
        => act_form -> 303 redirect;
    /// Asks for someone to cover a span of the on-call page's shifts (a form post).
    POST ["lark" / {integration_id} / "app" / "oncall" / "cover"] homepage with(visit_filter()), form
        => cover_form -> 303 redirect;
    /// Answers a cover request (a form post).
    POST ["lark" / {integration_id} / "app" / "oncall" / "requests" / {request_id}] homepage
        with(visit_filter()), form
        => answer_form -> 303 redirect;
    /// Ends the homepage session (a form post).
    POST ["lark" / {integration_id} / "app" / "logout"] homepage with(visit_filter()), form
        => logout_form -> 303 redirect;
    /// The homepage's pages (`""`, `incidents/{id}`, `oncall`, `me`, …); without a session, a
    /// redirect to Lark's authorize page.
    GET | HEAD ["lark" / {integration_id} / "app" / {*page}] homepage
        with(warp::query::<HashMap<String, String>>(), visit_filter())
        => app_page_route -> 200 html, 302 redirect;
}

route_table! {
    pub fn admin_routes(app, limit = 0), const ADMIN_ROUTES, Admin;
    /// Lists the homepage sessions.
    GET ["api" / "v1" / "homepage" / "sessions"] admin => list_sessions -> 200 json(Page<HomeSessionView>);
    /// Ends a homepage session.
    DELETE ["api" / "v1" / "homepage" / "sessions" / {id}] admin => revoke_session -> 204;
}

async fn asset(
    _app: Arc<Services>,
    dir: String,
    file: String,
    if_none_match: Option<String>,
    accept_encoding: Option<String>,
) -> Result<Response, ApiError> {
    if !matches!(dir.as_str(), "kit" | "home") {
        return Err(ApiError::not_found(format!("no asset {dir}/{file}")));
    }
    super::assets::serve(&format!("{dir}/{file}"), if_none_match, accept_encoding)
}

async fn oauth_callback(
    app: Arc<Services>,
    id: String,
    q: HashMap<String, String>,
    parts: VisitParts,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &q, parts);
    let lang = (visit.set_lang, visit.lang);
    Ok(finish(&app, lang, callback(app.clone(), visit, q).await))
}

async fn act_form(
    app: Arc<Services>,
    id: String,
    incident: String,
    parts: VisitParts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &HashMap::new(), parts);
    let r = act(app.clone(), visit, incident, form_body(&body)).await;
    Ok(finish(&app, (false, Lang::En), r))
}

async fn cover_form(
    app: Arc<Services>,
    id: String,
    parts: VisitParts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &HashMap::new(), parts);
    let r = cover(app.clone(), visit, form_body(&body)).await;
    Ok(finish(&app, (false, Lang::En), r))
}

async fn answer_form(
    app: Arc<Services>,
    id: String,
    request: String,
    parts: VisitParts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &HashMap::new(), parts);
    let r = answer_cover(app.clone(), visit, request, form_body(&body)).await;
    Ok(finish(&app, (false, Lang::En), r))
}

async fn logout_form(
    app: Arc<Services>,
    id: String,
    parts: VisitParts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &HashMap::new(), parts);
    let r = logout(app.clone(), visit, form_body(&body)).await;
    Ok(finish(&app, (false, Lang::En), r))
}

async fn app_page_route(
    app: Arc<Services>,
    id: String,
    tail: warp::path::Tail,
    q: HashMap<String, String>,
    parts: VisitParts,
) -> Result<Response, ApiError> {
    let visit = make_visit(id, &q, parts);
    let lang = (visit.set_lang, visit.lang);
    let r = app_page(app.clone(), visit, tail.as_str().to_string(), q).await;
    Ok(finish(&app, lang, r))
}

async fn list_sessions(app: Arc<Services>) -> Result<Page<HomeSessionView>, ApiError> {
    let items = app.homepage.sessions().map_err(internal)?;
    Ok(Page::new(
        items
            .into_iter()
            .map(|s| HomeSessionView {
                id: s.id,
                integration_id: s.integration_id,
                member_id: s.member_id,
                open_id: s.open_id,
                lark_name: s.lark_name,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
            })
            .collect(),
    ))
}

async fn revoke_session(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    match app.homepage.revoke(&id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("no homepage session {id}"))),
        Err(e) => Err(internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_switch_then_the_cookie_then_the_browser() {
        assert_eq!(Lang::choose(None, None, Some("zh-CN,zh;q=0.9")), Lang::Zh);
        assert_eq!(Lang::choose(None, None, Some("en-US,en")), Lang::En);
        assert_eq!(Lang::choose(None, Some("zh_cn"), Some("en-US")), Lang::Zh);
        assert_eq!(
            Lang::choose(Some("en_us"), Some("zh_cn"), Some("zh-CN")),
            Lang::En
        );
        assert_eq!(Lang::choose(Some("fr"), None, None), Lang::En);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
