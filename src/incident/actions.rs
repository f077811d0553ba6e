//! Acting on incidents from Lark: card buttons and bot commands (`help`, `list`, `oncall`, `ack`,
//! `resolve`, `snooze`, in a p2p chat or @-mentioning the bot in a group). In a war room the
//! room is the incident: commands need no id (`ack`, `resolve`, `snooze 1h`, `status`,
//! `note <text>`) and every other message the bot receives becomes a note on the timeline. A person is known by the Lark identity linked
//! to their member on the integration the action came through; the answer says what was done,
//! or what had already happened, and never changes anything for someone not linked.
//!
//! Anyone in the tenant can message the bot, so its replies go out at info priority (they wait
//! when the monthly quota runs low; pages to on-call people never do) and each sender gets at
//! most [`REPLY_BURST`] in a burst, then one every [`REPLY_INTERVAL_SECS`] seconds.
//!
//! Over 700 lines: card buttons, bot commands and war-room messages are one handler sharing the
//! identity check, the reply budget and the answers' words; apart, each would need them all.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use chrono_tz::Tz;
use futures_util::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;

use super::model::{Actor, Incident, Member, Status, Via};
use super::war_room::{PresserOutcome, Requester};
use super::{Action, IncidentError, IncidentQuery, Incidents};
use crate::delivery::{Delivery, JobKind, NewJob, Priority};
use crate::integration::Live;
use crate::integration::inbound::{CardActionHandler, EventHandler};
use crate::lark::callback::EventDelivery;
use crate::lark::event::{CardAction, CardActionReply, Event, MessageReceived, Operator, Toast};
use crate::schedule::{FinalShift, MAX_WINDOW_DAYS, resolve};

/// What the bot answers to `help` and to anything it does not understand.
const HELP: &str = "On-call commands:\n\
help: this list\n\
list: open incidents assigned to you\n\
oncall [schedule]: who is on call now and next (值班 [排班名] answers in Chinese)\n\
ack <id>: acknowledge an incident (42, #42 or inc_…)\n\
resolve <id>: resolve an incident\n\
snooze <id> <duration>: snooze it for 30m, 2h, 1d …";

/// The language a bot command was given in, and its answer comes in.
#[derive(Clone, Copy)]
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
}

/// Replies one sender gets in a burst.
pub const REPLY_BURST: u32 = 10;
/// After a burst, one more reply per this many seconds.
pub const REPLY_INTERVAL_SECS: u64 = 6;
/// Senders remembered by the reply limiter before its aged entries are dropped.
const MAX_TRACKED_SENDERS: usize = 10_000;

/// What acting on an incident from Lark came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The action was applied; the message says what was done.
    Done(Box<Incident>, String),
    /// Nothing changed: it had already happened (a second press, a stale card).
    AlreadyDone(Box<Incident>, String),
    /// Nothing changed, for the reason given.
    Refused(String),
}

/// Card buttons and bot commands: who is acting, and what their action does.
pub struct LarkActions {
    incidents: Arc<Incidents>,
    delivery: Arc<Delivery>,
    public_base: String,
    /// Whom people are told to ask when they may not act (`server.admin_contact`).
    admin_contact: Option<String>,
    /// Bot replies per (integration, sender open_id).
    replies: DefaultKeyedRateLimiter<(String, String)>,
}

