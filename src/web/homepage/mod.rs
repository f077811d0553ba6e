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
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::ApiError;
use crate::homepage::{COOKIE, HomepageError};
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

fn visit_filter()
-> impl Filter<Extract = ((Option<String>, Option<String>, Option<String>),), Error = warp::Rejection> + Clone
{
    warp::cookie::optional::<String>(COOKIE)
        .and(warp::cookie::optional::<String>(LANG_COOKIE))
        .and(warp::header::optional::<String>("accept-language"))
        .map(|c, lang, accept| (c, lang, accept))
}

fn make_visit(
    integration: String,
    query: &HashMap<String, String>,
    parts: (Option<String>, Option<String>, Option<String>),
) -> Visit {
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

/// The homepage's routes on the public listener.
pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes.min(64 * 1024);
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    // Only the shared kit and the homepage's own files: the admin UI stays on the admin listener.
    let assets = warp::path!("lark" / "assets" / String / String)
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .map(|dir: String, file: String, inm, encoding| {
            if !matches!(dir.as_str(), "kit" | "home") {
                return ApiError::not_found(format!("no asset {dir}/{file}")).into_response();
            }
            super::assets::serve(&format!("{dir}/{file}"), inm, encoding)
                .unwrap_or_else(|e| e.into_response())
        });
    let callback_route = warp::path!("lark" / String / "oauth" / "callback")
        .and(warp::get())
        .and(with_app.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(visit_filter())
        .then(
            |id: String, app: Arc<Services>, q: HashMap<String, String>, parts| async move {
                let visit = make_visit(id, &q, parts);
                let lang = (visit.set_lang, visit.lang);
                finish(&app, lang, callback(app.clone(), visit, q).await)
            },
        );
    let act_route = warp::path!("lark" / String / "app" / "incidents" / String / "act")
        .and(warp::post())
        .and(with_app.clone())
        .and(visit_filter())
        .and(super::body::raw(limit))
        .then(
            |id: String, inc: String, app: Arc<Services>, parts, body: Bytes| async move {
                let visit = make_visit(id, &HashMap::new(), parts);
                let r = act(app.clone(), visit, inc, form_body(&body)).await;
                finish(&app, (false, Lang::En), r)
            },
        );
    let cover_route = warp::path!("lark" / String / "app" / "oncall" / "cover")
        .and(warp::post())
        .and(with_app.clone())
        .and(visit_filter())
        .and(super::body::raw(limit))
        .then(|id: String, app: Arc<Services>, parts, body: Bytes| async move {
            let visit = make_visit(id, &HashMap::new(), parts);
            let r = cover(app.clone(), visit, form_body(&body)).await;
            finish(&app, (false, Lang::En), r)
        });
    let answer_route = warp::path!("lark" / String / "app" / "oncall" / "requests" / String)
        .and(warp::post())
        .and(with_app.clone())
        .and(visit_filter())
        .and(super::body::raw(limit))
        .then(
            |id: String, req: String, app: Arc<Services>, parts, body: Bytes| async move {
                let visit = make_visit(id, &HashMap::new(), parts);
                let r = answer_cover(app.clone(), visit, req, form_body(&body)).await;
                finish(&app, (false, Lang::En), r)
            },
        );
    let logout_route = warp::path!("lark" / String / "app" / "logout")
        .and(warp::post())
        .and(with_app.clone())
        .and(visit_filter())
        .and(super::body::raw(limit))
        .then(|id: String, app: Arc<Services>, parts, body: Bytes| async move {
            let visit = make_visit(id, &HashMap::new(), parts);
            let r = logout(app.clone(), visit, form_body(&body)).await;
            finish(&app, (false, Lang::En), r)
        });
    let page_route =
        warp::path("lark")
            .and(warp::path::param::<String>())
            .and(warp::path("app"))
            .and(warp::path::tail())
            .and(warp::get().or(warp::head()).unify())
            .and(with_app)
            .and(warp::query::<HashMap<String, String>>())
            .and(visit_filter())
            .then(
                |id: String,
                 tail: warp::path::Tail,
                 app: Arc<Services>,
                 q: HashMap<String, String>,
                 parts| async move {
                    let visit = make_visit(id, &q, parts);
                    let lang = (visit.set_lang, visit.lang);
                    let r = app_page(app.clone(), visit, tail.as_str().to_string(), q).await;
                    finish(&app, lang, r)
                },
            );
    assets
        .or(callback_route)
        .unify()
        .or(act_route)
        .unify()
        .or(cover_route)
        .unify()
        .or(answer_route)
        .unify()
        .or(logout_route)
        .unify()
        .or(page_route)
        .unify()
        .boxed()
}

/// The admin's view of homepage sessions: list and revoke.
pub fn admin_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let auth = super::integrations::guarded(app);
    let list = warp::path!("api" / "v1" / "homepage" / "sessions")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            let reply = app.homepage.sessions().map(|items| {
                let items: Vec<serde_json::Value> = items
                    .into_iter()
                    .map(|s| {
                        serde_json::json!({"id": s.id, "integration_id": s.integration_id, "member_id": s.member_id,
                                           "open_id": s.open_id, "lark_name": s.lark_name, "created_at": s.created_at,
                                           "last_seen_at": s.last_seen_at, "expires_at": s.expires_at})
                    })
                    .collect();
                warp::reply::json(&serde_json::json!({"items": items})).into_response()
            });
            reply.unwrap_or_else(|e| internal(e).into_response())
        });
    let revoke = warp::path!("api" / "v1" / "homepage" / "sessions" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            match app.homepage.revoke(&id).await {
                Ok(true) => warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response(),
                Ok(false) => ApiError::not_found(format!("no homepage session {id}")).into_response(),
                Err(e) => internal(e).into_response(),
            }
        });
    list.or(revoke).unify().boxed()
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
