//! Incidents: what responders live in. Alerts (from sources with their own integration key, or
//! the admin API) open incidents or merge into the open one with the same dedup key; an
//! escalation rule chosen top-down sends cards to members, whoever is on call in its schedules
//! (asked of [`crate::schedule`]) and group chats, repeating and calling the next level until
//! someone answers; every card sent for an incident is remembered (inside
//! the outbox's own commit) and updated whenever the incident changes. A tick over durable
//! escalation state, read at the injected clock's `now`, fires whatever is due.
//!
//! The service's work is split by responsibility: [`lifecycle`] opens, merges and acts on
//! incidents (the pure transition of an action is [`transition`]), [`sent_cards`] keeps the
//! cards sent for an incident current, [`notify`] reaches people and chats ([`on_call`] finds who a
//! level's schedules page), [`tick`] fires what
//! is due, and [`webhook_events`] tells the outbound webhooks.

pub mod actions;
pub mod card;
pub mod demo;
pub mod escalation;
pub mod group_bot;
pub mod ingest;
mod lifecycle;
pub mod members;
pub mod model;
mod notify;
mod on_call;
mod records;
pub mod rules;
mod sent_cards;
mod sources;
pub mod tables;
mod tick;
mod transition;
pub mod war_room;
mod webhook_events;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::delivery::{Delivery, LarkClients};
use crate::schedule::Schedules;
use crate::store::{Store, StoreError};
use crate::webhook::Webhooks;
pub use demo::{DemoPerson, DemoSeed};
use members::Members;
use model::{Actor, Incident, Severity, TimelineEvent};

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Lark: {0}")]
    Lark(String),
    /// The integration's `war_room` switch is off.
    #[error("war rooms are off for integration {0}: turn its war_room switch on first")]
    WarRoomDisabled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, reason: impl Into<String>) -> IncidentError {
    IncidentError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// An incident as opened through the admin API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Repeats with the same key merge into the open incident.
    #[serde(default)]
    pub dedup_key: Option<String>,
    /// Member ids.
    #[serde(default)]
    pub assignees: Vec<String>,
}

/// What can be done to an incident (admin API, and the card and bot in the next issue).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Acknowledge,
    Unacknowledge,
    Resolve,
    Snooze { minutes: u32 },
    Reopen,
    Reassign { assignees: Vec<String> },
    Note { text: String },
}

/// What an alert did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum AlertOutcome {
    Opened {
        incident_id: String,
        number: u64,
    },
    Merged {
        incident_id: String,
        number: u64,
    },
    Resolved {
        incident_id: String,
        number: u64,
    },
    /// A recovery for which no incident is open.
    NothingOpen,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    /// `triggered`, `acknowledged`, `resolved`, or `open` (triggered or acknowledged).
    pub status: Option<String>,
    pub severity: Option<String>,
    /// `key=value`
    pub label: Option<String>,
    /// Only incidents this member (id) is a responder of.
    pub assignee: Option<String>,
    /// Incidents numbered below this (paging back).
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

/// The incident service.
pub struct Incidents {
    store: Store,
    clock: Arc<dyn Clock>,
    delivery: Arc<Delivery>,
    lark: Arc<LarkClients>,
    webhooks: Arc<Webhooks>,
    bot_webhooks: Arc<crate::bot_webhook::BotWebhooks>,
    public_base: String,
    pub members: Members,
    /// Asked who is on call when a level names schedules.
    schedules: Arc<Schedules>,
    wake: Notify,
    /// One tick at a time, so nothing due fires twice.
    ticking: tokio::sync::Mutex<()>,
    /// Incident version each queued card send was rendered from, by outbox job id.
    rendered: Mutex<HashMap<u64, u64>>,
    /// Cards (incident id, message id) delivered after their incident changed: refreshed on
    /// the next tick that sees them recorded.
    /// With how many ticks it has waited.
    stale: Mutex<HashMap<(String, String), u32>>,
    /// One war-room operation at a time per incident (which serialises member adds per chat).
    war_room_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever a war room has taken a step, for requests waiting on its set-up.
    war_room_progress: tokio::sync::watch::Sender<u64>,
    /// This service, for work it starts in the background (automatic war rooms).
    me: Weak<Incidents>,
}

/// Adds an entry to the incident's timeline.
fn push_event(incident: &mut Incident, at: DateTime<Utc>, kind: &str, actor: &Actor, detail: Option<String>) {
    incident.timeline.push(TimelineEvent {
        at,
        kind: kind.to_string(),
        actor: actor.clone(),
        detail,
    });
}

fn actor_name(actor: &Actor) -> String {
    actor
        .name
        .clone()
        .or_else(|| actor.who.clone())
        .unwrap_or_else(|| "system".into())
}

/// The services incidents send through and ask: the outbox, Lark, outbound webhooks, group-bot
/// webhooks and the on-call resolver.
pub struct Collaborators {
    pub delivery: Arc<Delivery>,
    pub lark: Arc<LarkClients>,
    pub webhooks: Arc<Webhooks>,
    pub bot_webhooks: Arc<crate::bot_webhook::BotWebhooks>,
    pub schedules: Arc<Schedules>,
}

impl Incidents {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        with: Collaborators,
        public_base: &str,
    ) -> Result<Arc<Incidents>, StoreError> {
        records::build_open_index(&store)?;
        let Collaborators {
            delivery,
            lark,
            webhooks,
            bot_webhooks,
            schedules,
        } = with;
        let incidents = Arc::new_cyclic(|me| Incidents {
            me: me.clone(),
            war_room_locks: Mutex::new(HashMap::new()),
            war_room_progress: tokio::sync::watch::channel(0).0,
            members: Members::new(store.clone(), clock.clone()),
            store,
            clock,
            delivery: delivery.clone(),
            lark,
            webhooks,
            bot_webhooks,
            schedules,
            public_base: public_base.trim_end_matches('/').to_string(),
            wake: Notify::new(),
            ticking: tokio::sync::Mutex::new(()),
            rendered: Mutex::new(HashMap::new()),
            stale: Mutex::new(HashMap::new()),
        });
        delivery.on_delivered(Self::delivered_hook(Arc::downgrade(&incidents)));
        delivery.on_finished(Self::war_room_finished_hook(Arc::downgrade(&incidents)));
        Ok(incidents)
    }
}
