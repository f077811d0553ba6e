//! Who a level pages in person: its members and whoever is on call in its schedules at the
//! moment it notifies, asked of the one schedule resolver. A schedule with nobody on call is
//! recorded (timeline and operation log), never silent. Cards say who was on call at the
//! incident's time, asked of the same resolver.

use chrono::{DateTime, Utc};

use super::card::OnCallLine;
use super::model::{Incident, Level};
use super::{IncidentError, Incidents};
use crate::delivery::oplog::{self, OpEntry};
use crate::schedule::resolve;

/// The people a level pages now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LevelPeople {
    /// The level's members, then those on call in its schedules, each once.
    pub members: Vec<String>,
    /// `(schedule id, name)` of each of its schedules with nobody on call.
    pub nobody_on_call: Vec<(String, String)>,
}

impl Incidents {
    pub(super) fn level_people(&self, level: &Level, now: DateTime<Utc>) -> LevelPeople {
        let mut people = LevelPeople {
            members: level.members.clone(),
            nobody_on_call: Vec::new(),
        };
        for id in &level.schedules {
            let Ok(schedule) = self.schedules.get(id) else {
                // Deleted since the rule was saved: nobody is on call in it.
                people.nobody_on_call.push((id.clone(), id.clone()));
                continue;
            };
            match resolve::on_call(&schedule, now) {
                Some(shift) => {
                    for member in shift.shift.members {
                        if !people.members.contains(&member) {
                            people.members.push(member);
                        }
                    }
                }
                None => people.nobody_on_call.push((schedule.id, schedule.name)),
            }
        }
        people
    }

    /// Who was on call when the incident opened in each schedule its rule's levels name, in
    /// the order the levels name them (a deleted schedule is left out).
    pub(super) fn on_call_lines(&self, incident: &Incident) -> Vec<OnCallLine> {
        let Some(rule) = incident.rule_id.as_deref().and_then(|id| self.rule(id).ok()) else {
            return Vec::new();
        };
        let mut seen = Vec::new();
        let mut lines = Vec::new();
        for id in rule.levels.iter().flat_map(|l| &l.schedules) {
            if seen.contains(id) {
                continue;
            }
            seen.push(id.clone());
            let Ok(schedule) = self.schedules.get(id) else {
                continue;
            };
            let members = resolve::on_call(&schedule, incident.created_at)
                .map(|f| f.shift.members)
                .unwrap_or_default()
                .iter()
                .map(|m| self.members.get(m).map(|m| m.name).unwrap_or_else(|_| m.clone()))
                .collect();
            lines.push(OnCallLine {
                schedule: schedule.name,
                members,
            });
        }
        lines
    }

    /// The operation-log entry of a schedule that had nobody on call when a level notified.
    pub(super) async fn record_nobody_on_call(
        &self,
        incident_id: &str,
        integration: &str,
        schedule_id: &str,
        schedule_name: &str,
    ) -> Result<(), IncidentError> {
        let entry = OpEntry {
            at: self.clock.now(),
            integration_id: integration.to_string(),
            incident_id: Some(incident_id.to_string()),
            receiver: Some(format!("schedule:{schedule_id}")),
            kind: "page".into(),
            outcome: "nobody_on_call".into(),
            reason: Some(format!("nobody on call in {schedule_name}")),
            ..Default::default()
        };
        self.store
            .write(move |w| oplog::append(w, entry).map(drop))
            .await?;
        Ok(())
    }
}
