//! War rooms: one Lark group chat per incident (shared/lark-protocol-next.md §1). Opened from a
//! card button, the admin API or a rule marked `war_room: "auto"`, when the incident's
//! integration has its `war_room` switch on. The bot creates and owns the chat (`uuid` derived
//! from the incident and the room's generation, so a retried create never makes two), adds the
//! responders, the current level's people and whoever asked (`succeed_type=1`; refusals are kept
//! per person with the reason in words), posts the shared incident card, pins it and makes it
//! the top notice. Pressing again joins the presser. Everything a room does is serialised per
//! incident, which also serialises member adds per chat as Lark asks (232019 otherwise).
//!
//! Kept in step: escalation and reassignment invite the new people, state changes are posted as
//! short lines, the pinned card is refreshed like every other copy. On resolve the room gets a
//! summary and is renamed `[Resolved] …`; `im.chat.disbanded_v1` closes it, and a reopened
//! incident then offers a new room.
//!
//! The chat-management calls are made directly (in order, each depending on the one before) and
//! counted in the quota ledger; the lines and summary posted later go through the outbox.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::model::{Actor, Incident, Status, Via};
use super::tables;
use super::{IncidentError, Incidents, push_event};
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::{CallClass, JobKind, NewJob, Priority};
use crate::integration::chats::DisbandedHandler;
use crate::integration::inbound::EventHandler;
use crate::integration::{Integrations, Live};
use crate::lark::callback::EventDelivery;
use crate::lark::event::Event;
use crate::lark::{LarkClient, LarkError, MessageContent, NewChat, ReceiveIdType};

/// Lark recommends chat names of at most 60 characters.
const MAX_NAME_CHARS: usize = 60;
/// Retries of a call Lark refused as "being created" (232068) or concurrent (232019).
const BUSY_RETRIES: u32 = 4;
const BUSY_BACKOFF: Duration = Duration::from_millis(200);

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
}

