//! The dispatch loop: picks the jobs Lark's limits, the quota and the group bots' busy spans
//! allow, holds those the quota does not, and runs each through the [`Executor`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Delivery, Executor, Inner};
use crate::delivery::job::{CallFailure, CallOutcome, FailureKind, HoldReason, Job, JobState};
use crate::delivery::oplog;
use crate::delivery::quota;
use crate::delivery::tables;
use crate::store::StoreError;

/// Lark's group bots answer 11232 more often around the top and the half of the hour, when
/// every cron-driven bot posts (next §2): from this long before :00 and :30 …
const HOOK_BUSY_BEFORE: i64 = 2;
/// … to this long after, a group-bot lane starts at most one post a second.
const HOOK_BUSY_AFTER: i64 = 10;
const HOOK_BUSY_SPACING: Duration = Duration::from_secs(1);

/// Whether `wall` is in one of the spans around :00 and :30 that group-bot posts are spread in.
fn hook_busy_span(wall: DateTime<Utc>) -> bool {
    let into_half_hour = wall.timestamp().rem_euclid(1800);
    !(HOOK_BUSY_AFTER..1800 - HOOK_BUSY_BEFORE).contains(&into_half_hour)
}

/// On a plan with a quota, after this long without a call Lark took (and after a start), one
/// call goes out alone first: other tools of the tenant may have spent the quota meanwhile, and
/// one 99991403 then holds every job instead of one refusal per job in flight.
const QUOTA_PROBE_AFTER: chrono::Duration = chrono::Duration::minutes(1);

/// The operation-log outcome of a held job.
fn hold_outcome(job: &Job) -> &'static str {
    match job.state {
        JobState::Held {
            reason: HoldReason::QuotaReserved,
        } => "quota_reserved",
        _ => "held_quota",
    }
}

impl Delivery {
    /// Runs the dispatcher until `stop` turns true. In-flight calls finish on their own.
    pub async fn run<E: Executor>(self: Arc<Self>, executor: Arc<E>, mut stop: watch::Receiver<bool>) {
        loop {
            self.tick_if_month_changed();
            let (ready, wake_at) = self.pick(Instant::now());
            for job in ready {
                let me = self.clone();
                let executor = executor.clone();
                tokio::spawn(async move { me.attempt(executor.as_ref(), job).await });
            }
            let sleep = wake_at.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(Instant::now())
            });
            // Held jobs need the month check even when nothing else wakes us.
            let sleep = sleep.min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn tick_if_month_changed(&self) {
        let month = quota::month_key(self.clock.now(), self.config.quota_timezone);
        let stale = {
            let inner = self.inner.lock().expect("delivery lock");
            inner.lanes.values().any(|l| l.month != month)
        };
        if stale {
            self.tick();
        }
    }

