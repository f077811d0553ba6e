//! What incidents send to custom group bots (next §2): a card whose buttons open the incident
//! on the app homepage (a group bot's card cannot call back), within Lark's 20 KB body; and,
//! since such a card cannot be updated either, a short new message on each change of status,
//! which the outbox spaces to at most one per incident per minute (later ones merge into the
//! waiting one). Which webhooks an incident notified is remembered, with the last status told.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::card::{self, CardContext, escape_markdown};
use super::model::{Incident, Status};
use super::{IncidentError, Incidents, tables};
use crate::delivery::{JobKind, NewJob};

/// Text of a description shown on a group-bot card; the rest is behind the link.
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_LABELS_SHOWN: usize = 10;
const MAX_TITLE_CHARS: usize = 200;

/// A webhook an incident notified, and the status it last heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotWebhookNotice {
    pub incident_id: String,
    pub webhook_id: String,
    pub integration_id: String,
    pub last_status: Status,
    pub first_sent_at: DateTime<Utc>,
}

fn status_words(status: Status) -> &'static str {
    match status {
        Status::Triggered => "Triggered",
        Status::Acknowledged => "Acknowledged",
        Status::Resolved => "Resolved",
    }
}

fn title(incident: &Incident) -> String {
    card::cut_chars(
        &format!("#{} {}", incident.number, incident.title),
        MAX_TITLE_CHARS,
    )
}

/// The message body (`msg_type` and `card`, JSON 1.0) for a group bot, before the keyword and
/// signature the sender adds.
pub fn card_body(incident: &Incident, ctx: &CardContext) -> String {
    let url = &ctx.incident_url;
    let multi_url = json!({"url": url, "pc_url": url, "android_url": url, "ios_url": url});
    let mut fields = vec![
        field("Severity", incident.severity.as_str()),
        field("Status", status_words(incident.status)),
    ];
    if !ctx.assignee_names.is_empty() {
        fields.push(field(
            "Assignees",
            &escape_markdown(&ctx.assignee_names.join(", ")),
        ));
    }
    let mut elements = vec![json!({"tag": "div", "fields": fields})];
    if !incident.labels.is_empty() {
        let mut shown: Vec<String> = incident
            .labels
            .iter()
            .take(MAX_LABELS_SHOWN)
            .map(|(k, v)| escape_markdown(&card::cut_chars(&format!("{k}={v}"), 100)))
            .collect();
        if incident.labels.len() > MAX_LABELS_SHOWN {
            shown.push(format!("… {} more", incident.labels.len() - MAX_LABELS_SHOWN));
        }
        elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": shown.join("  ")}}));
    }
    if !incident.description.is_empty() {
        let text = escape_markdown(&card::cut_chars(&incident.description, MAX_DESCRIPTION_CHARS));
        elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": text}}));
    }
    let open = |label: &str, kind: &str| {
        json!({"tag": "button", "text": {"tag": "plain_text", "content": label}, "type": kind,
               "multi_url": multi_url})
    };
    let buttons = if incident.status == Status::Resolved {
        vec![open("Open incident", "default")]
    } else {
        vec![
            open("Acknowledge in the app", "primary"),
            open("Open incident", "default"),
        ]
    };
    elements.push(json!({"tag": "action", "actions": buttons}));
    elements.push(json!({"tag": "note", "elements": [{"tag": "plain_text",
        "content": "Posted by a group bot: this card does not change; act on the incident in the app."}]}));
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {"template": card::template(incident, ctx.now),
                       "title": {"tag": "plain_text", "content": title(incident)}},
            "elements": elements
        }
    })
    .to_string()
}

fn field(label: &str, value: &str) -> Value {
    json!({"is_short": true, "text": {"tag": "lark_md", "content": format!("**{label}**\n{value}")}})
}

/// The short message a state change sends: what the incident is now, who made it so, and the
/// link. Text, so nothing in it is parsed as markup.
pub fn state_body(incident: &Incident, incident_url: &str) -> String {
    let by = incident
        .timeline
        .iter()
        .rev()
        .find(|e| {
            matches!(
                e.kind.as_str(),
                "acknowledged" | "resolved" | "reopened" | "unacknowledged" | "triggered"
            )
        })
        .and_then(|e| e.actor.name.clone())
        .map(|name| format!(" by {}", card::neutralize_mentions(&card::cut_chars(&name, 100))))
        .unwrap_or_default();
    let text = format!(
        "{}: {}{by}\n{incident_url}",
        card::neutralize_mentions(&title(incident)),
        status_words(incident.status).to_lowercase(),
    );
    json!({"msg_type": "text", "content": {"text": text}}).to_string()
}

impl Incidents {
    fn incident_url(&self, incident: &Incident) -> String {
        let integration = incident.integration_id.as_deref().unwrap_or("-");
        format!(
            "{}/lark/{integration}/app/incidents/{}",
            self.public_base, incident.id
        )
    }