impl LarkActions {
    pub fn new(
        incidents: Arc<Incidents>,
        delivery: Arc<Delivery>,
        public_base: &str,
        admin_contact: Option<String>,
    ) -> LarkActions {
        let quota = Quota::with_period(Duration::from_secs(REPLY_INTERVAL_SECS))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(REPLY_BURST).expect("non-zero"));
        LarkActions {
            incidents,
            delivery,
            public_base: public_base.trim_end_matches('/').to_string(),
            admin_contact,
            replies: RateLimiter::keyed(quota),
        }
    }

    /// The member linked to this Lark user on `integration`, if any.
    pub fn member_for(
        &self,
        integration: &str,
        operator: &Operator,
    ) -> Result<Option<Member>, IncidentError> {
        let Some(open_id) = operator.open_id.as_deref() else {
            return Ok(None);
        };
        Ok(self
            .incidents
            .members
            .list()?
            .into_iter()
            .find(|m| m.lark.get(integration).is_some_and(|i| i.open_id == open_id)))
    }

    /// What a member whose role does not let them act is told, and whom to ask.
    pub fn role_refusal(&self, role: &str) -> String {
        let ask = match &self.admin_contact {
            Some(contact) => contact.clone(),
            None => "an administrator of lark-oncall".to_string(),
        };
        format!(
            "Your on-call role is {role}: you can see incidents but not act on them. Ask {ask} to make you a responder."
        )
    }

    /// What an unlinked person is told: the homepage links their Lark account to their member.
    pub fn link_hint(&self, integration: &str) -> String {
        format!(
            "Your Lark account is not linked to an on-call member yet: open {}/lark/{integration}/app once to link it, then try again.",
            self.public_base
        )
    }

    /// Applies `action` to the incident `reference` as `member`; idempotent: an action that
    /// already happened changes nothing and says so. `answered_card` is the message whose
    /// card the caller replaces itself (the one a button was pressed on): it is not updated
    /// through the outbox.
    pub async fn perform(
        &self,
        member: &Member,
        reference: &str,
        action: Action,
        via: Via,
        answered_card: Option<&str>,
    ) -> Outcome {
        let current = match self.incidents.get(reference) {
            Ok(incident) => incident,
            Err(e) => return refused(e),
        };
        let actor = Actor {
            via,
            who: Some(member.id.clone()),
            name: Some(member.name.clone()),
        };
        if !member.role.may_act() {
            let attempted = action_word(&action);
            let role = member.role.as_str();
            if let Err(e) = self
                .incidents
                .record_refused_attempt(&current.id, actor, role, attempted)
                .await
            {
                tracing::warn!(incident = %current.id, error = %e, "cannot record a refused attempt");
            }
            tracing::info!(incident = %current.id, member = %member.id, role, attempted, "refused an action for the member's role");
            return Outcome::Refused(self.role_refusal(role));
        }
        if let Some(what) = already_done(&current, &action) {
            return Outcome::AlreadyDone(Box::new(current), what);
        }
        let acted = self
            .incidents
            .act_answering(&current.id, action.clone(), actor, answered_card)
            .await;
        match acted {
            Ok(incident) => {
                let what = done_message(&incident, &action);
                Outcome::Done(Box::new(incident), what)
            }
            Err(e) => refused(e),
        }
    }

    /// The incident's card as it stands, to answer a button press with.
    fn card(&self, incident: &Incident) -> Option<Value> {
        serde_json::from_str(&self.incidents.card_content(incident)).ok()
    }

    async fn answer(&self, integration: &str, action: &CardAction) -> CardActionReply {
        // Anyone may join a war room, linked or not: Lark adds them by their open_id.
        if action.value.get("action").and_then(Value::as_str) == Some("war_room") {
            return self.war_room_press(action).await;
        }
        let member = match self.member_for(integration, &action.operator) {
            Ok(Some(member)) => member,
            Ok(None) => return toast_only("warning", self.link_hint(integration)),
            Err(e) => return toast_only("error", refused_message(e)),
        };
        let Some((reference, requested)) = button_action(&action.value) else {
            return toast_only("warning", "This button does nothing any more.".into());
        };
        // The answer carries the card as it stands now, so the pressed copy needs no PATCH.
        let pressed = action.open_message_id.as_deref();
        match self
            .perform(&member, &reference, requested, Via::Card, pressed)
            .await
        {
            Outcome::Done(incident, what) => CardActionReply {
                toast: Some(toast("success", what)),
                card: self.card(&incident),
            },
            Outcome::AlreadyDone(incident, what) => CardActionReply {
                toast: Some(toast("info", what)),
                card: self.card(&incident),
            },
            Outcome::Refused(why) => toast_only("warning", why),
        }
    }
}

