//! "Cover this shift": a person takes over someone's shift as an override in their name — asked
//! for and accepted by whoever has the shift, or at once when an admin decides (whether the
//! person may is the caller's to say: this module knows no roles). Whose shift it is, is asked
//! of the one resolver, so a request names a shift that really is the owner's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::Override;
use super::{OverrideInput, ScheduleError, Schedules, invalid, resolve, tables, whole_second};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverState {
    Pending,
    Accepted,
    Declined,
}

/// `requester` asks to be on call in `owner`'s place from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverRequest {
    pub id: String,
    pub schedule_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub owner: String,
    pub requester: String,
    pub state: CoverState,
    /// The override made when it was accepted.
    pub override_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The most requests waiting at once for one person's shifts.
const MAX_PENDING_PER_OWNER: usize = 50;

impl Schedules {
    /// Checks that `owner` is on call in the schedule for the whole of `[start, end)` (from now
    /// when it has begun) and that `member` is someone else; returns the start from now on.
    fn check_cover(
        &self,
        schedule_id: &str,
        owner: &str,
        member: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ScheduleError> {
        let now = whole_second(self.clock.now());
        let start = whole_second(start).max(now);
        let end = whole_second(end);
        if end <= start {
            return Err(invalid("end", "the shift is over"));
        }
        if owner == member {
            return Err(invalid("owner", "it is your own shift"));
        }
        let schedule = self.get(schedule_id)?;
        let resolved = resolve::shifts(&schedule, start, end);
        let covered = resolved.gaps.is_empty()
            && resolved
                .final_shifts
                .iter()
                .all(|f| f.shift.members.iter().any(|m| m == owner));
        if !covered {
            return Err(invalid(
                "owner",
                format!("{owner} is not on call for all of that time"),
            ));
        }
        self.check_member("member_id", member)?;
        Ok(start)
    }

    fn cover_override(
        &self,
        owner: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        member: &str,
    ) -> OverrideInput {
        OverrideInput {
            start: Some(start),
            end,
            member_id: member.to_string(),
            note: Some(format!("covering {}", self.member_name(owner))),
        }
    }

    /// Puts `member` on call in `owner`'s place at once (an admin's decision).
    pub async fn cover(
        &self,
        schedule_id: &str,
        owner: &str,
        member: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Override, ScheduleError> {
        let start = self.check_cover(schedule_id, owner, member, start, end)?;
        self.add_override(schedule_id, self.cover_override(owner, start, end, member))
            .await
    }

    /// `member` asks to cover `owner`'s shift; nothing changes until the owner accepts.
    pub async fn request_cover(
        &self,
        schedule_id: &str,
        owner: &str,
        member: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<CoverRequest, ScheduleError> {
        let start = self.check_cover(schedule_id, owner, member, start, end)?;
        let request = CoverRequest {
            id: crate::ids::new_id(crate::ids::prefix::COVER_REQUEST, 6),
            schedule_id: schedule_id.to_string(),
            start,
            end: whole_second(end),
            owner: owner.to_string(),
            requester: member.to_string(),
            state: CoverState::Pending,
            override_id: None,
            created_at: self.clock.now(),
        };
        let stored = request.clone();
        self.store
            .write(move |w| {
                let waiting = w
                    .page(&tables::COVER_REQUESTS, None, usize::MAX, false)?
                    .into_iter()
                    .filter(|(_, r)| r.owner == stored.owner && r.state == CoverState::Pending)
                    .count();
                if waiting >= MAX_PENDING_PER_OWNER {
                    return Ok(Err(ScheduleError::Conflict(format!(
                        "{} requests already wait for this person's answer",
                        MAX_PENDING_PER_OWNER
                    ))));
                }
                w.put(&tables::COVER_REQUESTS, stored.id.as_str(), &stored)?;
                Ok(Ok(()))
            })
            .await??;
        Ok(request)
    }

    /// Requests still waiting (and not yet over) that `member` made or must answer.
    pub fn cover_requests(&self, member: &str) -> Result<Vec<CoverRequest>, ScheduleError> {
        let now = self.clock.now();
        Ok(self
            .store
            .read(|r| r.page(&tables::COVER_REQUESTS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.state == CoverState::Pending && r.end > now)
            .filter(|r| r.owner == member || r.requester == member)
            .collect())
    }

    /// The owner's answer: accepting makes the override (for what is left of the shift, if it
    /// is still the owner's), declining only closes the request.
    pub async fn answer_cover(
        &self,
        request_id: &str,
        answerer: &str,
        accept: bool,
    ) -> Result<CoverRequest, ScheduleError> {
        let key = request_id.to_string();
        let mut request = self
            .store
            .read(|r| r.get(&tables::COVER_REQUESTS, key.as_str()))?
            .ok_or_else(|| ScheduleError::NotFound(format!("no cover request {request_id}")))?;
        if request.owner != answerer {
            return Err(ScheduleError::NotFound(format!(
                "no cover request {request_id} for you"
            )));
        }
        if request.state != CoverState::Pending {
            return Err(ScheduleError::Conflict("the request was already answered".into()));
        }
        if accept {
            let start = self.check_cover(
                &request.schedule_id,
                &request.owner,
                &request.requester,
                request.start,
                request.end,
            )?;
            let made = self
                .add_override(
                    &request.schedule_id,
                    self.cover_override(&request.owner, start, request.end, &request.requester),
                )
                .await?;
            request.state = CoverState::Accepted;
            request.override_id = Some(made.id);
        } else {
            request.state = CoverState::Declined;
        }
        let stored = request.clone();
        self.store
            .write(move |w| w.put(&tables::COVER_REQUESTS, stored.id.as_str(), &stored))
            .await?;
        Ok(request)
    }
}
