//! Incidents: what responders live in. Alerts (from sources with their own integration key, or
//! the admin API) open incidents or merge into the open one with the same dedup key; an
//! escalation rule chosen top-down sends cards to members, whoever is on call in its schedules
//! (asked of [`crate::schedule`]) and group chats, repeating and calling
//! the next level until someone answers; every card sent for an incident is remembered (inside
//! the outbox's own commit) and updated whenever the incident changes. A tick over durable
//! escalation state, read at the injected clock's `now`, fires whatever is due.

pub mod actions;
pub mod card;
pub mod demo;
pub mod escalation;
pub mod ingest;
pub mod members;
pub mod model;
mod on_call;
mod records;
pub mod rules;
mod sources;
pub mod tables;
pub mod war_room;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::delivery::{DeliveredHook, Delivery, Job, JobKind, LarkClients, NewJob};
use crate::lark::ReceiveIdType;
use crate::schedule::Schedules;
use crate::store::{Store, StoreError, WriteTx};
use crate::webhook::Webhooks;
use card::CardContext;
pub use demo::{DemoPerson, DemoSeed};
use escalation::Step;
use ingest::AlertEvent;
use members::Members;
use model::{
    Actor, AlertSource, Escalation, Incident, Level, Rule, SentCard, Severity, Status, TimelineEvent, Via,
};
use records::{EscalationChange, snooze_key, store_incident};

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

/// A card older than this is past Lark's 14-day update window (with an hour to spare for the
/// outbox): it is superseded by a fresh one instead.
const CARD_UPDATE_WINDOW: chrono::Duration = chrono::Duration::hours(14 * 24 - 1);
/// How often the escalation tick runs on its own.
const TICK_EVERY: Duration = Duration::from_secs(1);
const MAX_PAGE: usize = 200;
const MAX_RENDERED_ENTRIES: usize = 10_000;
/// Ticks a stale card waits for its delivery's commit before it is forgotten.
const MAX_STALE_WAIT_TICKS: u32 = 30;

/// An incident as opened through the admin API.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    pub status: Option<String>,
    pub severity: Option<String>,
    /// `key=value`
    pub label: Option<String>,
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
    /// This service, for work it starts in the background (automatic war rooms).
    me: Weak<Incidents>,
}

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