/// How long a press waits for the war room before answering "still opening" (Lark waits 3 s).
const WAR_ROOM_PRESS_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);

/// What the bot answers to `help` in a war room.
const ROOM_HELP: &str = "War-room commands (this room is the incident):\n\
ack: acknowledge it\n\
resolve: resolve it\n\
snooze <duration>: snooze it for 30m, 2h, 1d …\n\
status: where it stands\n\
note <text>: add a note to its timeline\n\
Anything else you write here that the bot receives is added to the timeline as a note.";

impl LarkActions {
    /// "War room" / "Join war room": opens the room or adds the presser, in the background so
    /// a slow Lark cannot cut the work short when the callback's time is up.
    async fn war_room_press(&self, action: &CardAction) -> CardActionReply {
        let Some(reference) = action.value.get("incident").and_then(Value::as_str) else {
            return toast_only("warning", "This button does nothing any more.".into());
        };
        let Some(open_id) = action.operator.open_id.clone() else {
            return toast_only("warning", "Lark did not say who pressed the button.".into());
        };
        let incidents = self.incidents.clone();
        let reference = reference.to_string();
        let task = tokio::spawn(async move {
            incidents
                .open_war_room(&reference, Requester::Lark { open_id })
                .await
        });
        let outcome = match tokio::time::timeout(WAR_ROOM_PRESS_WAIT, task).await {
            Ok(Ok(Ok(outcome))) => outcome,
            Ok(Ok(Err(e @ IncidentError::WarRoomDisabled(_)))) => {
                return toast_only("warning", e.to_string());
            }
            Ok(Ok(Err(e))) => return toast_only("warning", refused_message(e)),
            Ok(Err(join)) => {
                tracing::error!(error = %join, "the war-room task failed");
                return toast_only(
                    "error",
                    "Something went wrong on the on-call server; try again.".into(),
                );
            }
            Err(_) => {
                return toast_only(
                    "info",
                    "Opening the war room; the card updates when it is ready.".into(),
                );
            }
        };
        let name = &outcome.war_room.name;
        let (kind, text) = match &outcome.presser {
            PresserOutcome::Added if outcome.created => {
                ("success", format!("War room {name} opened; you are in it."))
            }
            PresserOutcome::Added => (
                "success",
                format!("You are now in {name}: open it with \"Open war room\"."),
            ),
            PresserOutcome::AlreadyIn => ("info", format!("You are already in {name}.")),
            PresserOutcome::ShareLink { link, reason } => (
                "warning",
                format!("Lark would not add you to {name} ({reason}); join it with this link: {link}"),
            ),
            PresserOutcome::NotInLark { reason } => {
                ("warning", format!("Lark would not add you to {name}: {reason}"))
            }
            PresserOutcome::Waiting => (
                "info",
                format!("Adding you to {name}; the card updates when you are in."),
            ),
            PresserOutcome::Nobody => ("info", format!("War room {name} is open.")),
        };
        let card = self
            .incidents
            .get(&outcome.war_room.incident_id)
            .ok()
            .and_then(|incident| self.card(&incident));
        CardActionReply {
            toast: Some(toast(kind, text)),
            card,
        }
    }

