//! War rooms: one Lark group chat per incident (shared/lark-protocol-next.md §1). Opened from a
//! card button, the admin API or a rule marked `war_room: "auto"`, when the incident's
//! integration has its `war_room` switch on. The bot creates and owns the chat (`uuid` derived
//! from the incident and the room's generation, so a retried create never makes two), adds the
//! responders, the current level's people and whoever asked (`succeed_type=1`; refusals are kept
//! per person with the reason in words), posts the shared incident card, pins it and makes it
//! the top notice. Pressing again joins the presser.
//!
//! Every chat call goes through the outbox, so it is durable, rate-limited, retried and in the
//! operation log like every other call. The room advances one step per delivered job (create →
//! add members → post the card → pin → top notice), taken from the delivery's finished hook;
//! one add-members job per chat is in the outbox at a time (Lark answers 232019 to concurrent
//! adds), the people asked for meanwhile waiting for the next. A refused step ends the set-up
//! with the reason in words on the incident, and asking again resumes it; a restart resumes
//! what the outbox finished while the room did not hear of it (the create's `uuid` makes a
//! repeated create return the same chat). Requests wait a while for the set-up (or their own
//! add) and answer with the room as it stands. Everything a room does is serialised per
//! incident. Only the share link, which the answer needs at once, is asked for directly.
//!
//! Kept in step: escalation and reassignment invite the new people, state changes are posted as
//! short lines, the pinned card is refreshed like every other copy. On resolve the room gets a
//! summary and is renamed `[Resolved] …`; `im.chat.disbanded_v1` closes it, and a reopened
//! incident then offers a new room.
//!
//! The parts: `open` (a request to open or join a room), `progress` (the set-up advancing as
//! the outbox finishes its jobs, and resuming after a restart) and `follow` (keeping a live
//! room in step with its incident, and closing it); this file keeps the room's types, its
//! words and the shared steps.

mod follow;
mod open;
mod progress;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::model::{Actor, Incident};
use super::tables;
use super::{IncidentError, Incidents, push_event};
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::{CallClass, CallFailure};
use crate::integration::chats::DisbandedHandler;
use crate::integration::inbound::EventHandler;
use crate::integration::{Integrations, Live};
use crate::lark::LarkError;
use crate::lark::callback::EventDelivery;
use crate::lark::event::Event;

/// Lark recommends chat names of at most 60 characters.
const MAX_NAME_CHARS: usize = 60;
/// How long a request waits for the set-up (or its own add) before answering with the room as
/// it stands.
const ROOM_WAIT: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarRoomState {
    /// The chat is being set up (or setting it up stopped half way: pressing again resumes).
    Opening,
    Open,
    /// The incident resolved: summary posted, chat renamed; left for people to disband.
    Resolved,
    /// The chat was disbanded (or Lark says it is dissolved).
    Closed,
}

/// Someone in the room (as far as Lark accepted the add).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoomMember {
    pub open_id: String,
    pub member_id: Option<String>,
    pub name: String,
}

/// Someone Lark would not add, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    /// The member's name, or the Lark open_id when no member is linked to it.
    pub who: String,
    pub member_id: Option<String>,
    pub open_id: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The war room of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WarRoom {
    pub incident_id: String,
    pub integration_id: String,
    /// 1 for the first room; a reopened incident whose room was disbanded gets the next.
    pub generation: u32,
    pub chat_id: Option<String>,
    pub name: String,
    pub state: WarRoomState,
    /// Who asked for it (a name), or `rule <name>` for an automatic room.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub card_message_id: Option<String>,
    pub pinned: bool,
    pub top_notice: bool,
    pub members: Vec<RoomMember>,
    pub refused: Vec<Refusal>,
    /// What Lark refused beyond people (pin, top notice, rename, …), in words.
    pub problems: Vec<String>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The outbox job of the set-up step under way (create, card, pin or top notice).
    #[serde(default)]
    pub step_job: Option<u64>,
    /// Whom the create names: the requester, until Lark refuses them there.
    #[serde(default)]
    pub creating_with: Vec<Invitee>,
    /// The add-members job in the outbox and whom it adds.
    #[serde(default)]
    pub adding: Option<Adding>,
    /// People asked for while an add was in the outbox: the next add takes them.
    #[serde(default)]
    pub waiting: Vec<Invitee>,
    /// Lark refused the pin or the top notice: the set-up went on without it.
    #[serde(default)]
    pub pin_refused: bool,
    #[serde(default)]
    pub top_notice_refused: bool,
    /// Why the set-up stopped (a refused step), until someone asks again.
    #[serde(default)]
    pub stalled: Option<String>,
}

