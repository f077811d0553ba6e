//! The homepage's list pages (*My incidents*, *All open*), *Who am I*, the words they share
//! (severity, status, history kinds, times) and the dispatch of `GET /lark/{id}/app/{tail}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use warp::http::StatusCode;
use warp::reply::Response;

use super::incident::render_incident;
use super::oncall::render_oncall;
use super::{
    Lang, Visit, add_cookie, encode, escape, html_response, internal, page, problem_page, redirect,
    session_cookie, unknown_integration,
};
use crate::homepage::HomeSession;
use crate::incident::IncidentQuery;
use crate::incident::model::{Incident, Member, Severity, Status, Via};
use crate::services::Services;
use crate::web::error::ApiError;

/// Incidents a list page shows.
const LIST_LIMIT: usize = 200;

pub(super) fn severity_word(s: Severity, l: Lang) -> &'static str {
    match s {
        Severity::Critical => l.pick("严重", "Critical"),
        Severity::Warning => l.pick("警告", "Warning"),
        Severity::Info => l.pick("提示", "Info"),
    }
}

pub(super) fn status_word(i: &Incident, now: DateTime<Utc>, l: Lang) -> &'static str {
    if i.snoozed_at(now) {
        return l.pick("已暂停", "Snoozed");
    }
    match i.status {
        Status::Triggered => l.pick("待处理", "Triggered"),
        Status::Acknowledged => l.pick("已认领", "Acknowledged"),
        Status::Resolved => l.pick("已解决", "Resolved"),
    }
}

pub(super) fn via_word(via: Via, l: Lang) -> &'static str {
    match via {
        Via::Card => l.pick("卡片", "card"),
        Via::Bot => l.pick("机器人", "bot"),
        Via::Homepage => l.pick("应用主页", "homepage"),
        Via::Api => l.pick("API", "API"),
        Via::Alert => l.pick("告警", "alert"),
        Via::System => l.pick("系统", "system"),
    }
}

pub(super) fn kind_word(kind: &str, l: Lang) -> String {
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

pub(super) fn time(t: DateTime<Utc>) -> String {
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

/// `GET /lark/{id}/app/{tail}`.
pub(super) async fn app_page(
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
