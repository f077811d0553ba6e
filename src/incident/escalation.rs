//! The escalation state machine, free of I/O: given an incident's durable escalation state, its
//! rule and the time, what is due now — notify the current level (first time or a repeat),
//! move on to the next level — and the state that follows. The service runs it on every tick.

use chrono::{DateTime, Duration, Utc};

use super::model::{EscalateUnless, Escalation, Incident, Level, Rule, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the level's members and chats a card (`repeat`: not the level's first time).
    Notify { level: usize, repeat: bool },
    /// Nobody answered in time: the next level takes over.
    Escalated { to: usize },
}

/// What the tick does for one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The state to keep; `None` removes it (the incident is closed or the rule is gone).
    pub next: Option<Escalation>,
}

fn minutes(m: u32) -> Duration {
    Duration::minutes(i64::from(m))
}

/// The state of a freshly opened (or reopened) incident: level 0, first notification after its
/// delay window.
pub fn start(incident: &Incident, rule: &Rule, now: DateTime<Utc>) -> Escalation {
    let delay = rule.levels.first().map_or(0, |l| l.delay_minutes);
    Escalation {
        incident_id: incident.id.clone(),
        rule_id: rule.id.clone(),
        integration_id: rule.integration_id.clone(),
        level: 0,
        level_started_at: now,
        next_notify_at: Some(now + minutes(delay)),
        notified: 0,
        first_notified_at: None,
    }
}

/// Starts the current level over, notifying now (an incident that was snoozed or
/// unacknowledged is as urgent as a new one, and its escalation wait starts again).
pub fn restart_level(esc: &mut Escalation, now: DateTime<Utc>) {
    esc.level_started_at = now;
    esc.next_notify_at = Some(now);
    esc.notified = 0;
    esc.first_notified_at = None;
}

fn enter(esc: &mut Escalation, level: usize, def: &Level, now: DateTime<Utc>) {
    esc.level = level;
    esc.level_started_at = now;
    esc.next_notify_at = Some(now + minutes(def.delay_minutes));
    esc.notified = 0;
    esc.first_notified_at = None;
}

