//! What the outbound webhooks hear of an incident: each new timeline entry that someone can
//! subscribe to, published with the incident as it durably stands.

use super::Incidents;
use super::model::{Actor, Incident, Via};

/// The outbound webhook event type of a timeline entry; `None` for entries nobody subscribes
/// to (a notification sent).
fn webhook_event_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "triggered" => "i_new",
        "acknowledged" => "i_ack",
        "unacknowledged" => "i_unack",
        "snoozed" => "i_snooze",
        "snooze_ended" => "i_wake",
        "resolved" => "i_rslv",
        "reopened" => "i_reopen",
        "reassigned" => "i_assign",
        "note" => "i_comm",
        "escalated" => "i_esc",
        _ => return None,
    })
}

fn webhook_operator(actor: &Actor) -> crate::webhook::Operator {
    let source = match actor.via {
        Via::Card => "card",
        Via::Bot => "bot",
        Via::Homepage => "homepage",
        Via::Api => "api",
        Via::Alert => "alert",
        // The system acts on incidents only when escalating or waking them.
        Via::System => "escalation",
    };
    crate::webhook::Operator {
        source: source.to_string(),
        id: actor.who.clone(),
        name: actor.name.clone(),
    }
}

impl Incidents {
    /// Publishes to the outbound webhooks the timeline entries from `from` on, with the
    /// incident as it now durably stands. The change is already committed, so a failure to
    /// queue is logged rather than undoing it.
    pub(super) async fn publish_since(&self, incident: &Incident, from: usize) {
        let Some(new) = incident.timeline.get(from..) else {
            return;
        };
        let snapshot = match serde_json::to_value(incident) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(incident = %incident.id, error = %e, "cannot serialize an incident for webhooks");
                return;
            }
        };
        for entry in new {
            let Some(event_type) = webhook_event_type(&entry.kind) else {
                continue;
            };
            let operator = webhook_operator(&entry.actor);
            if let Err(e) = self
                .webhooks
                .publish(event_type, &operator, Some(&incident.id), &snapshot)
                .await
            {
                tracing::error!(incident = %incident.id, event_type, error = %e, "cannot queue an incident webhook event");
            }
        }
    }
}
