//! On-call schedules: layers of rotations in a time zone, overrides, versions that keep the past
//! as it was, and calendar feeds. [`resolve`] is the one answer to "who is on call" that
//! escalation, the API, the calendar feeds and every other view ask. Members are named by id;
//! whether an id names a member is asked of a [`Roster`] the services hand in, so this module
//! knows nothing of incidents.
//!
//! Over 700 lines: the `Schedules` service's whole API in one impl (schedules, layers,
//! overrides, shifts, feeds) with the input checks they share; the resolver, the model, covers,
//! notices and the calendar rendering are already their own modules.

pub mod cover;
pub mod ical;
pub mod model;
pub mod notices;
pub mod resolve;
pub mod tables;

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::store::{Store, StoreError};
use model::{DailySummary, Feed, FeedTarget, HandoffNotice, Layer, Override, Schedule, Version};
pub use resolve::{FinalShift, Resolution, Shift, Source};

/// The most layers one version holds.
pub const MAX_LAYERS: usize = 20;
/// The most turns one layer rotates through.
pub const MAX_PARTICIPANTS: usize = 200;
/// The most members sharing one turn.
pub const MAX_GROUP: usize = 20;
/// The most weekly windows one layer is restricted to.
pub const MAX_RESTRICTIONS: usize = 28;
/// The most overrides not yet ended a schedule holds.
pub const MAX_OVERRIDES: usize = 1000;
/// The longest window `shifts` answers for.
pub const MAX_WINDOW_DAYS: i64 = 90;
/// The longest override.
pub const MAX_OVERRIDE_DAYS: i64 = 366;
/// The earliest a handoff notice goes out before its shift.
pub const MAX_NOTICE_MINUTES: u32 = 2880;
/// The most chats one daily card goes to.
pub const MAX_SUMMARY_CHATS: usize = 20;
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Who the member ids in schedules name, and where in Lark they and a schedule's chats are
/// reached.
pub trait Roster: Send + Sync {
    /// The member's display name; `None` when no member has this id.
    fn name(&self, member_id: &str) -> Result<Option<String>, StoreError>;
    /// Where to message the member in Lark; `None` when they are linked to no integration.
    fn lark_contact(&self, member_id: &str) -> Result<Option<LarkContact>, StoreError>;
    /// Whether an integration has this id.
    fn has_integration(&self, integration_id: &str) -> Result<bool, StoreError>;
}

/// A member's identity in one integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LarkContact {
    pub integration_id: String,
    pub open_id: String,
}

/// A schedule as created through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// IANA time zone the layers' wall times are in.
    pub time_zone: String,
    #[serde(default)]
    pub layers: Vec<Layer>,
    pub handoff_notice: Option<HandoffNotice>,
    pub daily_summary: Option<DailySummary>,
}

/// What changes without a new version (nothing that moves a shift). For the notices, absent
/// keeps them and `null` turns them off.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChange {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<HandoffNotice>)]
    pub handoff_notice: Option<Option<HandoffNotice>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DailySummary>)]
    pub daily_summary: Option<Option<DailySummary>>,
}

/// A field that is there, even as `null` (absent stays `None` through `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A new version of the layers, in force from `effective_from` (now when absent).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayersInput {
    /// The current zone when absent.
    pub time_zone: Option<String>,
    pub layers: Vec<Layer>,
    pub effective_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideInput {
    /// Now when absent.
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub member_id: String,
    pub note: Option<String>,
}

/// A schedule as the API shows it: the version in force now on top, every version below.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub time_zone: String,
    pub layers: Vec<Layer>,
    pub handoff_notice: Option<HandoffNotice>,
    pub daily_summary: Option<DailySummary>,
    pub versions: Vec<Version>,
    /// Overrides not yet ended.
    pub overrides: Vec<Override>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What deleting an override did: a future one is gone, a running one ends now (its past stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideRemoval {
    Deleted,
    EndedNow,
}

/// A member's shift in one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MemberShift {
    pub schedule_id: String,
    pub schedule_name: String,
    #[serde(flatten)]
    pub shift: FinalShift,
}

pub struct Schedules {
    store: Store,
    clock: Arc<dyn Clock>,
    roster: Arc<dyn Roster>,
}

fn parse_zone(field: &str, text: &str) -> Result<Tz, ScheduleError> {
    text.parse::<Tz>()
        .map_err(|_| invalid(field, format!("{text:?} is not an IANA time zone")))
}

