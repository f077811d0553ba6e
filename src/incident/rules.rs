//! Escalation rules: validation and storage of what an admin saves (chats checked against those
//! the bot is in), and the top-down, first-match choice of the rule for an incident (severity,
//! labels, weekly time windows in the rule's time zone).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::model::{Level, Rule, RuleMatch, Severity, TimeWindow};
use super::tables;
use super::{IncidentError, Incidents};
use crate::integration::chats::{self, ChatStatus};

/// A rule as the admin API shows it: with what an admin must fix for it to reach everyone.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    #[serde(flatten)]
    pub rule: Rule,
    /// E.g. `chat oc_… disbanded`; empty when the rule is fine.
    pub needs_attention: Vec<String>,
}

/// A rule as created or replaced through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    /// Where it goes in the order; appended when absent.
    #[serde(default)]
    pub position: Option<u32>,
    pub integration_id: String,
    #[serde(default, rename = "match")]
    pub matches: RuleMatch,
    #[serde(default)]
    pub time_windows: Vec<TimeWindow>,
    #[serde(default)]
    pub timezone: Option<String>,
    pub levels: Vec<Level>,
    /// `manual` (default) or `auto`.
    #[serde(default)]
    pub war_room: super::model::WarRoomMode,
}

pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> IncidentError {
    IncidentError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_time(field: &str, text: &str) -> Result<NaiveTime, IncidentError> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| invalid(field, format!("{text:?} is not HH:MM")))
}

/// Checks what does not need the store or Lark; returns the parsed time zone.
pub fn check(input: &RuleInput) -> Result<Tz, IncidentError> {
    if input.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if input.levels.is_empty() {
        return Err(invalid("levels", "at least one level is needed"));
    }
    for (i, level) in input.levels.iter().enumerate() {
        if level.members.is_empty()
            && level.chats.is_empty()
            && level.bot_webhooks.is_empty()
            && level.schedules.is_empty()
        {
            return Err(invalid(
                format!("levels[{i}]"),
                "names no member, no chat, no bot webhook and no schedule",
            ));
        }
        if level.repeat_count > 0 && level.repeat_every_minutes.unwrap_or(0) == 0 {
            return Err(invalid(
                format!("levels[{i}].repeat_every_minutes"),
                "must be at least 1 when repeat_count is set",
            ));
        }
        if level.escalate_after_minutes == Some(0) {
            return Err(invalid(
                format!("levels[{i}].escalate_after_minutes"),
                "must be at least 1",
            ));
        }
    }
    for (i, w) in input.time_windows.iter().enumerate() {
        parse_time(&format!("time_windows[{i}].start"), &w.start)?;
        parse_time(&format!("time_windows[{i}].end"), &w.end)?;
        if w.days.is_empty() || w.days.iter().any(|d| *d > 6) {
            return Err(invalid(
                format!("time_windows[{i}].days"),
                "give days as 0 (Monday) to 6 (Sunday)",
            ));
        }
    }
    let tz = input.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
    tz.parse::<Tz>()
        .map_err(|_| invalid("timezone", format!("{tz:?} is not an IANA time zone")))
}

fn in_window(w: &TimeWindow, local: DateTime<Tz>) -> bool {
    let (Ok(start), Ok(end)) = (parse_time("", &w.start), parse_time("", &w.end)) else {
        return false;
    };
    let day = local.weekday().num_days_from_monday() as u8;
    let time = local.time();
    if start <= end {
        w.days.contains(&day) && time >= start && time < end
    } else {
        // Past midnight: the evening belongs to the listed day, the morning to the day after.
        let yesterday = (day + 6) % 7;
        (w.days.contains(&day) && time >= start) || (w.days.contains(&yesterday) && time < end)
    }
}

/// Whether `rule` applies to an incident of this severity and labels at `now`.
pub fn matches(
    rule: &Rule,
    severity: Severity,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> bool {
    let m = &rule.matches;
    if !m.severities.is_empty() && !m.severities.contains(&severity) {
        return false;
    }
    if m.labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return false;
    }
    if rule.time_windows.is_empty() {
        return true;
    }
    let tz: Tz = rule.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    let local = now.with_timezone(&tz);
    rule.time_windows.iter().any(|w| in_window(w, local))
}