/// Someone to add to the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invitee {
    pub open_id: String,
    pub member_id: Option<String>,
    pub name: String,
}

/// An add-members job and whom it adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Adding {
    pub job_id: u64,
    pub people: Vec<Invitee>,
}

impl WarRoom {
    pub fn is_live(&self) -> bool {
        self.chat_id.is_some() && matches!(self.state, WarRoomState::Open | WarRoomState::Resolved)
    }

    /// Whether `open_id` is on its way in: named by the create or an add in the outbox, or
    /// waiting for one.
    fn is_coming(&self, open_id: &str) -> bool {
        self.creating_with
            .iter()
            .chain(&self.waiting)
            .chain(self.adding.iter().flat_map(|a| &a.people))
            .any(|i| i.open_id == open_id)
    }

    fn is_member(&self, open_id: &str) -> bool {
        self.members.iter().any(|m| m.open_id == open_id)
    }

    /// Queues people for the next add, unless they are in or on their way.
    fn queue(&mut self, people: Vec<Invitee>) {
        for person in people {
            if !self.is_member(&person.open_id) && !self.is_coming(&person.open_id) {
                self.waiting.push(person);
            }
        }
    }
}

/// Who asks for the room or to join it.
#[derive(Debug, Clone)]
pub enum Requester {
    /// A Lark user (a card press): added by open_id, named after their member when linked.
    Lark { open_id: String },
    /// An on-call member (admin API with `member_id`).
    Member { member_id: String },
    /// An admin or a rule: nobody to add.
    Nobody { name: String },
}

/// What happened to whoever asked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PresserOutcome {
    Added,
    AlreadyIn,
    /// Lark would not add them: they can join with this link.
    ShareLink {
        link: String,
        reason: String,
    },
    /// The requester has no Lark account this integration knows.
    NotInLark {
        reason: String,
    },
    /// Lark has not yet answered the add (or the set-up is still under way).
    Waiting,
    Nobody,
}

/// The room and what this request did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WarRoomOutcome {
    pub created: bool,
    pub presser: PresserOutcome,
    pub war_room: WarRoom,
}

/// A Lark refusal in words, for the incident and the operation log.
pub fn refusal_in_words(error: &LarkError) -> String {
    match error {
        LarkError::PermissionMissing { scope, .. } => {
            format!("scope missing: {}", scope.unwrap_or("im:chat"))
        }
        other => code_in_words(other.code()).unwrap_or_else(|| match other {
            LarkError::UserNotVisible(_) => "not visible to the app (outside its availability scope)".into(),
            LarkError::UserNotFound(_) => "not found in Lark".into(),
            other => other.to_string(),
        }),
    }
}

/// A refused outbox job in words: its Lark code, or the executor's message (which names a
/// missing scope).
fn failure_in_words(failure: &CallFailure) -> String {
    let named = failure.message.split("lacks the scope ").nth(1);
    if let Some(scope) = named
        .and_then(|s| s.split_whitespace().next())
        .filter(|s| s.contains(':'))
    {
        return format!("scope missing: {scope}");
    }
    code_in_words(failure.code).unwrap_or_else(|| failure.message.clone())
}