/// Snoozes sort by their end: `{ms:015}/{incident}`.
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
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        delivery: Arc<Delivery>,
        lark: Arc<LarkClients>,
        webhooks: Arc<Webhooks>,
        schedules: Arc<Schedules>,
        public_base: &str,
    ) -> Arc<Incidents> {
        let incidents = Arc::new_cyclic(|me| Incidents {
            me: me.clone(),
            war_room_locks: Mutex::new(HashMap::new()),
            members: Members::new(store.clone(), clock.clone()),
            store,
            clock,
            delivery: delivery.clone(),
            lark,
            webhooks,
            schedules,
            public_base: public_base.trim_end_matches('/').to_string(),
            wake: Notify::new(),
            ticking: tokio::sync::Mutex::new(()),
            rendered: Mutex::new(HashMap::new()),
            stale: Mutex::new(HashMap::new()),
        });
        delivery.on_delivered(Self::delivered_hook(Arc::downgrade(&incidents)));
        incidents
    }

    /// Remembers every card sent for an incident, inside the commit that records the delivery.
    fn delivered_hook(me: Weak<Incidents>) -> DeliveredHook {
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

    /// Runs the tick every second, or sooner when woken, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "incident tick failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK_EVERY) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    // ---- incidents ----

    /// Publishes to the outbound webhooks the timeline entries from `from` on, with the
    /// incident as it now durably stands. The change is already committed, so a failure to
    /// queue is logged rather than undoing it.
    async fn publish_since(&self, incident: &Incident, from: usize) {
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

    /// An incident by id (`inc_…`) or number (`42`, `#42`).
    pub fn get(&self, reference: &str) -> Result<Incident, IncidentError> {
        let not_found = || IncidentError::NotFound(format!("no incident {reference}"));
        let id = if reference.starts_with(crate::ids::prefix::INCIDENT) {
            reference.to_string()
        } else {
            let number: u64 = reference
                .trim_start_matches('#')
                .parse()
                .map_err(|_| not_found())?;
            self.store
                .read(|r| r.get(&tables::INCIDENT_NUMBERS, &number))?
                .ok_or_else(not_found)?
        };
        self.store
            .read(|r| r.get(&tables::INCIDENTS, id.as_str()))?
            .ok_or_else(not_found)
    }

    /// Newest first, filtered, paged by number.
    pub fn list(&self, q: &IncidentQuery) -> Result<Vec<Incident>, IncidentError> {
        let status = q
            .status
            .as_deref()
            .map(|s| match s {
                "triggered" => Ok(Status::Triggered),
                "acknowledged" => Ok(Status::Acknowledged),
                "resolved" => Ok(Status::Resolved),
                other => Err(invalid(
                    "status",
                    format!("{other:?} is not triggered, acknowledged or resolved"),
                )),
            })
            .transpose()?;
        let severity = q
            .severity
            .as_deref()
            .map(|s| {
                serde_json::from_value::<Severity>(serde_json::Value::String(s.into()))
                    .map_err(|_| invalid("severity", format!("{s:?} is not critical, warning or info")))
            })
            .transpose()?;
        let label = q
            .label
            .as_deref()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| invalid("label", "give it as key=value"))
            })
            .transpose()?;
        let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let mut out = Vec::new();
        let mut cursor = q.before;
        loop {
            let chunk = self
                .store
                .read(|r| r.page(&tables::INCIDENT_NUMBERS, cursor.as_ref(), 500, true))?;
            let Some(last) = chunk.last().map(|(k, _)| *k) else {
                return Ok(out);
            };
            for (_, id) in chunk {
                let Some(incident) = self.store.read(|r| r.get(&tables::INCIDENTS, id.as_str()))? else {
                    continue;
                };
                let keep = status.is_none_or(|s| incident.status == s)
                    && severity.is_none_or(|s| incident.severity == s)
                    && label
                        .as_ref()
                        .is_none_or(|(k, v)| incident.labels.get(k) == Some(v));
                if keep {
                    out.push(incident);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            cursor = Some(last);
        }
    }

    fn rules_in_order(&self) -> Result<Vec<Rule>, IncidentError> {
        let mut rules: Vec<Rule> = self
            .store
            .read(|r| r.page(&tables::RULES, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rules.sort_by(|a, b| a.position.cmp(&b.position).then(a.created_at.cmp(&b.created_at)));
        Ok(rules)
    }

    fn check_members(&self, ids: &[String], field: &str) -> Result<(), IncidentError> {
        for id in ids {
            if self
                .store
                .read(|r| r.get(&tables::MEMBERS, id.as_str()))?
                .is_none()
            {
                return Err(invalid(field, format!("no member {id}")));
            }
        }
        Ok(())
    }

    /// Opens an incident, or merges into the open one with the same dedup key.
    pub async fn open(&self, new: NewIncident, actor: Actor) -> Result<AlertOutcome, IncidentError> {
        ingest::check_fields(
            ingest::FieldNames {
                title: "title",
                description: "description",
                labels: "labels",
            },
            &new.title,
            &new.description,
            &new.labels,
        )?;
        if let Some(key) = &new.dedup_key {
            ingest::check_key("dedup_key", key)?;
        }
        self.check_members(&new.assignees, "assignees")?;
        let dedup = new
            .dedup_key
            .clone()
            .filter(|k| !k.is_empty())
            .map(|k| format!("api/{k}"));
        self.open_or_merge(new, dedup, None, actor).await
    }

    async fn open_or_merge(
        &self,
        new: NewIncident,
        dedup: Option<String>,
        source_id: Option<String>,
        actor: Actor,
    ) -> Result<AlertOutcome, IncidentError> {
        let now = self.clock.now();
        let rules = self.rules_in_order()?;
        let rule = rules::first_match(&rules, new.severity, &new.labels, now).cloned();
        let auto_room = rule
            .as_ref()
            .filter(|r| r.war_room == model::WarRoomMode::Auto)
            .map(|r| r.name.clone());
        let id = crate::ids::new_id(crate::ids::prefix::INCIDENT, 8);
        let (outcome, raised) = self
            .store
            .write(move |w| {
                if let Some(key) = &dedup
                    && let Some(open_id) = w.get(&tables::INCIDENT_DEDUP, key.as_str())?
                    && let Some(mut open) = w.get(&tables::INCIDENTS, open_id.as_str())?
                {
                    let before = open.clone();
                    open.alert_count += 1;
                    open.updated_at = now;
                    // A repeat that is more urgent raises the incident (and its cards); a less
                    // urgent one never lowers it: the worst the alert has been is what counts.
                    let raised = new.severity.urgency() > open.severity.urgency();
                    if raised {
                        let detail = format!(
                            "severity raised from {} to {} by a repeated alert",
                            open.severity.as_str(),
                            new.severity.as_str()
                        );
                        open.severity = new.severity;
                        open.version += 1;
                        push_event(&mut open, now, "severity_raised", &actor, Some(detail));
                    }
                    store_incident(w, Some(&before), &open, EscalationChange::Keep)?;
                    let outcome = AlertOutcome::Merged {
                        incident_id: open.id.clone(),
                        number: open.number,
                    };
                    return Ok((outcome, raised.then_some(open)));
                }
                let number = w.next_sequence("incident")?;
                let mut incident = Incident {
                    id: id.clone(),
                    number,
                    title: new.title.trim().to_string(),
                    description: new.description,
                    severity: new.severity,
                    labels: new.labels,
                    status: Status::Triggered,
                    snoozed_until: None,
                    assignees: new.assignees,
                    acknowledged_by: Vec::new(),
                    dedup_key: dedup.clone(),
                    source_id,
                    rule_id: rule.as_ref().map(|r| r.id.clone()),
                    integration_id: rule.as_ref().map(|r| r.integration_id.clone()),
                    alert_count: 1,
                    created_at: now,
                    updated_at: now,
                    resolved_at: None,
                    version: 1,
                    timeline: Vec::new(),
                };
                let detail = match &rule {
                    Some(r) => format!("rule {}", r.name),
                    None => "no escalation rule matched".to_string(),
                };
                push_event(&mut incident, now, "triggered", &actor, Some(detail));
                let esc = match &rule {
                    Some(rule) => EscalationChange::Put(escalation::start(&incident, rule, now)),
                    None => EscalationChange::Keep,
                };
                store_incident(w, None, &incident, esc)?;
                Ok((
                    AlertOutcome::Opened {
                        incident_id: id,
                        number,
                    },
                    None,
                ))
            })
            .await?;
        if let Some(incident) = raised {
            tracing::info!(incident = %incident.id, severity = incident.severity.as_str(), "incident severity raised by a repeated alert");
            self.refresh_cards(&incident, false, None).await?;
        }
        if let AlertOutcome::Opened { incident_id, number } = &outcome {
            tracing::info!(incident = %incident_id, number, "incident opened");
            if let Ok(incident) = self.get(incident_id) {
                self.publish_since(&incident, 0).await;
            }
            if let Some(rule) = auto_room {
                self.open_war_room_in_background(incident_id, &rule);
            }
        }
        self.wake.notify_one();
        Ok(outcome)
    }

    /// An alert from a source: opens, merges or resolves by its key.
    pub async fn alert(
        &self,
        source: &AlertSource,
        event: AlertEvent,
    ) -> Result<AlertOutcome, IncidentError> {
        let dedup = format!("{}/{}", source.id, event.key);
        let actor = Actor {
            via: Via::Alert,
            who: Some(source.id.clone()),
            name: Some(source.name.clone()),
        };
        if event.resolved {
            let open = self
                .store
                .read(|r| r.get(&tables::INCIDENT_DEDUP, dedup.as_str()))?;
            return match open {
                Some(id) => {
                    let incident = self.act(&id, Action::Resolve, actor).await?;
                    Ok(AlertOutcome::Resolved {
                        incident_id: incident.id,
                        number: incident.number,
                    })
                }
                None => Ok(AlertOutcome::NothingOpen),
            };
        }
        let new = NewIncident {
            title: event.title,
            description: event.description,
            severity: event.severity,
            labels: event.labels,
            dedup_key: None,
            assignees: Vec::new(),
        };
        self.open_or_merge(new, Some(dedup), Some(source.id.clone()), actor)
            .await
    }

    /// Applies an action; the incident's cards are updated and its escalation follows.
    pub async fn act(
        &self,
        reference: &str,
        action: Action,
        actor: Actor,
    ) -> Result<Incident, IncidentError> {
        self.act_answering(reference, action, actor, None).await
    }

    /// [`Incidents::act`] for a caller that replaces the card of `answered_card` itself (the
    /// answer to a button press carries the new card): every other copy is updated through the
    /// outbox, that one is not, and an update still waiting for it is dropped.
    pub async fn act_answering(
        &self,
        reference: &str,
        action: Action,
        actor: Actor,
        answered_card: Option<&str>,
    ) -> Result<Incident, IncidentError> {
        let current = self.get(reference)?;
        let now = self.clock.now();
        if let Action::Reassign { assignees } = &action {
            self.check_members(assignees, "assignees")?;
        }
        if let Action::Snooze { minutes } = &action
            && !(1..=7 * 24 * 60).contains(minutes)
        {
            return Err(invalid("minutes", "snooze for 1 minute to 7 days"));
        }
        // A reopened incident is escalated by whichever rule matches now.
        let reopen_rule = match action {
            Action::Reopen => {
                let rules = self.rules_in_order()?;
                rules::first_match(&rules, current.severity, &current.labels, now).cloned()
            }
            _ => None,
        };
        let id = current.id.clone();
        let name = actor_name(&actor);
        let act = action.clone();
        let (before, after) = self
            .store
            .write(move |w| {
                let Some(mut inc) = w.get(&tables::INCIDENTS, id.as_str())? else {
                    return Ok(None);
                };
                let before = inc.clone();
                let esc = w.get(&tables::ESCALATIONS, id.as_str())?;
                let esc_change = match apply(&mut inc, &act, &actor, &name, now, reopen_rule.as_ref(), esc) {
                    Ok(change) => change,
                    Err(e) => return Ok(Some((before, Err(e)))),
                };
                if inc.version != before.version || inc.timeline.len() != before.timeline.len() {
                    inc.updated_at = now;
                }
                store_incident(w, Some(&before), &inc, esc_change)?;
                Ok(Some((before, Ok(inc))))
            })
            .await?
            .ok_or_else(|| IncidentError::NotFound(format!("no incident {reference}")))?;
        let after = after?;
        self.publish_since(&after, before.timeline.len()).await;
        if let Err(e) = self.war_room_follow(&after, before.timeline.len()).await {
            tracing::warn!(incident = %after.id, error = %e, "the war room could not follow a change");
        }
        if after.version != before.version {
            let cosmetic = matches!(action, Action::Reassign { .. });
            self.refresh_cards(&after, cosmetic, answered_card).await?;
        }
        if let Action::Reassign { assignees } = &action {
            let added: Vec<String> = assignees
                .iter()
                .filter(|a| !before.assignees.contains(a))
                .cloned()
                .collect();
            if let Some(integration) = after.integration_id.clone() {
                self.notify_people(&after, &integration, &added).await?;
            }
            if let Err(e) = self.invite_to_war_room(&after.id, &added).await {
                tracing::warn!(incident = %after.id, error = %e, "cannot invite reassigned people to the war room");
            }
        }
        self.wake.notify_one();
        Ok(after)
    }

    /// Records that `actor` tried `attempted` (e.g. "acknowledge") and was refused for their
    /// role: a timeline event and an operation-log entry, and nothing else changes.
    pub async fn record_refused_attempt(
        &self,
        reference: &str,
        actor: Actor,
        role: &str,
        attempted: &str,
    ) -> Result<(), IncidentError> {
        let current = self.get(reference)?;
        let now = self.clock.now();
        let id = current.id.clone();
        let integration = current.integration_id.clone().unwrap_or_default();
        let detail = format!("{attempted} refused: role {role}");
        let (role, attempted) = (role.to_string(), attempted.to_string());
        self.store
            .write(move |w| {
                let Some(mut inc) = w.get(&tables::INCIDENTS, id.as_str())? else {
                    return Ok(());
                };
                let before = inc.clone();
                push_event(&mut inc, now, "action_refused", &actor, Some(detail));
                inc.updated_at = now;
                store_incident(w, Some(&before), &inc, EscalationChange::Keep)?;
                crate::delivery::oplog::append(
                    w,
                    crate::delivery::oplog::OpEntry {
                        at: now,
                        integration_id: integration,
                        incident_id: Some(id.clone()),
                        receiver: actor.who.clone(),
                        kind: attempted,
                        outcome: "refused_role".into(),
                        reason: Some(role),
                        ..Default::default()
                    },
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Opens the war room a rule asks for, after the incident is committed; a failure is on
    /// the incident and in the operation log.
    fn open_war_room_in_background(&self, incident_id: &str, rule: &str) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let (incident_id, rule) = (incident_id.to_string(), rule.to_string());
        tokio::spawn(async move {
            let requester = war_room::Requester::Nobody {
                name: format!("rule {rule}"),
            };
            if let Err(e) = me.open_war_room(&incident_id, requester).await {
                tracing::warn!(incident = %incident_id, error = %e, "the automatic war room did not open");
            }
        });
    }

    // ---- cards ----

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
        };
        card::render(incident, &ctx)
    }

    async fn send_card(
        &self,
        incident: &Incident,
        integration: &str,
        receive_id_type: ReceiveIdType,
        receive_id: &str,
        content: &str,
    ) -> Result<(), IncidentError> {
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
        Ok(())
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
    async fn refresh_cards(
        &self,
        incident: &Incident,
        cosmetic: bool,
        answered_card: Option<&str>,
    ) -> Result<(), IncidentError> {
        let cards = self.cards(&incident.id)?;
        self.refresh_these_cards(incident, cards, cosmetic, answered_card)
            .await
    }

    async fn refresh_these_cards(
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

    // ---- notifications ----

    /// The member's open_id in this integration, looking it up by email/mobile the first time.
    async fn open_id_for(&self, member_id: &str, integration: &str) -> Result<Option<String>, IncidentError> {
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

    async fn notify_people(
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
                        .await?
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
    async fn notify_level(
        &self,
        incident: &Incident,
        integration: &str,
        level: &Level,
        members: &[String],
    ) -> Result<(), IncidentError> {
        self.notify_people(incident, integration, members).await?;
        let content = self.card_content(incident);
        for chat in &level.chats {
            // A disbanded chat (or one the bot left) would only fail at Lark: say so instead.
            if !crate::integration::chats::is_usable(&self.store, integration, chat)? {
                self.delivery
                    .record_unsendable(
                        integration,
                        Some(&incident.id),
                        &format!("chat:{chat}"),
                        "chat_disbanded",
                    )
                    .await?;
                continue;
            }
            self.send_card(incident, integration, ReceiveIdType::ChatId, chat, &content)
                .await?;
        }
        Ok(())
    }

    /// Fires everything due at the clock's `now`: ended snoozes, notifications, repeats and
    /// escalations, and refreshes of cards delivered after their incident changed.
    pub async fn tick(&self) -> Result<(), IncidentError> {
        let _one_at_a_time = self.ticking.lock().await;
        let now = self.clock.now();
        self.end_snoozes(now).await?;
        let escalations: Vec<Escalation> = self
            .store
            .read(|r| r.page(&tables::ESCALATIONS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let rules: HashMap<String, Rule> = self
            .rules_in_order()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for esc in escalations {
            if let Err(e) = self.advance_one(esc, &rules, now).await {
                tracing::error!(error = %e, "escalation step failed");
            }
        }
        let stale: Vec<_> = self.stale.lock().expect("stale lock").drain().collect();
        let mut refreshed = HashSet::new();
        for ((incident_id, message_id), waited) in stale {
            let key = format!("{incident_id}/{message_id}");
            // The hook runs inside the delivery's commit: until that commit lands, wait (a
            // commit that failed is retried by the outbox and runs the hook again).
            if self
                .store
                .read(|r| r.get(&tables::INCIDENT_CARDS, key.as_str()))?
                .is_none()
            {
                if waited < MAX_STALE_WAIT_TICKS {
                    self.stale
                        .lock()
                        .expect("stale lock")
                        .insert((incident_id, message_id), waited + 1);
                }
                continue;
            }
            if refreshed.insert(incident_id.clone())
                && let Ok(incident) = self.get(&incident_id)
            {
                self.refresh_cards(&incident, true, None).await?;
            }
        }
        Ok(())
    }

    async fn advance_one(
        &self,
        esc: Escalation,
        rules: &HashMap<String, Rule>,
        now: DateTime<Utc>,
    ) -> Result<(), IncidentError> {
        let id = esc.incident_id.clone();
        let incident = match self.store.read(|r| r.get(&tables::INCIDENTS, id.as_str()))? {
            Some(i) => i,
            None => {
                self.store
                    .write(move |w| records::remove_escalation(w, &id))
                    .await?;
                return Ok(());
            }
        };
        let Some(rule) = rules.get(&esc.rule_id) else {
            self.store
                .write(move |w| records::remove_escalation(w, &id))
                .await?;
            return Ok(());
        };
        let before = esc.clone();
        let nobody_paged = |level: usize| self.level_people(&rule.levels[level], now).members.is_empty();
        let plan = escalation::advance(esc, &incident, rule, now, &nobody_paged);
        // Who each level notified now pages, asked of the schedules once.
        let people: HashMap<usize, on_call::LevelPeople> = plan
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Notify { level, .. } => Some(*level),
                Step::Escalated { .. } => None,
            })
            .map(|level| (level, self.level_people(&rule.levels[level], now)))
            .collect();
        // The people of a level notified for the first time become responders before their
        // cards render, so the cards name them; cards already out are updated after the write.
        let mut incident = incident;
        let mut joining: Vec<String> = Vec::new();
        for step in &plan.steps {
            if let Step::Notify { level, repeat: false } = step {
                for member in &people[level].members {
                    if !incident.assignees.contains(member)
                        && !joining.contains(member)
                        && self.members.get(member).is_ok()
                    {
                        joining.push(member.clone());
                    }
                }
            }
        }
        let old_version = incident.version;
        // Cards sent from here on already name the new responders.
        let cards_before = if joining.is_empty() {
            Vec::new()
        } else {
            self.cards(&incident.id)?
        };
        if !joining.is_empty() {
            incident.assignees.extend(joining.iter().cloned());
            incident.version += 1;
        }
        let mut events = Vec::new();
        for step in &plan.steps {
            match step {
                Step::Notify { level, repeat } => {
                    if !*repeat {
                        let added: Vec<&String> = people[level]
                            .members
                            .iter()
                            .filter(|m| joining.contains(m))
                            .collect();
                        if !added.is_empty() {
                            let ids: Vec<&str> = added.iter().map(|m| m.as_str()).collect();
                            events.push(("responders_added", ids.join(", ")));
                        }
                    }
                    let paged = &people[level];
                    for (schedule_id, name) in &paged.nobody_on_call {
                        self.record_nobody_on_call(&incident.id, &before.integration_id, schedule_id, name)
                            .await?;
                        events.push((
                            "nobody_on_call",
                            format!("level {}: nobody on call in {name}", level + 1),
                        ));
                    }
                    self.notify_level(
                        &incident,
                        &before.integration_id,
                        &rule.levels[*level],
                        &paged.members,
                    )
                    .await?;
                    if !*repeat && let Err(e) = self.invite_to_war_room(&incident.id, &paged.members).await {
                        tracing::warn!(incident = %incident.id, error = %e, "cannot invite the level to the war room");
                    }
                    let what = if *repeat {
                        "repeat notification"
                    } else {
                        "notified"
                    };
                    events.push(("notified", format!("level {}: {what}", level + 1)));
                }
                Step::Escalated { to } => {
                    events.push(("escalated", format!("to level {}", to + 1)));
                }
            }
        }
        if plan.next.as_ref() == Some(&before) && events.is_empty() {
            return Ok(());
        }
        let updated = self
            .store
            .write(move |w| {
                let esc_change = match plan.next {
                    Some(next) => EscalationChange::Put(next),
                    None => EscalationChange::Remove,
                };
                let Some(before) = w.get(&tables::INCIDENTS, id.as_str())? else {
                    records::remove_escalation(w, &id)?;
                    return Ok(None);
                };
                let mut incident = before.clone();
                let from = incident.timeline.len();
                if !events.is_empty() {
                    let mut grew = false;
                    for member in joining {
                        if !incident.assignees.contains(&member) {
                            incident.assignees.push(member);
                            grew = true;
                        }
                    }
                    if grew {
                        incident.version += 1;
                        incident.updated_at = now;
                    }
                }
                for (kind, detail) in &events {
                    push_event(&mut incident, now, kind, &Actor::system(), Some(detail.clone()));
                }
                store_incident(w, Some(&before), &incident, esc_change)?;
                Ok((!events.is_empty()).then_some((incident, from)))
            })
            .await?;
        if let Some((incident, _)) = &updated
            && incident.version != old_version
            && !cards_before.is_empty()
        {
            self.refresh_these_cards(incident, cards_before, true, None)
                .await?;
        }
        if let Some((incident, from)) = updated {
            self.publish_since(&incident, from).await;
            if let Err(e) = self.war_room_follow(&incident, from).await {
                tracing::warn!(incident = %incident.id, error = %e, "the war room could not follow an escalation");
            }
        }
        Ok(())
    }

    /// Ends the snoozes due at `now`: the incident is triggered again and its current level is
    /// notified right away.
    async fn end_snoozes(&self, now: DateTime<Utc>) -> Result<(), IncidentError> {
        let due: Vec<(String, String)> = self.store.read(|r| {
            Ok(r.page(&tables::SNOOZES, None, 1000, false)?
                .into_iter()
                .take_while(|(key, _)| key.as_str() <= snooze_key(now, "").as_str())
                .collect())
        })?;
        for (key, id) in due {
            let ended = self
                .store
                .write(move |w| {
                    let inc = w.get(&tables::INCIDENTS, id.as_str())?;
                    let esc = w.get(&tables::ESCALATIONS, id.as_str())?;
                    let Some(mut inc) = inc.filter(|i| i.is_open() && i.snoozed_until.is_some()) else {
                        records::remove_snooze_entry(w, &key)?;
                        return Ok(None);
                    };
                    let before = inc.clone();
                    inc.snoozed_until = None;
                    inc.status = Status::Triggered;
                    inc.acknowledged_by.clear();
                    inc.version += 1;
                    inc.updated_at = now;
                    push_event(&mut inc, now, "snooze_ended", &Actor::system(), None);
                    let esc_change = match esc {
                        Some(mut esc) => {
                            escalation::restart_level(&mut esc, now);
                            EscalationChange::Put(esc)
                        }
                        None => EscalationChange::Keep,
                    };
                    store_incident(w, Some(&before), &inc, esc_change)?;
                    if snooze_key(before.snoozed_until.unwrap_or(now), &id) != key {
                        records::remove_snooze_entry(w, &key)?;
                    }
                    Ok(Some(inc))
                })
                .await?;
            if let Some(incident) = ended {
                self.publish_since(&incident, incident.timeline.len().saturating_sub(1))
                    .await;
                if let Err(e) = self
                    .war_room_follow(&incident, incident.timeline.len().saturating_sub(1))
                    .await
                {
                    tracing::warn!(incident = %incident.id, error = %e, "the war room could not follow a snooze's end");
                }
                self.refresh_cards(&incident, false, None).await?;
            }
        }
        Ok(())
    }
}

/// Applies an action to an incident in memory: the status change, the timeline, and what
/// happens to its escalation.
fn apply(
    inc: &mut Incident,
    action: &Action,
    actor: &Actor,
    name: &str,
    now: DateTime<Utc>,
    reopen_rule: Option<&Rule>,
    esc: Option<Escalation>,
) -> Result<EscalationChange, IncidentError> {
    let closed = || IncidentError::Conflict(format!("incident #{} is resolved", inc.number));
    let change = match action {
        Action::Acknowledge => {
            match inc.status {
                Status::Resolved => return Err(closed()),
                Status::Acknowledged if inc.acknowledged_by.iter().any(|n| n == name) => {
                    return Ok(EscalationChange::Keep);
                }
                _ => {}
            }
            inc.status = Status::Acknowledged;
            inc.acknowledged_by.push(name.to_string());
            push_event(inc, now, "acknowledged", actor, None);
            // A member who acknowledges is working on it: they become a responder.
            if matches!(actor.via, Via::Card | Via::Bot | Via::Homepage)
                && let Some(member) = &actor.who
                && !inc.assignees.contains(member)
            {
                inc.assignees.push(member.clone());
                push_event(inc, now, "responders_added", actor, Some(member.clone()));
            }
            EscalationChange::Keep
        }
        Action::Unacknowledge => {
            if inc.status != Status::Acknowledged {
                return Err(IncidentError::Conflict(format!(
                    "incident #{} is not acknowledged",
                    inc.number
                )));
            }
            inc.status = Status::Triggered;
            inc.acknowledged_by.clear();
            push_event(inc, now, "unacknowledged", actor, None);
            match esc {
                Some(mut esc) => {
                    escalation::restart_level(&mut esc, now);
                    EscalationChange::Put(esc)
                }
                None => EscalationChange::Keep,
            }
        }
        Action::Resolve => {
            if inc.status == Status::Resolved {
                return Ok(EscalationChange::Keep);
            }
            inc.status = Status::Resolved;
            inc.snoozed_until = None;
            inc.resolved_at = Some(now);
            push_event(inc, now, "resolved", actor, None);
            EscalationChange::Remove
        }
        Action::Snooze { minutes } => {
            if inc.status == Status::Resolved {
                return Err(closed());
            }
            let until = now + chrono::Duration::minutes(i64::from(*minutes));
            inc.snoozed_until = Some(until);
            push_event(
                inc,
                now,
                "snoozed",
                actor,
                Some(format!("until {}", until.to_rfc3339())),
            );
            EscalationChange::Keep
        }
        Action::Reopen => {
            if inc.status != Status::Resolved {
                return Err(IncidentError::Conflict(format!(
                    "incident #{} is not resolved",
                    inc.number
                )));
            }
            inc.status = Status::Triggered;
            inc.resolved_at = None;
            inc.acknowledged_by.clear();
            inc.rule_id = reopen_rule.map(|r| r.id.clone());
            if let Some(rule) = reopen_rule {
                inc.integration_id = Some(rule.integration_id.clone());
            }
            push_event(inc, now, "reopened", actor, None);
            match reopen_rule {
                Some(rule) => EscalationChange::Put(escalation::start(inc, rule, now)),
                None => EscalationChange::Remove,
            }
        }
        Action::Reassign { assignees } => {
            inc.assignees = assignees.clone();
            push_event(inc, now, "reassigned", actor, Some(assignees.join(", ")));
            EscalationChange::Keep
        }
        Action::Note { text } => {
            if text.trim().is_empty() {
                return Err(invalid("text", "must not be empty"));
            }
            push_event(inc, now, "note", actor, Some(text.clone()));
            // The timeline is not on the card: nothing to update.
            return Ok(EscalationChange::Keep);
        }
    };
    inc.version += 1;
    Ok(change)
}