/// The first matching rule, in position order.
pub fn first_match<'a>(
    rules: &'a [Rule],
    severity: Severity,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Option<&'a Rule> {
    rules.iter().find(|r| matches(r, severity, labels, now))
}

/// Saving, listing and removing rules.
impl Incidents {
    /// Every rule in the order they are tried.
    pub(super) fn rules_in_order(&self) -> Result<Vec<Rule>, IncidentError> {
        let mut rules: Vec<Rule> = self
            .store
            .read(|r| r.page(&tables::RULES, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rules.sort_by(|a, b| a.position.cmp(&b.position).then(a.created_at.cmp(&b.created_at)));
        Ok(rules)
    }

    async fn check_rule(
        &self,
        input: &RuleInput,
        integration_known: bool,
    ) -> Result<chrono_tz::Tz, IncidentError> {
        let tz = check(input)?;
        if !integration_known {
            return Err(invalid(
                "integration_id",
                format!("no integration {}", input.integration_id),
            ));
        }
        for (i, level) in input.levels.iter().enumerate() {
            self.check_members(&level.members, &format!("levels[{i}].members"))?;
            if let Some(unknown) = level.bot_webhooks.iter().find(|h| !self.bot_webhooks.exists(h)) {
                return Err(invalid(
                    format!("levels[{i}].bot_webhooks"),
                    format!("no bot webhook {unknown}"),
                ));
            }
            for id in &level.schedules {
                if self.schedules.get(id).is_err() {
                    return Err(invalid(
                        format!("levels[{i}].schedules"),
                        format!("no schedule {id}"),
                    ));
                }
            }
        }
        let chats: Vec<&String> = input.levels.iter().flat_map(|l| &l.chats).collect();
        if chats.is_empty() {
            return Ok(tz);
        }
        // Chats are checked against those the bot is in; when Lark cannot be asked, the rule is
        // saved anyway (a chat the bot left shows as a failed send in the operation log).
        match self.lark.get(&input.integration_id) {
            Some(client) => match client.list_chats().await {
                Ok(known) => {
                    for (i, level) in input.levels.iter().enumerate() {
                        if let Some(chat) = level
                            .chats
                            .iter()
                            .find(|c| !known.iter().any(|k| &&k.chat_id == c))
                        {
                            return Err(invalid(
                                format!("levels[{i}].chats"),
                                format!("the bot is not in chat {chat}"),
                            ));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the bot's chats; saving the rule unchecked")
                }
            },
            None => {
                tracing::warn!(integration = %input.integration_id, "no Lark client; saving the rule unchecked")
            }
        }
        Ok(tz)
    }

    /// Creates (or, with `id`, replaces) a rule.
    pub async fn save_rule(
        &self,
        id: Option<&str>,
        input: RuleInput,
        integration_known: bool,
    ) -> Result<Rule, IncidentError> {
        let tz = self.check_rule(&input, integration_known).await?;
        let existing = match id {
            Some(id) => Some(self.rule(id)?),
            None => None,
        };
        let rules = self.rules_in_order()?;
        let position = input
            .position
            .or(existing.as_ref().map(|r| r.position))
            .unwrap_or_else(|| rules.last().map_or(0, |r| r.position.saturating_add(10)));
        let rule = Rule {
            id: existing.as_ref().map_or_else(
                || crate::ids::new_id(crate::ids::prefix::RULE, 6),
                |r| r.id.clone(),
            ),
            name: input.name.trim().to_string(),
            position,
            integration_id: input.integration_id,
            matches: input.matches,
            time_windows: input.time_windows,
            timezone: tz.name().to_string(),
            levels: input.levels,
            war_room: input.war_room,
            created_at: existing.map_or_else(|| self.clock.now(), |r| r.created_at),
        };
        let stored = rule.clone();
        self.store
            .write(move |w| w.put(&tables::RULES, stored.id.as_str(), &stored))
            .await?;
        Ok(rule)
    }

    pub fn rule(&self, id: &str) -> Result<Rule, IncidentError> {
        self.store
            .read(|r| r.get(&tables::RULES, id))?
            .ok_or_else(|| IncidentError::NotFound(format!("no rule {id}")))
    }

    pub fn rules(&self) -> Result<Vec<Rule>, IncidentError> {
        self.rules_in_order()
    }

    /// [`Incidents::rules`] with what needs attention in each.
    pub fn rule_views(&self) -> Result<Vec<RuleView>, IncidentError> {
        self.rules_in_order()?
            .into_iter()
            .map(|rule| self.rule_view(rule))
            .collect()
    }

    /// A rule with what needs attention in it: chats the bot can no longer post to.
    pub fn rule_view(&self, rule: Rule) -> Result<RuleView, IncidentError> {
        let known = chats::list(&self.store, &rule.integration_id)?;
        let mut needs_attention = Vec::new();
        for chat in rule.levels.iter().flat_map(|l| &l.chats) {
            let problem = match known.iter().find(|k| &k.chat_id == chat).map(|k| k.status) {
                Some(ChatStatus::Disbanded) => format!("chat {chat} disbanded"),
                Some(ChatStatus::Left) => format!("the bot is no longer in chat {chat}"),
                Some(ChatStatus::BotRemoved) => format!("the bot was removed from chat {chat}"),
                Some(ChatStatus::Active) | None => continue,
            };
            if !needs_attention.contains(&problem) {
                needs_attention.push(problem);
            }
        }
        for hook in rule.levels.iter().flat_map(|l| &l.bot_webhooks) {
            let problem = format!("bot webhook {hook} was deleted");
            if !self.bot_webhooks.exists(hook) && !needs_attention.contains(&problem) {
                needs_attention.push(problem);
            }
        }
        Ok(RuleView {
            rule,
            needs_attention,
        })
    }

    pub async fn delete_rule(&self, id: &str) -> Result<(), IncidentError> {
        let key = id.to_string();
        if self
            .store
            .write(move |w| w.remove(&tables::RULES, key.as_str()))
            .await?
        {
            Ok(())
        } else {
            Err(IncidentError::NotFound(format!("no rule {id}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(severities: Vec<Severity>, labels: &[(&str, &str)], windows: Vec<TimeWindow>) -> Rule {
        Rule {
            id: "r".into(),
            name: "r".into(),
            position: 0,
            integration_id: "i".into(),
            matches: RuleMatch {
                severities,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            time_windows: windows,
            timezone: "Asia/Shanghai".into(),
            levels: vec![],
            war_room: Default::default(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn severity_labels_and_windows_decide() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "db".to_string())].into();
        let now = "2026-11-30T02:00:00Z".parse::<DateTime<Utc>>().unwrap(); // Monday 10:00 in Shanghai
        assert!(matches(
            &rule(vec![Severity::Critical], &[("team", "db")], vec![]),
            Severity::Critical,
            &labels,
            now
        ));
        assert!(!matches(
            &rule(vec![Severity::Info], &[], vec![]),
            Severity::Critical,
            &labels,
            now
        ));
        assert!(!matches(
            &rule(vec![], &[("team", "web")], vec![]),
            Severity::Critical,
            &labels,
            now
        ));
        let office = TimeWindow {
            days: vec![0, 1, 2, 3, 4],
            start: "09:00".into(),
            end: "18:00".into(),
        };
        assert!(matches(
            &rule(vec![], &[], vec![office.clone()]),
            Severity::Info,
            &labels,
            now
        ));
        let night = TimeWindow {
            days: vec![6],
            start: "22:00".into(),
            end: "11:00".into(),
        };
        // Sunday night's window runs into Monday morning.
        assert!(matches(
            &rule(vec![], &[], vec![night]),
            Severity::Info,
            &labels,
            now
        ));
        let later = now + chrono::Duration::hours(9); // 19:00
        assert!(!matches(
            &rule(vec![], &[], vec![office]),
            Severity::Info,
            &labels,
            later
        ));
    }
}
