//! The homepage's *On call* page (who is on call now and next, my shifts, cover requests) and
//! its forms, `POST /lark/{id}/app/oncall/cover` and `…/oncall/requests/{req}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use warp::http::StatusCode;
use warp::reply::Response;

use super::login::form_session;
use super::{Lang, Visit, action_button, escape, html_response, member_names, page, see_other};
use crate::homepage::HomeSession;
use crate::incident::model::MemberRole;
use crate::schedule::cover::CoverRequest;
use crate::schedule::model::Schedule;
use crate::schedule::{MemberShift, ScheduleError, resolve};
use crate::services::Services;
use crate::web::error::ApiError;

/// How far ahead the on-call page looks for who is next and for my shifts.
const ON_CALL_DAYS: i64 = 14;

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
pub(super) fn render_oncall(
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
pub(super) async fn cover(
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
pub(super) async fn answer_cover(
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