fn code_in_words(code: Option<i64>) -> Option<String> {
    Some(match code? {
        232043 | 232024 | 230013 => "not visible to the app (outside its availability scope)".into(),
        232022 => "has resigned".into(),
        232013 | 232044 => "the chat is full".into(),
        232011 | 230002 => "the bot is no longer in the chat".into(),
        232009 => "the chat was dissolved".into(),
        230046 => "pin not allowed: only the chat's owner and managers may pin".into(),
        232014 | 232017 => "the bot lacks the right to do this in the chat".into(),
        232025 | 230006 => "the app's bot capability is off".into(),
        232034 => "the app is not installed or enabled in this tenant".into(),
        99991672 | 99991676 => "scope missing: im:chat".into(),
        _ => return None,
    })
}

/// `[P1] #42 db-1 disk 97%`, at most 60 characters.
fn room_name(incident: &Incident) -> String {
    let priority = match incident.severity {
        super::model::Severity::Critical => "P1",
        super::model::Severity::Warning => "P2",
        super::model::Severity::Info => "P3",
    };
    let full = format!("[{priority}] #{} {}", incident.number, incident.title);
    match full.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => full[..end].to_string(),
        None => full,
    }
}

fn resolved_name(name: &str) -> String {
    let full = format!("[Resolved] {name}");
    match full.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => full[..end].to_string(),
        None => full,
    }
}

/// The AppLink that opens a chat the user is in.
pub fn chat_applink(domain: crate::lark::Domain, chat_id: &str) -> String {
    let host = match domain {
        crate::lark::Domain::Feishu => "applink.feishu.cn",
        crate::lark::Domain::Lark => "applink.larksuite.com",
    };
    format!("https://{host}/client/chat/open?openChatId={chat_id}")
}

/// A short line for the room about a timeline entry; `None` for entries not worth one.
fn state_line(incident: &Incident, kind: &str, who: &str, detail: Option<&str>) -> Option<String> {
    let n = incident.number;
    Some(match kind {
        "acknowledged" => format!("#{n} acknowledged by {who}"),
        "unacknowledged" => format!("#{n} is no longer acknowledged ({who})"),
        "snoozed" => format!("#{n} snoozed by {who} {}", detail.unwrap_or_default()),
        "snooze_ended" => format!("#{n}: snooze ended, triggered again"),
        "resolved" => format!("#{n} resolved by {who}"),
        "reopened" => format!("#{n} reopened by {who}"),
        "reassigned" => format!("#{n} reassigned by {who}"),
        "escalated" => format!("#{n} escalated {}", detail.unwrap_or_default()),
        "severity_raised" => format!("#{n}: {}", detail.unwrap_or_default()),
        _ => return None,
    })
}

fn who_did(incident: &Incident, kind: &str) -> String {
    incident
        .timeline
        .iter()
        .rev()
        .find(|e| e.kind == kind)
        .map(|e| super::actor_name(&e.actor))
        .unwrap_or_else(|| "-".into())
}