    /// Chooses the jobs that may start now; returns them and when to look again.
    fn pick(&self, now: Instant) -> (Vec<Job>, Option<Instant>) {
        let wall = self.clock.now();
        let mut inner = self.inner.lock().expect("delivery lock");
        let inner = &mut *inner;
        let mut ready = Vec::new();
        let mut wake_at: Option<Instant> = None;
        let mut holds = Vec::new();
        for lane in inner.lanes.values_mut() {
            if lane.quota_refused {
                let waiting = lane.unqueue_all();
                holds.extend(waiting.into_iter().map(|id| (id, HoldReason::QuotaExhausted)));
                continue;
            }
            let lane_now = self.lane_now(lane.clocked, now);
            let probing = lane.plan.limit().is_some()
                && lane.last_accepted.is_none_or(|t| wall - t >= QUOTA_PROBE_AFTER);
            let max_in_flight = if probing { 1 } else { self.config.max_in_flight };
            'lane: while lane.in_flight < max_in_flight {
                for queue in lane.ranks.values_mut() {
                    for _ in 0..queue.turn.len() {
                        let Some(receiver) = queue.turn.pop_front() else {
                            break;
                        };
                        let ids = queue.by_receiver.get_mut(&receiver).expect("receiver queue");
                        let id = *ids.front().expect("non-empty receiver queue");
                        let job = inner.jobs.get(&id).expect("queued job");
                        let waits_retry = job.next_attempt_at.filter(|t| *t > wall);
                        if let Some(t) = waits_retry {
                            let delay = (t - wall).to_std().unwrap_or_default();
                            wake_at = Some(wake_at.map_or(now + delay, |w| w.min(now + delay)));
                            queue.turn.push_back(receiver);
                            continue;
                        }
                        let policy = &self.config.degradation;
                        if let Some(reason) = quota::may_spend(job, lane.usage.total, lane.plan, policy) {
                            ids.pop_front();
                            if ids.is_empty() {
                                queue.by_receiver.remove(&receiver);
                            } else {
                                queue.turn.push_back(receiver);
                            }
                            holds.push((id, reason));
                            continue;
                        }
                        // Calls in flight will count too: a burst that would overrun the quota
                        // waits for their answers (which wake the dispatcher) instead of spending
                        // calls Lark refuses. Not a hold: failed calls in flight cost nothing.
                        let used = lane.usage.total + lane.in_flight as u64;
                        if quota::may_spend(job, used, lane.plan, policy).is_some() {
                            queue.turn.push_back(receiver);
                            continue;
                        }
                        let shape = job.kind.shape();
                        let mut at = lane.limits.available_at(&shape, lane_now);
                        if lane.clocked
                            && hook_busy_span(wall)
                            && let Some(last) = lane.last_started
                        {
                            at = at.max(last + HOOK_BUSY_SPACING + self.config.limits.margin);
                        }
                        if at > lane_now {
                            let at = now + (at - lane_now);
                            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                            queue.turn.push_back(receiver);
                            continue;
                        }
                        lane.limits.started(&shape);
                        lane.last_started = Some(lane_now);
                        ids.pop_front();
                        if ids.is_empty() {
                            queue.by_receiver.remove(&receiver);
                        } else {
                            queue.turn.push_back(receiver);
                        }
                        lane.in_flight += 1;
                        inner.in_flight_ids.insert(id);
                        let waited = job.next_attempt_at.unwrap_or(job.created_at);
                        self.metrics
                            .limiter_wait
                            .observe((wall - waited).num_milliseconds().max(0) as f64 / 1000.0);
                        ready.push(job.clone());
                        // Start again from the most urgent rank.
                        continue 'lane;
                    }
                }
                break;
            }
            lane.ranks.retain(|_, q| !q.turn.is_empty());
            lane.limits.forget_idle(lane_now);
        }
        self.hold(inner, holds);
        (ready, wake_at)
    }

    /// Holds jobs taken out of the schedule, recording the newly held ones in one commit.
    fn hold(&self, inner: &mut Inner, holds: Vec<(u64, HoldReason)>) {
        let mut records = Vec::new();
        for (id, reason) in holds {
            let job = inner.jobs.get_mut(&id).expect("held job");
            let held = JobState::Held { reason };
            if job.state == held {
                continue;
            }
            job.state = held;
            let outcome = hold_outcome(job);
            tracing::warn!(job = id, integration = %job.integration_id, outcome, "job held: monthly quota");
            self.metrics.outcome(job.kind.name(), outcome);
            records.push((job.clone(), self.entry(job, outcome, None, None)));
        }
        if records.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let written = store
                .write(move |w| {
                    for (job, entry) in records {
                        w.put(&tables::OUTBOX, &job.id, &job)?;
                        oplog::append(w, entry)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot record held jobs");
            }
        });
    }

    /// Lark refused `job` for quota. It is held, and so is every job of its integration waiting
    /// to go (by the next pick, at once): none of them makes a call to learn the same.
    pub(super) async fn hold_refused(
        &self,
        mut job: Job,
        failure: &CallFailure,
        latency: Duration,
    ) -> Result<(), StoreError> {
        let (quota_key, usage, crossed) = {
            let mut inner = self.inner.lock().expect("delivery lock");
            let lane = self.lane(&mut inner.lanes, job.lane());
            lane.quota_refused = true;
            let crossed = quota::learn_exhausted(&mut lane.usage, lane.plan);
            (
                format!("{}/{}", job.lane(), lane.month),
                lane.usage.clone(),
                crossed,
            )
        };
        self.warn_quota(job.lane(), &crossed);
        job.state = JobState::Held {
            reason: HoldReason::QuotaExhausted,
        };
        job.next_attempt_at = None;
        let outcome = hold_outcome(&job);
        let entry = self.entry(&job, outcome, Some(failure), Some(latency));
        self.store_attempt(&job, quota_key, usage, entry).await?;
        tracing::warn!(job = job.id, integration = %job.integration_id, outcome, "Lark says the monthly quota is spent; the integration's jobs are held");
        self.metrics.outcome(job.kind.name(), outcome);
        let mut inner = self.inner.lock().expect("delivery lock");
        inner.in_flight_ids.remove(&job.id);
        if let Some(lane) = inner.lanes.get_mut(job.lane()) {
            lane.in_flight -= 1;
        }
        inner.jobs.insert(job.id, job);
        Ok(())
    }

    async fn attempt<E: Executor>(&self, executor: &E, mut job: Job) {
        let started = Instant::now();
        let now = self.clock.now();
        job.attempts += 1;
        job.first_attempt_at.get_or_insert(now);
        self.metrics.in_flight.inc();
        let outcome = executor.execute(&job).await;
        {
            let mut inner = self.inner.lock().expect("delivery lock");
            let lane = self.lane(&mut inner.lanes, job.lane());
            let answered = self.lane_now(lane.clocked, Instant::now());
            lane.limits.answered(&job.kind.shape(), answered);
            let taken = match &outcome {
                CallOutcome::Delivered { .. } => true,
                CallOutcome::Failed(f) => matches!(f.kind, FailureKind::Permanent { .. }),
            };
            if taken {
                lane.last_accepted = Some(self.clock.now());
            }
        }
        self.metrics.in_flight.dec();
        let latency = started.elapsed();
        self.metrics.call(job.kind.api());
        let result = match outcome {
            CallOutcome::Delivered { returned_id } => {
                self.finish_delivered(job.clone(), returned_id, latency).await
            }
            CallOutcome::Failed(failure) => self.finish_failed(job.clone(), failure, latency).await,
        };
        if let Err(e) = result {
            // The call happened but its outcome could not be recorded: keep the job so it is
            // retried (Lark's uuid dedup makes the retry harmless).
            tracing::error!(error = %e, job = job.id, "cannot record a job outcome; will retry");
            let mut inner = self.inner.lock().expect("delivery lock");
            self.requeue(
                &mut inner,
                job,
                Some(self.clock.now() + chrono::Duration::seconds(5)),
            );
        }
        self.wake.notify_one();
    }
}
