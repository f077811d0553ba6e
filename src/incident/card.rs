//! The incident card: Lark card JSON 1.0, shared (`update_multi`) so every copy can be updated,
//! in zh_cn and en_us, with buttons whose `value` the card callback acts on. Rendering keeps the
//! serialized content under Lark's 30 KB card limit (counted in bytes): a long description and
//! many labels are cut, with a link to the full incident.
//!
//! Everything an alert provides (labels, description) is [`escape_markdown`]ed before it goes
//! into `lark_md`/`markdown` elements, so an alert cannot mention everyone (`<at id=all>`), plant
//! a link under our bot's name, or break out of formatting; the title is `plain_text`, which Lark
//! does not parse.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::model::{Incident, Severity, Status};

/// Lark's card limit is 30 KB of content; leave room for Lark's own accounting.
pub const MAX_CARD_BYTES: usize = 29 * 1024;
/// Labels shown on a card; the rest are counted and linked.
const MAX_LABELS_SHOWN: usize = 20;
const MAX_LABEL_CHARS: usize = 200;
const MAX_TITLE_CHARS: usize = 200;

/// What a card shows beyond the incident itself.
#[derive(Debug, Clone)]
pub struct CardContext {
    /// Opens the incident on the homepage inside Lark.
    pub incident_url: String,
    pub assignee_names: Vec<String>,
    pub now: DateTime<Utc>,
    pub war_room: WarRoomButton,
    /// Who was on call at the incident's time in each schedule its rule pages.
    pub on_call: Vec<OnCallLine>,
}

/// One schedule's people on call, by name (none: nobody was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCallLine {
    pub schedule: String,
    pub members: Vec<String>,
}

/// "On call: ops: Alice · db: nobody", or `None` when the rule pages no schedule.
fn on_call_text(ctx: &CardContext, l: Locale) -> Option<String> {
    if ctx.on_call.is_empty() {
        return None;
    }
    let parts: Vec<String> = ctx
        .on_call
        .iter()
        .map(|line| {
            let who = if line.members.is_empty() {
                l.pick("无人值班", "nobody").to_string()
            } else {
                escape_markdown(&line.members.join(", "))
            };
            format!("{}{}{who}", escape_markdown(&line.schedule), l.pick("：", ": "))
        })
        .collect();
    Some(format!(
        "**{}** {}",
        l.pick("值班：", "On call:"),
        parts.join(" · ")
    ))
}

/// The card's war-room buttons.
#[derive(Debug, Clone, PartialEq)]
pub enum WarRoomButton {
    /// War rooms are off for the integration, or the incident is resolved.
    Absent,
    /// "War room": opens one.
    Open,
    /// "Join war room" (adds the presser) and "Open war room" (the chat's AppLink, for members).
    Join { chat_url: String },
}

fn war_room_buttons(incident: &Incident, ctx: &CardContext, l: Locale) -> Vec<Value> {
    let value = json!({"action": "war_room", "incident": incident.id});
    match &ctx.war_room {
        WarRoomButton::Absent => Vec::new(),
        WarRoomButton::Open => vec![button(l.pick("作战室", "War room"), "default", value)],
        WarRoomButton::Join { chat_url } => vec![
            button(l.pick("加入作战室", "Join war room"), "default", value),
            json!({"tag": "button", "text": {"tag": "plain_text", "content": l.pick("打开作战室", "Open war room")},
                   "type": "default",
                   "multi_url": {"url": chat_url, "pc_url": chat_url, "android_url": chat_url, "ios_url": chat_url}}),
        ],
    }
}

#[derive(Clone, Copy)]
enum Locale {
    Zh,
    En,
}

impl Locale {
    fn pick(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Locale::Zh => zh,
            Locale::En => en,
        }
    }
}

pub(super) fn template(incident: &Incident, now: DateTime<Utc>) -> &'static str {
    if incident.status == Status::Resolved {
        return "green";
    }
    if incident.snoozed_at(now) {
        return "grey";
    }
    match incident.severity {
        Severity::Critical => "red",
        Severity::Warning => "orange",
        Severity::Info => "blue",
    }
}

fn status_text(incident: &Incident, now: DateTime<Utc>, l: Locale) -> String {
    if let Some(until) = incident.snoozed_until.filter(|t| *t > now) {
        let until = until.format("%Y-%m-%d %H:%M UTC");
        return match l {
            Locale::Zh => format!("已暂停至 {until}"),
            Locale::En => format!("Snoozed until {until}"),
        };
    }
    match incident.status {
        Status::Triggered => l.pick("待处理", "Triggered"),
        Status::Acknowledged => l.pick("已认领", "Acknowledged"),
        Status::Resolved => l.pick("已解决", "Resolved"),
    }
    .to_string()
}

fn severity_text(severity: Severity, l: Locale) -> &'static str {
    match severity {
        Severity::Critical => l.pick("严重", "Critical"),
        Severity::Warning => l.pick("警告", "Warning"),
        Severity::Info => l.pick("提示", "Info"),
    }
}

