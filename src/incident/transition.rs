//! The pure state transition of an incident under an action: status, timeline and what
//! happens to its escalation, decided in memory before anything is written.

use chrono::{DateTime, Utc};

use super::escalation;
use super::model::{Actor, Escalation, Incident, Rule, Status, Via};
use super::records::EscalationChange;
use super::{Action, IncidentError, invalid, push_event};

/// Applies an action to an incident in memory: the status change, the timeline, and what
/// happens to its escalation.
pub(super) fn apply(
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

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::incident::actor_name;
    use crate::incident::model::{EscalateUnless, Level, RuleMatch};

    /// What the escalation row becomes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Change {
        Keep,
        Remove,
        /// The current level starts over, notifying now.
        Restarted,
        /// Level 0 of the reopen rule, after its delay.
        Started,
    }

    #[derive(Debug)]
    enum Expect {
        Applied {
            status: Status,
            change: Change,
            events: &'static [&'static str],
            version_bumped: bool,
            acknowledged_by: &'static [&'static str],
            assignees: &'static [&'static str],
        },
        Conflict,
        Invalid(&'static str),
    }

    struct Case {
        name: &'static str,
        status: Status,
        acknowledged_by: &'static [&'static str],
        action: Action,
        actor: Actor,
        reopen_rule: bool,
        escalation: bool,
        expect: Expect,
    }

    fn member(id: &str, via: Via) -> Actor {
        Actor {
            via,
            who: Some(id.into()),
            name: Some(format!("{id} name")),
        }
    }

    fn admin() -> Actor {
        Actor {
            via: Via::Api,
            who: Some("user:admin".into()),
            name: None,
        }
    }

    fn rule() -> Rule {
        Rule {
            id: "rul_reopen".into(),
            name: "reopen".into(),
            position: 0,
            integration_id: "int_b".into(),
            matches: RuleMatch::default(),
            time_windows: vec![],
            timezone: "UTC".into(),
            levels: vec![Level {
                members: vec!["mem_1".into()],
                chats: vec![],
                bot_webhooks: vec![],
                schedules: vec![],
                fall_through_when_nobody_on_call: false,
                delay_minutes: 3,
                repeat_every_minutes: None,
                repeat_count: 0,
                escalate_after_minutes: None,
                escalate_unless: EscalateUnless::Acknowledged,
            }],
            war_room: Default::default(),
            created_at: Utc::now(),
        }
    }

    /// Level 1 of an escalation that has notified twice, ten minutes ago.
    fn escalation_under_way(now: DateTime<Utc>) -> Escalation {
        Escalation {
            incident_id: "inc_1".into(),
            rule_id: "rul_old".into(),
            integration_id: "int_a".into(),
            level: 1,
            level_started_at: now - Duration::minutes(10),
            next_notify_at: Some(now + Duration::minutes(5)),
            notified: 2,
            first_notified_at: Some(now - Duration::minutes(10)),
        }
    }

    fn change_kind(change: &EscalationChange, now: DateTime<Utc>) -> Change {
        match change {
            EscalationChange::Keep => Change::Keep,
            EscalationChange::Remove => Change::Remove,
            EscalationChange::Put(esc) => {
                let mut restarted = escalation_under_way(now);
                escalation::restart_level(&mut restarted, now);
                if *esc == restarted {
                    return Change::Restarted;
                }
                assert_eq!(
                    (esc.rule_id.as_str(), esc.integration_id.as_str(), esc.level),
                    ("rul_reopen", "int_b", 0),
                    "a new escalation is the reopen rule's, from level 0"
                );
                assert_eq!(
                    esc.next_notify_at,
                    Some(now + Duration::minutes(3)),
                    "after the delay"
                );
                Change::Started
            }
        }
    }

    fn cases() -> Vec<Case> {
        use Status::{Acknowledged, Resolved, Triggered};
        let applied = |status, change, events, version_bumped, acknowledged_by, assignees| Expect::Applied {
            status,
            change,
            events,
            version_bumped,
            acknowledged_by,
            assignees,
        };
        let case = |name, status, acknowledged_by, action, actor, expect| Case {
            name,
            status,
            acknowledged_by,
            action,
            actor,
            reopen_rule: false,
            escalation: true,
            expect,
        };
        vec![
            case(
                "an admin acknowledges a triggered incident",
                Triggered,
                &[],
                Action::Acknowledge,
                admin(),
                applied(
                    Acknowledged,
                    Change::Keep,
                    &["acknowledged"],
                    true,
                    &["user:admin"],
                    &["mem_0"],
                ),
            ),
            case(
                "a member acknowledging from a card becomes a responder",
                Triggered,
                &[],
                Action::Acknowledge,
                member("mem_1", Via::Card),
                applied(
                    Acknowledged,
                    Change::Keep,
                    &["acknowledged", "responders_added"],
                    true,
                    &["mem_1 name"],
                    &["mem_0", "mem_1"],
                ),
            ),
            case(
                "an assignee acknowledging from the bot is not added twice",
                Triggered,
                &[],
                Action::Acknowledge,
                member("mem_0", Via::Bot),
                applied(
                    Acknowledged,
                    Change::Keep,
                    &["acknowledged"],
                    true,
                    &["mem_0 name"],
                    &["mem_0"],
                ),
            ),
            case(
                "a second person acknowledges too",
                Acknowledged,
                &["someone"],
                Action::Acknowledge,
                admin(),
                applied(
                    Acknowledged,
                    Change::Keep,
                    &["acknowledged"],
                    true,
                    &["someone", "user:admin"],
                    &["mem_0"],
                ),
            ),
            case(
                "acknowledging again is a no-op",
                Acknowledged,
                &["user:admin"],
                Action::Acknowledge,
                admin(),
                applied(
                    Acknowledged,
                    Change::Keep,
                    &[],
                    false,
                    &["user:admin"],
                    &["mem_0"],
                ),
            ),
            case(
                "a resolved incident cannot be acknowledged",
                Resolved,
                &[],
                Action::Acknowledge,
                admin(),
                Expect::Conflict,
            ),
            case(
                "unacknowledging triggers it again and restarts its level",
                Acknowledged,
                &["user:admin"],
                Action::Unacknowledge,
                admin(),
                applied(
                    Triggered,
                    Change::Restarted,
                    &["unacknowledged"],
                    true,
                    &[],
                    &["mem_0"],
                ),
            ),
            Case {
                escalation: false,
                ..case(
                    "unacknowledging without an escalation keeps none",
                    Acknowledged,
                    &["user:admin"],
                    Action::Unacknowledge,
                    admin(),
                    applied(
                        Triggered,
                        Change::Keep,
                        &["unacknowledged"],
                        true,
                        &[],
                        &["mem_0"],
                    ),
                )
            },
            case(
                "only an acknowledged incident can be unacknowledged",
                Triggered,
                &[],
                Action::Unacknowledge,
                admin(),
                Expect::Conflict,
            ),
            case(
                "resolving ends the escalation",
                Acknowledged,
                &["user:admin"],
                Action::Resolve,
                admin(),
                applied(
                    Resolved,
                    Change::Remove,
                    &["resolved"],
                    true,
                    &["user:admin"],
                    &["mem_0"],
                ),
            ),
            case(
                "resolving twice is a no-op",
                Resolved,
                &[],
                Action::Resolve,
                admin(),
                applied(Resolved, Change::Keep, &[], false, &[], &["mem_0"]),
            ),
            case(
                "snoozing keeps the status and the escalation",
                Triggered,
                &[],
                Action::Snooze { minutes: 30 },
                admin(),
                applied(Triggered, Change::Keep, &["snoozed"], true, &[], &["mem_0"]),
            ),
            case(
                "a resolved incident cannot be snoozed",
                Resolved,
                &[],
                Action::Snooze { minutes: 30 },
                admin(),
                Expect::Conflict,
            ),
            Case {
                reopen_rule: true,
                escalation: false,
                ..case(
                    "reopening starts the matching rule's escalation",
                    Resolved,
                    &["user:admin"],
                    Action::Reopen,
                    admin(),
                    applied(Triggered, Change::Started, &["reopened"], true, &[], &["mem_0"]),
                )
            },
            Case {
                escalation: false,
                ..case(
                    "reopening with no rule matching has no escalation",
                    Resolved,
                    &[],
                    Action::Reopen,
                    admin(),
                    applied(Triggered, Change::Remove, &["reopened"], true, &[], &["mem_0"]),
                )
            },
            case(
                "only a resolved incident can be reopened",
                Acknowledged,
                &["user:admin"],
                Action::Reopen,
                admin(),
                Expect::Conflict,
            ),
            case(
                "reassigning replaces the responders",
                Triggered,
                &[],
                Action::Reassign {
                    assignees: vec!["mem_2".into(), "mem_3".into()],
                },
                admin(),
                applied(
                    Triggered,
                    Change::Keep,
                    &["reassigned"],
                    true,
                    &[],
                    &["mem_2", "mem_3"],
                ),
            ),
            case(
                "a note goes on the timeline and leaves the cards as they are",
                Resolved,
                &[],
                Action::Note {
                    text: "rolled back".into(),
                },
                admin(),
                applied(Resolved, Change::Keep, &["note"], false, &[], &["mem_0"]),
            ),
            case(
                "an empty note is refused",
                Triggered,
                &[],
                Action::Note { text: "  ".into() },
                admin(),
                Expect::Invalid("text"),
            ),
        ]
    }

    #[test]
    fn every_action_in_every_state() {
        let now = Utc::now();
        let rule = rule();
        for case in cases() {
            let mut inc = Incident::sample(now - Duration::hours(1));
            inc.status = case.status;
            inc.acknowledged_by = case.acknowledged_by.iter().map(|s| s.to_string()).collect();
            inc.assignees = vec!["mem_0".into()];
            inc.rule_id = Some("rul_old".into());
            inc.integration_id = Some("int_a".into());
            if case.status == Status::Resolved {
                inc.resolved_at = Some(now - Duration::minutes(1));
            }
            let before = inc.clone();
            let esc = case.escalation.then(|| escalation_under_way(now));
            let name = actor_name(&case.actor);
            let outcome = apply(
                &mut inc,
                &case.action,
                &case.actor,
                &name,
                now,
                case.reopen_rule.then_some(&rule),
                esc,
            );
            let n = case.name;
            match (case.expect, outcome) {
                (
                    Expect::Applied {
                        status,
                        change,
                        events,
                        version_bumped,
                        acknowledged_by,
                        assignees,
                    },
                    Ok(got),
                ) => {
                    assert_eq!(inc.status, status, "{n}: status");
                    assert_eq!(change_kind(&got, now), change, "{n}: escalation");
                    let new: Vec<&str> = inc.timeline[before.timeline.len()..]
                        .iter()
                        .map(|e| e.kind.as_str())
                        .collect();
                    assert_eq!(new, events, "{n}: timeline");
                    assert!(
                        inc.timeline.iter().all(|e| e.at == now && e.actor == case.actor),
                        "{n}: entries are the actor's, now"
                    );
                    assert_eq!(
                        inc.version,
                        before.version + u64::from(version_bumped),
                        "{n}: version"
                    );
                    assert_eq!(inc.acknowledged_by, acknowledged_by, "{n}: acknowledged by");
                    assert_eq!(inc.assignees, assignees, "{n}: assignees");
                }
                (Expect::Conflict, Err(IncidentError::Conflict(_))) => {
                    assert_eq!(inc.version, before.version, "{n}: a refusal changes nothing");
                    assert!(inc.timeline.is_empty(), "{n}: a refusal changes nothing");
                }
                (Expect::Invalid(field), Err(IncidentError::Invalid { field: got, .. })) => {
                    assert_eq!(got, field, "{n}");
                    assert!(inc.timeline.is_empty(), "{n}: a refusal changes nothing");
                }
                (expect, got) => panic!("{n}: expected {expect:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn resolving_and_reopening_move_the_times_and_the_rule() {
        let now = Utc::now();
        let rule = rule();
        let mut inc = Incident::sample(now);
        inc.snoozed_until = Some(now + Duration::minutes(20));
        apply(&mut inc, &Action::Resolve, &admin(), "admin", now, None, None).unwrap();
        assert_eq!((inc.resolved_at, inc.snoozed_until), (Some(now), None));

        let later = now + Duration::minutes(5);
        apply(
            &mut inc,
            &Action::Reopen,
            &admin(),
            "admin",
            later,
            Some(&rule),
            None,
        )
        .unwrap();
        assert_eq!(inc.resolved_at, None);
        assert_eq!(inc.rule_id.as_deref(), Some("rul_reopen"));
        assert_eq!(inc.integration_id.as_deref(), Some("int_b"));

        apply(&mut inc, &Action::Resolve, &admin(), "admin", later, None, None).unwrap();
        apply(&mut inc, &Action::Reopen, &admin(), "admin", later, None, None).unwrap();
        assert_eq!(inc.rule_id, None, "no rule matches any more");
        assert_eq!(
            inc.integration_id.as_deref(),
            Some("int_b"),
            "its cards still go through the integration they went through"
        );
    }

    #[test]
    fn a_snooze_runs_from_now_and_says_until_when() {
        let now = Utc::now();
        let mut inc = Incident::sample(now);
        let action = Action::Snooze { minutes: 90 };
        apply(&mut inc, &action, &admin(), "admin", now, None, None).unwrap();
        let until = now + Duration::minutes(90);
        assert_eq!(inc.snoozed_until, Some(until));
        let detail = inc.timeline.last().and_then(|e| e.detail.clone());
        assert_eq!(detail, Some(format!("until {}", until.to_rfc3339())));
    }
}
