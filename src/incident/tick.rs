//! The escalation tick: over durable escalation state, read at the injected clock's `now`, it
//! ends due snoozes, sends notifications and repeats, escalates, and refreshes cards that were
//! delivered after their incident changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::escalation::{self, Step};
use super::model::{Actor, Escalation, Rule, Status};
use super::records::{self, EscalationChange, snooze_key, store_incident};
use super::{IncidentError, Incidents, push_event, tables};

/// How often the escalation tick runs on its own.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Ticks a stale card waits for its delivery's commit before it is forgotten.
const MAX_STALE_WAIT_TICKS: u32 = 30;

impl Incidents {
    /// Runs the tick every second, or sooner when woken, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if let Err(e) = self.resume_war_rooms().await {
            tracing::error!(error = %e, "cannot resume the war rooms being set up");
        }
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
        let people: HashMap<usize, super::on_call::LevelPeople> = plan
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