fn human_duration(d: chrono::Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (h, m) = (minutes / 60, minutes % 60);
    if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

impl Incidents {
    fn war_room_lock(&self, incident_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.war_room_locks
            .lock()
            .expect("war room locks")
            .entry(incident_id.to_string())
            .or_default()
            .clone()
    }

    /// The incident's war room, if one was ever opened.
    pub fn war_room(&self, incident_id: &str) -> Result<Option<WarRoom>, IncidentError> {
        Ok(self.store.read(|r| r.get(&tables::WAR_ROOMS, incident_id))?)
    }

    /// The incident a chat is the war room of.
    pub fn war_room_incident(&self, chat_id: &str) -> Result<Option<String>, IncidentError> {
        Ok(self.store.read(|r| r.get(&tables::WAR_ROOM_CHATS, chat_id))?)
    }

    /// Whether the integration's `war_room` switch is on.
    pub fn war_room_enabled(&self, integration: &str) -> Result<bool, IncidentError> {
        Ok(Integrations::stored_record(&self.store, integration)?.is_some_and(|i| i.war_room))
    }

    /// What the card shows for the war room: nothing (switch off, resolved), "War room", or
    /// "Join war room" with the chat's AppLink.
    pub(super) fn war_room_button(&self, incident: &Incident) -> super::card::WarRoomButton {
        use super::card::WarRoomButton;
        let Some(integration) = incident.integration_id.as_deref() else {
            return WarRoomButton::Absent;
        };
        let record = Integrations::stored_record(&self.store, integration)
            .ok()
            .flatten();
        let Some(record) = record.filter(|r| r.war_room) else {
            return WarRoomButton::Absent;
        };
        if !incident.is_open() {
            return WarRoomButton::Absent;
        }
        match self.war_room(&incident.id).ok().flatten() {
            Some(room) if room.is_live() => WarRoomButton::Join {
                chat_url: chat_applink(record.domain, room.chat_id.as_deref().unwrap_or_default()),
            },
            _ => WarRoomButton::Open,
        }
    }

    async fn save_room(&self, room: &WarRoom) -> Result<(), IncidentError> {
        let room = room.clone();
        self.store
            .write(move |w| {
                if let Some(chat_id) = &room.chat_id {
                    w.put(&tables::WAR_ROOM_CHATS, chat_id.as_str(), &room.incident_id)?;
                }
                w.put(&tables::WAR_ROOMS, room.incident_id.as_str(), &room)
            })
            .await?;
        Ok(())
    }

    /// Writes a war-room call made directly (the share link) to the operation log and counts
    /// it in the quota ledger.
    async fn log_room_call(
        &self,
        room: &WarRoom,
        kind: &str,
        receiver: Option<String>,
        result: Result<(), &LarkError>,
    ) -> Result<(), IncidentError> {
        self.delivery
            .count_calls(&room.integration_id, CallClass::ChatManagement, 1)
            .await?;
        let (outcome, reason, code, message) = match result {
            Ok(()) => ("delivered", None, None, None),
            Err(e) => (
                "failed",
                Some(e.reason().to_string()),
                e.code(),
                Some(format!("{}: {e}", refusal_in_words(e))),
            ),
        };
        let entry = OpEntry {
            seq: 0,
            at: self.clock.now(),
            integration_id: room.integration_id.clone(),
            incident_id: Some(room.incident_id.clone()),
            job_id: None,
            receiver,
            kind: kind.to_string(),
            outcome: outcome.to_string(),
            reason,
            lark_code: code,
            lark_message: message,
            attempts: 1,
            latency_ms: None,
            message_id: None,
            chat_id: room.chat_id.clone(),
        };
        self.store
            .write(move |w| oplog::append(w, entry).map(drop))
            .await?;
        Ok(())
    }

    /// Adds a timeline entry (and a version bump when the card changes) to the incident.
    async fn room_event(
        &self,
        incident_id: &str,
        kind: &'static str,
        actor: Actor,
        detail: String,
        card_changes: bool,
    ) -> Result<Option<Incident>, IncidentError> {
        let id = incident_id.to_string();
        let now = self.clock.now();
        let updated = self
            .store
            .write(move |w| {
                let Some(mut incident) = w.get(&tables::INCIDENTS, id.as_str())? else {
                    return Ok(None);
                };
                let before = incident.clone();
                push_event(&mut incident, now, kind, &actor, Some(detail));
                if card_changes {
                    incident.version += 1;
                }
                incident.updated_at = now;
                super::records::store_incident(
                    w,
                    Some(&before),
                    &incident,
                    super::records::EscalationChange::Keep,
                )?;
                Ok(Some(incident))
            })
            .await?;
        if card_changes && let Some(incident) = &updated {
            self.refresh_cards(incident, true, None).await?;
        }
        Ok(updated)
    }

    /// The requester's name, member id and open_id on `integration`.
    async fn resolve_requester(
        &self,
        requester: &Requester,
        integration: &str,
    ) -> Result<(String, Option<String>, Option<String>), IncidentError> {
        Ok(match requester {
            Requester::Lark { open_id } => {
                let member = self
                    .members
                    .list()?
                    .into_iter()
                    .find(|m| m.lark.get(integration).is_some_and(|i| &i.open_id == open_id));
                match member {
                    Some(m) => (m.name, Some(m.id), Some(open_id.clone())),
                    None => (open_id.clone(), None, Some(open_id.clone())),
                }
            }
            Requester::Member { member_id } => {
                let member = self.members.get(member_id).map_err(|e| match e {
                    IncidentError::NotFound(_) => {
                        super::invalid("member_id", format!("no member {member_id}"))
                    }
                    other => other,
                })?;
                let open_id = self.open_id_for(member_id, integration).await.unwrap_or(None);
                (member.name, Some(member.id), open_id)
            }
            Requester::Nobody { name } => (name.clone(), None, None),
        })
    }

    /// The responders, the current level's people: member ids, without repeats.
    fn responders(&self, incident: &Incident) -> Result<Vec<String>, IncidentError> {
        let mut ids = incident.assignees.clone();
        let esc = self
            .store
            .read(|r| r.get(&tables::ESCALATIONS, incident.id.as_str()))?;
        if let Some(esc) = esc
            && let Some(rule) = self.store.read(|r| r.get(&tables::RULES, esc.rule_id.as_str()))?
            && let Some(level) = rule.levels.get(esc.level)
        {
            ids.extend(level.members.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        Ok(ids)
    }
}

/// `im.chat.disbanded_v1`: the chat list marks the chat, and a war room in it is closed.
pub struct DisbandedEvents {
    pub chats: DisbandedHandler,
    pub incidents: Arc<Incidents>,
}

impl EventHandler for DisbandedEvents {
    fn handle<'a>(&'a self, integration: &'a Arc<Live>, event: &'a EventDelivery) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.chats.handle(integration, event).await;
            if let Event::ChatDisbanded(d) = &event.event
                && let Err(e) = self.incidents.war_room_disbanded(&d.chat_id).await
            {
                tracing::error!(error = %e, chat = %d.chat_id, "cannot close a disbanded war room");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_resolve() {
        let mut incident = Incident::sample(Utc::now());
        incident.number = 42;
        incident.title = "db-1 disk 97%".into();
        incident.severity = super::super::model::Severity::Critical;
        assert_eq!(room_name(&incident), "[P1] #42 db-1 disk 97%");
        incident.title = "x".repeat(100);
        assert_eq!(room_name(&incident).chars().count(), MAX_NAME_CHARS);
        assert_eq!(resolved_name("[P1] #42 a"), "[Resolved] [P1] #42 a");
    }

    #[test]
    fn every_refusal_the_issue_names_reads_in_words() {
        let answer = |code: i64| crate::lark::Answer {
            http_status: 400,
            code: Some(code),
            msg: "m".into(),
            log_id: None,
        };
        let cases = [
            (LarkError::Other(answer(232043)), "availability scope"),
            (LarkError::Other(answer(232022)), "resigned"),
            (LarkError::Other(answer(232013)), "chat is full"),
            (LarkError::Other(answer(232044)), "chat is full"),
            (LarkError::BotNotInChat(answer(230002)), "no longer in the chat"),
            (LarkError::Other(answer(232011)), "no longer in the chat"),
            (LarkError::ChatDisbanded(answer(232009)), "dissolved"),
            (LarkError::Other(answer(230046)), "pin not allowed"),
            (
                LarkError::PermissionMissing {
                    scope: Some("im:chat"),
                    answer: answer(99991672),
                },
                "scope missing: im:chat",
            ),
        ];
        for (error, words) in cases {
            assert!(
                refusal_in_words(&error).contains(words),
                "{error:?}: {}",
                refusal_in_words(&error)
            );
        }
    }
}
