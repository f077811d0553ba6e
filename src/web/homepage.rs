//! The app homepage inside Lark, on the public listener: `GET /lark/{id}/app[/…]` (the pages,
//! or a 302 to Lark's authorize page without a session), `GET /lark/{id}/oauth/callback`, the
//! page forms (`POST /lark/{id}/app/incidents/{inc}/act`, `…/app/oncall/cover`,
//! `…/app/oncall/requests/{req}`, `…/app/logout`) and the page's own
//! stylesheet `GET /lark/assets/{file}`; on the admin listener the session list and revocation
//! (`GET /api/v1/homepage/sessions`, `DELETE /api/v1/homepage/sessions/{id}`). Pages are rendered
//! here, phone-first, in zh_cn or en_us; the domain decides (`crate::homepage`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::ApiError;
use crate::homepage::{COOKIE, HomeSession, HomepageError, StateProblem};
use crate::incident::actions::Outcome;
use crate::incident::model::{Incident, Member, MemberRole, Severity, Status, Via};
use crate::incident::war_room::Requester;
use crate::incident::{Action, IncidentQuery};
use crate::schedule::cover::CoverRequest;
use crate::schedule::model::Schedule;
use crate::schedule::{MemberShift, ScheduleError, resolve};
use crate::services::Services;

/// The language cookie (`zh_cn` or `en_us`), set by the switch on every page.
const LANG_COOKIE: &str = "lko_lang";
/// Longest query value the callback reads (codes and states are far shorter).
const MAX_PARAM_CHARS: usize = 2048;
/// Incidents a list page shows.
const LIST_LIMIT: usize = 200;
/// How far ahead the on-call page looks for who is next and for my shifts.
const ON_CALL_DAYS: i64 = 14;

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

fn severity_word(s: Severity, l: Lang) -> &'static str {
    match s {
        Severity::Critical => l.pick("严重", "Critical"),
        Severity::Warning => l.pick("警告", "Warning"),
        Severity::Info => l.pick("提示", "Info"),
    }
}

fn status_word(i: &Incident, now: DateTime<Utc>, l: Lang) -> &'static str {
    if i.snoozed_at(now) {
        return l.pick("已暂停", "Snoozed");
    }
    match i.status {
        Status::Triggered => l.pick("待处理", "Triggered"),
        Status::Acknowledged => l.pick("已认领", "Acknowledged"),
        Status::Resolved => l.pick("已解决", "Resolved"),
    }
}

fn via_word(via: Via, l: Lang) -> &'static str {
    match via {
        Via::Card => l.pick("卡片", "card"),
        Via::Bot => l.pick("机器人", "bot"),
        Via::Homepage => l.pick("应用主页", "homepage"),
        Via::Api => l.pick("API", "API"),
        Via::Alert => l.pick("告警", "alert"),
        Via::System => l.pick("系统", "system"),
    }
}

