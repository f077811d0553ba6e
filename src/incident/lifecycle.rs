//! Opening, merging, reading and acting on incidents: the admin API's and the alert sources'
//! way in, each change written with its indexes in one commit and then told to the webhooks,
//! the war room and the cards.

use super::model::{self, Actor, AlertSource, Incident, Severity, Status, Via};
use super::records::{EscalationChange, store_incident};
use super::transition::apply;
use super::{
    Action, AlertOutcome, IncidentError, IncidentQuery, Incidents, NewIncident, actor_name, escalation,
    ingest, invalid, push_event, rules, tables, war_room,
};
use ingest::AlertEvent;

const MAX_PAGE: usize = 200;

/// The `status` a list asks for.
#[derive(Debug, Clone, Copy)]
enum StatusFilter {
    Open,
    Is(Status),
}

impl StatusFilter {
    fn admits(self, status: Status) -> bool {
        match self {
            StatusFilter::Open => status != Status::Resolved,
            StatusFilter::Is(s) => s == status,
        }
    }
}

impl Incidents {
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
                "open" => Ok(StatusFilter::Open),
                "triggered" => Ok(StatusFilter::Is(Status::Triggered)),
                "acknowledged" => Ok(StatusFilter::Is(Status::Acknowledged)),
                "resolved" => Ok(StatusFilter::Is(Status::Resolved)),
                other => Err(invalid(
                    "status",
                    format!("{other:?} is not open, triggered, acknowledged or resolved"),
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
        // Open incidents are few; the resolved history can be long, so an open view walks only
        // the open index.
        let index = match status {
            Some(StatusFilter::Open | StatusFilter::Is(Status::Triggered | Status::Acknowledged)) => {
                &tables::OPEN_INCIDENTS
            }
            _ => &tables::INCIDENT_NUMBERS,
        };
        let keep = |incident: &Incident| {
            status.is_none_or(|s| s.admits(incident.status))
                && severity.is_none_or(|s| incident.severity == s)
                && label
                    .as_ref()
                    .is_none_or(|(k, v)| incident.labels.get(k) == Some(v))
                && q.assignee.as_ref().is_none_or(|a| incident.assignees.contains(a))
        };
        let mut out = Vec::new();
        let mut cursor = q.before;
        loop {
            let (last, full) = self.store.read(|r| {
                let chunk = r.page(index, cursor.as_ref(), 500, true)?;
                let last = chunk.last().map(|(k, _)| *k);
                for (_, id) in chunk {
                    if let Some(incident) = r.get(&tables::INCIDENTS, id.as_str())?
                        && keep(&incident)
                    {
                        out.push(incident);
                        if out.len() == limit {
                            return Ok((last, true));
                        }
                    }
                }
                Ok((last, false))
            })?;
            match last {
                Some(last) if !full => cursor = Some(last),
                _ => return Ok(out),
            }
        }
    }

    pub(super) fn check_members(&self, ids: &[String], field: &str) -> Result<(), IncidentError> {
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
}