    /// A message in a war room: an id-less command, or a note on the timeline.
    async fn in_war_room(
        &self,
        integration: &str,
        incident_id: &str,
        message: &MessageReceived,
    ) -> Option<String> {
        let text = message
            .plain_text()
            .unwrap_or_else(|| format!("[{} message]", message.message_type));
        let words: Vec<&str> = text.split_whitespace().collect();
        let command = words.first().map(|w| w.to_lowercase()).unwrap_or_default();
        let action = match (command.as_str(), &words.get(1..).unwrap_or_default()) {
            ("help", []) => return Some(ROOM_HELP.into()),
            ("status", []) => {
                return Some(match self.incidents.get(incident_id) {
                    Ok(incident) => status_line(&incident),
                    Err(e) => refused_message(e),
                });
            }
            ("ack", []) => Some(Action::Acknowledge),
            ("resolve", []) => Some(Action::Resolve),
            ("snooze", [duration]) => match parse_duration(duration) {
                Some(minutes) => Some(Action::Snooze { minutes }),
                None => {
                    return Some(format!(
                        "Cannot read the duration {duration:?}: write it like 30m, 2h or 1d."
                    ));
                }
            },
            ("note", [_, ..]) => Some(Action::Note {
                text: words[1..].join(" "),
            }),
            _ => None,
        };
        let member = match self.member_for(integration, &message.sender) {
            Ok(member) => member,
            Err(e) => return Some(refused_message(e)),
        };
        let Some(action) = action else {
            // Not a command: the message goes to the timeline with its author, quietly.
            let actor = match &member {
                Some(m) => Actor {
                    via: Via::Bot,
                    who: Some(m.id.clone()),
                    name: Some(m.name.clone()),
                },
                None => Actor {
                    via: Via::Bot,
                    who: message.sender.open_id.clone(),
                    name: None,
                },
            };
            if let Err(e) = self
                .incidents
                .act(incident_id, Action::Note { text }, actor)
                .await
            {
                tracing::warn!(incident = %incident_id, error = %e, "cannot add a war-room message to the timeline");
            }
            return None;
        };
        let Some(member) = member else {
            return Some(self.link_hint(integration));
        };
        Some(
            match self.perform(&member, incident_id, action, Via::Bot, None).await {
                Outcome::Done(_, what) => what,
                Outcome::AlreadyDone(_, what) | Outcome::Refused(what) => what,
            },
        )
    }

    /// Whether this sender may still get a reply: anyone in the tenant can write to the bot.
    fn reply_budget_left(&self, integration: &str, message: &MessageReceived) -> bool {
        let sender = message.sender.open_id.clone().unwrap_or_default();
        if self.replies.len() > MAX_TRACKED_SENDERS {
            self.replies.retain_recent();
        }
        if self
            .replies
            .check_key(&(integration.to_string(), sender.clone()))
            .is_err()
        {
            tracing::info!(
                integration,
                sender,
                "bot message ignored: this sender's reply budget is spent"
            );
            return false;
        }
        true
    }

    async fn queue_reply(&self, integration: &str, message_id: &str, reply: String) {
        let job = NewJob {
            integration_id: integration.to_string(),
            incident_id: None,
            // Anyone in the tenant can ask; the quota real pages need comes first.
            priority: Priority::Info,
            cosmetic: false,
            kind: JobKind::Reply {
                message_id: message_id.to_string(),
                msg_type: "text".into(),
                content: serde_json::json!({ "text": reply }).to_string(),
            },
        };
        if let Err(e) = self.delivery.enqueue(job).await {
            tracing::error!(integration, error = %e, "cannot queue the bot's reply");
        }
    }