    /// Sends the incident's group-bot card to each of `webhook_ids` through the outbox, and
    /// remembers them for the state changes to come. A deleted webhook is recorded as unsendable.
    pub(super) async fn notify_bot_webhooks(
        &self,
        incident: &Incident,
        integration: &str,
        webhook_ids: &[String],
    ) -> Result<(), IncidentError> {
        if webhook_ids.is_empty() {
            return Ok(());
        }
        let names = incident
            .assignees
            .iter()
            .map(|id| {
                self.members
                    .get(id)
                    .map(|m| m.name)
                    .unwrap_or_else(|_| id.clone())
            })
            .collect();
        let ctx = CardContext {
            incident_url: self.incident_url(incident),
            assignee_names: names,
            now: self.clock.now(),
            war_room: card::WarRoomButton::Absent,
            on_call: self.on_call_lines(incident),
        };
        let body = card_body(incident, &ctx);
        for webhook_id in webhook_ids {
            if !self.bot_webhooks.exists(webhook_id) {
                self.delivery
                    .record_unsendable(
                        integration,
                        Some(&incident.id),
                        &format!("{}{webhook_id}", crate::delivery::job::BOT_WEBHOOK_RECEIVER),
                        "bot_webhook_deleted",
                    )
                    .await?;
                continue;
            }
            self.delivery
                .enqueue(NewJob {
                    integration_id: integration.to_string(),
                    incident_id: Some(incident.id.clone()),
                    priority: incident.severity.priority(),
                    cosmetic: false,
                    kind: JobKind::BotHook {
                        webhook_id: webhook_id.clone(),
                        body: body.clone(),
                        state_change: false,
                    },
                })
                .await?;
            let key = format!("{}/{webhook_id}", incident.id);
            let notice = BotWebhookNotice {
                incident_id: incident.id.clone(),
                webhook_id: webhook_id.clone(),
                integration_id: integration.to_string(),
                last_status: incident.status,
                first_sent_at: ctx.now,
            };
            self.store
                .write(move |w| {
                    // A repeat keeps the first time and the last status told.
                    if w.get(&tables::INCIDENT_BOT_WEBHOOKS, key.as_str())?.is_some() {
                        return Ok(());
                    }
                    w.put(&tables::INCIDENT_BOT_WEBHOOKS, key.as_str(), &notice)
                })
                .await?;
        }
        Ok(())
    }

    /// Tells every webhook the incident notified of a status it has not heard of yet, with a
    /// short new message.
    pub(super) async fn bot_webhooks_follow(&self, incident: &Incident) -> Result<(), IncidentError> {
        let prefix = format!("{}/", incident.id);
        let notices = self
            .store
            .read(|r| r.scan_prefix(&tables::INCIDENT_BOT_WEBHOOKS, &prefix, usize::MAX))?;
        for (key, mut notice) in notices {
            if notice.last_status == incident.status || !self.bot_webhooks.exists(&notice.webhook_id) {
                continue;
            }
            self.delivery
                .enqueue(NewJob {
                    integration_id: notice.integration_id.clone(),
                    incident_id: Some(incident.id.clone()),
                    priority: incident.severity.priority(),
                    cosmetic: false,
                    kind: JobKind::BotHook {
                        webhook_id: notice.webhook_id.clone(),
                        body: state_body(incident, &self.incident_url(incident)),
                        state_change: true,
                    },
                })
                .await?;
            notice.last_status = incident.status;
            self.store
                .write(move |w| w.put(&tables::INCIDENT_BOT_WEBHOOKS, key.as_str(), &notice))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_only_opens_links_and_fits_in_20_kb() {
        let incident = Incident {
            title: "磁盘满 disk full".repeat(50),
            description: "<at id=all></at> 服务器响应超时".repeat(5_000),
            labels: (0..50).map(|i| (format!("k{i}"), "v".repeat(300))).collect(),
            ..Incident::sample(Utc::now())
        };
        let ctx = CardContext {
            incident_url: "https://oncall.example.com/lark/int_1/app/incidents/inc_1".into(),
            assignee_names: vec!["张伟".into()],
            now: Utc::now(),
            war_room: card::WarRoomButton::Absent,
            on_call: Vec::new(),
        };
        let body = card_body(&incident, &ctx);
        assert!(
            body.len() < crate::bot_webhook::MAX_BODY_BYTES - 1024,
            "{} bytes",
            body.len()
        );
        assert!(!body.contains("<at id=all>"));
        let message: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(message["msg_type"], "interactive");
        let buttons: Vec<&Value> = message["card"]["elements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["tag"] == "action")
            .flat_map(|e| e["actions"].as_array().unwrap())
            .collect();
        assert!(!buttons.is_empty());
        for b in buttons {
            assert!(
                b.get("value").is_none(),
                "a group bot's button cannot call back: {b}"
            );
            assert_eq!(b["multi_url"]["url"], ctx.incident_url);
        }
    }
}
