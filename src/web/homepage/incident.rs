//! One incident's page on the homepage and its form, `POST /lark/{id}/app/incidents/{inc}/act`
//! (the card's actions with the card's rules, and the war room button).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;

use super::login::form_session;
use super::pages::{kind_word, severity_word, status_word, time, via_word};
use super::{
    Visit, action_button, encode, escape, html_response, member_names, page, problem_page, see_other,
};
use crate::homepage::HomeSession;
use crate::incident::Action;
use crate::incident::actions::Outcome;
use crate::incident::model::{Status, Via};
use crate::incident::war_room::Requester;
use crate::services::Services;
use crate::web::error::ApiError;

pub(super) fn render_incident(
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

/// `POST /lark/{id}/app/incidents/{inc}/act`: the card's actions, with the card's rules.
pub(super) async fn act(
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