    /// The answer to one message sent to the bot.
    pub async fn command_reply(&self, integration: &str, message: &MessageReceived) -> String {
        let text = message.plain_text().unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some(command) = words.first().map(|w| w.to_lowercase()) else {
            return HELP.into();
        };
        if command == "help" {
            return HELP.into();
        }
        let member = match self.member_for(integration, &message.sender) {
            Ok(Some(member)) => member,
            Ok(None) => return self.link_hint(integration),
            Err(e) => return refused_message(e),
        };
        let action = match (command.as_str(), &words[1..]) {
            ("list", []) => return self.assigned_to(&member),
            ("oncall", name) => return self.on_call_now(&name.join(" "), Lang::En),
            ("值班", name) => return self.on_call_now(&name.join(" "), Lang::Zh),
            ("ack", [_]) => Action::Acknowledge,
            ("resolve", [_]) => Action::Resolve,
            ("snooze", [_, duration]) => match parse_duration(duration) {
                Some(minutes) => Action::Snooze { minutes },
                None => {
                    return format!("Cannot read the duration {duration:?}: write it like 30m, 2h or 1d.");
                }
            },
            _ => return HELP.into(),
        };
        match self.perform(&member, words[1], action, Via::Bot, None).await {
            Outcome::Done(incident, what) => {
                format!("{what} ({})", super::card::neutralize_mentions(&incident.title))
            }
            Outcome::AlreadyDone(_, what) | Outcome::Refused(what) => what,
        }
    }

    /// `oncall [schedule]`: in every schedule (or the one named), who is on call now and who
    /// takes over next, with times in the schedule's zone, from the one resolver.
    fn on_call_now(&self, name: &str, lang: Lang) -> String {
        let schedules = &self.incidents.schedules;
        let all = match schedules.list() {
            Ok(all) => all,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the schedules");
                return lang
                    .pick("暂时无法读取排班。", "Cannot read the schedules right now.")
                    .into();
            }
        };
        let wanted = name.trim().to_lowercase();
        let chosen: Vec<_> = all
            .into_iter()
            .filter(|s| wanted.is_empty() || s.name.to_lowercase() == wanted)
            .collect();
        if chosen.is_empty() {
            let name = super::card::neutralize_mentions(name.trim());
            return match (wanted.is_empty(), lang) {
                (true, Lang::Zh) => "还没有排班。".into(),
                (true, Lang::En) => "There are no schedules yet.".into(),
                (false, Lang::Zh) => format!("没有名为“{name}”的排班。"),
                (false, Lang::En) => format!("No schedule is named {name:?}."),
            };
        }
        let now = self.incidents.clock.now();
        let mut lines = vec![lang.pick("当前值班：", "On call now:").to_string()];
        for schedule in &chosen {
            let tz: Tz = schedule.version_at(now).time_zone.parse().unwrap_or(Tz::UTC);
            let at = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
            let names = |f: &FinalShift| {
                let names: Vec<String> = f.shift.members.iter().map(|m| schedules.member_name(m)).collect();
                super::card::neutralize_mentions(&names.join(", "))
            };
            let resolved = resolve::shifts(schedule, now, now + ChronoDuration::days(MAX_WINDOW_DAYS));
            let (current, next) = resolve::current_and_next(&resolved, now);
            let current = match (current, lang) {
                (Some(c), Lang::Zh) => format!("{}（至 {}）", names(c), at(c.shift.end)),
                (Some(c), Lang::En) => format!("{} until {}", names(c), at(c.shift.end)),
                (None, l) => l.pick("无人值班", "nobody").into(),
            };
            let next = match (next, lang) {
                (Some(n), Lang::Zh) => format!("下一位：{}（{} 起）", names(n), at(n.shift.start)),
                (Some(n), Lang::En) => format!("next: {} from {}", names(n), at(n.shift.start)),
                (None, Lang::Zh) => format!("未来 {MAX_WINDOW_DAYS} 天无人接班"),
                (None, Lang::En) => format!("nobody next in the coming {MAX_WINDOW_DAYS} days"),
            };
            let schedule_name = super::card::neutralize_mentions(&schedule.name);
            lines.push(match lang {
                Lang::Zh => format!("{schedule_name}：{current}；{next}"),
                Lang::En => format!("{schedule_name}: {current}; {next}"),
            });
        }
        lines.join("\n")
    }

    /// `list`: the open incidents assigned to `member`, newest first.
    fn assigned_to(&self, member: &Member) -> String {
        let query = IncidentQuery {
            status: Some("open".into()),
            assignee: Some(member.id.clone()),
            ..Default::default()
        };
        let open = match self.incidents.list(&query) {
            Ok(found) => found,
            Err(e) => return refused_message(e),
        };
        if open.is_empty() {
            return "No open incidents are assigned to you.".into();
        }
        let lines: Vec<String> = open
            .iter()
            .map(|i| {
                format!(
                    "#{} [{}] {}",
                    i.number,
                    i.status.as_str(),
                    super::card::neutralize_mentions(&i.title)
                )
            })
            .collect();
        format!("Open incidents assigned to you:\n{}", lines.join("\n"))
    }

    async fn on_message(&self, integration: &str, message: &MessageReceived) {
        if message.chat_type != "p2p" {
            match self.incidents.war_room_incident(&message.chat_id) {
                Ok(Some(incident_id)) => {
                    if let Some(reply) = self.in_war_room(integration, &incident_id, message).await
                        && self.reply_budget_left(integration, message)
                    {
                        self.queue_reply(integration, &message.message_id, reply).await;
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot look up war rooms"),
            }
        }
        // In a group the bot only answers when mentioned; in p2p every message is for it.
        if message.chat_type != "p2p" && message.mentions.is_empty() {
            return;
        }
        if !self.reply_budget_left(integration, message) {
            return;
        }
        let reply = self.command_reply(integration, message).await;
        self.queue_reply(integration, &message.message_id, reply).await;
    }
}

impl EventHandler for LarkActions {
    fn handle<'a>(&'a self, integration: &'a Arc<Live>, event: &'a EventDelivery) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Event::MessageReceived(message) = &event.event {
                self.on_message(integration.id(), message).await;
            }
        })
    }
}

