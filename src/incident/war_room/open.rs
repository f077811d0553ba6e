//! Opening a war room or joining the one the incident has: the request, waiting for the set-up
//! or the requester's add, and who is invited.

use super::{
    Invitee, PresserOutcome, ROOM_WAIT, Refusal, Requester, WarRoom, WarRoomOutcome, WarRoomState,
    refusal_in_words, room_name,
};
use crate::delivery::{JobKind, NewJob, Priority};
use crate::incident::model::{Actor, Via};
use crate::incident::{IncidentError, Incidents};

impl Incidents {
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

    pub(super) async fn room_job(
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

    /// The members as people to add; those without a Lark account are refused with the reason.
    pub(super) async fn invitees(&self, room: &mut WarRoom, member_ids: &[String]) -> Vec<Invitee> {
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
    pub(super) async fn join(
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
}