fn check_name(name: &str) -> Result<String, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("name", format!("at most {MAX_NAME_CHARS} characters")));
    }
    Ok(name.to_string())
}

fn check_description(text: &str) -> Result<String, ScheduleError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(text.to_string())
}

/// Schedules keep instants to the whole second, as the API and calendar feeds write them: an
/// override ended "now" ends at the second it was ended, and asking who is on call at that
/// second (or any shown bound) answers as the feed and the API show it.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

/// A `shifts` window: `to` after `from`, at most [`MAX_WINDOW_DAYS`] long.
pub fn check_window(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ScheduleError> {
    if to <= from {
        return Err(invalid("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(invalid(
            "to",
            format!("the window is at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    Ok(())
}

impl Schedules {
    pub fn new(store: Store, clock: Arc<dyn Clock>, roster: Arc<dyn Roster>) -> Arc<Schedules> {
        Arc::new(Schedules { store, clock, roster })
    }

    fn check_member(&self, field: &str, id: &str) -> Result<(), ScheduleError> {
        match self.roster.name(id)? {
            Some(_) => Ok(()),
            None => Err(invalid(field, format!("no member {id}"))),
        }
    }

    /// The member's name, or the id when the member is gone.
    pub fn member_name(&self, id: &str) -> String {
        self.roster
            .name(id)
            .ok()
            .flatten()
            .unwrap_or_else(|| id.to_string())
    }

    fn check_handoff_notice(&self, notice: &HandoffNotice) -> Result<(), ScheduleError> {
        if !(1..=MAX_NOTICE_MINUTES).contains(&notice.minutes_before) {
            return Err(invalid(
                "handoff_notice.minutes_before",
                format!("1 to {MAX_NOTICE_MINUTES} minutes"),
            ));
        }
        Ok(())
    }

    fn check_daily_summary(&self, summary: &DailySummary) -> Result<(), ScheduleError> {
        if !self.roster.has_integration(&summary.integration_id)? {
            return Err(invalid(
                "daily_summary.integration_id",
                format!("no integration {}", summary.integration_id),
            ));
        }
        if summary.chats.is_empty() || summary.chats.len() > MAX_SUMMARY_CHATS {
            return Err(invalid(
                "daily_summary.chats",
                format!("1 to {MAX_SUMMARY_CHATS} chat ids"),
            ));
        }
        for (i, chat) in summary.chats.iter().enumerate() {
            if chat.trim().is_empty() || chat.len() > 100 || chat.chars().any(char::is_whitespace) {
                return Err(invalid(
                    format!("daily_summary.chats[{i}]"),
                    "a chat id such as oc_…",
                ));
            }
        }
        Ok(())
    }

    fn check_layers(&self, layers: &[Layer]) -> Result<(), ScheduleError> {
        if layers.len() > MAX_LAYERS {
            return Err(invalid("layers", format!("at most {MAX_LAYERS} layers")));
        }
        for (i, layer) in layers.iter().enumerate() {
            let at = |field: &str| format!("layers[{i}].{field}");
            if layer.name.trim().is_empty() || layer.name.chars().count() > MAX_NAME_CHARS {
                return Err(invalid(at("name"), format!("1 to {MAX_NAME_CHARS} characters")));
            }
            if layer.participants.is_empty() || layer.participants.len() > MAX_PARTICIPANTS {
                return Err(invalid(
                    at("participants"),
                    format!("1 to {MAX_PARTICIPANTS} participants"),
                ));
            }
            for (j, group) in layer.participants.iter().enumerate() {
                let field = at(&format!("participants[{j}]"));
                if group.0.is_empty() || group.0.len() > MAX_GROUP {
                    return Err(invalid(field, format!("1 to {MAX_GROUP} members share a turn")));
                }
                for id in &group.0 {
                    self.check_member(&field, id)?;
                }
            }
            if !(1..=1000).contains(&layer.rotation.every) {
                return Err(invalid(at("rotation.every"), "1 to 1000"));
            }
            let starts = layer.active_from.unwrap_or(layer.first_handoff);
            if layer.active_until.is_some_and(|until| until <= starts) {
                return Err(invalid(
                    at("active_until"),
                    "must be after active_from (or the first handoff)",
                ));
            }
            if layer.restrictions.len() > MAX_RESTRICTIONS {
                return Err(invalid(
                    at("restrictions"),
                    format!("at most {MAX_RESTRICTIONS} windows"),
                ));
            }
            for (j, r) in layer.restrictions.iter().enumerate() {
                if r.days.is_empty() || r.days.iter().any(|d| *d > 6) {
                    return Err(invalid(
                        at(&format!("restrictions[{j}].days")),
                        "give days as 0 (Monday) to 6 (Sunday)",
                    ));
                }
            }
        }
        Ok(())
    }

    pub async fn create(&self, input: ScheduleInput) -> Result<Schedule, ScheduleError> {
        let name = check_name(&input.name)?;
        let description = check_description(&input.description)?;
        parse_zone("time_zone", &input.time_zone)?;
        self.check_layers(&input.layers)?;
        if let Some(notice) = &input.handoff_notice {
            self.check_handoff_notice(notice)?;
        }
        if let Some(summary) = &input.daily_summary {
            self.check_daily_summary(summary)?;
        }
        let now = self.clock.now();
        let schedule = Schedule {
            id: crate::ids::new_id(crate::ids::prefix::SCHEDULE, 6),
            name,
            description,
            handoff_notice: input.handoff_notice,
            daily_summary: input.daily_summary,
            versions: vec![Version {
                effective_from: None,
                time_zone: input.time_zone,
                layers: input.layers,
                created_at: now,
            }],
            overrides: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let stored = schedule.clone();
        self.store
            .write(move |w| w.put(&tables::SCHEDULES, stored.id.as_str(), &stored))
            .await?;
        Ok(schedule)
    }

    pub fn get(&self, id: &str) -> Result<Schedule, ScheduleError> {
        self.store
            .read(|r| r.get(&tables::SCHEDULES, id))?
            .ok_or_else(|| ScheduleError::NotFound(format!("no schedule {id}")))
    }

    pub fn list(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::SCHEDULES, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    pub fn view(&self, schedule: Schedule) -> ScheduleView {
        let now = self.clock.now();
        let current = schedule.version_at(now).clone();
        ScheduleView {
            id: schedule.id,
            name: schedule.name,
            description: schedule.description,
            time_zone: current.time_zone,
            layers: current.layers,
            handoff_notice: schedule.handoff_notice,
            daily_summary: schedule.daily_summary,
            versions: schedule.versions,
            overrides: schedule.overrides.into_iter().filter(|o| o.end > now).collect(),
            created_at: schedule.created_at,
            updated_at: schedule.updated_at,
        }
    }

    /// Reads, changes and writes one schedule in a single commit.
    async fn modify<R: Send + 'static>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Schedule) -> Result<R, ScheduleError> + Send + 'static,
    ) -> Result<(Schedule, R), ScheduleError> {
        let (key, now) = (id.to_string(), self.clock.now());
        self.store
            .write(move |w| {
                let Some(mut schedule) = w.get(&tables::SCHEDULES, key.as_str())? else {
                    return Ok(Err(ScheduleError::NotFound(format!("no schedule {key}"))));
                };
                let out = match change(&mut schedule) {
                    Ok(out) => out,
                    Err(e) => return Ok(Err(e)),
                };
                schedule.updated_at = now;
                w.put(&tables::SCHEDULES, key.as_str(), &schedule)?;
                Ok(Ok((schedule, out)))
            })
            .await?
    }

    pub async fn update(&self, id: &str, change: ScheduleChange) -> Result<Schedule, ScheduleError> {
        let name = change.name.as_deref().map(check_name).transpose()?;
        let description = change.description.as_deref().map(check_description).transpose()?;
        if let Some(Some(notice)) = &change.handoff_notice {
            self.check_handoff_notice(notice)?;
        }
        if let Some(Some(summary)) = &change.daily_summary {
            self.check_daily_summary(summary)?;
        }
        let (schedule, ()) = self
            .modify(id, move |s| {
                if let Some(name) = name {
                    s.name = name;
                }
                if let Some(description) = description {
                    s.description = description;
                }
                if let Some(notice) = change.handoff_notice {
                    s.handoff_notice = notice;
                }
                if let Some(summary) = change.daily_summary {
                    s.daily_summary = summary;
                }
                Ok(())
            })
            .await?;
        Ok(schedule)
    }

    /// Puts new layers in force from `effective_from`: shifts before it stay as they were, and
    /// versions that were to start at or after it give way to this one.
    pub async fn replace_layers(&self, id: &str, input: LayersInput) -> Result<Schedule, ScheduleError> {
        self.check_layers(&input.layers)?;
        if let Some(zone) = &input.time_zone {
            parse_zone("time_zone", zone)?;
        }
        let now = whole_second(self.clock.now());
        let from = whole_second(input.effective_from.unwrap_or(now));
        if from < now {
            return Err(invalid(
                "effective_from",
                "must not be in the past: edits never rewrite past shifts",
            ));
        }
        let (schedule, ()) = self
            .modify(id, move |s| {
                let time_zone = input
                    .time_zone
                    .unwrap_or_else(|| s.version_at(from).time_zone.clone());
                s.versions.retain(|v| v.effective_from.is_none_or(|t| t < from));
                s.versions.push(Version {
                    effective_from: Some(from),
                    time_zone,
                    layers: input.layers,
                    created_at: now,
                });
                Ok(())
            })
            .await?;
        Ok(schedule)
    }

    /// Removes the schedule with its calendar feeds and the requests to cover its shifts.
    pub async fn delete(&self, id: &str) -> Result<(), ScheduleError> {
        let key = id.to_string();
        let removed = self
            .store
            .write(move |w| {
                let removed = w.remove(&tables::SCHEDULES, key.as_str())?;
                for (request_id, request) in w.page(&tables::COVER_REQUESTS, None, usize::MAX, false)? {
                    if request.schedule_id == key {
                        w.remove(&tables::COVER_REQUESTS, request_id.as_str())?;
                    }
                }
                for (feed_id, feed) in w.page(&tables::FEEDS, None, usize::MAX, false)? {
                    if feed.target == FeedTarget::Schedule(key.clone()) {
                        w.remove(&tables::FEEDS, feed_id.as_str())?;
                        w.remove(&tables::FEED_TOKENS, feed.token_hash.as_str())?;
                    }
                }
                Ok(removed)
            })
            .await?;
        if removed {
            Ok(())
        } else {
            Err(ScheduleError::NotFound(format!("no schedule {id}")))
        }
    }

    pub async fn add_override(&self, id: &str, input: OverrideInput) -> Result<Override, ScheduleError> {
        self.check_member("member_id", &input.member_id)?;
        let now = whole_second(self.clock.now());
        let start = whole_second(input.start.unwrap_or(now));
        let end = whole_second(input.end);
        if start < now - Duration::minutes(1) {
            return Err(invalid(
                "start",
                "must not be in the past: overrides never rewrite past shifts",
            ));
        }
        if end <= start {
            return Err(invalid("end", "must be after start"));
        }
        if end - start > Duration::days(MAX_OVERRIDE_DAYS) {
            return Err(invalid(
                "end",
                format!("an override lasts at most {MAX_OVERRIDE_DAYS} days"),
            ));
        }
        if input
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS * 5)
        {
            return Err(invalid("note", "at most 500 characters"));
        }
        let created = Override {
            id: crate::ids::new_id(crate::ids::prefix::OVERRIDE, 6),
            start,
            end,
            member_id: input.member_id,
            note: input.note.filter(|n| !n.trim().is_empty()),
            created_at: now,
        };
        let stored = created.clone();
        self.modify(id, move |s| {
            if s.overrides.iter().filter(|o| o.end > now).count() >= MAX_OVERRIDES {
                return Err(ScheduleError::Conflict(format!(
                    "the schedule already has {MAX_OVERRIDES} overrides not yet ended"
                )));
            }
            s.overrides.push(stored);
            Ok(())
        })
        .await?;
        Ok(created)
    }

    pub async fn remove_override(
        &self,
        id: &str,
        override_id: &str,
    ) -> Result<OverrideRemoval, ScheduleError> {
        let now = whole_second(self.clock.now());
        let oid = override_id.to_string();
        let (_, removal) = self
            .modify(id, move |s| {
                let Some(at) = s.overrides.iter().position(|o| o.id == oid) else {
                    return Err(ScheduleError::NotFound(format!("no override {oid}")));
                };
                let o = &mut s.overrides[at];
                if o.end <= now {
                    return Err(ScheduleError::Conflict(
                        "the override has ended; the past stays as it was".into(),
                    ));
                }
                if o.start >= now {
                    s.overrides.remove(at);
                    Ok(OverrideRemoval::Deleted)
                } else {
                    o.end = now;
                    Ok(OverrideRemoval::EndedNow)
                }
            })
            .await?;
        Ok(removal)
    }

    /// Who is on call in the schedule at `at`.
    pub fn on_call(&self, id: &str, at: DateTime<Utc>) -> Result<Option<FinalShift>, ScheduleError> {
        Ok(resolve::on_call(&self.get(id)?, at))
    }

    pub fn shifts(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Resolution, ScheduleError> {
        check_window(from, to)?;
        Ok(resolve::shifts(&self.get(id)?, from, to))
    }

    /// A member's final shifts in every schedule, in time order.
    pub fn member_shifts(
        &self,
        member_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MemberShift>, ScheduleError> {
        check_window(from, to)?;
        let mut out = Vec::new();
        for schedule in self.list()? {
            if !schedule.names_member(member_id) {
                continue;
            }
            let resolved = resolve::shifts(&schedule, from, to);
            out.extend(
                resolved
                    .final_shifts
                    .into_iter()
                    .filter(|f| f.shift.members.iter().any(|m| m == member_id))
                    .map(|shift| MemberShift {
                        schedule_id: schedule.id.clone(),
                        schedule_name: schedule.name.clone(),
                        shift,
                    }),
            );
        }
        out.sort_by_key(|s| s.shift.shift.start);
        Ok(out)
    }

    /// Makes a secret calendar URL's token; returns the feed and the token (shown once).
    pub async fn create_feed(&self, target: FeedTarget) -> Result<(Feed, String), ScheduleError> {
        match &target {
            FeedTarget::Schedule(id) => {
                self.get(id)?;
            }
            FeedTarget::Member(id) => self.check_member("member_id", id)?,
        }
        let token = format!("{}{}", crate::ids::prefix::FEED_TOKEN, crate::ids::random_hex(24));
        let feed = Feed {
            id: crate::ids::new_id(crate::ids::prefix::FEED, 6),
            target,
            token_hash: crate::ids::sha256_hex(token.as_bytes()),
            created_at: self.clock.now(),
        };
        let stored = feed.clone();
        self.store
            .write(move |w| {
                w.put(&tables::FEEDS, stored.id.as_str(), &stored)?;
                w.put(&tables::FEED_TOKENS, stored.token_hash.as_str(), &stored.id)
            })
            .await?;
        Ok((feed, token))
    }

    pub fn feeds(&self) -> Result<Vec<Feed>, ScheduleError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::FEEDS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }

    /// Revokes a feed: its URL stops working at once.
    pub async fn revoke_feed(&self, id: &str) -> Result<(), ScheduleError> {
        let key = id.to_string();
        let removed = self
            .store
            .write(move |w| {
                let Some(feed) = w.get(&tables::FEEDS, key.as_str())? else {
                    return Ok(false);
                };
                w.remove(&tables::FEEDS, key.as_str())?;
                w.remove(&tables::FEED_TOKENS, feed.token_hash.as_str())?;
                Ok(true)
            })
            .await?;
        if removed {
            Ok(())
        } else {
            Err(ScheduleError::NotFound(format!("no calendar feed {id}")))
        }
    }

    /// The iCalendar text of the feed whose token this is; `None` for any token not issued or
    /// revoked (compared by digest, so timing says nothing about stored tokens).
    pub fn render_feed(&self, token: &str) -> Result<Option<String>, ScheduleError> {
        if token.len() > 200 {
            return Ok(None);
        }
        let digest = crate::ids::sha256_hex(token.as_bytes());
        let found = self.store.read(|r| {
            let Some(id) = r.get(&tables::FEED_TOKENS, digest.as_str())? else {
                return Ok(None);
            };
            r.get(&tables::FEEDS, id.as_str())
        })?;
        let Some(feed) = found else {
            return Ok(None);
        };
        let now = self.clock.now();
        let (from, to) = ical::window(now);
        let (name, events) = match &feed.target {
            FeedTarget::Schedule(id) => {
                let Ok(schedule) = self.get(id) else {
                    return Ok(None);
                };
                let resolved = resolve::shifts(&schedule, from, to);
                let events = resolved
                    .final_shifts
                    .into_iter()
                    .map(|f| ical::Event::of(&schedule.id, &schedule.name, f, |m| self.member_name(m)))
                    .collect::<Vec<_>>();
                (schedule.name, events)
            }
            FeedTarget::Member(member) => {
                let events = self
                    .member_shifts(member, from, to)?
                    .into_iter()
                    .map(|s| {
                        ical::Event::of(&s.schedule_id, &s.schedule_name, s.shift, |m| self.member_name(m))
                    })
                    .collect();
                (format!("On call: {}", self.member_name(member)), events)
            }
        };
        Ok(Some(ical::calendar(&name, &feed.id, now, &events)))
    }
}

#[cfg(test)]
mod tests;