/// `30m`, `2h`, `1d` (or a bare number of minutes) in minutes.
fn parse_duration(text: &str) -> Option<u32> {
    let text = text.trim().to_lowercase();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text.as_str(), "m"),
    };
    let n: u32 = number.parse().ok()?;
    let per = match unit {
        "m" | "min" | "mins" | "minutes" => 1,
        "h" | "hr" | "hours" => 60,
        "d" | "day" | "days" => 1440,
        _ => return None,
    };
    n.checked_mul(per).filter(|m| *m > 0)
}

impl CardActionHandler for LarkActions {
    fn handle<'a>(
        &'a self,
        integration: &'a Arc<Live>,
        action: &'a CardAction,
    ) -> BoxFuture<'a, CardActionReply> {
        Box::pin(self.answer(integration.id(), action))
    }
}

fn refused_message(e: IncidentError) -> String {
    match e {
        IncidentError::Invalid { .. } | IncidentError::NotFound(_) | IncidentError::Conflict(_) => {
            e.to_string()
        }
        other => {
            tracing::error!(error = %other, "acting on an incident from Lark failed");
            "Something went wrong on the on-call server; try again.".into()
        }
    }
}

fn refused(e: IncidentError) -> Outcome {
    Outcome::Refused(refused_message(e))
}

/// The word for an action in the timeline and the operation log.
fn action_word(action: &Action) -> &'static str {
    match action {
        Action::Acknowledge => "acknowledge",
        Action::Unacknowledge => "unacknowledge",
        Action::Resolve => "resolve",
        Action::Snooze { .. } => "snooze",
        Action::Reopen => "reopen",
        Action::Reassign { .. } => "reassign",
        Action::Note { .. } => "note",
    }
}

fn toast(kind: &str, content: String) -> Toast {
    Toast {
        kind: kind.into(),
        content,
        i18n: None,
    }
}

fn toast_only(kind: &str, content: String) -> CardActionReply {
    CardActionReply {
        toast: Some(toast(kind, content)),
        card: None,
    }
}

