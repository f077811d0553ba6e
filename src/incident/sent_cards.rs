//! The cards sent for an incident: rendering the current card, sending it through the outbox,
//! remembering every card delivered (inside the delivery's own commit) and updating them all
//! when the incident changes, superseding those past Lark's update window.

use std::sync::{Arc, Weak};

use super::card::{self, CardContext};
use super::model::{Incident, SentCard};
use super::{IncidentError, Incidents, tables};
use crate::delivery::{DeliveredHook, Job, JobKind, NewJob};
use crate::lark::ReceiveIdType;
use crate::store::WriteTx;

/// A card older than this is past Lark's 14-day update window (with an hour to spare for the
/// outbox): it is superseded by a fresh one instead.
const CARD_UPDATE_WINDOW: chrono::Duration = chrono::Duration::hours(14 * 24 - 1);
const MAX_RENDERED_ENTRIES: usize = 10_000;

/// A sent card's receiver (`open_id:ou_…`, `chat_id:oc_…`) as its id type and id.
fn parse_receiver(receiver: &str) -> Option<(ReceiveIdType, String)> {
    let (kind, id) = receiver.split_once(':')?;
    let kind = match kind {
        "open_id" => ReceiveIdType::OpenId,
        "chat_id" => ReceiveIdType::ChatId,
        "user_id" => ReceiveIdType::UserId,
        "union_id" => ReceiveIdType::UnionId,
        "email" => ReceiveIdType::Email,
        _ => return None,
    };
    Some((kind, id.to_string()))
}

impl Incidents {
    /// Remembers every card sent for an incident, inside the commit that records the delivery.
    pub(super) fn delivered_hook(me: Weak<Incidents>) -> DeliveredHook {
        Arc::new(move |w: &WriteTx<'_>, job: &Job, returned: Option<&str>| {
            let (Some(incident_id), Some(message_id)) = (&job.incident_id, returned) else {
                return Ok(());
            };
            let JobKind::Send {
                receive_id_type,
                receive_id,
                msg_type,
                ..
            } = &job.kind
            else {
                return Ok(());
            };
            if msg_type != "interactive" {
                return Ok(());
            }
            // Reads first: a hook must fail before it writes.
            let current = w.get(&tables::INCIDENTS, incident_id.as_str())?;
            let record = SentCard {
                incident_id: incident_id.clone(),
                message_id: message_id.to_string(),
                integration_id: job.integration_id.clone(),
                receiver: format!("{}:{receive_id}", receive_id_type.as_str()),
                sent_at: job.first_attempt_at.unwrap_or(job.created_at),
            };
            w.put(
                &tables::INCIDENT_CARDS,
                format!("{incident_id}/{message_id}").as_str(),
                &record,
            )?;
            if let Some(me) = me.upgrade() {
                let rendered = me.rendered.lock().expect("rendered lock").remove(&job.id);
                let changed_since = current.is_some_and(|i| rendered.is_none_or(|v| v < i.version));
                if changed_since {
                    me.stale
                        .lock()
                        .expect("stale lock")
                        .insert((incident_id.clone(), message_id.to_string()), 0);
                    me.wake.notify_one();
                }
            }
            Ok(())
        })
    }

    /// The incident's card JSON as it renders now.
    pub fn card_content(&self, incident: &Incident) -> String {
        let integration = incident.integration_id.as_deref().unwrap_or("-");
        let assignee_names = incident
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
            incident_url: format!(
                "{}/lark/{integration}/app/incidents/{}",
                self.public_base, incident.id
            ),
            assignee_names,
            now: self.clock.now(),
            war_room: self.war_room_button(incident),
            on_call: self.on_call_lines(incident),
        };
        card::render(incident, &ctx)
    }

    pub(super) async fn send_card(
        &self,
        incident: &Incident,
        integration: &str,
        receive_id_type: ReceiveIdType,
        receive_id: &str,
        content: &str,
    ) -> Result<u64, IncidentError> {
        let job = self
            .delivery
            .enqueue(NewJob {
                integration_id: integration.to_string(),
                incident_id: Some(incident.id.clone()),
                priority: incident.severity.priority(),
                cosmetic: false,
                kind: JobKind::Send {
                    receive_id_type,
                    receive_id: receive_id.to_string(),
                    msg_type: "interactive".into(),
                    content: content.to_string(),
                },
            })
            .await?;
        let mut rendered = self.rendered.lock().expect("rendered lock");
        // Entries of sends that never deliver are not removed by the hook; forgetting them all
        // now and then only costs an extra cosmetic refresh of cards in flight.
        if rendered.len() >= MAX_RENDERED_ENTRIES {
            rendered.clear();
        }
        rendered.insert(job, incident.version);
        Ok(job)
    }

    /// Every card sent for the incident so far.
    pub fn cards(&self, incident_id: &str) -> Result<Vec<SentCard>, IncidentError> {
        Ok(self
            .store
            .read(|r| r.scan_prefix(&tables::INCIDENT_CARDS, &format!("{incident_id}/"), usize::MAX))?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// Updates every card of the incident through the outbox (pending updates of one card
    /// coalesce), except `answered_card`, which the caller replaces itself; a card past Lark's
    /// update window is replaced by a fresh one.
    pub(super) async fn refresh_cards(
        &self,
        incident: &Incident,
        cosmetic: bool,
        answered_card: Option<&str>,
    ) -> Result<(), IncidentError> {
        self.bot_webhooks_follow(incident).await?;
        let cards = self.cards(&incident.id)?;
        self.refresh_these_cards(incident, cards, cosmetic, answered_card)
            .await
    }

    pub(super) async fn refresh_these_cards(
        &self,
        incident: &Incident,
        cards: Vec<SentCard>,
        cosmetic: bool,
        answered_card: Option<&str>,
    ) -> Result<(), IncidentError> {
        if cards.is_empty() {
            return Ok(());
        }
        let content = self.card_content(incident);
        let now = self.clock.now();
        for sent in cards {
            let fresh = now - sent.sent_at < CARD_UPDATE_WINDOW;
            if fresh && answered_card == Some(sent.message_id.as_str()) {
                // An update queued before this change would put back an older card.
                self.delivery
                    .drop_pending_update(&sent.integration_id, &sent.message_id)
                    .await?;
                continue;
            }
            if fresh {
                self.delivery
                    .enqueue(NewJob {
                        integration_id: sent.integration_id.clone(),
                        incident_id: Some(incident.id.clone()),
                        priority: incident.severity.priority(),
                        cosmetic,
                        kind: JobKind::UpdateCard {
                            message_id: sent.message_id.clone(),
                            content: content.clone(),
                        },
                    })
                    .await?;
                continue;
            }
            let Some((kind, receive_id)) = parse_receiver(&sent.receiver) else {
                continue;
            };
            self.send_card(incident, &sent.integration_id, kind, &receive_id, &content)
                .await?;
            let key = format!("{}/{}", sent.incident_id, sent.message_id);
            self.store
                .write(move |w| w.remove(&tables::INCIDENT_CARDS, key.as_str()).map(drop))
                .await?;
            tracing::info!(incident = %incident.id, message = %sent.message_id, "card past Lark's 14-day update window superseded by a fresh one");
        }
        Ok(())
    }
}