fn kind_word(kind: &str, l: Lang) -> String {
    let word = match kind {
        "triggered" => l.pick("触发", "triggered"),
        "acknowledged" => l.pick("认领", "acknowledged"),
        "unacknowledged" => l.pick("取消认领", "unacknowledged"),
        "resolved" => l.pick("解决", "resolved"),
        "snoozed" => l.pick("暂停", "snoozed"),
        "snooze_ended" => l.pick("暂停结束", "snooze ended"),
        "reopened" => l.pick("重新打开", "reopened"),
        "reassigned" => l.pick("重新指派", "reassigned"),
        "responders_added" => l.pick("加入处理人", "responders added"),
        "note" => l.pick("备注", "note"),
        "notified" => l.pick("通知", "notified"),
        "escalated" => l.pick("升级", "escalated"),
        "severity_raised" => l.pick("级别提高", "severity raised"),
        other => return other.replace('_', " "),
    };
    word.to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn incident_row(visit: &Visit, i: &Incident, now: DateTime<Utc>) -> String {
    let l = visit.lang;
    format!(
        "<li class=\"incident sev-{sev}\"><a href=\"{base}/incidents/{id}\">\
         <span class=\"badge sev-{sev}\">{sevw}</span> <span class=\"badge st-{st}\">{stw}</span>\
         <strong>#{n} {title}</strong><small>{at}</small></a></li>",
        sev = i.severity.as_str(),
        base = escape(&visit.base()),
        id = escape(&i.id),
        sevw = severity_word(i.severity, l),
        st = i.status.as_str(),
        stw = status_word(i, now, l),
        n = i.number,
        title = escape(&i.title),
        at = time(i.created_at),
    )
}

/// Open incidents (triggered and acknowledged), most severe then newest first.
fn open_incidents(
    app: &Services,
    severity: Option<&str>,
    status: Option<&str>,
    assignee: Option<&str>,
) -> Result<Vec<Incident>, ApiError> {
    let q = IncidentQuery {
        status: Some(status.unwrap_or("open").to_string()),
        severity: severity.map(str::to_string),
        assignee: assignee.map(str::to_string),
        limit: Some(LIST_LIMIT),
        ..Default::default()
    };
    let mut out = app.incidents.list(&q)?;
    out.sort_by(|a, b| {
        b.severity
            .urgency()
            .cmp(&a.severity.urgency())
            .then(b.number.cmp(&a.number))
    });
    Ok(out)
}

/// *My incidents*: the open incidents I am a responder of.
fn render_mine(app: &Services, visit: &Visit, session: &HomeSession) -> Result<String, ApiError> {
    let l = visit.lang;
    let now = app.clock.now();
    let mine = open_incidents(app, None, None, Some(&session.member_id))?;
    let mut main = format!("<h1>{}</h1>", l.pick("我的事件", "My incidents"));
    if mine.is_empty() {
        let _ = write!(
            main,
            "<p class=\"empty\">{}</p>",
            l.pick(
                "没有需要你处理的未关闭事件。",
                "No open incidents have you as a responder."
            )
        );
    } else {
        main.push_str("<ul class=\"incidents\">");
        for i in &mine {
            main.push_str(&incident_row(visit, i, now));
        }
        main.push_str("</ul>");
    }
    Ok(page(visit, l.pick("我的事件", "My incidents"), "mine", &main))
}

fn render_open(app: &Services, visit: &Visit, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let l = visit.lang;
    let now = app.clock.now();
    let severity = query
        .get("severity")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let status = query.get("status").map(String::as_str).filter(|s| !s.is_empty());
    if let Some(s) = severity
        && !["critical", "warning", "info"].contains(&s)
    {
        return Ok(problem_page(
            visit,
            StatusCode::BAD_REQUEST,
            l.pick("筛选条件无效", "Unknown filter"),
            l.pick(
                "级别只能是 严重、警告 或 提示。",
                "severity must be critical, warning or info.",
            ),
            false,
        ));
    }
    if let Some(s) = status
        && !["triggered", "acknowledged"].contains(&s)
    {
        return Ok(problem_page(
            visit,
            StatusCode::BAD_REQUEST,
            l.pick("筛选条件无效", "Unknown filter"),
            l.pick(
                "状态只能是 待处理 或 已认领。",
                "status must be triggered or acknowledged.",
            ),
            false,
        ));
    }
    let found = open_incidents(app, severity, status, None)?;
    let option = |value: &str, label: &str, current: Option<&str>| {
        let selected = if current == Some(value) { " selected" } else { "" };
        format!("<option value=\"{value}\"{selected}>{}</option>", escape(label))
    };
    let mut main = format!(
        "<h1>{title}</h1><form class=\"filters\" method=\"get\">\
         <label>{sevl} <select name=\"severity\">{any}{c}{w}{i}</select></label>\
         <label>{stl} <select name=\"status\">{any}{t}{a}</select></label>\
         <button type=\"submit\">{apply}</button></form>",
        title = l.pick("全部未关闭事件", "All open incidents"),
        sevl = l.pick("级别", "Severity"),
        stl = l.pick("状态", "Status"),
        any = option("", l.pick("全部", "Any"), None),
        c = option("critical", severity_word(Severity::Critical, l), severity),
        w = option("warning", severity_word(Severity::Warning, l), severity),
        i = option("info", severity_word(Severity::Info, l), severity),
        t = option("triggered", l.pick("待处理", "Triggered"), status),
        a = option("acknowledged", l.pick("已认领", "Acknowledged"), status),
        apply = l.pick("筛选", "Apply"),
    );
    if found.is_empty() {
        let _ = write!(
            main,
            "<p class=\"empty\">{}</p>",
            l.pick("没有符合条件的未关闭事件。", "No open incidents match.")
        );
    } else {
        main.push_str("<ul class=\"incidents\">");
        for i in &found {
            main.push_str(&incident_row(visit, i, now));
        }
        main.push_str("</ul>");
    }
    Ok(html_response(
        StatusCode::OK,
        page(
            visit,
            l.pick("全部未关闭事件", "All open incidents"),
            "open",
            &main,
        ),
    ))
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

fn render_incident(
    app: &Services,
    visit: &Visit,
    session: &HomeSession,
    reference: &str,
    flash: Option<String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let now = app.clock.now();
    let Ok(incident) = app.incidents.get(reference) else {
        return Ok(problem_page(
            visit,
            StatusCode::NOT_FOUND,
            l.pick("没有这个事件", "No such incident"),
            l.pick(
                "这个事件不存在（或已被删除）。请从“我的事件”重新打开。",
                "This incident does not exist. Open it again from My incidents.",
            ),
            false,
        ));
    };
    let token = app.homepage.form_token(session);
    let mut main = String::new();
    if let Some(text) = flash {
        let _ = write!(main, "<p class=\"flash\" role=\"status\">{}</p>", escape(&text));
    }
    let _ = write!(
        main,
        "<h1>#{n} {title}</h1><p class=\"badges\"><span class=\"badge sev-{sev}\">{sevw}</span> \
         <span class=\"badge st-{st}\" id=\"status\">{stw}</span></p>",
        n = incident.number,
        title = escape(&incident.title),
        sev = incident.severity.as_str(),
        sevw = severity_word(incident.severity, l),
        st = incident.status.as_str(),
        stw = status_word(&incident, now, l),
    );
    // Actions first: on a phone they are what the person came for.
    let form_start = format!(
        "<form method=\"post\" action=\"{base}/incidents/{id}/act\" class=\"actions\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">",
        base = escape(&visit.base()),
        id = escape(&incident.id),
    );
    main.push_str(&form_start);
    match incident.status {
        Status::Triggered => {
            main.push_str(&action_button(
                "ack",
                l.pick("认领", "Acknowledge"),
                "primary",
                "",
            ));
            main.push_str(&action_button("resolve", l.pick("解决", "Resolve"), "", ""));
        }
        Status::Acknowledged => {
            main.push_str(&action_button(
                "resolve",
                l.pick("解决", "Resolve"),
                "primary",
                "",
            ));
            main.push_str(&action_button(
                "unack",
                l.pick("取消认领", "Unacknowledge"),
                "",
                "",
            ));
        }
        Status::Resolved => {
            main.push_str(&action_button(
                "reopen",
                l.pick("重新打开", "Reopen"),
                "primary",
                "",
            ));
        }
    }
    main.push_str("</form>");
    if incident.is_open() {
        let _ = write!(
            main,
            "{form_start}<fieldset class=\"snooze\"><legend>{legend}</legend>{b1}{b4}{b24}\
             <label>{custom} <input type=\"number\" name=\"custom_minutes\" min=\"1\" max=\"10080\" inputmode=\"numeric\"></label>\
             {bc}</fieldset></form>",
            legend = l.pick("暂停通知", "Snooze"),
            b1 = action_button("snooze_60", l.pick("1 小时", "1 h"), "", ""),
            b4 = action_button("snooze_240", l.pick("4 小时", "4 h"), "", ""),
            b24 = action_button("snooze_1440", l.pick("24 小时", "24 h"), "", ""),
            custom = l.pick("自定义（分钟）", "Custom (minutes)"),
            bc = action_button("snooze_custom", l.pick("暂停", "Snooze"), "", ""),
        );
    }
    if let Some(integration) = incident.integration_id.as_deref()
        && app.incidents.war_room_enabled(integration).unwrap_or(false)
    {
        let room = app.incidents.war_room(&incident.id)?;
        main.push_str(&form_start);
        match room.as_ref().filter(|r| r.is_live()) {
            Some(room) => {
                let chat = room.chat_id.clone().unwrap_or_default();
                let _ = write!(
                    main,
                    "{}<a class=\"button\" id=\"open-war-room\" href=\"https://applink.feishu.cn/client/chat/open?openChatId={}\">{}</a>",
                    action_button("war_room", l.pick("加入作战室", "Join war room"), "", ""),
                    encode(&chat),
                    l.pick("打开作战室", "Open war room"),
                );
            }
            None if incident.is_open() => {
                main.push_str(&action_button(
                    "war_room",
                    l.pick("开启作战室", "Open war room"),
                    "",
                    "",
                ));
            }
            None => {}
        }
        main.push_str("</form>");
    }
    // The facts.
    let dash = "-".to_string();
    let responders = member_names(app, &incident.assignees);
    let _ = write!(
        main,
        "<dl class=\"facts\"><dt>{rl}</dt><dd id=\"responders\">{r}</dd><dt>{al}</dt><dd id=\"acknowledged-by\">{a}</dd>\
         <dt>{sl}</dt><dd>{s}</dd>",
        rl = l.pick("处理人", "Responders"),
        r = escape(&if responders.is_empty() {
            dash.clone()
        } else {
            responders.join(", ")
        }),
        al = l.pick("认领人", "Acknowledged by"),
        a = escape(&if incident.acknowledged_by.is_empty() {
            dash.clone()
        } else {
            incident.acknowledged_by.join(", ")
        }),
        sl = l.pick("开始时间", "Started"),
        s = time(incident.created_at),
    );
    if let Some(until) = incident.snoozed_until.filter(|t| *t > now) {
        let _ = write!(
            main,
            "<dt>{}</dt><dd>{}</dd>",
            l.pick("暂停至", "Snoozed until"),
            time(until)
        );
    }
    if !incident.labels.is_empty() {
        let labels: Vec<String> = incident
            .labels
            .iter()
            .map(|(k, v)| format!("<span class=\"label\">{}={}</span>", escape(k), escape(v)))
            .collect();
        let _ = write!(
            main,
            "<dt>{}</dt><dd>{}</dd>",
            l.pick("标签", "Labels"),
            labels.join(" ")
        );
    }
    main.push_str("</dl>");
    if !incident.description.is_empty() {
        let _ = write!(
            main,
            "<h2>{}</h2><p class=\"description\">{}</p>",
            l.pick("描述", "Description"),
            escape(&incident.description)
        );
    }
    // A note.
    let _ = write!(
        main,
        "{form_start}<label for=\"note\">{nl}</label><textarea id=\"note\" name=\"text\" rows=\"2\" maxlength=\"4000\"></textarea>\
         {b}</form>",
        nl = l.pick("添加备注", "Add a note"),
        b = action_button("note", l.pick("添加", "Add note"), "", ""),
    );
    // The timeline, newest first.
    let _ = write!(
        main,
        "<h2>{}</h2><ol class=\"timeline\" reversed>",
        l.pick("时间线", "Timeline")
    );
    for e in incident.timeline.iter().rev() {
        let who = e
            .actor
            .name
            .clone()
            .or_else(|| e.actor.who.clone())
            .unwrap_or_else(|| l.pick("系统", "system").to_string());
        let detail = match (e.kind.as_str(), &e.detail) {
            ("responders_added" | "reassigned", Some(d)) => {
                let ids: Vec<String> = d.split(", ").map(str::to_string).collect();
                member_names(app, &ids).join(", ")
            }
            (_, Some(d)) => d.clone(),
            (_, None) => String::new(),
        };
        let _ = write!(
            main,
            "<li><time>{}</time> <strong>{}</strong> {} <small>({} {})</small>{}</li>",
            time(e.at),
            escape(&kind_word(&e.kind, l)),
            escape(&who),
            l.pick("来自", "via"),
            via_word(e.actor.via, l),
            if detail.is_empty() {
                String::new()
            } else {
                format!("<br><span class=\"detail\">{}</span>", escape(&detail))
            }
        );
    }
    main.push_str("</ol>");
    // Its cards.
    let cards = app.incidents.cards(&incident.id)?;
    let _ = write!(
        main,
        "<h2>{}</h2><ul class=\"cards\">",
        l.pick("已发送的卡片", "Cards sent")
    );
    let members = app.incidents.members.list()?;
    for c in &cards {
        let to = match c.receiver.split_once(':') {
            Some(("open_id", open_id)) => members
                .iter()
                .find(|m| m.lark.values().any(|x| x.open_id == open_id))
                .map(|m| m.name.clone())
                .unwrap_or_else(|| open_id.to_string()),
            Some(("chat_id", chat)) => format!("{} {chat}", l.pick("群", "chat")),
            _ => c.receiver.clone(),
        };
        let _ = write!(
            main,
            "<li>{} <small>{}</small></li>",
            escape(&to),
            time(c.sent_at)
        );
    }
    if cards.is_empty() {
        let _ = write!(main, "<li>{}</li>", l.pick("还没有", "None yet"));
    }
    main.push_str("</ul>");
    let title = format!("#{} {}", incident.number, incident.title);
    Ok(html_response(
        StatusCode::OK,
        page(visit, &title, "incident", &main),
    ))
}

/// A time in the schedule's zone (as the bot and the notices write it).
fn schedule_time(schedule: &Schedule, t: DateTime<Utc>) -> String {
    let tz: Tz = schedule.version_at(t).time_zone.parse().unwrap_or(Tz::UTC);
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// A shift's span in the schedule's zone, short enough for a phone's line: the year only when
/// it is not this one, the end's date only when it is another day, the zone once.
fn schedule_span(
    schedule: &Schedule,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let tz: Tz = schedule.version_at(start).time_zone.parse().unwrap_or(Tz::UTC);
    let (from, to, today) = (
        start.with_timezone(&tz),
        end.with_timezone(&tz),
        now.with_timezone(&tz),
    );
    let date = |t: &DateTime<Tz>| {
        if t.year() == today.year() {
            t.format("%m-%d %H:%M").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M").to_string()
        }
    };
    let end_text = if to.date_naive() == from.date_naive() {
        to.format("%H:%M").to_string()
    } else {
        date(&to)
    };
    format!("{} – {} {}", date(&from), end_text, to.format("%Z"))
}

/// My shifts with the pieces that follow one another in one schedule (a layer handing to an
/// override of mine) joined, as the person lives them.
fn joined_shifts(shifts: Vec<MemberShift>) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let mut out: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for s in shifts {
        let (start, end) = (s.shift.shift.start, s.shift.shift.end);
        match out
            .iter_mut()
            .rev()
            .find(|(id, _, e)| *id == s.schedule_id && *e == start)
        {
            Some(last) => last.2 = end,
            None => out.push((s.schedule_id, start, end)),
        }
    }
    out
}

/// *On call*: who is on call now and next in every schedule, and my next shifts — all from the
/// one resolver, overrides included.
fn render_oncall(
    app: &Services,
    visit: &Visit,
    session: &HomeSession,
    flash: Option<String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let now = app.clock.now();
    let schedules = app.schedules.list()?;
    let names = |ids: &[String]| escape(&member_names(app, ids).join(", "));
    let role = app.incidents.members.get(&session.member_id).ok().map(|m| m.role);
    let may_cover = role.is_some_and(MemberRole::may_act);
    let token = app.homepage.form_token(session);
    let base = visit.base();
    // A form to cover each other person's part of a shift.
    let cover_forms = |schedule: &Schedule, shift: &resolve::Shift| -> String {
        if !may_cover {
            return String::new();
        }
        let mut forms = String::new();
        for owner in shift.members.iter().filter(|m| **m != session.member_id) {
            let _ = write!(
                forms,
                "<form method=\"post\" action=\"{action}\" class=\"cover\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                 <input type=\"hidden\" name=\"schedule\" value=\"{schedule}\">\
                 <input type=\"hidden\" name=\"owner\" value=\"{owner}\">\
                 <input type=\"hidden\" name=\"start\" value=\"{start}\">\
                 <input type=\"hidden\" name=\"end\" value=\"{end}\">\
                 <button type=\"submit\">{label} {name}</button></form>",
                action = escape(&format!("{base}/oncall/cover")),
                schedule = escape(&schedule.id),
                owner = escape(owner),
                start = shift.start.to_rfc3339(),
                end = shift.end.to_rfc3339(),
                label = l.pick("代班", "Cover for"),
                name = names(std::slice::from_ref(owner)),
            );
        }
        forms
    };
    let mut main = format!("<h1>{}</h1>", l.pick("值班", "On call"));
    if let Some(text) = flash {
        let _ = write!(main, "<p class=\"flash\" role=\"status\">{}</p>", escape(&text));
    }
    main.push_str(&cover_requests(app, visit, session, &schedules, &token)?);
    let _ = write!(
        main,
        "<h2 id=\"now\">{}</h2>",
        l.pick("当前值班", "Who is on call now")
    );
    if schedules.is_empty() {
        let _ = write!(
            main,
            "<p class=\"empty\">{}</p>",
            l.pick("还没有排班。", "There are no schedules yet.")
        );
    } else {
        main.push_str("<ul class=\"oncall\" aria-labelledby=\"now\">");
        for schedule in &schedules {
            let resolved = resolve::shifts(schedule, now, now + Duration::days(ON_CALL_DAYS));
            let (current, next) = resolve::current_and_next(&resolved, now);
            let me = current.is_some_and(|c| c.shift.members.contains(&session.member_id));
            let _ = write!(
                main,
                "<li class=\"oncall-now{mine}\"><strong>{name}</strong>{you}",
                mine = if me { " mine" } else { "" },
                name = escape(&schedule.name),
                you = if me {
                    format!(
                        " <span class=\"badge st-acknowledged\">{}</span>",
                        l.pick("你在值班", "You")
                    )
                } else {
                    String::new()
                },
            );
            match current {
                Some(c) => {
                    let _ = write!(
                        main,
                        "<span class=\"who\">{}</span><small>{} {}</small>{}",
                        names(&c.shift.members),
                        l.pick("至", "until"),
                        schedule_time(schedule, c.shift.end),
                        cover_forms(schedule, &c.shift)
                    );
                }
                None => {
                    let _ = write!(
                        main,
                        "<span class=\"who nobody\">{}</span>",
                        l.pick("无人值班", "Nobody")
                    );
                }
            }
            match next {
                Some(n) => {
                    let _ = write!(
                        main,
                        "<small>{} {} · {}</small>{}",
                        l.pick("下一位", "Next"),
                        names(&n.shift.members),
                        schedule_time(schedule, n.shift.start),
                        cover_forms(schedule, &n.shift)
                    );
                }
                None => {
                    let _ = write!(
                        main,
                        "<small>{}</small>",
                        match l {
                            Lang::Zh => format!("未来 {ON_CALL_DAYS} 天无人接班"),
                            Lang::En => format!("Nobody next in the coming {ON_CALL_DAYS} days"),
                        }
                    );
                }
            }
            main.push_str("</li>");
        }
        main.push_str("</ul>");
    }
    let _ = write!(main, "<h2 id=\"mine\">{}</h2>", l.pick("我的班次", "My shifts"));
    let mine = joined_shifts(app.schedules.member_shifts(
        &session.member_id,
        now,
        now + Duration::days(ON_CALL_DAYS),
    )?);
    if mine.is_empty() {
        let _ = write!(
            main,
            "<p class=\"empty\">{}</p>",
            match l {
                Lang::Zh => format!("未来 {ON_CALL_DAYS} 天你没有班次。"),
                Lang::En => format!("You have no shifts in the next {ON_CALL_DAYS} days."),
            }
        );
    } else {
        main.push_str("<ul class=\"shifts\" aria-labelledby=\"mine\">");
        for (schedule_id, start, end) in mine {
            let Some(schedule) = schedules.iter().find(|s| s.id == schedule_id) else {
                continue;
            };
            let _ = write!(
                main,
                "<li class=\"shift\"><strong>{name}</strong>{when}</li>",
                name = escape(&schedule.name),
                // A running shift is shown from now (the window's start), so only its end says
                // anything.
                when = if start <= now {
                    format!(
                        "<span class=\"badge st-acknowledged\">{}</span> <span>{} {}</span>",
                        l.pick("进行中", "Now"),
                        l.pick("至", "until"),
                        schedule_time(schedule, end)
                    )
                } else {
                    format!("<span>{}</span>", schedule_span(schedule, start, end, now))
                },
            );
        }
        main.push_str("</ul>");
    }
    Ok(html_response(
        StatusCode::OK,
        page(visit, l.pick("值班", "On call"), "oncall", &main),
    ))
}

/// The cover requests waiting for my answer (with accept and decline) and those I made.
fn cover_requests(
    app: &Services,
    visit: &Visit,
    session: &HomeSession,
    schedules: &[Schedule],
    token: &str,
) -> Result<String, ApiError> {
    let l = visit.lang;
    let requests = app.schedules.cover_requests(&session.member_id)?;
    let mut out = String::new();
    let describe = |r: &CoverRequest| {
        let schedule = schedules.iter().find(|s| s.id == r.schedule_id)?;
        Some(format!(
            "<strong>{}</strong><span>{}</span>",
            escape(&schedule.name),
            schedule_span(schedule, r.start, r.end, app.clock.now())
        ))
    };
    let (to_me, mine): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.owner == session.member_id);
    if !to_me.is_empty() {
        let _ = write!(
            out,
            "<h2 id=\"asked\">{}</h2><ul class=\"shifts\" aria-labelledby=\"asked\">",
            l.pick("请你确认的代班", "Asked to cover your shifts")
        );
        for r in to_me {
            let Some(what) = describe(r) else { continue };
            let _ = write!(
                out,
                "<li class=\"shift request\">{what}<small>{by} {who}</small>\
                 <form method=\"post\" action=\"{action}\" class=\"actions\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">{accept}{decline}</form></li>",
                by = l.pick("代班人", "By"),
                who = escape(&member_names(app, std::slice::from_ref(&r.requester)).join("")),
                action = escape(&format!("{}/oncall/requests/{}", visit.base(), r.id)),
                accept = action_button("accept", l.pick("同意", "Accept"), "primary", ""),
                decline = action_button("decline", l.pick("拒绝", "Decline"), "", ""),
            );
        }
        out.push_str("</ul>");
    }
    if !mine.is_empty() {
        let _ = write!(
            out,
            "<h2 id=\"asking\">{}</h2><ul class=\"shifts\" aria-labelledby=\"asking\">",
            l.pick("等待对方确认", "Waiting for an answer")
        );
        for r in mine {
            let Some(what) = describe(r) else { continue };
            let _ = write!(
                out,
                "<li class=\"shift request\">{what}<small>{for_} {who}</small></li>",
                for_ = l.pick("原值班人", "Shift of"),
                who = escape(&member_names(app, std::slice::from_ref(&r.owner)).join("")),
            );
        }
        out.push_str("</ul>");
    }
    Ok(out)
}

/// Where a cover form sends the person back to, with what happened.
fn back_to_oncall(app: &Services, visit: &Visit, message: &str) -> Response {
    see_other(&format!(
        "{}/oncall?m={}",
        visit.base(),
        app.homepage.seal_text(message)
    ))
}

/// What a refused cover says, in the person's language.
fn cover_refusal(l: Lang, e: ScheduleError) -> Result<String, ApiError> {
    match e {
        ScheduleError::Store(e) => Err(e.into()),
        ScheduleError::NotFound(_) => Ok(l
            .pick("找不到这个排班或请求。", "That schedule or request is gone.")
            .into()),
        ScheduleError::Conflict(_) => Ok(l
            .pick("这个请求已经处理过了。", "That request was already answered.")
            .into()),
        ScheduleError::Invalid { field, .. } if field == "end" => {
            Ok(l.pick("这个班次已经结束了。", "That shift is over.").into())
        }
        ScheduleError::Invalid { .. } => Ok(l
            .pick(
                "这段时间已经不是对方的班次了。",
                "That time is no longer their shift.",
            )
            .into()),
    }
}

/// `POST /lark/{id}/app/oncall/cover`: an admin takes the shift at once; anyone else who may
/// act asks its owner.
async fn cover(
    app: Arc<Services>,
    visit: Visit,
    form: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let session = match form_session(&app, &visit, &form).await {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    let role = app.incidents.members.get(&session.member_id).ok().map(|m| m.role);
    if !role.is_some_and(MemberRole::may_act) {
        return Ok(back_to_oncall(
            &app,
            &visit,
            l.pick("你的角色只能查看。", "Your role may look, not act."),
        ));
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let instant = |name: &str| {
        DateTime::parse_from_rfc3339(field(name))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(start), Some(end)) = (instant("start"), instant("end")) else {
        return Ok(back_to_oncall(
            &app,
            &visit,
            l.pick("表单不完整。", "The form is incomplete."),
        ));
    };
    let (schedule, owner, me) = (field("schedule"), field("owner"), session.member_id.as_str());
    let message = if role == Some(MemberRole::Admin) {
        match app.schedules.cover(schedule, owner, me, start, end).await {
            Ok(made) => {
                tracing::info!(schedule = %schedule, owner = %owner, member = %me, r#override = %made.id,
                               "shift covered from the homepage by an admin");
                l.pick("已代班：你现在接替这个班次。", "Covered: the shift is yours now.")
                    .into()
            }
            Err(e) => cover_refusal(l, e)?,
        }
    } else {
        match app.schedules.request_cover(schedule, owner, me, start, end).await {
            Ok(request) => {
                tracing::info!(schedule = %schedule, owner = %owner, member = %me, request = %request.id,
                               "cover requested from the homepage");
                let answer_url = |integration: &str| {
                    format!("{}/oncall", app.integrations.urls(integration).web_configuration)
                };
                if let Err(e) = app.schedule_notices.cover_requested(&request, answer_url).await {
                    tracing::error!(request = %request.id, error = %e, "cannot tell the owner of a cover request");
                }
                l.pick(
                    "已发出代班请求，对方在应用主页同意后生效。",
                    "Asked: the shift is yours once they accept on their homepage.",
                )
                .into()
            }
            Err(e) => cover_refusal(l, e)?,
        }
    };
    Ok(back_to_oncall(&app, &visit, &message))
}

/// `POST /lark/{id}/app/oncall/requests/{req}`: the owner accepts or declines.
async fn answer_cover(
    app: Arc<Services>,
    visit: Visit,
    request: String,
    form: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let session = match form_session(&app, &visit, &form).await {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    let accept = match form.get("action").map(String::as_str) {
        Some("accept") => true,
        Some("decline") => false,
        _ => {
            return Ok(back_to_oncall(
                &app,
                &visit,
                l.pick("未知的操作。", "Unknown action."),
            ));
        }
    };
    let message = match app
        .schedules
        .answer_cover(&request, &session.member_id, accept)
        .await
    {
        Ok(answered) if accept => {
            tracing::info!(request = %answered.id, "cover request accepted from the homepage");
            l.pick("已同意：对方接替你的班次。", "Accepted: they cover your shift.")
                .into()
        }
        Ok(answered) => {
            tracing::info!(request = %answered.id, "cover request declined from the homepage");
            l.pick("已拒绝。", "Declined.").into()
        }
        Err(e) => cover_refusal(l, e)?,
    };
    Ok(back_to_oncall(&app, &visit, &message))
}

fn render_me(app: &Services, visit: &Visit, session: &HomeSession) -> Result<Response, ApiError> {
    let l = visit.lang;
    let member: Option<Member> = app.incidents.members.get(&session.member_id).ok();
    let token = app.homepage.form_token(session);
    let linked = member
        .as_ref()
        .and_then(|m| m.lark.get(&visit.integration))
        .map(|i| format!("{} ({})", i.linked_via, time(i.linked_at)))
        .unwrap_or_default();
    let main = format!(
        "<h1>{title}</h1><h2>{lark}</h2><dl class=\"facts\"><dt>{namel}</dt><dd id=\"lark-name\">{name}</dd>\
         <dt>open_id</dt><dd><code>{open_id}</code></dd></dl>\
         <h2>{mem}</h2><dl class=\"facts\"><dt>{namel}</dt><dd id=\"member-name\">{mname}</dd>\
         <dt>{emaill}</dt><dd>{email}</dd><dt>{linkl}</dt><dd id=\"linked-via\">{linked}</dd></dl>\
         <form method=\"post\" action=\"{base}/logout\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\">{logout}</button></form><p class=\"hint\">{hint}</p>",
        title = l.pick("我是谁", "Who am I"),
        lark = l.pick("飞书身份", "Lark identity"),
        namel = l.pick("姓名", "Name"),
        name = escape(&session.lark_name),
        open_id = escape(&session.open_id),
        mem = l.pick("值班成员", "On-call member"),
        mname = escape(&member.as_ref().map(|m| m.name.clone()).unwrap_or_default()),
        emaill = l.pick("邮箱", "Email"),
        email = escape(
            &member
                .as_ref()
                .and_then(|m| m.email.clone())
                .unwrap_or_else(|| "-".into())
        ),
        linkl = l.pick("关联方式", "Linked via"),
        linked = escape(&linked),
        base = escape(&visit.base()),
        logout = l.pick("退出登录", "Log out"),
        hint = l.pick(
            "退出后再次打开应用主页即可用其他账号登录。",
            "After logging out, open the homepage again to log in as someone else."
        ),
    );
    Ok(html_response(
        StatusCode::OK,
        page(visit, l.pick("我是谁", "Who am I"), "me", &main),
    ))
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

/// `GET /lark/{id}/app/{tail}`.
async fn app_page(
    app: Arc<Services>,
    visit: Visit,
    tail: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    if app.integrations.get(&visit.integration).is_none() {
        return Ok(unknown_integration(&visit));
    }
    let session = match &visit.cookie {
        Some(c) => app
            .homepage
            .session(&visit.integration, c)
            .await
            .map_err(internal)?,
        None => None,
    };
    let Some(session) = session else {
        let mut target = if tail.is_empty() {
            String::new()
        } else {
            format!("/{tail}")
        };
        let rest: Vec<String> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "lang")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        if !rest.is_empty() {
            target = format!("{target}?{}", rest.join("&"));
        }
        let redirect_uri = app.integrations.urls(&visit.integration).redirect;
        let url = app
            .homepage
            .authorize_url(&visit.integration, &redirect_uri, &target)
            .map_err(internal)?;
        return Ok(redirect(&url));
    };
    let parts: Vec<&str> = tail.split('/').filter(|p| !p.is_empty()).collect();
    let flash = query.get("m").and_then(|m| app.homepage.open_sealed(m));
    let mut response = match parts.as_slice() {
        [] | ["incidents"] => html_response(StatusCode::OK, render_mine(&app, &visit, &session)?),
        ["open"] => render_open(&app, &visit, &query)?,
        ["me"] => render_me(&app, &visit, &session)?,
        ["oncall"] => render_oncall(&app, &visit, &session, flash)?,
        ["incidents", id] => render_incident(&app, &visit, &session, id, flash)?,
        _ => {
            let l = visit.lang;
            problem_page(
                &visit,
                StatusCode::NOT_FOUND,
                l.pick("没有这个页面", "No such page"),
                l.pick("请从导航重新进入。", "Use the navigation to find your way."),
                false,
            )
        }
    };
    if let Some(cookie) = &visit.cookie {
        // The session slides: so does the cookie.
        add_cookie(
            &mut response,
            session_cookie(
                &app,
                &visit.integration,
                cookie,
                crate::homepage::SESSION_LIFETIME.num_seconds(),
            ),
        );
    }
    Ok(response)
}

fn internal(e: HomepageError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// `GET /lark/{id}/oauth/callback`.
async fn callback(
    app: Arc<Services>,
    visit: Visit,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let refuse = |reason: &str| {
        tracing::warn!(integration = %visit.integration, reason, "homepage login refused");
    };
    if app.integrations.get(&visit.integration).is_none() {
        return Ok(unknown_integration(&visit));
    }
    let param = |k: &str| {
        query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_PARAM_CHARS)
    };
    if let Some(error) = param("error") {
        refuse(if error == "access_denied" {
            "access_denied"
        } else {
            "lark_error"
        });
        return Ok(problem_page(
            &visit,
            StatusCode::FORBIDDEN,
            l.pick("你没有授权登录", "You did not allow the login"),
            l.pick(
                "飞书没有把你的身份交给值班应用，所以无法打开事件。如果是误操作，请重新登录并选择“授权”。",
                "Lark did not pass your identity to the on-call app, so it cannot show your incidents. If that was a mistake, log in again and choose Allow.",
            ),
            true,
        ));
    }
    let (Some(code), Some(state)) = (param("code"), param("state")) else {
        refuse("missing_code_or_state");
        return Ok(problem_page(
            &visit,
            StatusCode::BAD_REQUEST,
            l.pick("登录链接不完整", "The login link is incomplete"),
            l.pick(
                "这个地址缺少飞书返回的 code 或 state。请从应用主页重新登录。",
                "This address lacks the code or state Lark sends back. Start again from the homepage.",
            ),
            true,
        ));
    };
    let redirect_uri = app.integrations.urls(&visit.integration).redirect;
    match app
        .homepage
        .finish_login(&visit.integration, &redirect_uri, code, state)
        .await
    {
        Ok(login) => {
            if let Some(previous) = &visit.cookie
                && let Ok(Some(old)) = app.homepage.session(&visit.integration, previous).await
            {
                app.homepage.revoke(&old.id).await.map_err(internal)?;
            }
            let mut r = redirect(&format!("{}{}", visit.base(), login.target));
            add_cookie(
                &mut r,
                session_cookie(
                    &app,
                    &visit.integration,
                    &login.cookie,
                    crate::homepage::SESSION_LIFETIME.num_seconds(),
                ),
            );
            Ok(r)
        }
        Err(e) => {
            refuse(e.reason());
            Ok(login_problem(&app, &visit, e))
        }
    }
}

fn login_problem(app: &Services, visit: &Visit, e: HomepageError) -> Response {
    let l = visit.lang;
    let bad = StatusCode::BAD_REQUEST;
    match e {
        HomepageError::UnknownIntegration(_) => unknown_integration(visit),
        HomepageError::BadState(StateProblem::Expired) => problem_page(
            visit,
            bad,
            l.pick("登录已过期", "The login took too long"),
            l.pick("登录需在 10 分钟内完成。请重新登录。", "A login must finish within 10 minutes. Log in again."),
            true,
        ),
        HomepageError::BadState(StateProblem::Replayed) => problem_page(
            visit,
            bad,
            l.pick("登录链接已用过", "This login link was already used"),
            l.pick("每个登录链接只能用一次。请重新登录。", "Each login link works once. Log in again."),
            true,
        ),
        HomepageError::BadState(_) => problem_page(
            visit,
            bad,
            l.pick("登录链接无效", "This login link is not valid"),
            l.pick(
                "这个登录链接不是本应用发出的，或已被改动。请从应用主页重新登录。",
                "This login link was not issued by this app, or was changed. Start again from the homepage.",
            ),
            true,
        ),
        HomepageError::CodeRejected { code: Some(20010), .. } => problem_page(
            visit,
            StatusCode::FORBIDDEN,
            l.pick("你不在应用的可用范围内", "You cannot use this app yet"),
            l.pick(
                "飞书说你不在这个应用的可用范围内。请管理员在开发者后台把你加入可用范围。",
                "Lark says you are outside this app's availability. Ask your admin to add you in the Lark developer console.",
            ),
            false,
        ),
        HomepageError::CodeRejected { .. } => problem_page(
            visit,
            bad,
            l.pick("飞书拒绝了这次登录", "Lark refused this login"),
            l.pick(
                "登录码无效、已过期或已被使用。请重新登录。",
                "The login code is not valid, has expired or was already used. Log in again.",
            ),
            true,
        ),
        HomepageError::LarkUnavailable(_) => problem_page(
            visit,
            StatusCode::BAD_GATEWAY,
            l.pick("暂时连不上飞书", "Lark cannot be reached right now"),
            l.pick("请稍后重新登录。", "Log in again in a moment."),
            true,
        ),
        HomepageError::NoMember(info) => {
            let contact = app
                .homepage
                .config
                .admin_contact
                .clone()
                .unwrap_or_else(|| l.pick("值班系统的管理员", "the on-call admin").to_string());
            let mut known = vec![escape(&info.name)];
            for extra in [info.email.as_deref(), info.mobile.as_deref()].into_iter().flatten() {
                if !extra.is_empty() {
                    known.push(escape(extra));
                }
            }
            let body = match l {
                Lang::Zh => format!(
                    "你在飞书中是 <strong id=\"lark-who\">{}</strong>（open_id <code>{}</code>），但没有值班成员与之对应。请联系 <strong id=\"admin-contact\">{}</strong>，让他们用你的邮箱或手机号添加成员，然后重新打开此页。",
                    known.join("，"),
                    escape(&info.open_id),
                    escape(&contact)
                ),
                Lang::En => format!(
                    "In Lark you are <strong id=\"lark-who\">{}</strong> (open_id <code>{}</code>), but no on-call member matches you. Ask <strong id=\"admin-contact\">{}</strong> to add you as a member with your email or mobile, then open this page again.",
                    known.join(", "),
                    escape(&info.open_id),
                    escape(&contact)
                ),
            };
            problem_page(
                visit,
                StatusCode::FORBIDDEN,
                l.pick("你还不是值班成员", "You are not an on-call member yet"),
                &body,
                false,
            )
        }
        HomepageError::Incident(_) | HomepageError::Store(_) => problem_page(
            visit,
            StatusCode::INTERNAL_SERVER_ERROR,
            l.pick("出错了", "Something went wrong"),
            l.pick("值班服务出错了，请稍后重试。", "The on-call server failed; try again shortly."),
            true,
        ),
    }
}

/// A session for a form post, or the page that says why not.
async fn form_session(
    app: &Services,
    visit: &Visit,
    form: &HashMap<String, String>,
) -> Result<HomeSession, Response> {
    let l = visit.lang;
    if app.integrations.get(&visit.integration).is_none() {
        return Err(unknown_integration(visit));
    }
    let session = match &visit.cookie {
        Some(c) => app.homepage.session(&visit.integration, c).await.ok().flatten(),
        None => None,
    };
    let Some(session) = session else {
        return Err(problem_page(
            visit,
            StatusCode::UNAUTHORIZED,
            l.pick("请先登录", "Log in first"),
            l.pick(
                "你的登录已失效。请重新登录后再操作。",
                "Your login has ended. Log in again, then try once more.",
            ),
            true,
        ));
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if !app.homepage.form_token_ok(&session, token) {
        tracing::warn!(integration = %visit.integration, reason = "form_token", "homepage form refused");
        return Err(problem_page(
            visit,
            StatusCode::FORBIDDEN,
            l.pick("表单已过期", "This form has expired"),
            l.pick("请刷新页面后重试。", "Reload the page and try again."),
            false,
        ));
    }
    Ok(session)
}

/// `POST /lark/{id}/app/incidents/{inc}/act`: the card's actions, with the card's rules.
async fn act(
    app: Arc<Services>,
    visit: Visit,
    incident: String,
    form: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let session = match form_session(&app, &visit, &form).await {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    let page_url = format!("{}/incidents/{}", visit.base(), encode(&incident));
    let bad = |text: &'static str| {
        problem_page(
            &visit,
            StatusCode::BAD_REQUEST,
            l.pick("无法执行", "Cannot do that"),
            &format!(
                "{} <a href=\"{}\">{}</a>",
                escape(text),
                escape(&page_url),
                l.pick("返回事件", "Back to the incident")
            ),
            false,
        )
    };
    let name = form.get("action").map(String::as_str).unwrap_or("");
    let action = match name {
        "ack" => Action::Acknowledge,
        "unack" => Action::Unacknowledge,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        "snooze_60" => Action::Snooze { minutes: 60 },
        "snooze_240" => Action::Snooze { minutes: 240 },
        "snooze_1440" => Action::Snooze { minutes: 1440 },
        "snooze_custom" => match form
            .get("custom_minutes")
            .and_then(|m| m.trim().parse::<u32>().ok())
        {
            Some(m) if (1..=10_080).contains(&m) => Action::Snooze { minutes: m },
            _ => {
                return Ok(bad(l.pick(
                    "自定义暂停时长需为 1 到 10080 分钟。",
                    "A custom snooze is 1 to 10080 minutes.",
                )));
            }
        },
        "note" => match form.get("text").map(|t| t.trim()).filter(|t| !t.is_empty()) {
            Some(t) if t.chars().count() <= 4000 => Action::Note { text: t.to_string() },
            Some(_) => {
                return Ok(bad(
                    l.pick("备注最多 4000 字。", "A note is at most 4000 characters.")
                ));
            }
            None => return Ok(bad(l.pick("备注不能为空。", "Write the note first."))),
        },
        "war_room" => return war_room(&app, &visit, &session, &incident, &page_url).await,
        _ => return Ok(bad(l.pick("未知的操作。", "Unknown action."))),
    };
    let Ok(member) = app.incidents.members.get(&session.member_id) else {
        return Ok(problem_page(
            &visit,
            StatusCode::FORBIDDEN,
            l.pick("成员已不存在", "Your member record is gone"),
            l.pick("请联系管理员。", "Ask your admin."),
            false,
        ));
    };
    let message = match app
        .homepage
        .actions
        .perform(&member, &incident, action, Via::Homepage, None)
        .await
    {
        Outcome::Done(_, what) | Outcome::AlreadyDone(_, what) | Outcome::Refused(what) => what,
    };
    Ok(see_other(&format!(
        "{page_url}?m={}",
        app.homepage.seal_text(&message)
    )))
}

async fn war_room(
    app: &Services,
    visit: &Visit,
    session: &HomeSession,
    incident: &str,
    page_url: &str,
) -> Result<Response, ApiError> {
    let requester = Requester::Lark {
        open_id: session.open_id.clone(),
    };
    let message = match app.incidents.open_war_room(incident, requester).await {
        Ok(outcome) => {
            let name = &outcome.war_room.name;
            match (&outcome.presser, outcome.created) {
                (crate::incident::war_room::PresserOutcome::Added, true) => {
                    format!("War room {name} opened; you are in it.")
                }
                (crate::incident::war_room::PresserOutcome::Added, false) => {
                    format!("You are now in {name}.")
                }
                (crate::incident::war_room::PresserOutcome::AlreadyIn, _) => {
                    format!("You are already in {name}.")
                }
                (crate::incident::war_room::PresserOutcome::ShareLink { link, reason }, _) => {
                    format!("Lark would not add you to {name} ({reason}); join it with this link: {link}")
                }
                (crate::incident::war_room::PresserOutcome::NotInLark { reason }, _) => {
                    format!("Lark would not add you to {name}: {reason}")
                }
                (crate::incident::war_room::PresserOutcome::Waiting, _) => {
                    format!("Adding you to {name}; it appears in your chats when you are in.")
                }
                (crate::incident::war_room::PresserOutcome::Nobody, _) => format!("War room {name} is open."),
            }
        }
        Err(e) => e.to_string(),
    };
    let _ = visit;
    Ok(see_other(&format!(
        "{page_url}?m={}",
        app.homepage.seal_text(&message)
    )))
}

/// `POST /lark/{id}/app/logout`.
async fn logout(
    app: Arc<Services>,
    visit: Visit,
    form: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let session = match form_session(&app, &visit, &form).await {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    app.homepage.revoke(&session.id).await.map_err(internal)?;
    let mut r = problem_page(
        &visit,
        StatusCode::OK,
        l.pick("已退出登录", "Logged out"),
        l.pick(
            "你已退出。再次打开即可登录（也可换一个飞书账号）。",
            "You are logged out. Open the homepage again to log in (as anyone).",
        ),
        true,
    );
    add_cookie(&mut r, session_cookie(&app, &visit.integration, "", 0));
    Ok(r)
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