/// Runs the state machine up to `now`. `nobody_paged(level)` says whether that level, notified
/// now, reaches nobody in person (nobody on call in its schedules and no members): a level that
/// falls through then hands over to the next level at once.
pub fn advance(
    mut esc: Escalation,
    incident: &Incident,
    rule: &Rule,
    now: DateTime<Utc>,
    nobody_paged: &dyn Fn(usize) -> bool,
) -> Plan {
    let mut steps = Vec::new();
    if !incident.is_open() {
        return Plan { steps, next: None };
    }
    if incident.snoozed_at(now) {
        return Plan {
            steps,
            next: Some(esc),
        };
    }
    let acked = incident.status == Status::Acknowledged;
    // Each pass either stops or moves one level up, so this ends.
    loop {
        let Some(level) = rule.levels.get(esc.level) else {
            return Plan { steps, next: None };
        };
        let mut first_notice = false;
        if !acked && esc.next_notify_at.is_some_and(|t| t <= now) {
            first_notice = esc.notified == 0;
            steps.push(Step::Notify {
                level: esc.level,
                repeat: esc.notified > 0,
            });
            esc.notified += 1;
            esc.first_notified_at.get_or_insert(now);
            esc.next_notify_at = match level.repeat_every_minutes {
                Some(every) if every > 0 && esc.notified <= level.repeat_count => Some(now + minutes(every)),
                _ => None,
            };
        }
        let answered = match level.escalate_unless {
            EscalateUnless::Acknowledged => acked,
            EscalateUnless::Resolved => false,
        };
        let next_level = esc.level + 1;
        let waited = esc
            .first_notified_at
            .zip(level.escalate_after_minutes)
            .is_some_and(|(first, after)| first + minutes(after) <= now);
        let falls_through = first_notice && level.fall_through_when_nobody_on_call && nobody_paged(esc.level);
        if (falls_through || (!answered && waited)) && next_level < rule.levels.len() {
            enter(&mut esc, next_level, &rule.levels[next_level], now);
            steps.push(Step::Escalated { to: next_level });
            continue;
        }
        return Plan {
            steps,
            next: Some(esc),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::model::RuleMatch;

    fn level(delay: u32, every: Option<u32>, count: u32, after: Option<u32>) -> Level {
        Level {
            members: vec!["m".into()],
            chats: vec![],
            bot_webhooks: vec![],
            schedules: vec![],
            fall_through_when_nobody_on_call: false,
            delay_minutes: delay,
            repeat_every_minutes: every,
            repeat_count: count,
            escalate_after_minutes: after,
            escalate_unless: EscalateUnless::Acknowledged,
        }
    }

    fn rule(levels: Vec<Level>) -> Rule {
        Rule {
            id: "r".into(),
            name: "r".into(),
            position: 0,
            integration_id: "i".into(),
            matches: RuleMatch::default(),
            time_windows: vec![],
            timezone: "UTC".into(),
            levels,
            war_room: Default::default(),
            created_at: Utc::now(),
        }
    }

    fn incident(status: Status) -> Incident {
        Incident {
            id: "inc".into(),
            status,
            ..Incident::sample(Utc::now())
        }
    }

    #[test]
    fn repeats_then_escalates_unless_acknowledged() {
        let rule = rule(vec![level(0, Some(5), 1, Some(15)), level(0, None, 0, None)]);
        let inc = incident(Status::Triggered);
        let t0 = Utc::now();
        let plan = advance(start(&inc, &rule, t0), &inc, &rule, t0, &|_| false);
        assert_eq!(
            plan.steps,
            vec![Step::Notify {
                level: 0,
                repeat: false
            }]
        );
        let plan = advance(plan.next.unwrap(), &inc, &rule, t0 + minutes(5), &|_| false);
        assert_eq!(
            plan.steps,
            vec![Step::Notify {
                level: 0,
                repeat: true
            }]
        );
        let plan = advance(plan.next.unwrap(), &inc, &rule, t0 + minutes(10), &|_| false);
        assert!(plan.steps.is_empty(), "one repeat only");
        let esc = plan.next.unwrap();
        let acked = incident(Status::Acknowledged);
        assert!(
            advance(esc.clone(), &acked, &rule, t0 + minutes(15), &|_| false)
                .steps
                .is_empty()
        );
        let plan = advance(esc, &inc, &rule, t0 + minutes(15), &|_| false);
        assert_eq!(
            plan.steps,
            vec![
                Step::Escalated { to: 1 },
                Step::Notify {
                    level: 1,
                    repeat: false
                }
            ]
        );
    }

    #[test]
    fn the_delay_window_holds_notifications_and_closing_ends_them() {
        let rule = rule(vec![level(10, None, 0, None)]);
        let inc = incident(Status::Triggered);
        let t0 = Utc::now();
        let plan = advance(start(&inc, &rule, t0), &inc, &rule, t0 + minutes(9), &|_| false);
        assert!(plan.steps.is_empty());
        let resolved = incident(Status::Resolved);
        let plan = advance(plan.next.unwrap(), &resolved, &rule, t0 + minutes(11), &|_| false);
        assert!(plan.steps.is_empty());
        assert!(plan.next.is_none());
    }

    #[test]
    fn a_level_that_pages_nobody_falls_through_at_once_when_it_says_so() {
        let mut first = level(0, Some(5), 3, Some(30));
        first.fall_through_when_nobody_on_call = true;
        let rule = rule(vec![first, level(0, None, 0, None)]);
        let inc = incident(Status::Triggered);
        let t0 = Utc::now();
        let plan = advance(start(&inc, &rule, t0), &inc, &rule, t0, &|level| level == 0);
        assert_eq!(
            plan.steps,
            vec![
                Step::Notify {
                    level: 0,
                    repeat: false
                },
                Step::Escalated { to: 1 },
                Step::Notify {
                    level: 1,
                    repeat: false
                }
            ]
        );
        let plan = advance(start(&inc, &rule, t0), &inc, &rule, t0, &|_| false);
        assert_eq!(plan.steps.len(), 1, "someone on call: the level waits as usual");
        let mut without = rule.clone();
        without.levels[0].fall_through_when_nobody_on_call = false;
        let plan = advance(start(&inc, &without, t0), &inc, &without, t0, &|_| true);
        assert_eq!(
            plan.steps.len(),
            1,
            "no fall-through unless the level asks for it"
        );
    }
}