/// The incident and action a card button carries (`{"action", "incident", "minutes"}`).
fn button_action(value: &Value) -> Option<(String, Action)> {
    let incident = value.get("incident")?.as_str()?.to_string();
    let action = match value.get("action")?.as_str()? {
        "ack" => Action::Acknowledge,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        "snooze" => Action::Snooze {
            minutes: u32::try_from(value.get("minutes")?.as_u64()?).ok()?,
        },
        _ => return None,
    };
    Some((incident, action))
}

/// Who last did `kind` to the incident, by name.
fn last_by(incident: &Incident, kind: &str) -> String {
    incident
        .timeline
        .iter()
        .rev()
        .find(|e| e.kind == kind)
        .and_then(|e| e.actor.name.clone().or_else(|| e.actor.who.clone()))
        .unwrap_or_else(|| "the system".into())
}

/// What already happened that makes `action` a no-op, if anything did.
fn already_done(incident: &Incident, action: &Action) -> Option<String> {
    let n = incident.number;
    match (action, incident.status) {
        (Action::Acknowledge, Status::Acknowledged) => Some(format!(
            "#{n} was already acknowledged by {}.",
            incident.acknowledged_by.join(", ")
        )),
        (Action::Acknowledge | Action::Resolve | Action::Snooze { .. }, Status::Resolved) => Some(format!(
            "#{n} was already resolved by {}.",
            last_by(incident, "resolved")
        )),
        (Action::Reopen, Status::Triggered | Status::Acknowledged) => Some(format!("#{n} is already open.")),
        _ => None,
    }
}

/// `status` in a war room.
fn status_line(incident: &Incident) -> String {
    let mut line = format!(
        "#{} [{}] {}",
        incident.number,
        incident.status.as_str(),
        incident.title
    );
    if !incident.acknowledged_by.is_empty() {
        line.push_str(&format!(
            "; acknowledged by {}",
            incident.acknowledged_by.join(", ")
        ));
    }
    if let Some(until) = incident.snoozed_until {
        line.push_str(&format!("; snoozed until {}", until.format("%Y-%m-%d %H:%M UTC")));
    }
    line
}

fn done_message(incident: &Incident, action: &Action) -> String {
    let n = incident.number;
    match action {
        Action::Acknowledge => format!("#{n} acknowledged: escalation stops while you work on it."),
        Action::Unacknowledge => format!("#{n} is no longer acknowledged."),
        Action::Resolve => format!("#{n} resolved."),
        Action::Snooze { minutes } => format!("#{n} snoozed for {}.", human_minutes(*minutes)),
        Action::Reopen => format!("#{n} reopened."),
        Action::Reassign { .. } => format!("#{n} reassigned."),
        Action::Note { .. } => format!("Note added to #{n}."),
    }
}

/// `90` → `1h 30m`, `1440` → `1d`.
pub fn human_minutes(minutes: u32) -> String {
    let (d, h, m) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m")]
        .into_iter()
        .filter(|(v, _)| *v > 0)
        .map(|(v, unit)| format!("{v}{unit}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buttons_map_to_actions_and_anything_else_to_none() {
        assert_eq!(
            button_action(&json!({"action": "snooze", "incident": "inc_1", "minutes": 240})),
            Some(("inc_1".into(), Action::Snooze { minutes: 240 }))
        );
        assert_eq!(
            button_action(&json!({"action": "ack", "incident": "inc_1"})),
            Some(("inc_1".into(), Action::Acknowledge))
        );
        assert_eq!(
            button_action(&json!({"action": "snooze", "incident": "inc_1"})),
            None
        );
        assert_eq!(
            button_action(&json!({"action": "delete", "incident": "inc_1"})),
            None
        );
        assert_eq!(button_action(&json!("ack")), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30m"), Some(30));
        assert_eq!(parse_duration("2h"), Some(120));
        assert_eq!(parse_duration("1d"), Some(1440));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("2w"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_minutes(30), "30m");
        assert_eq!(human_minutes(90), "1h 30m");
        assert_eq!(human_minutes(1440), "1d");
    }
}
