//! Handoff notices and the daily "who is on call" card. What is due is asked of the one resolver
//! (overrides included); each notice is a small card in zh_cn and en_us, put in the outbox in
//! the same transaction as the row that says it was sent, so it goes out exactly once however
//! often the job runs. The row's key is what was noticed — (schedule, shift start, person), or
//! (schedule, local day, chat) — so an edit that moves nobody's shift sends nothing again, and
//! a shift an edit moves is noticed at its new start. It also tells a shift's owner that
//! someone asks to cover it.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::cover::CoverRequest;
use super::model::{DailySummary, HandoffNotice, Noticed, Schedule};
use super::resolve::{self, FinalShift};
use super::{ScheduleError, Schedules, tables, whole_second};
use crate::delivery::{Delivery, JobKind, NewJob, Priority};
use crate::lark::ReceiveIdType;
use crate::store::StoreError;

/// How long after its time a daily card still goes out (the appliance was down at the time);
/// later, that day's card is skipped rather than sent at an odd hour.
pub const DAILY_GRACE: Duration = Duration::hours(1);
/// How far past a notice's shift start the resolver is asked, to say until when someone is on
/// call.
const SHIFT_END_LOOKAHEAD: Duration = Duration::days(31);
/// Rows of sent notices are kept this long after what they noticed.
const KEEP_NOTICED: Duration = Duration::days(3);
/// How far ahead the daily card looks for who is next.
const NEXT_LOOKAHEAD: Duration = Duration::days(14);

/// A handoff notice due now: to `member`, about the handoff at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffDue {
    pub member: String,
    pub start: DateTime<Utc>,
    /// When the incoming person's time on call ends (for the outgoing one: `start`).
    pub end: DateTime<Utc>,
    /// Whether `member` takes over (else hands over).
    pub incoming: bool,
    /// Who hands over to an incoming member; who takes over from an outgoing one.
    pub others: Vec<String>,
}

/// The handoffs whose notice is due at `now`: shifts starting after `now` and at most
/// `minutes_before` later, to each person who was not on call right before (and, when asked,
/// to each who was and is not after).
pub fn handoffs_due(schedule: &Schedule, notice: &HandoffNotice, now: DateTime<Utc>) -> Vec<HandoffDue> {
    let lead = Duration::minutes(i64::from(notice.minutes_before));
    let resolved = resolve::shifts(schedule, now, now + lead + SHIFT_END_LOOKAHEAD);
    let finals = &resolved.final_shifts;
    let mut due = Vec::new();
    for (i, f) in finals.iter().enumerate() {
        let start = f.shift.start;
        // A start at `now` is the window's edge (a shift already running), not a handoff.
        if start <= now {
            continue;
        }
        if start > now + lead {
            break;
        }
        let before: &[String] = match i.checked_sub(1).map(|j| &finals[j]) {
            Some(p) if p.shift.end == start => &p.shift.members,
            _ => &[],
        };
        for member in f.shift.members.iter().filter(|m| !before.contains(m)) {
            due.push(HandoffDue {
                member: member.clone(),
                start,
                end: on_call_until(finals, i, member),
                incoming: true,
                others: before.to_vec(),
            });
        }
        if notice.notify_outgoing {
            for member in before.iter().filter(|m| !f.shift.members.contains(m)) {
                due.push(HandoffDue {
                    member: member.clone(),
                    start,
                    end: start,
                    incoming: false,
                    others: f.shift.members.clone(),
                });
            }
        }
    }
    due
}

/// The end of `member`'s time on call from final shift `from` on, across pieces that follow
/// each other without a break (a layer handing to an override naming the same person).
fn on_call_until(finals: &[FinalShift], from: usize, member: &str) -> DateTime<Utc> {
    let mut end = finals[from].shift.end;
    for f in &finals[from + 1..] {
        if f.shift.start != end || !f.shift.members.iter().any(|m| m == member) {
            break;
        }
        end = f.shift.end;
    }
    end
}

/// The local day whose daily card is due at `now`, if any: from its time until
/// [`DAILY_GRACE`] later.
pub fn daily_due(schedule: &Schedule, summary: &DailySummary, now: DateTime<Utc>) -> Option<NaiveDate> {
    let tz = zone_at(schedule, now);
    let today = now.with_timezone(&tz).date_naive();
    let at = resolve::start_instant(tz, today.and_time(summary.at));
    (at <= now && now < at + DAILY_GRACE).then_some(today)
}

