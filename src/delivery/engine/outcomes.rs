//! What a finished call did to its job: the attempt stored and logged, then delivered (with
//! the delivered hook in the same commit), retried with backoff, or failed for good.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Delivery, Inner, hook_state_key, receiver_key};
use crate::delivery::job::{CallFailure, CallOutcome, FailureKind, Job, JobKind, JobState};
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::quota::{self, MonthUsage};
use crate::delivery::tables;
use crate::store::StoreError;

impl Delivery {
    /// Stores a job that stays in the outbox after a call, with the call's count in this
    /// month's quota and its operation-log entry, in one commit.
    pub(super) async fn store_attempt(
        &self,
        job: &Job,
        quota_key: String,
        usage: MonthUsage,
        entry: OpEntry,
    ) -> Result<(), StoreError> {
        let stored = job.clone();
        self.store
            .write(move |w| {
                w.put(&tables::OUTBOX, &stored.id, &stored)?;
                w.put(&tables::QUOTA, quota_key.as_str(), &usage)?;
                oplog::append(w, entry).map(drop)
            })
            .await
    }

    pub(super) fn entry(
        &self,
        job: &Job,
        outcome: &str,
        failure: Option<&CallFailure>,
        latency: Option<Duration>,
    ) -> OpEntry {
        OpEntry {
            seq: 0,
            at: self.clock.now(),
            integration_id: job.integration_id.clone(),
            incident_id: job.incident_id.clone(),
            job_id: Some(job.id),
            receiver: job.kind.receiver(),
            kind: job.kind.name().into(),
            outcome: outcome.into(),
            reason: failure.map(|f| match &f.kind {
                FailureKind::Permanent { reason } => (*reason).to_string(),
                FailureKind::RateLimited { .. } => "rate_limited".into(),
                FailureKind::QuotaExhausted => "quota_exhausted".into(),
                FailureKind::Transient => "transient".into(),
            }),
            lark_code: failure.and_then(|f| f.code),
            lark_message: failure.map(|f| f.message.clone()),
            attempts: job.attempts,
            latency_ms: latency.map(|l| l.as_millis() as u64),
            message_id: match &job.kind {
                JobKind::UpdateCard { message_id, .. } | JobKind::Pin { message_id, .. } => {
                    Some(message_id.clone())
                }
                _ => None,
            },
            chat_id: match &job.kind {
                JobKind::AddMembers { chat_id, .. }
                | JobKind::Pin { chat_id, .. }
                | JobKind::TopNotice { chat_id, .. }
                | JobKind::RenameChat { chat_id, .. } => Some(chat_id.clone()),
                _ => None,
            },
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)))
            .min(self.config.backoff_max);
        // Jitter in [50 %, 100 %] so retries of a burst spread out.
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).expect("OS random source");
        let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
        exp.mul_f64(frac)
    }

    fn done_in_memory(&self, inner: &mut Inner, job: &Job) {
        inner.jobs.remove(&job.id);
        inner.in_flight_ids.remove(&job.id);
        if let Some(key) = hook_state_key(job)
            && let Some((pending, _)) = inner.hook_state_changes.get_mut(&key)
            && *pending == Some(job.id)
        {
            *pending = None;
        }
        if let JobKind::UpdateCard { message_id, .. } = &job.kind {
            let key = (job.integration_id.clone(), message_id.clone());
            if inner.pending_updates.get(&key) == Some(&job.id) {
                inner.pending_updates.remove(&key);
            }
        }
        if let Some(lane) = inner.lanes.get_mut(job.lane()) {
            lane.in_flight -= 1;
        }
        self.metrics.queued(job.kind.name(), -1);
    }

    pub(super) fn requeue(&self, inner: &mut Inner, mut job: Job, at: Option<DateTime<Utc>>) {
        inner.in_flight_ids.remove(&job.id);
        job.next_attempt_at = at;
        job.state = JobState::Pending;
        let (rank, receiver, id) = (job.rank(), receiver_key(&job), job.id);
        let lane = self.lane(&mut inner.lanes, job.lane());
        lane.in_flight -= 1;
        lane.ranks.entry(rank).or_default().push(receiver, id);
        inner.jobs.insert(id, job);
    }

    /// Counts one call of `class` in the lane's current month; returns the quota row to write.
    fn count_in_lane(&self, inner: &mut Inner, job: &Job) -> (String, MonthUsage) {
        let day = quota::day_key(self.clock.now(), self.config.quota_timezone);
        let lane = self.lane(&mut inner.lanes, job.lane());
        let crossed = quota::count(&mut lane.usage, job.kind.class(), 1, lane.plan, day);
        self.warn_quota(job.lane(), &crossed);
        (format!("{}/{}", job.lane(), lane.month), lane.usage.clone())
    }

    pub(super) async fn finish_delivered(
        &self,
        job: Job,
        returned_id: Option<String>,
        latency: Duration,
    ) -> Result<(), StoreError> {
        let mut entry = self.entry(&job, "delivered", None, Some(latency));
        match job.kind {
            JobKind::CreateChat { .. } => entry.chat_id = returned_id.clone(),
            JobKind::Send { .. } | JobKind::Reply { .. } | JobKind::BotHook { .. } => {
                entry.message_id = returned_id.clone()
            }
            _ => {}
        }
        let hook = self.delivered_hook.read().expect("hook lock").clone();
        let delivered = job.clone();
        let delivered_id = returned_id.clone();
        let (quota_key, usage) = {
            let mut inner = self.inner.lock().expect("delivery lock");
            self.count_in_lane(&mut inner, &job)
        };
        let id = job.id;
        self.store
            .write(move |w| {
                // First, so a failing hook fails before this closure has written anything.
                if let Some(hook) = hook {
                    hook(w, &delivered, returned_id.as_deref())?;
                }
                w.remove(&tables::OUTBOX, &id)?;
                w.put(&tables::QUOTA, quota_key.as_str(), &usage)?;
                oplog::append(w, entry).map(drop)
            })
            .await?;
        self.metrics.outcome(job.kind.name(), "delivered");
        self.done_in_memory(&mut self.inner.lock().expect("delivery lock"), &job);
        self.finished(
            &job,
            &CallOutcome::Delivered {
                returned_id: delivered_id,
            },
        );
        Ok(())
    }

    pub(super) async fn finish_failed(
        &self,
        mut job: Job,
        failure: CallFailure,
        latency: Duration,
    ) -> Result<(), StoreError> {
        if let Some(code) = failure.code {
            self.metrics.lark_error(code);
        }
        let now = self.clock.now();
        // Lark counts a call it processed and refused for a business reason; calls it turned away
        // (rate limit, quota) or that failed in transit cost nothing, as for direct calls.
        let (quota_key, usage) = {
            let mut inner = self.inner.lock().expect("delivery lock");
            if matches!(failure.kind, FailureKind::Permanent { .. }) {
                self.count_in_lane(&mut inner, &job)
            } else {
                let lane = self.lane(&mut inner.lanes, job.lane());
                (format!("{}/{}", job.lane(), lane.month), lane.usage.clone())
            }
        };
        let gave_up = job
            .first_attempt_at
            .is_some_and(|first| (now - first).to_std().unwrap_or_default() >= self.config.give_up_after);
        if failure.kind == FailureKind::QuotaExhausted && !gave_up {
            return self.hold_refused(job, &failure, latency).await;
        }
        let retry_at = match &failure.kind {
            FailureKind::Permanent { .. } => None,
            _ if gave_up => None,
            FailureKind::RateLimited { retry_after } => {
                let mut inner = self.inner.lock().expect("delivery lock");
                let lane = self.lane(&mut inner.lanes, job.lane());
                let until = self.lane_now(lane.clocked, Instant::now()) + *retry_after;
                lane.limits.honour_reset(&job.kind.shape(), until);
                Some(now + chrono::Duration::from_std(*retry_after).unwrap_or_default())
            }
            // Held by `hold_refused` above unless it gave up.
            FailureKind::QuotaExhausted => None,
            FailureKind::Transient => {
                Some(now + chrono::Duration::from_std(self.backoff(job.attempts)).unwrap_or_default())
            }
        };
        match retry_at {
            Some(at) => {
                job.next_attempt_at = Some(at);
                // Recorded like every call, so a restart counts it in Lark's windows.
                let entry = self.entry(&job, "retry", Some(&failure), Some(latency));
                self.store_attempt(&job, quota_key, usage, entry).await?;
                self.metrics.retries.inc();
                self.requeue(&mut self.inner.lock().expect("delivery lock"), job, Some(at));
            }
            None => {
                let reason = match (&failure.kind, gave_up) {
                    (FailureKind::Permanent { reason }, _) => (*reason).to_string(),
                    _ => "gave_up".to_string(),
                };
                job.state = JobState::Failed {
                    reason: reason.clone(),
                    code: failure.code,
                    message: Some(failure.message.clone()),
                };
                let mut entry = self.entry(&job, "failed", Some(&failure), Some(latency));
                entry.reason = Some(reason.clone());
                tracing::warn!(job = job.id, integration = %job.integration_id, reason, code = ?failure.code, "job failed");
                self.store_attempt(&job, quota_key, usage, entry).await?;
                self.metrics.outcome(job.kind.name(), "failed");
                self.done_in_memory(&mut self.inner.lock().expect("delivery lock"), &job);
                self.finished(&job, &CallOutcome::Failed(failure));
            }
        }
        Ok(())
    }
}
