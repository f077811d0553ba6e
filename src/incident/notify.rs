//! Notifying people and chats of an incident: each member's open_id in the integration (looked
//! up by email or mobile the first time), the card sent to each, and what could not be sent
//! recorded in the operation log instead.

use super::model::{Incident, Level};
use super::{IncidentError, Incidents};
use crate::lark::ReceiveIdType;

impl Incidents {
    /// The member's open_id in this integration, looking it up by email/mobile the first time.
    pub(super) async fn open_id_for(
        &self,
        member_id: &str,
        integration: &str,
    ) -> Result<Option<String>, IncidentError> {
        let member = self.members.get(member_id)?;
        if let Some(identity) = member.lark.get(integration) {
            return Ok(Some(identity.open_id.clone()));
        }
        let Some(client) = self.lark.get(integration) else {
            return Ok(None);
        };
        let report = self
            .members
            .link_by_lookup(integration, &client, Some(std::slice::from_ref(&member.id)))
            .await?;
        if report.linked.is_empty() {
            return Ok(None);
        }
        Ok(self
            .members
            .get(member_id)?
            .lark
            .get(integration)
            .map(|i| i.open_id.clone()))
    }

    pub(super) async fn notify_people(
        &self,
        incident: &Incident,
        integration: &str,
        member_ids: &[String],
    ) -> Result<(), IncidentError> {
        if member_ids.is_empty() {
            return Ok(());
        }
        let content = self.card_content(incident);
        for member_id in member_ids {
            let open_id = match self.open_id_for(member_id, integration).await {
                Ok(found) => found,
                Err(IncidentError::NotFound(_)) => continue,
                Err(IncidentError::Lark(reason)) => {
                    tracing::warn!(member = %member_id, %reason, "member look-up failed");
                    self.delivery
                        .record_unsendable(
                            integration,
                            Some(&incident.id),
                            &format!("member:{member_id}"),
                            "lookup_failed",
                        )
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match open_id {
                Some(open_id) => {
                    self.send_card(incident, integration, ReceiveIdType::OpenId, &open_id, &content)
                        .await?;
                }
                None => {
                    self.delivery
                        .record_unsendable(
                            integration,
                            Some(&incident.id),
                            &format!("member:{member_id}"),
                            "app_not_linked",
                        )
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Sends the incident's card to one member (after they link their Lark account, say), as a
    /// page would: through the outbox, or recorded as unsendable.
    pub async fn notify_member(
        &self,
        incident: &Incident,
        integration: &str,
        member_id: &str,
    ) -> Result<(), IncidentError> {
        self.notify_people(incident, integration, &[member_id.to_string()])
            .await
    }

    /// Sends the card to `members` (the level's own and those on call in its schedules) and to
    /// the level's chats.
    pub(super) async fn notify_level(
        &self,
        incident: &Incident,
        integration: &str,
        level: &Level,
        members: &[String],
    ) -> Result<(), IncidentError> {
        self.notify_people(incident, integration, members).await?;
        self.notify_bot_webhooks(incident, integration, &level.bot_webhooks)
            .await?;
        let content = self.card_content(incident);
        for chat in &level.chats {
            // A disbanded chat (or one the bot left or was removed from) would only fail at
            // Lark: say so instead.
            if let Some(reason) = crate::integration::chats::unusable_reason(&self.store, integration, chat)?
            {
                self.delivery
                    .record_unsendable(integration, Some(&incident.id), &format!("chat:{chat}"), reason)
                    .await?;
                continue;
            }
            self.send_card(incident, integration, ReceiveIdType::ChatId, chat, &content)
                .await?;
        }
        Ok(())
    }
}