impl WarRoom {
    pub fn is_live(&self) -> bool {
        self.chat_id.is_some() && matches!(self.state, WarRoomState::Open | WarRoomState::Resolved)
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
    match error.code() {
        Some(232043 | 232024 | 230013) => "not visible to the app (outside its availability scope)".into(),
        Some(232022) => "has resigned".into(),
        Some(232013 | 232044) => "the chat is full".into(),
        Some(232011 | 230002) => "the bot is no longer in the chat".into(),
        Some(232009) => "the chat was dissolved".into(),
        Some(230046) => "pin not allowed: only the chat's owner and managers may pin".into(),
        Some(232014 | 232017) => "the bot lacks the right to do this in the chat".into(),
        Some(232025 | 230006) => "the app's bot capability is off".into(),
        Some(232034) => "the app is not installed or enabled in this tenant".into(),
        _ => match error {
            LarkError::PermissionMissing { .. } => "scope missing: im:chat".into(),
            LarkError::UserNotVisible(_) => "not visible to the app (outside its availability scope)".into(),
            LarkError::UserNotFound(_) => "not found in Lark".into(),
            other => other.to_string(),
        },
    }
}

fn busy(error: &LarkError) -> bool {
    matches!(error.code(), Some(232068 | 232019)) || error.is_retryable()
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

    /// Writes one war-room call to the operation log and counts it in the quota ledger.
    async fn log_room_call(
        &self,
        room: &WarRoom,
        kind: &str,
        receiver: Option<String>,
        result: Result<(), &LarkError>,
    ) -> Result<(), IncidentError> {
        let class = if kind == "war_room_card" {
            CallClass::SendToChat
        } else {
            CallClass::ChatManagement
        };
        self.delivery.count_calls(&room.integration_id, class, 1).await?;
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

    /// Opens the incident's war room, or joins the requester to the one it has.
    pub async fn open_war_room(
        &self,
        reference: &str,
        requester: Requester,
    ) -> Result<WarRoomOutcome, IncidentError> {
        let incident = self.get(reference)?;
        let lock = self.war_room_lock(&incident.id);
        let _one_at_a_time = lock.lock().await;
        let incident = self.get(&incident.id)?;
        let integration = incident.integration_id.clone().ok_or_else(|| {
            IncidentError::Conflict(format!(
                "incident #{} matched no escalation rule, so it has no Lark integration for a war room",
                incident.number
            ))
        })?;
        if !self.war_room_enabled(&integration)? {
            return Err(IncidentError::WarRoomDisabled(integration));
        }
        let client = self
            .lark
            .get(&integration)
            .ok_or_else(|| IncidentError::Lark(format!("integration {integration} has no Lark client")))?;
        let (name, member_id, open_id) = self.resolve_requester(&requester, &integration).await?;
        let existing = self.war_room(&incident.id)?;
        if let Some(room) = existing.clone().filter(|r| r.is_live()) {
            return self.join(&client, room, name, member_id, open_id).await;
        }
        if !incident.is_open() {
            return Err(IncidentError::Conflict(format!(
                "incident #{} is resolved: reopen it for a new war room",
                incident.number
            )));
        }
        // A room whose setting up stopped half way is resumed; after a closed one comes the next.
        let (resumed, generation) = match existing {
            Some(r) if r.state == WarRoomState::Opening => {
                let generation = r.generation;
                (Some(r), generation)
            }
            Some(closed) => (None, closed.generation + 1),
            None => (None, 1),
        };
        let now = self.clock.now();
        let mut room = resumed.unwrap_or_else(|| WarRoom {
            incident_id: incident.id.clone(),
            integration_id: integration.clone(),
            generation,
            chat_id: None,
            name: room_name(&incident),
            state: WarRoomState::Opening,
            created_by: name.clone(),
            created_at: now,
            card_message_id: None,
            pinned: false,
            top_notice: false,
            members: Vec::new(),
            refused: Vec::new(),
            problems: Vec::new(),
            closed_at: None,
        });
        self.save_room(&room).await?;
        let (presser_member, presser_open_id) = (member_id.clone(), open_id.clone());
        if let Err(e) = self
            .set_up_room(&client, &mut room, &incident, &name, member_id, open_id)
            .await
        {
            let words = match &e {
                IncidentError::Lark(words) => words.clone(),
                other => other.to_string(),
            };
            room.problems.push(format!("opening failed: {words}"));
            self.save_room(&room).await?;
            self.room_event(
                &incident.id,
                "war_room_failed",
                Actor::system(),
                format!("the war room could not be opened: {words}"),
                false,
            )
            .await?;
            return Err(e);
        }
        let actor = Actor {
            via: Via::System,
            who: None,
            name: Some(name.clone()),
        };
        let refused: Vec<String> = room
            .refused
            .iter()
            .map(|r| format!("{} ({})", r.who, r.reason))
            .collect();
        let mut detail = format!(
            "{} opened by {name}, {} people in it",
            room.name,
            room.members.len()
        );
        if !refused.is_empty() {
            detail.push_str(&format!("; Lark refused {}", refused.join(", ")));
        }
        self.room_event(&incident.id, "war_room_opened", actor, detail, true)
            .await?;
        let presser = match (&requester, &presser_open_id) {
            (Requester::Nobody { .. }, _) => PresserOutcome::Nobody,
            (_, Some(open_id)) if room.members.iter().any(|m| &m.open_id == open_id) => PresserOutcome::Added,
            _ => PresserOutcome::NotInLark {
                reason: room
                    .refused
                    .iter()
                    .find(|r| {
                        (r.open_id.is_some() && r.open_id == presser_open_id)
                            || (r.member_id.is_some() && r.member_id == presser_member)
                    })
                    .map_or_else(|| "no Lark account found".to_string(), |r| r.reason.clone()),
            },
        };
        Ok(WarRoomOutcome {
            created: true,
            presser,
            war_room: room,
        })
    }

    /// Create, add, post, pin, top notice: each step saved as it lands.
    async fn set_up_room(
        &self,
        client: &LarkClient,
        room: &mut WarRoom,
        incident: &Incident,
        requester_name: &str,
        requester_member: Option<String>,
        requester_open_id: Option<String>,
    ) -> Result<(), IncidentError> {
        let now = self.clock.now();
        if room.chat_id.is_none() {
            let uuid = format!("wr-{}-{}", incident.id, room.generation);
            let mut first: Vec<String> = requester_open_id.iter().cloned().collect();
            let mut attempt = 0;
            let chat = loop {
                let new = NewChat {
                    name: room.name.clone(),
                    description: format!("War room of incident #{}", incident.number),
                    owner_id: None,
                    member_open_ids: first.clone(),
                };
                let result = client.create_chat(&new, Some(&uuid)).await;
                self.log_room_call(room, "create_chat", None, result.as_ref().map(drop))
                    .await?;
                match result {
                    Ok(chat) => break chat,
                    // One unavailable (or resigned) id refuses the whole create: create without
                    // the requester, who is then added (and refused) like everyone else.
                    Err(e) if matches!(e.code(), Some(232043 | 232022)) && !first.is_empty() => first.clear(),
                    Err(e) if busy(&e) && attempt < BUSY_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(BUSY_BACKOFF * attempt).await;
                    }
                    Err(e) => return Err(IncidentError::Lark(refusal_in_words(&e))),
                }
            };
            room.chat_id = Some(chat.chat_id.clone());
            for open_id in &first {
                room.members.push(RoomMember {
                    open_id: open_id.clone(),
                    member_id: requester_member.clone(),
                    name: requester_name.to_string(),
                });
            }
            self.save_room(room).await?;
        }
        let chat_id = room.chat_id.clone().expect("created above");
        let mut people = self.responders(incident)?;
        if let Some(m) = &requester_member
            && !people.contains(m)
        {
            people.push(m.clone());
        }
        self.invite(client, room, &people).await?;
        if let Some(open_id) = requester_open_id.filter(|_| requester_member.is_none()) {
            self.add_open_ids(client, room, vec![(open_id.clone(), None, open_id)])
                .await?;
        }
        if room.card_message_id.is_none() {
            let content = MessageContent {
                msg_type: "interactive".into(),
                content: self.card_content(incident),
            };
            let uuid = format!("wr-card-{}-{}", incident.id, room.generation);
            let result = client
                .send_message(ReceiveIdType::ChatId, &chat_id, &content, Some(&uuid))
                .await;
            self.log_room_call(
                room,
                "war_room_card",
                Some(format!("chat_id:{chat_id}")),
                result.as_ref().map(drop),
            )
            .await?;
            let sent = result
                .map_err(|e| IncidentError::Lark(format!("posting the card: {}", refusal_in_words(&e))))?;
            let record = super::model::SentCard {
                incident_id: incident.id.clone(),
                message_id: sent.message_id.clone(),
                integration_id: room.integration_id.clone(),
                receiver: format!("chat_id:{chat_id}"),
                sent_at: now,
            };
            let key = format!("{}/{}", incident.id, sent.message_id);
            self.store
                .write(move |w| w.put(&tables::INCIDENT_CARDS, key.as_str(), &record))
                .await?;
            room.card_message_id = Some(sent.message_id);
            self.save_room(room).await?;
        }
        let message_id = room.card_message_id.clone().expect("posted above");
        if !room.pinned {
            let result = client.pin_message(&message_id).await;
            self.log_room_call(
                room,
                "pin",
                Some(format!("chat_id:{chat_id}")),
                result.as_ref().map(drop),
            )
            .await?;
            match result {
                Ok(()) => room.pinned = true,
                Err(e) => room
                    .problems
                    .push(format!("pinning the card: {}", refusal_in_words(&e))),
            }
        }
        if !room.top_notice {
            let result = client.set_top_notice(&chat_id, &message_id).await;
            self.log_room_call(
                room,
                "top_notice",
                Some(format!("chat_id:{chat_id}")),
                result.as_ref().map(drop),
            )
            .await?;
            match result {
                Ok(()) => room.top_notice = true,
                Err(e) => room
                    .problems
                    .push(format!("setting the top notice: {}", refusal_in_words(&e))),
            }
        }
        room.state = WarRoomState::Open;
        self.save_room(room).await?;
        Ok(())
    }

    /// Adds members (by member id) not yet in the room; the ones without a Lark account are
    /// refused with the reason.
    async fn invite(
        &self,
        client: &LarkClient,
        room: &mut WarRoom,
        member_ids: &[String],
    ) -> Result<(), IncidentError> {
        let now = self.clock.now();
        let mut to_add = Vec::new();
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
                Ok(Some(open_id)) => to_add.push((open_id, Some(member.id.clone()), member.name.clone())),
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
        self.add_open_ids(client, room, to_add).await
    }

    /// One add-members call (retried while Lark says the chat is busy); records who got in
    /// and who was refused, with the reason.
    async fn add_open_ids(
        &self,
        client: &LarkClient,
        room: &mut WarRoom,
        people: Vec<(String, Option<String>, String)>,
    ) -> Result<(), IncidentError> {
        let people: Vec<_> = people
            .into_iter()
            .filter(|(open_id, _, _)| !room.members.iter().any(|m| &m.open_id == open_id))
            .collect();
        if people.is_empty() {
            return Ok(());
        }
        let chat_id = room.chat_id.clone().expect("adds follow the create");
        let open_ids: Vec<String> = people.iter().map(|(o, _, _)| o.clone()).collect();
        let mut attempt = 0;
        let added = loop {
            let result = client.add_chat_members(&chat_id, &open_ids).await;
            self.log_room_call(
                room,
                "add_members",
                Some(format!("chat_id:{chat_id}")),
                result.as_ref().map(drop),
            )
            .await?;
            match result {
                Ok(added) => break added,
                Err(e) if busy(&e) && attempt < BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(BUSY_BACKOFF * attempt).await;
                }
                Err(e) => {
                    if e.code() == Some(232009) {
                        room.state = WarRoomState::Closed;
                        room.closed_at = Some(self.clock.now());
                    }
                    let words = refusal_in_words(&e);
                    room.problems.push(format!("adding members: {words}"));
                    self.save_room(room).await?;
                    return Err(IncidentError::Lark(words));
                }
            }
        };
        let now = self.clock.now();
        for (open_id, member_id, name) in people {
            let reason = if added.invalid_id_list.contains(&open_id) {
                Some("resigned, outside the app's availability scope, or not activated")
            } else if added.not_existed_id_list.contains(&open_id) {
                Some("not found in Lark")
            } else if added.pending_approval_id_list.contains(&open_id) {
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
                None => room.members.push(RoomMember {
                    open_id,
                    member_id,
                    name,
                }),
            }
        }
        self.save_room(room).await?;
        Ok(())
    }