/// `text` with every character Lark's card markdown gives a meaning written as an HTML entity
/// (which Lark's markdown decodes for display): no `<at>` tags, links, emphasis, code spans,
/// headings or autolinked URLs can come out of it.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' | '<' | '>' | '*' | '_' | '~' | '`' | '[' | ']' | '(' | ')' | '#' | '\\' | ':' | '!'
            | '|' | '$' | '"' | '\'' => {
                out.push_str(&format!("&#{};", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` for a plain text message, where Lark parses `<at user_id=…>` tags: `<` becomes the
/// look-alike `＜`, so text from an alert cannot mention anyone.
pub fn neutralize_mentions(text: &str) -> String {
    text.replace('<', "\u{FF1C}")
}

pub(super) fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn field(label: &str, value: &str) -> Value {
    json!({"is_short": true, "text": {"tag": "lark_md", "content": format!("**{label}**\n{value}")}})
}

fn button(text: &str, kind: &str, value: Value) -> Value {
    json!({"tag": "button", "text": {"tag": "plain_text", "content": text}, "type": kind, "value": value})
}

fn buttons(incident: &Incident, l: Locale) -> Vec<Value> {
    let id = incident.id.as_str();
    let snooze = |minutes: u32, zh: &'static str, en: &'static str| {
        button(
            l.pick(zh, en),
            "default",
            json!({"action": "snooze", "incident": id, "minutes": minutes}),
        )
    };
    match incident.status {
        Status::Resolved => vec![button(
            l.pick("重新打开", "Reopen"),
            "default",
            json!({"action": "reopen", "incident": id}),
        )],
        status => {
            let mut out = Vec::new();
            if status == Status::Triggered {
                out.push(button(
                    l.pick("认领", "Acknowledge"),
                    "primary",
                    json!({"action": "ack", "incident": id}),
                ));
            }
            out.push(button(
                l.pick("解决", "Resolve"),
                "danger",
                json!({"action": "resolve", "incident": id}),
            ));
            out.push(snooze(60, "暂停 1 小时", "Snooze 1 h"));
            out.push(snooze(240, "暂停 4 小时", "Snooze 4 h"));
            out.push(snooze(1440, "暂停 24 小时", "Snooze 24 h"));
            out
        }
    }
}

fn labels_text(incident: &Incident, ctx: &CardContext, l: Locale) -> Option<String> {
    if incident.labels.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = incident
        .labels
        .iter()
        .take(MAX_LABELS_SHOWN)
        .map(|(k, v)| escape_markdown(&cut_chars(&format!("{k}={v}"), MAX_LABEL_CHARS)))
        .collect();
    let hidden = incident.labels.len().saturating_sub(MAX_LABELS_SHOWN);
    if hidden > 0 {
        parts.push(match l {
            Locale::Zh => format!("[另有 {hidden} 个标签]({})", ctx.incident_url),
            Locale::En => format!("[{hidden} more]({})", ctx.incident_url),
        });
    }
    Some(format!("**{}** {}", l.pick("标签", "Labels"), parts.join(" · ")))
}

/// `description_chars`: how much of the description to show (`None` = all of it).
fn elements(
    incident: &Incident,
    ctx: &CardContext,
    l: Locale,
    description_chars: Option<usize>,
) -> Vec<Value> {
    let dash = "-".to_string();
    let assignees = if ctx.assignee_names.is_empty() {
        dash.clone()
    } else {
        escape_markdown(&ctx.assignee_names.join(", "))
    };
    let acked = if incident.acknowledged_by.is_empty() {
        dash
    } else {
        escape_markdown(&incident.acknowledged_by.join(", "))
    };
    let mut out = vec![json!({"tag": "div", "fields": [
        field(l.pick("状态", "Status"), &status_text(incident, ctx.now, l)),
        field(l.pick("级别", "Severity"), severity_text(incident.severity, l)),
        field(l.pick("开始时间", "Started"), &incident.created_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        field(l.pick("处理人", "Responders"), &assignees),
        field(l.pick("认领人", "Acknowledged by"), &acked),
    ]})];
    if let Some(on_call) = on_call_text(ctx, l) {
        out.push(json!({"tag": "markdown", "content": on_call}));
    }
    if let Some(labels) = labels_text(incident, ctx, l) {
        out.push(json!({"tag": "markdown", "content": labels}));
    }
    if !incident.description.is_empty() {
        let content = match description_chars {
            Some(n) if n < incident.description.chars().count() => format!(
                "{}\n[{}]({})",
                escape_markdown(&cut_chars(&incident.description, n)),
                l.pick("在应用中查看全文", "View in app for the full text"),
                ctx.incident_url
            ),
            _ => escape_markdown(&incident.description),
        };
        out.push(json!({"tag": "markdown", "content": content}));
    }
    out.push(json!({"tag": "hr"}));
    out.push(json!({"tag": "action", "actions": buttons(incident, l)}));
    let mut links = war_room_buttons(incident, ctx, l);
    links.push(json!({
        "tag": "button",
        "text": {"tag": "plain_text", "content": l.pick("在应用中打开", "Open in app")},
        "type": "default",
        "multi_url": {"url": ctx.incident_url, "pc_url": ctx.incident_url, "android_url": ctx.incident_url, "ios_url": ctx.incident_url},
    }));
    out.push(json!({"tag": "action", "actions": links}));
    out
}

fn card(incident: &Incident, ctx: &CardContext, description_chars: Option<usize>) -> String {
    let title = cut_chars(
        &format!("#{} {}", incident.number, incident.title),
        MAX_TITLE_CHARS,
    );
    let header = |l: Locale| {
        let prefix = match incident.status {
            Status::Resolved => l.pick("[已解决] ", "[Resolved] "),
            _ => "",
        };
        json!({"template": template(incident, ctx.now),
               "title": {"tag": "plain_text", "content": format!("{prefix}{title}")}})
    };
    json!({
        "config": {"wide_screen_mode": true, "update_multi": true},
        "i18n_header": {"zh_cn": header(Locale::Zh), "en_us": header(Locale::En)},
        "i18n_elements": {
            "zh_cn": elements(incident, ctx, Locale::Zh, description_chars),
            "en_us": elements(incident, ctx, Locale::En, description_chars),
        },
    })
    .to_string()
}

/// The card's content string (what `im/v1/messages` takes), at most [`MAX_CARD_BYTES`].
pub fn render(incident: &Incident, ctx: &CardContext) -> String {
    let full = card(incident, ctx, None);
    if full.len() <= MAX_CARD_BYTES {
        return full;
    }
    // The longest description prefix that fits, found by bisection on characters.
    let (mut fits, mut too_long) = (0usize, incident.description.chars().count());
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if card(incident, ctx, Some(mid)).len() <= MAX_CARD_BYTES {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    card(incident, ctx, Some(fits))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::model::Status;

    fn incident(description: String, labels: usize) -> Incident {
        Incident {
            number: 42,
            title: "数据库主库不可用 DB primary down".into(),
            description,
            labels: (0..labels)
                .map(|i| (format!("label{i}"), "值".repeat(50)))
                .collect::<BTreeMap<_, _>>(),
            ..Incident::sample(Utc::now())
        }
    }

    fn ctx() -> CardContext {
        CardContext {
            incident_url: "https://oncall.example.com/lark/i1/app/incidents/inc_1".into(),
            assignee_names: vec!["张伟".into()],
            now: Utc::now(),
            war_room: WarRoomButton::Absent,
            on_call: Vec::new(),
        }
    }

    #[test]
    fn a_huge_chinese_description_is_cut_to_fit_with_a_link() {
        let description = "服务器响应超时，请检查数据库连接池。".repeat(2000);
        assert!(description.len() > 100_000);
        let content = render(&incident(description, 200), &ctx());
        assert!(content.len() <= MAX_CARD_BYTES, "{} bytes", content.len());
        assert!(
            content.len() > MAX_CARD_BYTES - 200,
            "the budget is used, not wasted"
        );
        let card: Value = serde_json::from_str(&content).unwrap();
        assert_eq!(card["config"]["update_multi"], true);
        assert!(content.contains("View in app for the full text"));
        assert!(content.contains("180 more"));
    }

    #[test]
    fn markdown_from_an_alert_is_inert() {
        let escaped = escape_markdown("<at id=all></at> [x](http://evil) `code` **b**");
        for raw in ["<at", "[x]", "(http", "`", "**", "http:"] {
            assert!(!escaped.contains(raw), "{raw} survived: {escaped}");
        }
        assert_eq!(escape_markdown("&#60;at"), "&#38;&#35;60;at");
        assert_eq!(
            neutralize_mentions("<at user_id=\"all\">"),
            "\u{FF1C}at user_id=\"all\">"
        );
    }

    #[test]
    fn buttons_follow_the_status() {
        let mut inc = incident("short".into(), 1);
        let card: Value = serde_json::from_str(&render(&inc, &ctx())).unwrap();
        let actions = &card["i18n_elements"]["en_us"];
        let values: Vec<&Value> = actions
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["tag"] == "action")
            .flat_map(|e| e["actions"].as_array().unwrap())
            .filter_map(|b| b.get("value"))
            .collect();
        assert_eq!(values[0], &json!({"action": "ack", "incident": "inc_1"}));
        assert!(values.contains(&&json!({"action": "snooze", "incident": "inc_1", "minutes": 240})));
        assert_eq!(card["i18n_header"]["en_us"]["template"], "red");
        inc.status = Status::Resolved;
        let content = render(&inc, &ctx());
        assert!(content.contains(r#""action":"reopen""#));
        assert!(!content.contains(r#""action":"ack""#));
        assert!(content.contains("green"));
    }
}
