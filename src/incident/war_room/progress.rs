//! A war room's set-up, one step per delivered outbox job (create → add members → card → pin →
//! top notice), and resuming it after a restart.

use std::sync::Arc;

use super::{Adding, Invitee, Refusal, RoomMember, WarRoom, WarRoomState, failure_in_words};
use crate::delivery::{CallOutcome, FinishedHook, Job, JobKind};
use crate::incident::model::{Actor, Via};
use crate::incident::tables;
use crate::incident::{IncidentError, Incidents};
use crate::lark::{AddedMembers, ReceiveIdType};

impl Incidents {
    /// Queues the room's next calls: the create; an add for the people waiting, when no add is
    /// in the outbox; then, once everyone asked for is in or refused, the card, the pin and the
    /// top notice, one at a time. Returns whether the set-up is done (the room is now open).
    /// The caller saves the room.
    pub(super) async fn advance(&self, room: &mut WarRoom) -> Result<bool, IncidentError> {
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
    pub(super) async fn room_opened(&self, room: &WarRoom) -> Result<(), IncidentError> {
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
    pub(in crate::incident) fn war_room_finished_hook(me: std::sync::Weak<Incidents>) -> FinishedHook {
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
}