    /// Joins the requester to a live room: added by API, or given the share link when Lark
    /// will not add them.
    async fn join(
        &self,
        client: &LarkClient,
        mut room: WarRoom,
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
        if room.members.iter().any(|m| m.open_id == open_id) {
            return Ok(WarRoomOutcome {
                created: false,
                presser: PresserOutcome::AlreadyIn,
                war_room: room,
            });
        }
        self.add_open_ids(
            client,
            &mut room,
            vec![(open_id.clone(), member_id, name.clone())],
        )
        .await?;
        if room.members.iter().any(|m| m.open_id == open_id) {
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
        let reason = room
            .refused
            .iter()
            .find(|r| r.open_id.as_ref() == Some(&open_id))
            .map(|r| r.reason.clone())
            .unwrap_or_default();
        let chat_id = room.chat_id.clone().expect("a live room has a chat");
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

    /// Invites members who just became responders (escalation, reassignment) to a live room.
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
        let Some(mut room) = self.war_room(incident_id)?.filter(WarRoom::is_live) else {
            return Ok(());
        };
        let Some(client) = self.lark.get(&room.integration_id) else {
            return Ok(());
        };
        self.invite(&client, &mut room, member_ids).await
    }

    /// Queues a text message to the room's chat through the outbox.
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

    /// Renames the room for `state` (`[Resolved] …` or its own name) and records the state.
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
        let Some(client) = self.lark.get(&room.integration_id) else {
            return Ok(());
        };
        let chat_id = room.chat_id.clone().expect("a live room has a chat");
        let name = match state {
            WarRoomState::Resolved => resolved_name(&room.name),
            _ => room.name.clone(),
        };
        let result = client.rename_chat(&chat_id, &name).await;
        self.log_room_call(
            &room,
            "rename_chat",
            Some(format!("chat_id:{chat_id}")),
            result.as_ref().map(drop),
        )
        .await?;
        if let Err(e) = result {
            room.problems
                .push(format!("renaming the chat: {}", refusal_in_words(&e)));
            if e.code() == Some(232009) {
                room.state = WarRoomState::Closed;
                room.closed_at = Some(self.clock.now());
                self.save_room(&room).await?;
                return Ok(());
            }
        }
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
