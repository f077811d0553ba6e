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

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::model::{Actor, Incident, Status, Via};
use super::tables;
use super::{IncidentError, Incidents, push_event};
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::{CallClass, CallFailure, CallOutcome, FinishedHook, Job, JobKind, NewJob, Priority};
use crate::integration::chats::DisbandedHandler;
use crate::integration::inbound::EventHandler;
use crate::integration::{Integrations, Live};
use crate::lark::callback::EventDelivery;
use crate::lark::event::Event;
use crate::lark::{AddedMembers, LarkError, ReceiveIdType};

/// Lark recommends chat names of at most 60 characters.
const MAX_NAME_CHARS: usize = 60;
/// How long a request waits for the set-up (or its own add) before answering with the room as
/// it stands.
const ROOM_WAIT: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomMember {
    pub open_id: String,
    pub member_id: Option<String>,
    pub name: String,
}

/// Someone Lark would not add, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The member's name, or the Lark open_id when no member is linked to it.
    pub who: String,
    pub member_id: Option<String>,
    pub open_id: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The war room of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitee {
    pub open_id: String,
    pub member_id: Option<String>,
    pub name: String,
}

/// An add-members job and whom it adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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

    /// Opens the incident's war room, or joins the requester to the one it has. Waits (a
    /// while) for the set-up or the requester's add through the outbox.
    pub async fn open_war_room(
        &self,
        reference: &str,
        requester: Requester,
    ) -> Result<WarRoomOutcome, IncidentError> {
        let incident = self.get(reference)?;
        let integration = incident.integration_id.clone().ok_or_else(|| {
            IncidentError::Conflict(format!(
                "incident #{} matched no escalation rule, so it has no Lark integration for a war room",
                incident.number
            ))
        })?;
        if !self.war_room_enabled(&integration)? {
            return Err(IncidentError::WarRoomDisabled(integration));
        }
        if self.lark.get(&integration).is_none() {
            return Err(IncidentError::Lark(format!(
                "integration {integration} has no Lark client"
            )));
        }
        let (name, member_id, open_id) = self.resolve_requester(&requester, &integration).await?;
        let lock = self.war_room_lock(&incident.id);
        let guard = lock.lock().await;
        let incident = self.get(&incident.id)?;
        let existing = self.war_room(&incident.id)?;
        if let Some(room) = existing.clone().filter(WarRoom::is_live) {
            drop(guard);
            return self.join(room, name, member_id, open_id).await;
        }
        if !incident.is_open() {
            return Err(IncidentError::Conflict(format!(
                "incident #{} is resolved: reopen it for a new war room",
                incident.number
            )));
        }
        let requester_invitee = open_id.clone().map(|open_id| Invitee {
            open_id,
            member_id: member_id.clone(),
            name: name.clone(),
        });
        // A room being set up is joined; one whose set-up stopped is resumed; after a closed
        // one comes the next generation.
        let (mut room, created) = match existing {
            Some(mut r) if r.state == WarRoomState::Opening => {
                let resumed = r.stalled.take().is_some();
                r.queue(requester_invitee.into_iter().collect());
                (r, resumed)
            }
            previous => {
                let generation = previous.map_or(1, |closed| closed.generation + 1);
                let mut room = WarRoom {
                    incident_id: incident.id.clone(),
                    integration_id: integration.clone(),
                    generation,
                    chat_id: None,
                    name: room_name(&incident),
                    state: WarRoomState::Opening,
                    created_by: name.clone(),
                    created_at: self.clock.now(),
                    card_message_id: None,
                    pinned: false,
                    top_notice: false,
                    members: Vec::new(),
                    refused: Vec::new(),
                    problems: Vec::new(),
                    closed_at: None,
                    step_job: None,
                    creating_with: requester_invitee.into_iter().collect(),
                    adding: None,
                    waiting: Vec::new(),
                    pin_refused: false,
                    top_notice_refused: false,
                    stalled: None,
                };
                let mut people = self.responders(&incident)?;
                if let Some(m) = &member_id
                    && !people.contains(m)
                {
                    people.push(m.clone());
                }
                let invitees = self.invitees(&mut room, &people).await;
                room.queue(invitees);
                (room, true)
            }
        };
        let opened = self.advance(&mut room).await?;
        self.save_room(&room).await?;
        drop(guard);
        if opened {
            self.room_opened(&room).await?;
        }
        let settled = |r: &WarRoom| {
            r.state != WarRoomState::Opening
                || r.stalled.is_some()
                || (!created && open_id.as_deref().is_some_and(|o| r.is_member(o)))
        };
        let room = self.wait_room(&incident.id, settled).await?;
        if room.state == WarRoomState::Opening
            && let Some(words) = &room.stalled
        {
            return Err(IncidentError::Lark(words.clone()));
        }
        let presser = match (&requester, &open_id) {
            (Requester::Nobody { .. }, _) => PresserOutcome::Nobody,
            (_, Some(open_id)) if room.is_member(open_id) => PresserOutcome::Added,
            (_, Some(open_id)) if room.is_coming(open_id) => PresserOutcome::Waiting,
            _ => PresserOutcome::NotInLark {
                reason: room
                    .refused
                    .iter()
                    .find(|r| {
                        (r.open_id.is_some() && r.open_id == open_id)
                            || (r.member_id.is_some() && r.member_id == member_id)
                    })
                    .map_or_else(|| "no Lark account found".to_string(), |r| r.reason.clone()),
            },
        };
        Ok(WarRoomOutcome {
            created,
            presser,
            war_room: room,
        })
    }

    /// Waits until `settled` holds for the room, or [`ROOM_WAIT`] has passed; returns the room.
    async fn wait_room(
        &self,
        incident_id: &str,
        settled: impl Fn(&WarRoom) -> bool,
    ) -> Result<WarRoom, IncidentError> {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        let mut progress = self.war_room_progress.subscribe();
        loop {
            let room = self
                .war_room(incident_id)?
                .ok_or_else(|| IncidentError::NotFound(format!("war room of {incident_id}")))?;
            if settled(&room) {
                return Ok(room);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(room),
            }
        }
    }

    async fn room_job(
        &self,
        room: &WarRoom,
        priority: Priority,
        kind: JobKind,
    ) -> Result<u64, IncidentError> {
        Ok(self
            .delivery
            .enqueue(NewJob {
                integration_id: room.integration_id.clone(),
                incident_id: Some(room.incident_id.clone()),
                priority,
                cosmetic: false,
                kind,
            })
            .await?)
    }

    /// Queues the room's next calls: the create; an add for the people waiting, when no add is
    /// in the outbox; then, once everyone asked for is in or refused, the card, the pin and the
    /// top notice, one at a time. Returns whether the set-up is done (the room is now open).
    /// The caller saves the room.
    async fn advance(&self, room: &mut WarRoom) -> Result<bool, IncidentError> {
        if room.state == WarRoomState::Closed || room.stalled.is_some() {
            return Ok(false);
        }
        let incident = self.get(&room.incident_id)?;
        let priority = incident.severity.priority();
        let Some(chat_id) = room.chat_id.clone() else {
            if room.step_job.is_none() {
                let kind = JobKind::CreateChat {
                    name: room.name.clone(),
                    owner_open_id: None,
                    member_open_ids: room.creating_with.iter().map(|i| i.open_id.clone()).collect(),
                    description: format!("War room of incident #{}", incident.number),
                    dedup_uuid: Some(format!("wr-{}-{}", incident.id, room.generation)),
                };
                room.step_job = Some(self.room_job(room, priority, kind).await?);
            }
            return Ok(false);
        };
        if room.adding.is_none() && !room.waiting.is_empty() {
            let people = std::mem::take(&mut room.waiting);
            let kind = JobKind::AddMembers {
                chat_id: chat_id.clone(),
                open_ids: people.iter().map(|p| p.open_id.clone()).collect(),
            };
            let job_id = self.room_job(room, priority, kind).await?;
            room.adding = Some(Adding { job_id, people });
        }
        if room.state != WarRoomState::Opening || room.adding.is_some() || room.step_job.is_some() {
            return Ok(false);
        }
        let receiver = format!("chat_id:{chat_id}");
        if room.card_message_id.is_none() {
            // A card delivered while its answer was lost (a restart) is among the incident's.
            match self
                .cards(&room.incident_id)?
                .into_iter()
                .find(|c| c.receiver == receiver)
            {
                Some(card) => room.card_message_id = Some(card.message_id),
                None => {
                    let content = self.card_content(&incident);
                    let job = self
                        .send_card(
                            &incident,
                            &room.integration_id,
                            ReceiveIdType::ChatId,
                            &chat_id,
                            &content,
                        )
                        .await?;
                    room.step_job = Some(job);
                    return Ok(false);
                }
            }
        }
        let message_id = room.card_message_id.clone().expect("posted above");
        let next = if !room.pinned && !room.pin_refused {
            Some(JobKind::Pin {
                chat_id: chat_id.clone(),
                message_id,
            })
        } else if !room.top_notice && !room.top_notice_refused {
            Some(JobKind::TopNotice {
                chat_id: chat_id.clone(),
                message_id,
            })
        } else {
            None
        };
        match next {
            Some(kind) => {
                room.step_job = Some(self.room_job(room, priority, kind).await?);
                Ok(false)
            }
            None => {
                room.state = WarRoomState::Open;
                Ok(true)
            }
        }
    }

    /// The set-up is done: the timeline says so and every card offers joining.
    async fn room_opened(&self, room: &WarRoom) -> Result<(), IncidentError> {
        let actor = Actor {
            via: Via::System,
            who: None,
            name: Some(room.created_by.clone()),
        };
        let refused: Vec<String> = room
            .refused
            .iter()
            .map(|r| format!("{} ({})", r.who, r.reason))
            .collect();
        let mut detail = format!(
            "{} opened by {}, {} people in it",
            room.name,
            room.created_by,
            room.members.len()
        );
        if !refused.is_empty() {
            detail.push_str(&format!("; Lark refused {}", refused.join(", ")));
        }
        self.room_event(&room.incident_id, "war_room_opened", actor, detail, true)
            .await?;
        Ok(())
    }

    /// Tells the room of its jobs as the outbox finishes them (after their commit).
    pub(super) fn war_room_finished_hook(me: std::sync::Weak<Incidents>) -> FinishedHook {
        Arc::new(move |job: &Job, outcome: &CallOutcome| {
            let concerns_a_room = job.incident_id.is_some()
                && match &job.kind {
                    JobKind::Send {
                        receive_id_type,
                        msg_type,
                        ..
                    } => *receive_id_type == ReceiveIdType::ChatId && msg_type == "interactive",
                    JobKind::CreateChat { .. }
                    | JobKind::AddMembers { .. }
                    | JobKind::Pin { .. }
                    | JobKind::TopNotice { .. }
                    | JobKind::RenameChat { .. } => true,
                    _ => false,
                };
            let Some(me) = me.upgrade().filter(|_| concerns_a_room) else {
                return;
            };
            let (job, outcome) = (job.clone(), outcome.clone());
            tokio::spawn(async move {
                if let Err(e) = me.room_job_finished(&job, &outcome).await {
                    tracing::error!(error = %e, job = job.id, "cannot take a war room's next step");
                }
            });
        })
    }

    /// Records what a finished job did to its room and queues the room's next step.
    async fn room_job_finished(&self, job: &Job, outcome: &CallOutcome) -> Result<(), IncidentError> {
        let Some(incident_id) = job.incident_id.clone() else {
            return Ok(());
        };
        // Most group cards are of incidents without a room: no lock for them.
        if self.war_room(&incident_id)?.is_none() {
            return Ok(());
        }
        let lock = self.war_room_lock(&incident_id);
        let guard = lock.lock().await;
        let Some(mut room) = self.war_room(&incident_id)? else {
            return Ok(());
        };
        let (returned, failure) = match outcome {
            CallOutcome::Delivered { returned_id } => (returned_id.clone(), None),
            CallOutcome::Failed(f) => (None, Some(f)),
        };
        let words = failure.map(failure_in_words);
        let this_step = room.step_job == Some(job.id);
        let mut failed_step = None;
        match &job.kind {
            JobKind::CreateChat { .. } if this_step => {
                room.step_job = None;
                match (returned, failure) {
                    (Some(chat_id), _) => {
                        room.chat_id = Some(chat_id);
                        for person in std::mem::take(&mut room.creating_with) {
                            room.members.push(RoomMember {
                                open_id: person.open_id,
                                member_id: person.member_id,
                                name: person.name,
                            });
                        }
                    }
                    // One unavailable (or resigned) id refuses the whole create: create without
                    // the requester, who is then added (and refused) like everyone else.
                    (None, Some(f))
                        if matches!(f.code, Some(232043 | 232022)) && !room.creating_with.is_empty() =>
                    {
                        let requester = std::mem::take(&mut room.creating_with);
                        room.waiting.splice(0..0, requester);
                    }
                    _ => failed_step = Some(words.unwrap_or_else(|| "Lark returned no chat id".into())),
                }
            }
            JobKind::AddMembers { .. } if room.adding.as_ref().is_some_and(|a| a.job_id == job.id) => {
                let people = room.adding.take().map(|a| a.people).unwrap_or_default();
                match words {
                    None => {
                        let lists: AddedMembers = returned
                            .and_then(|r| serde_json::from_str(&r).ok())
                            .unwrap_or_default();
                        self.record_added(&mut room, people, &lists);
                    }
                    Some(words) => {
                        if failure.and_then(|f| f.code) == Some(232009) {
                            room.state = WarRoomState::Closed;
                            room.closed_at = Some(self.clock.now());
                        }
                        let now = self.clock.now();
                        for person in people {
                            room.refused
                                .retain(|r| r.open_id.as_ref() != Some(&person.open_id));
                            room.refused.push(Refusal {
                                who: person.name,
                                member_id: person.member_id,
                                open_id: Some(person.open_id),
                                reason: words.clone(),
                                at: now,
                            });
                        }
                        room.problems.push(format!("adding members: {words}"));
                        if room.state == WarRoomState::Opening {
                            failed_step = Some(format!("adding members: {words}"));
                        }
                    }
                }
            }
            JobKind::Send { .. } if this_step => {
                room.step_job = None;
                match (returned, words) {
                    (Some(message_id), _) => room.card_message_id = Some(message_id),
                    (_, words) => {
                        failed_step = Some(format!(
                            "posting the card: {}",
                            words.unwrap_or_else(|| "Lark returned no message id".into())
                        ));
                    }
                }
            }
            JobKind::Pin { .. } if this_step => {
                room.step_job = None;
                match words {
                    None => room.pinned = true,
                    Some(words) => {
                        room.pin_refused = true;
                        room.problems.push(format!("pinning the card: {words}"));
                    }
                }
            }
            JobKind::TopNotice { .. } if this_step => {
                room.step_job = None;
                match words {
                    None => room.top_notice = true,
                    Some(words) => {
                        room.top_notice_refused = true;
                        room.problems.push(format!("setting the top notice: {words}"));
                    }
                }
            }
            JobKind::RenameChat { .. } => {
                let Some(words) = words else {
                    return Ok(());
                };
                room.problems.push(format!("renaming the chat: {words}"));
                if failure.and_then(|f| f.code) == Some(232009) {
                    room.state = WarRoomState::Closed;
                    room.closed_at = Some(self.clock.now());
                }
            }
            _ => return Ok(()),
        }
        if let Some(words) = &failed_step {
            room.stalled = Some(words.clone());
            room.problems.push(format!("opening failed: {words}"));
        }
        let opened = self.advance(&mut room).await?;
        self.save_room(&room).await?;
        drop(guard);
        if let Some(words) = failed_step {
            self.room_event(
                &incident_id,
                "war_room_failed",
                Actor::system(),
                format!("the war room could not be opened: {words}"),
                false,
            )
            .await?;
        }
        if opened {
            self.room_opened(&room).await?;
        }
        // Requests waiting on the room look again once its timeline says what happened too.
        self.war_room_progress.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Who an add got in and who Lark refused, with the reason.
    fn record_added(&self, room: &mut WarRoom, people: Vec<Invitee>, lists: &AddedMembers) {
        let now = self.clock.now();
        for Invitee {
            open_id,
            member_id,
            name,
        } in people
        {
            let reason = if lists.invalid_id_list.contains(&open_id) {
                Some("resigned, outside the app's availability scope, or not activated")
            } else if lists.not_existed_id_list.contains(&open_id) {
                Some("not found in Lark")
            } else if lists.pending_approval_id_list.contains(&open_id) {
                Some("waiting for the chat's approval")
            } else {
                None
            };
            room.refused.retain(|r| {
                r.open_id.as_ref() != Some(&open_id) && (member_id.is_none() || r.member_id != member_id)
            });
            match reason {
                Some(reason) => room.refused.push(Refusal {
                    who: name,
                    member_id,
                    open_id: Some(open_id),
                    reason: reason.into(),
                    at: now,
                }),
                None if room.is_member(&open_id) => {}
                None => room.members.push(RoomMember {
                    open_id,
                    member_id,
                    name,
                }),
            }
        }
    }

    /// After a restart: rooms whose job the outbox finished (or lost) while the room did not
    /// hear of it take that step again; the create's `uuid` makes a repeat return the same
    /// chat, a card delivered meanwhile is found among the incident's, pins and top notices
    /// are idempotent, and adding someone already in changes nothing.
    pub async fn resume_war_rooms(&self) -> Result<(), IncidentError> {
        let rooms: Vec<WarRoom> = self
            .store
            .read(|r| r.page(&tables::WAR_ROOMS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, room)| room)
            .filter(|room: &WarRoom| room.state != WarRoomState::Closed)
            .collect();
        for stored in rooms {
            let lock = self.war_room_lock(&stored.incident_id);
            let guard = lock.lock().await;
            let Some(mut room) = self.war_room(&stored.incident_id)? else {
                continue;
            };
            let mut lost = false;
            if let Some(id) = room.step_job
                && self.job_is_gone(id)?
            {
                room.step_job = None;
                lost = true;
            }
            if let Some(adding) = room.adding.clone()
                && self.job_is_gone(adding.job_id)?
            {
                room.adding = None;
                room.waiting.splice(0..0, adding.people);
                lost = true;
            }
            // A step queued just before the stop may not be on the room yet.
            let unreferenced = room.state == WarRoomState::Opening
                && room.stalled.is_none()
                && room.step_job.is_none()
                && room.adding.is_none();
            if !lost && !unreferenced && room.waiting.is_empty() {
                continue;
            }
            tracing::info!(incident = %room.incident_id, "resuming a war room's set-up");
            let opened = self.advance(&mut room).await?;
            self.save_room(&room).await?;
            drop(guard);
            if opened {
                self.room_opened(&room).await?;
            }
        }
        Ok(())
    }

    /// Whether an outbox job is no longer going to finish: delivered (gone from the outbox) or
    /// failed without the room hearing of it.
    fn job_is_gone(&self, id: u64) -> Result<bool, IncidentError> {
        Ok(self
            .delivery
            .job(id)?
            .is_none_or(|j| matches!(j.state, crate::delivery::job::JobState::Failed { .. })))
    }

    /// The members as people to add; those without a Lark account are refused with the reason.
    async fn invitees(&self, room: &mut WarRoom, member_ids: &[String]) -> Vec<Invitee> {
        let now = self.clock.now();
        let mut people = Vec::new();
        for member_id in member_ids {
            if room
                .members
                .iter()
                .any(|m| m.member_id.as_ref() == Some(member_id))
            {
                continue;
            }
            let Ok(member) = self.members.get(member_id) else {
                continue;
            };
            match self.open_id_for(member_id, &room.integration_id).await {
                Ok(Some(open_id)) => people.push(Invitee {
                    open_id,
                    member_id: Some(member.id.clone()),
                    name: member.name.clone(),
                }),
                Ok(None) | Err(_) => {
                    room.refused.retain(|r| r.member_id.as_ref() != Some(member_id));
                    room.refused.push(Refusal {
                        who: member.name.clone(),
                        member_id: Some(member.id.clone()),
                        open_id: None,
                        reason: "no Lark account found for this member (link it, or give them a Lark email or mobile)"
                            .into(),
                        at: now,
                    });
                }
            }
        }
        people
    }

    /// Joins the requester to a live room: added through the outbox (waiting a while for
    /// Lark's answer), or given the share link when Lark will not add them.
    async fn join(
        &self,
        room: WarRoom,
        name: String,
        member_id: Option<String>,
        open_id: Option<String>,
    ) -> Result<WarRoomOutcome, IncidentError> {
        let Some(open_id) = open_id else {
            let presser = match member_id {
                Some(_) => PresserOutcome::NotInLark {
                    reason: "no Lark account found for this member".into(),
                },
                None => PresserOutcome::Nobody,
            };
            return Ok(WarRoomOutcome {
                created: false,
                presser,
                war_room: room,
            });
        };
        if room.is_member(&open_id) {
            return Ok(WarRoomOutcome {
                created: false,
                presser: PresserOutcome::AlreadyIn,
                war_room: room,
            });
        }
        let incident_id = room.incident_id.clone();
        {
            let lock = self.war_room_lock(&incident_id);
            let _one_at_a_time = lock.lock().await;
            let Some(mut room) = self.war_room(&incident_id)? else {
                return Err(IncidentError::NotFound(format!("war room of {incident_id}")));
            };
            // Asking again is asking afresh: a refusal from before does not answer for now.
            room.refused
                .retain(|r| r.open_id.as_deref() != Some(open_id.as_str()));
            room.queue(vec![Invitee {
                open_id: open_id.clone(),
                member_id: member_id.clone(),
                name: name.clone(),
            }]);
            self.advance(&mut room).await?;
            self.save_room(&room).await?;
        }
        let room = self.wait_room(&incident_id, |r| !r.is_coming(&open_id)).await?;
        if room.is_member(&open_id) {
            self.room_event(
                &room.incident_id,
                "war_room_joined",
                Actor {
                    via: Via::Card,
                    who: None,
                    name: Some(name.clone()),
                },
                format!("{name} joined {}", room.name),
                false,
            )
            .await?;
            return Ok(WarRoomOutcome {
                created: false,
                presser: PresserOutcome::Added,
                war_room: room,
            });
        }
        if room.is_coming(&open_id) {
            return Ok(WarRoomOutcome {
                created: false,
                presser: PresserOutcome::Waiting,
                war_room: room,
            });
        }
        let reason = room
            .refused
            .iter()
            .find(|r| r.open_id.as_ref() == Some(&open_id))
            .map(|r| r.reason.clone())
            .unwrap_or_default();
        let chat_id = room.chat_id.clone().expect("a live room has a chat");
        let Some(client) = self.lark.get(&room.integration_id) else {
            return Err(IncidentError::Lark(format!(
                "integration {} has no Lark client",
                room.integration_id
            )));
        };
        // Asked for directly: the answer to this request is the link.
        let result = client.chat_share_link(&chat_id).await;
        self.log_room_call(
            &room,
            "share_link",
            Some(format!("chat_id:{chat_id}")),
            result.as_ref().map(drop),
        )
        .await?;
        let presser = match result {
            Ok(link) => PresserOutcome::ShareLink { link, reason },
            Err(e) => PresserOutcome::NotInLark {
                reason: format!("{reason}; no share link either: {}", refusal_in_words(&e)),
            },
        };
        Ok(WarRoomOutcome {
            created: false,
            presser,
            war_room: room,
        })
    }

    /// Invites members who just became responders (escalation, reassignment) to a live room,
    /// or to one being set up.
    pub(super) async fn invite_to_war_room(
        &self,
        incident_id: &str,
        member_ids: &[String],
    ) -> Result<(), IncidentError> {
        if member_ids.is_empty() {
            return Ok(());
        }
        let lock = self.war_room_lock(incident_id);
        let _one_at_a_time = lock.lock().await;
        let Some(mut room) = self
            .war_room(incident_id)?
            .filter(|r| r.is_live() || r.state == WarRoomState::Opening)
        else {
            return Ok(());
        };
        let people = self.invitees(&mut room, member_ids).await;
        room.queue(people);
        self.advance(&mut room).await?;
        self.save_room(&room).await
    }

    async fn post_to_room(
        &self,
        room: &WarRoom,
        text: String,
        priority: Priority,
    ) -> Result<(), IncidentError> {
        let Some(chat_id) = room.chat_id.clone() else {
            return Ok(());
        };
        self.delivery
            .enqueue(NewJob {
                integration_id: room.integration_id.clone(),
                incident_id: Some(room.incident_id.clone()),
                priority,
                cosmetic: false,
                kind: JobKind::Send {
                    receive_id_type: ReceiveIdType::ChatId,
                    receive_id: chat_id,
                    msg_type: "text".into(),
                    content: serde_json::json!({ "text": text }).to_string(),
                },
            })
            .await?;
        Ok(())
    }

    /// After a change: state lines for the timeline entries from `from` on, and on resolve the
    /// summary and the rename; on reopen the room's own name again.
    pub(super) async fn war_room_follow(
        &self,
        incident: &Incident,
        from: usize,
    ) -> Result<(), IncidentError> {
        let Some(room) = self.war_room(&incident.id)?.filter(WarRoom::is_live) else {
            return Ok(());
        };
        let priority = incident.severity.priority();
        for entry in incident.timeline.get(from..).unwrap_or_default() {
            let who = super::actor_name(&entry.actor);
            if let Some(line) = state_line(incident, &entry.kind, &who, entry.detail.as_deref()) {
                self.post_to_room(&room, line, priority).await?;
            }
        }
        let resolved_now = incident
            .timeline
            .get(from..)
            .unwrap_or_default()
            .iter()
            .any(|e| e.kind == "resolved");
        let reopened_now = incident
            .timeline
            .get(from..)
            .unwrap_or_default()
            .iter()
            .any(|e| e.kind == "reopened");
        if resolved_now && incident.status == Status::Resolved && room.state == WarRoomState::Open {
            self.close_on_resolve(incident, room).await?;
        } else if reopened_now && room.state == WarRoomState::Resolved {
            self.rename_room(incident, room, WarRoomState::Open).await?;
        }
        Ok(())
    }

    async fn close_on_resolve(&self, incident: &Incident, room: WarRoom) -> Result<(), IncidentError> {
        let duration = incident
            .resolved_at
            .map(|at| human_duration(at - incident.created_at))
            .unwrap_or_else(|| "-".into());
        let highlights: Vec<String> = incident
            .timeline
            .iter()
            .filter(|e| {
                matches!(
                    e.kind.as_str(),
                    "triggered" | "acknowledged" | "escalated" | "note" | "reassigned" | "resolved"
                )
            })
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|e| {
                let what = e.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                format!(
                    "- {} {} by {}{what}",
                    e.at.format("%H:%M"),
                    e.kind,
                    super::actor_name(&e.actor)
                )
            })
            .collect();
        let acknowledged = if incident.timeline.iter().any(|e| e.kind == "acknowledged") {
            who_did(incident, "acknowledged")
        } else {
            "nobody".into()
        };
        let integration = incident.integration_id.as_deref().unwrap_or("-");
        let summary = format!(
            "Incident #{} resolved: {}\nDuration: {duration}\nAcknowledged by: {acknowledged}\nResolved by: {}\nTimeline highlights:\n{}\nIncident page: {}/lark/{integration}/app/incidents/{}",
            incident.number,
            incident.title,
            who_did(incident, "resolved"),
            highlights.join("\n"),
            self.public_base,
            incident.id,
        );
        self.post_to_room(&room, summary, incident.severity.priority())
            .await?;
        self.rename_room(incident, room, WarRoomState::Resolved).await
    }

    /// Renames the room for `state` (`[Resolved] …` or its own name) through the outbox and
    /// records the state; a refused rename is listed with the room's problems.
    async fn rename_room(
        &self,
        incident: &Incident,
        room: WarRoom,
        state: WarRoomState,
    ) -> Result<(), IncidentError> {
        let lock = self.war_room_lock(&incident.id);
        let _one_at_a_time = lock.lock().await;
        let Some(mut room) = self.war_room(&room.incident_id)?.filter(WarRoom::is_live) else {
            return Ok(());
        };
        let chat_id = room.chat_id.clone().expect("a live room has a chat");
        let name = match state {
            WarRoomState::Resolved => resolved_name(&room.name),
            _ => room.name.clone(),
        };
        self.room_job(
            &room,
            incident.severity.priority(),
            JobKind::RenameChat { chat_id, name },
        )
        .await?;
        room.state = state;
        self.save_room(&room).await
    }

    /// Lark says the chat was disbanded: if it is a war room, it is closed on its incident.
    pub async fn war_room_disbanded(&self, chat_id: &str) -> Result<(), IncidentError> {
        let Some(incident_id) = self.war_room_incident(chat_id)? else {
            return Ok(());
        };
        let lock = self.war_room_lock(&incident_id);
        let closed = {
            let _one_at_a_time = lock.lock().await;
            let Some(mut room) = self.war_room(&incident_id)? else {
                return Ok(());
            };
            if room.chat_id.as_deref() != Some(chat_id) || room.state == WarRoomState::Closed {
                return Ok(());
            }
            room.state = WarRoomState::Closed;
            room.closed_at = Some(self.clock.now());
            self.save_room(&room).await?;
            room
        };
        tracing::info!(incident = %incident_id, chat = %chat_id, "war room disbanded");
        self.room_event(
            &incident_id,
            "war_room_closed",
            Actor::system(),
            format!("{} was disbanded", closed.name),
            true,
        )
        .await?;
        Ok(())
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