fn zone_at(schedule: &Schedule, at: DateTime<Utc>) -> Tz {
    // Validated when saved.
    schedule.version_at(at).time_zone.parse().unwrap_or(Tz::UTC)
}

fn local(schedule: &Schedule, t: DateTime<Utc>) -> String {
    t.with_timezone(&zone_at(schedule, t))
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// A card with a header and lines of plain text (names are never read as markup), in both
/// languages; Lark shows the reader's.
fn card(zh: (String, Vec<String>), en: (String, Vec<String>)) -> String {
    card_with_link(zh, en, None)
}

/// [`card`] with a button opening `link` (its label in each language).
fn card_with_link(
    zh: (String, Vec<String>),
    en: (String, Vec<String>),
    link: Option<(&str, [&str; 2])>,
) -> String {
    let elements = |lines: Vec<String>, label: usize| -> Vec<Value> {
        let mut out: Vec<Value> = lines
            .into_iter()
            .map(|line| json!({"tag": "div", "text": {"tag": "plain_text", "content": line}}))
            .collect();
        if let Some((url, labels)) = link {
            out.push(
                json!({"tag": "action", "actions": [{"tag": "button", "type": "primary", "url": url,
                             "text": {"tag": "plain_text", "content": labels[label]}}]}),
            );
        }
        out
    };
    let header =
        |title: String| json!({"template": "blue", "title": {"tag": "plain_text", "content": title}});
    json!({
        "config": {"wide_screen_mode": true},
        "i18n_header": {"zh_cn": header(zh.0), "en_us": header(en.0)},
        "i18n_elements": {"zh_cn": elements(zh.1, 0), "en_us": elements(en.1, 1)},
    })
    .to_string()
}

/// Sends what is due, once; run every minute by the scheduler (`schedule_notices`).
pub struct ScheduleNotices {
    schedules: Arc<Schedules>,
    delivery: Arc<Delivery>,
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    handoffs: usize,
    daily: usize,
    not_linked: usize,
}

impl ScheduleNotices {
    pub fn new(schedules: Arc<Schedules>, delivery: Arc<Delivery>) -> Arc<ScheduleNotices> {
        Arc::new(ScheduleNotices { schedules, delivery })
    }

    /// Puts every notice due now in the outbox, once; says what it did.
    pub async fn send_due(&self) -> Result<String, ScheduleError> {
        let now = whole_second(self.schedules.clock.now());
        let mut sent = Sent::default();
        for schedule in self.schedules.list()? {
            if let Some(notice) = &schedule.handoff_notice {
                for due in handoffs_due(&schedule, notice, now) {
                    self.send_handoff(&schedule, &due, now, &mut sent).await?;
                }
            }
            if let Some(summary) = &schedule.daily_summary
                && let Some(day) = daily_due(&schedule, summary, now)
            {
                self.send_daily(&schedule, summary, day, now, &mut sent).await?;
            }
        }
        let pruned = self.prune(now).await?;
        Ok(format!(
            "{} handoff notices and {} daily cards sent; {} not sent (person not linked to Lark); {pruned} old notice records removed",
            sent.handoffs, sent.daily, sent.not_linked
        ))
    }

    /// Tells the owner of a shift that someone asks to cover it, with a button to where they
    /// answer (`answer_url` of the integration they are reached through). Returns whether a
    /// message was queued (not when the owner is linked to no Lark app).
    pub async fn cover_requested(
        &self,
        request: &CoverRequest,
        answer_url: impl Fn(&str) -> String,
    ) -> Result<bool, ScheduleError> {
        let Some(contact) = self.schedules.roster.lark_contact(&request.owner)? else {
            return Ok(false);
        };
        let schedule = self.schedules.get(&request.schedule_id)?;
        let (name, who) = (&schedule.name, self.schedules.member_name(&request.requester));
        let (start, end) = (local(&schedule, request.start), local(&schedule, request.end));
        let url = answer_url(&contact.integration_id);
        let content = card_with_link(
            (
                format!("代班请求：{name}"),
                vec![format!(
                    "{who} 想替你在“{name}”值班，{start} 至 {end}。在应用主页同意或拒绝。"
                )],
            ),
            (
                format!("Cover request: {name}"),
                vec![format!(
                    "{who} asks to cover your {name} shift from {start} to {end}. Accept or decline on the homepage."
                )],
            ),
            Some((&url, ["去处理", "Answer"])),
        );
        self.delivery
            .enqueue(NewJob {
                integration_id: contact.integration_id,
                incident_id: None,
                priority: Priority::Info,
                cosmetic: false,
                kind: JobKind::Send {
                    receive_id_type: ReceiveIdType::OpenId,
                    receive_id: contact.open_id,
                    msg_type: "interactive".into(),
                    content,
                },
            })
            .await?;
        Ok(true)
    }

    fn names(&self, ids: &[String]) -> String {
        ids.iter()
            .map(|m| self.schedules.member_name(m))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn send_handoff(
        &self,
        schedule: &Schedule,
        due: &HandoffDue,
        now: DateTime<Utc>,
        sent: &mut Sent,
    ) -> Result<(), ScheduleError> {
        let key = format!("handoff/{}/{}/{}", schedule.id, due.start.timestamp(), due.member);
        if self.noticed(&key)? {
            return Ok(());
        }
        let Some(contact) = self.schedules.roster.lark_contact(&due.member)? else {
            tracing::warn!(schedule = %schedule.id, member = %due.member, reason = "app_not_linked",
                           "handoff notice not sent: the member is linked to no Lark app");
            sent.not_linked += 1;
            return Ok(());
        };
        let name = &schedule.name;
        let (start, end, others) = (
            local(schedule, due.start),
            local(schedule, due.end),
            self.names(&due.others),
        );
        let content = if due.incoming {
            let mut zh = vec![format!("你将于 {start} 至 {end} 在“{name}”值班。")];
            let mut en = vec![format!("You are on call for {name} from {start} to {end}.")];
            if !others.is_empty() {
                zh.push(format!("从 {others} 手中接班。"));
                en.push(format!("Taking over from {others}."));
            }
            card(
                (format!("值班提醒：{name}"), zh),
                (format!("On call soon: {name}"), en),
            )
        } else {
            let others = if others.is_empty() {
                ("无人".to_string(), "nobody".to_string())
            } else {
                (others.clone(), others)
            };
            card(
                (
                    format!("交班提醒：{name}"),
                    vec![format!("你将于 {start} 把“{name}”交给 {}。", others.0)],
                ),
                (
                    format!("Handing over: {name}"),
                    vec![format!("You hand {name} over to {} at {start}.", others.1)],
                ),
            )
        };
        let job = NewJob {
            integration_id: contact.integration_id,
            incident_id: None,
            priority: Priority::Info,
            cosmetic: false,
            kind: JobKind::Send {
                receive_id_type: ReceiveIdType::OpenId,
                receive_id: contact.open_id,
                msg_type: "interactive".into(),
                content,
            },
        };
        if self.enqueue_once(job, key, due.start, now).await? {
            tracing::info!(schedule = %schedule.id, member = %due.member, start = %due.start,
                           incoming = due.incoming, "handoff notice queued");
            sent.handoffs += 1;
        }
        Ok(())
    }

    async fn send_daily(
        &self,
        schedule: &Schedule,
        summary: &DailySummary,
        day: NaiveDate,
        now: DateTime<Utc>,
        sent: &mut Sent,
    ) -> Result<(), ScheduleError> {
        let resolved = resolve::shifts(schedule, now, now + NEXT_LOOKAHEAD);
        let (current, next) = resolve::current_and_next(&resolved, now);
        let name = &schedule.name;
        let (zh_now, en_now) = match current {
            Some(c) => {
                let at = resolved.final_shifts.iter().position(|f| f == c).unwrap_or(0);
                let until = c
                    .shift
                    .members
                    .iter()
                    .map(|m| on_call_until(&resolved.final_shifts, at, m))
                    .min()
                    .unwrap_or(c.shift.end);
                let (who, until) = (self.names(&c.shift.members), local(schedule, until));
                (
                    format!("当前值班：{who}（至 {until}）"),
                    format!("On call now: {who} until {until}"),
                )
            }
            None => ("当前值班：无人".into(), "On call now: nobody".into()),
        };
        let days = NEXT_LOOKAHEAD.num_days();
        let (zh_next, en_next) = match next {
            Some(n) => {
                let (who, from) = (self.names(&n.shift.members), local(schedule, n.shift.start));
                (
                    format!("下一位：{who}（{from} 起）"),
                    format!("Next: {who} from {from}"),
                )
            }
            None => (
                format!("下一位：未来 {days} 天无人接班"),
                format!("Next: nobody in the coming {days} days"),
            ),
        };
        let content = card(
            (format!("今日值班：{name}（{day}）"), vec![zh_now, zh_next]),
            (format!("Who is on call: {name} ({day})"), vec![en_now, en_next]),
        );
        let due = resolve::start_instant(zone_at(schedule, now), day.and_time(summary.at));
        for chat in &summary.chats {
            let key = format!("daily/{}/{day}/{chat}", schedule.id);
            if self.noticed(&key)? {
                continue;
            }
            let job = NewJob {
                integration_id: summary.integration_id.clone(),
                incident_id: None,
                priority: Priority::Info,
                cosmetic: false,
                kind: JobKind::Send {
                    receive_id_type: ReceiveIdType::ChatId,
                    receive_id: chat.clone(),
                    msg_type: "interactive".into(),
                    content: content.clone(),
                },
            };
            if self.enqueue_once(job, key, due, now).await? {
                tracing::info!(schedule = %schedule.id, chat = %chat, %day, "daily on-call card queued");
                sent.daily += 1;
            }
        }
        Ok(())
    }

    fn noticed(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .schedules
            .store
            .read(|r| r.get(&tables::NOTICES, key))?
            .is_some())
    }

    /// Queues `job` and records `key` in one transaction, unless `key` is already recorded
    /// (another run got there first). Returns whether it queued.
    async fn enqueue_once(
        &self,
        job: NewJob,
        key: String,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let queued = self
            .delivery
            .enqueue_with(job, move |w| {
                if w.get(&tables::NOTICES, key.as_str())?.is_some() {
                    return Ok(false);
                }
                w.put(&tables::NOTICES, key.as_str(), &Noticed { due, sent_at: now })?;
                Ok(true)
            })
            .await?;
        Ok(queued.is_some())
    }

    /// Forgets notices of shifts and days long past (none can be due again).
    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = now - KEEP_NOTICED;
        let old: Vec<String> = self
            .schedules
            .store
            .read(|r| r.page(&tables::NOTICES, None, usize::MAX, false))?
            .into_iter()
            .filter(|(_, n)| n.due < cutoff)
            .map(|(k, _)| k)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let count = old.len();
        self.schedules
            .store
            .write(move |w| {
                for key in &old {
                    w.remove(&tables::NOTICES, key.as_str())?;
                }
                Ok(())
            })
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::model::{Layer, Override, Participant, Rotation, RotationUnit, Version, wall_time};
    use chrono::NaiveTime;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// Alice then Bob, a day each from Monday 14 December 2026 09:00 in Shanghai (01:00 UTC).
    fn daily(overrides: &[(&str, &str, &str)]) -> Schedule {
        let created = t("2026-12-01T00:00:00Z");
        Schedule {
            id: "sch_test".into(),
            name: "ops".into(),
            description: String::new(),
            handoff_notice: None,
            daily_summary: None,
            versions: vec![Version {
                effective_from: None,
                time_zone: "Asia/Shanghai".into(),
                layers: vec![Layer {
                    name: "primary".into(),
                    participants: vec![Participant(vec!["alice".into()]), Participant(vec!["bob".into()])],
                    rotation: Rotation {
                        unit: RotationUnit::Day,
                        every: 1,
                    },
                    first_handoff: wall_time::parse("2026-12-14T09:00").unwrap(),
                    active_from: None,
                    active_until: None,
                    restrictions: Vec::new(),
                }],
                created_at: created,
            }],
            overrides: overrides
                .iter()
                .enumerate()
                .map(|(i, (start, end, who))| Override {
                    id: format!("ovr_{i}"),
                    start: t(start),
                    end: t(end),
                    member_id: who.to_string(),
                    note: None,
                    created_at: created,
                })
                .collect(),
            created_at: created,
            updated_at: created,
        }
    }

    fn notice(minutes_before: u32, notify_outgoing: bool) -> HandoffNotice {
        HandoffNotice {
            minutes_before,
            notify_outgoing,
        }
    }

    /// `(member, start, end, incoming)` of what is due.
    fn due(s: &Schedule, n: &HandoffNotice, now: &str) -> Vec<(String, DateTime<Utc>, DateTime<Utc>, bool)> {
        handoffs_due(s, n, t(now))
            .into_iter()
            .map(|d| (d.member, d.start, d.end, d.incoming))
            .collect()
    }

    #[test]
    fn a_handoff_is_due_from_its_lead_time_until_it_happens() {
        let s = daily(&[]);
        let n = notice(30, false);
        let bob = (
            "bob".to_string(),
            t("2026-12-15T01:00:00Z"),
            t("2026-12-16T01:00:00Z"),
            true,
        );
        assert!(due(&s, &n, "2026-12-15T00:29:59Z").is_empty(), "too early");
        assert_eq!(due(&s, &n, "2026-12-15T00:30:00Z"), vec![bob.clone()]);
        assert_eq!(due(&s, &n, "2026-12-15T00:59:59Z"), vec![bob]);
        assert!(
            due(&s, &n, "2026-12-15T01:00:00Z").is_empty(),
            "bob's shift is running"
        );
        let first = due(&s, &n, "2026-12-14T00:45:00Z");
        assert_eq!(first.len(), 1, "the first shift has nobody before it: {first:?}");
        assert_eq!(
            handoffs_due(&s, &n, t("2026-12-14T00:45:00Z"))[0].others,
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_outgoing_person_is_told_when_asked() {
        let s = daily(&[]);
        let due = handoffs_due(&s, &notice(30, true), t("2026-12-15T00:40:00Z"));
        let who: Vec<(&str, bool, Vec<String>)> = due
            .iter()
            .map(|d| (d.member.as_str(), d.incoming, d.others.clone()))
            .collect();
        assert_eq!(
            who,
            vec![
                ("bob", true, vec!["alice".to_string()]),
                ("alice", false, vec!["bob".to_string()])
            ]
        );
    }

    #[test]
    fn an_override_is_a_handoff_and_so_is_the_return_from_it() {
        // Carol covers 09:00–10:00 of Bob's day.
        let s = daily(&[("2026-12-15T01:00:00Z", "2026-12-15T02:00:00Z", "carol")]);
        let n = notice(30, false);
        assert_eq!(
            due(&s, &n, "2026-12-15T00:30:00Z"),
            vec![(
                "carol".to_string(),
                t("2026-12-15T01:00:00Z"),
                t("2026-12-15T02:00:00Z"),
                true
            )]
        );
        assert_eq!(
            due(&s, &n, "2026-12-15T01:30:00Z"),
            vec![(
                "bob".to_string(),
                t("2026-12-15T02:00:00Z"),
                t("2026-12-16T01:00:00Z"),
                true
            )]
        );
    }

    #[test]
    fn no_handoff_where_the_same_person_stays_on_call() {
        // An override of Alice's own from 08:00 to 10:00 local, across her handoff to Bob: her
        // layer hands to her override at 08:00, which is no handoff.
        let s = daily(&[("2026-12-15T00:00:00Z", "2026-12-15T02:00:00Z", "alice")]);
        let n = notice(30, false);
        assert!(
            due(&s, &n, "2026-12-14T23:45:00Z").is_empty(),
            "alice stays on at 08:00"
        );
        assert!(
            due(&s, &n, "2026-12-15T00:30:00Z").is_empty(),
            "alice stays on at 09:00"
        );
        assert_eq!(
            due(&s, &n, "2026-12-15T01:30:00Z"),
            vec![(
                "bob".to_string(),
                t("2026-12-15T02:00:00Z"),
                t("2026-12-16T01:00:00Z"),
                true
            )]
        );
    }

    #[test]
    fn the_daily_card_is_due_from_its_local_time_for_an_hour() {
        let s = daily(&[]);
        let summary = DailySummary {
            integration_id: "int_x".into(),
            chats: vec!["oc_x".into()],
            at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        };
        let day = NaiveDate::from_ymd_opt(2026, 12, 15).unwrap();
        assert_eq!(daily_due(&s, &summary, t("2026-12-15T00:59:59Z")), None);
        assert_eq!(daily_due(&s, &summary, t("2026-12-15T01:00:00Z")), Some(day));
        assert_eq!(daily_due(&s, &summary, t("2026-12-15T01:59:59Z")), Some(day));
        assert_eq!(daily_due(&s, &summary, t("2026-12-15T02:00:00Z")), None);
    }
}
