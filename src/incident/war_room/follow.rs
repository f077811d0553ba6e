//! A live war room kept in step with its incident: new responders invited, state lines posted,
//! the summary and rename on resolve, its own name again on reopen, and closing when Lark
//! says the chat was disbanded.

use super::{WarRoom, WarRoomState, human_duration, resolved_name, state_line, who_did};
use crate::delivery::{JobKind, NewJob, Priority};
use crate::incident::model::{Actor, Incident, Status};
use crate::incident::{IncidentError, Incidents};
use crate::lark::ReceiveIdType;

impl Incidents {
    /// Invites members who just became responders (escalation, reassignment) to a live room,
    /// or to one being set up.
    pub(in crate::incident) async fn invite_to_war_room(
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
    pub(in crate::incident) async fn war_room_follow(
        &self,
        incident: &Incident,
        from: usize,
    ) -> Result<(), IncidentError> {
        let Some(room) = self.war_room(&incident.id)?.filter(WarRoom::is_live) else {
            return Ok(());
        };
        let priority = incident.severity.priority();
        for entry in incident.timeline.get(from..).unwrap_or_default() {
            let who = crate::incident::actor_name(&entry.actor);
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
                    crate::incident::actor_name(&e.actor)
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
