//! Jobs entering the outbox and the in-memory schedule: new jobs (one, many, or with rows in
//! the same commit), card updates coalesced, group-bot state changes spaced and merged, and
//! pending jobs dropped or cancelled.

use chrono::{DateTime, Utc};

use super::{BOT_WEBHOOK_STATE_SPACING, Delivery, Inner, hook_state_key, receiver_key};
use crate::delivery::job::{CallFailure, CallOutcome, FailureKind, Job, JobKind, JobState, NewJob};
use crate::delivery::oplog::{self, OpEntry};
use crate::delivery::tables;
use crate::store::StoreError;

/// Remembered group-bot state changes before the ones older than the spacing are forgotten.
const MAX_HOOK_STATE_ENTRIES: usize = 10_000;

fn job_uuid(id: u64) -> String {
    // Unique across reinstalls too, so Lark's one-hour uuid dedup never merges two jobs.
    format!("lko-{id}-{}", crate::ids::random_hex(8))
}

/// Gives a new job its id and uuid and writes it to the outbox, pending.
fn write_new_job(
    w: &crate::store::WriteTx<'_>,
    new: NewJob,
    now: DateTime<Utc>,
    not_before: Option<DateTime<Utc>>,
) -> Result<Job, StoreError> {
    let id = w.next_sequence("outbox")?;
    let job = Job {
        id,
        integration_id: new.integration_id,
        incident_id: new.incident_id,
        priority: new.priority,
        cosmetic: new.cosmetic,
        kind: new.kind,
        uuid: job_uuid(id),
        created_at: now,
        first_attempt_at: None,
        attempts: 0,
        next_attempt_at: not_before,
        state: JobState::Pending,
    };
    w.put(&tables::OUTBOX, &id, &job)?;
    Ok(job)
}

impl Delivery {
    /// Puts a known job into the in-memory schedule.
    pub(super) fn admit(&self, inner: &mut Inner, job: Job) {
        let id = job.id;
        if let JobKind::UpdateCard { message_id, .. } = &job.kind
            && job.state == JobState::Pending
        {
            inner
                .pending_updates
                .insert((job.integration_id.clone(), message_id.clone()), id);
        }
        if let (Some(key), JobState::Pending) = (hook_state_key(&job), &job.state) {
            let at = job.next_attempt_at.unwrap_or(job.created_at);
            if inner.hook_state_changes.len() >= MAX_HOOK_STATE_ENTRIES {
                let cutoff = self.clock.now() - BOT_WEBHOOK_STATE_SPACING;
                inner
                    .hook_state_changes
                    .retain(|_, (pending, last)| pending.is_some() || *last > cutoff);
            }
            inner.hook_state_changes.insert(key, (Some(id), at));
        }
        if job.state == JobState::Pending {
            let lane = self.lane(&mut inner.lanes, job.lane());
            lane.ranks
                .entry(job.rank())
                .or_default()
                .push(receiver_key(&job), id);
        }
        self.metrics.queued(job.kind.name(), 1);
        inner.jobs.insert(id, job);
    }

    /// Writes a job to the outbox (durably) and schedules it. A card update for a message that
    /// already has an update waiting is merged into it: the latest content wins.
    pub async fn enqueue(&self, new: NewJob) -> Result<u64, StoreError> {
        if let JobKind::UpdateCard { message_id, content } = &new.kind {
            let key = (new.integration_id.clone(), message_id.clone());
            let merged = {
                let mut inner = self.inner.lock().expect("delivery lock");
                let target = inner.pending_updates.get(&key).copied();
                match target.filter(|id| !inner.in_flight_ids.contains(id)) {
                    Some(id) => {
                        let job = inner.jobs.get_mut(&id).expect("pending update");
                        job.kind = JobKind::UpdateCard {
                            message_id: message_id.clone(),
                            content: content.clone(),
                        };
                        job.priority = job.priority.min(new.priority);
                        job.cosmetic &= new.cosmetic;
                        Some(job.clone())
                    }
                    None => None,
                }
            };
            if let Some(job) = merged {
                let id = job.id;
                self.store
                    .write(move |w| w.put(&tables::OUTBOX, &job.id, &job))
                    .await?;
                self.metrics.coalesced.inc();
                return Ok(id);
            }
        }
        let now = self.clock.now();
        let mut not_before = None;
        if let (
            JobKind::BotHook {
                webhook_id,
                body,
                state_change: true,
            },
            Some(incident),
        ) = (&new.kind, &new.incident_id)
        {
            let key = (webhook_id.clone(), incident.clone());
            let merged = {
                let mut inner = self.inner.lock().expect("delivery lock");
                let inner = &mut *inner;
                match inner.hook_state_changes.get(&key).copied() {
                    Some((Some(id), _))
                        if !inner.in_flight_ids.contains(&id) && inner.jobs.contains_key(&id) =>
                    {
                        let job = inner.jobs.get_mut(&id).expect("pending state change");
                        if let JobKind::BotHook { body: waiting, .. } = &mut job.kind {
                            waiting.clone_from(body);
                        }
                        job.priority = job.priority.min(new.priority);
                        Some(job.clone())
                    }
                    Some((_, last)) => {
                        not_before = Some((last + BOT_WEBHOOK_STATE_SPACING).max(now));
                        None
                    }
                    None => None,
                }
            };
            if let Some(job) = merged {
                let id = job.id;
                self.store
                    .write(move |w| w.put(&tables::OUTBOX, &job.id, &job))
                    .await?;
                self.metrics.coalesced.inc();
                return Ok(id);
            }
        }
        let job = self
            .store
            .write(move |w| write_new_job(w, new, now, not_before))
            .await?;
        let id = job.id;
        self.admit(&mut self.inner.lock().expect("delivery lock"), job);
        self.wake.notify_one();
        Ok(id)
    }

    /// Writes a job in the same transaction as the caller's own rows, so the two commit or
    /// neither does (exactly-once producers mark what they sent this way). `rows` runs first,
    /// inside the transaction, and may read what it is about to write: when it answers false
    /// (it found the job already made, and wrote nothing), no job is written and `None` comes
    /// back. For sends only: card updates and group-bot state changes merge through
    /// [`Delivery::enqueue`].
    pub async fn enqueue_with<F>(&self, new: NewJob, rows: F) -> Result<Option<u64>, StoreError>
    where
        F: FnOnce(&crate::store::WriteTx<'_>) -> Result<bool, StoreError> + Send + 'static,
    {
        let now = self.clock.now();
        let written = self
            .store
            .write(move |w| {
                if !rows(w)? {
                    return Ok(None);
                }
                write_new_job(w, new, now, None).map(Some)
            })
            .await?;
        let Some(job) = written else {
            return Ok(None);
        };
        let id = job.id;
        self.admit(&mut self.inner.lock().expect("delivery lock"), job);
        self.wake.notify_one();
        Ok(Some(id))
    }

    /// The card of `message_id` was replaced another way (by the answer to a press on it): an
    /// update still waiting for it would only repeat or undo that, so it is dropped, counted as
    /// coalesced. One already in flight goes on. Returns whether one was dropped.
    pub async fn drop_pending_update(&self, integration: &str, message_id: &str) -> Result<bool, StoreError> {
        let dropped = {
            let mut inner = self.inner.lock().expect("delivery lock");
            let inner = &mut *inner;
            let key = (integration.to_string(), message_id.to_string());
            match inner.pending_updates.get(&key).copied() {
                Some(id) if !inner.in_flight_ids.contains(&id) => {
                    inner.pending_updates.remove(&key);
                    let job = inner.jobs.remove(&id).expect("pending update");
                    if let Some(lane) = inner.lanes.get_mut(integration) {
                        lane.unqueue(&job);
                    }
                    self.metrics.queued(job.kind.name(), -1);
                    Some(id)
                }
                _ => None,
            }
        };
        let Some(id) = dropped else {
            return Ok(false);
        };
        self.store
            .write(move |w| w.remove(&tables::OUTBOX, &id).map(drop))
            .await?;
        self.metrics.coalesced.inc();
        Ok(true)
    }

    /// Ends, without a call, every job still waiting in `integration`'s lane for `receiver`
    /// (e.g. `chat_id:oc_…` once the bot was removed from that chat, where Lark would answer
    /// each one 230002). They are kept as failed with `reason`, in the operation log like any
    /// other ending, and can be re-triggered. A job already in flight goes on. Returns how many
    /// were ended.
    pub async fn cancel_waiting_for(
        &self,
        integration: &str,
        receiver: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let ended: Vec<(Job, OpEntry)> = {
            let mut inner = self.inner.lock().expect("delivery lock");
            let inner = &mut *inner;
            let ids: Vec<u64> = inner
                .jobs
                .values()
                .filter(|j| {
                    j.lane() == integration
                        && !inner.in_flight_ids.contains(&j.id)
                        && j.kind.receiver().as_deref() == Some(receiver)
                })
                .map(|j| j.id)
                .collect();
            ids.into_iter()
                .map(|id| {
                    let mut job = inner.jobs.remove(&id).expect("waiting job");
                    if let Some(lane) = inner.lanes.get_mut(integration) {
                        lane.unqueue(&job);
                    }
                    if let Some(key) = hook_state_key(&job)
                        && let Some((pending, _)) = inner.hook_state_changes.get_mut(&key)
                        && *pending == Some(id)
                    {
                        *pending = None;
                    }
                    self.metrics.queued(job.kind.name(), -1);
                    self.metrics.outcome(job.kind.name(), "failed");
                    job.state = JobState::Failed {
                        reason: reason.to_string(),
                        code: None,
                        message: None,
                    };
                    // Worded like a send refused before the call (`record_unsendable`).
                    let mut entry = self.entry(&job, reason, None, None);
                    entry.reason = Some(reason.to_string());
                    (job, entry)
                })
                .collect()
        };
        let count = ended.len();
        if count > 0 {
            tracing::info!(integration, count, reason, "waiting jobs ended without a call");
            let jobs: Vec<Job> = ended.iter().map(|(job, _)| job.clone()).collect();
            self.store
                .write(move |w| {
                    for (job, entry) in ended {
                        w.put(&tables::OUTBOX, &job.id, &job)?;
                        oplog::append(w, entry)?;
                    }
                    Ok(())
                })
                .await?;
            let outcome = CallOutcome::Failed(CallFailure {
                kind: FailureKind::Permanent {
                    reason: "ended_without_a_call",
                },
                code: None,
                message: format!("ended without a call: {reason}"),
            });
            for job in &jobs {
                self.finished(job, &outcome);
            }
        }
        Ok(count)
    }

    /// Writes many jobs to the outbox in one durable commit and schedules them (for bulk
    /// producers and load tests). Card updates among them are coalesced one by one as by
    /// [`Delivery::enqueue`]. Returns the job ids in the order given.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<u64>, StoreError> {
        let mut ids = vec![0; jobs.len()];
        let mut fresh = Vec::with_capacity(jobs.len());
        for (i, new) in jobs.into_iter().enumerate() {
            let merges = matches!(
                new.kind,
                JobKind::UpdateCard { .. }
                    | JobKind::BotHook {
                        state_change: true,
                        ..
                    }
            );
            if merges {
                ids[i] = self.enqueue(new).await?;
            } else {
                fresh.push((i, new));
            }
        }
        if fresh.is_empty() {
            return Ok(ids);
        }
        let now = self.clock.now();
        let written = self
            .store
            .write(move |w| {
                let mut written = Vec::with_capacity(fresh.len());
                for (i, new) in fresh {
                    written.push((i, write_new_job(w, new, now, None)?));
                }
                Ok(written)
            })
            .await?;
        {
            let mut inner = self.inner.lock().expect("delivery lock");
            for (i, job) in written {
                ids[i] = job.id;
                self.admit(&mut inner, job);
            }
        }
        self.wake.notify_one();
        Ok(ids)
    }

    /// Records a notification that cannot be sent at all (e.g. the person's Lark account is
    /// not linked to the app), so it shows in the operation log instead of vanishing.
    pub async fn record_unsendable(
        &self,
        integration_id: &str,
        incident_id: Option<&str>,
        receiver: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let entry = OpEntry {
            seq: 0,
            at: self.clock.now(),
            integration_id: integration_id.into(),
            incident_id: incident_id.map(str::to_string),
            job_id: None,
            receiver: Some(receiver.into()),
            kind: "send".into(),
            outcome: outcome.into(),
            reason: Some(outcome.into()),
            lark_code: None,
            lark_message: None,
            attempts: 0,
            latency_ms: None,
            message_id: None,
            chat_id: None,
        };
        self.metrics.outcome("send", outcome);
        self.store.write(move |w| oplog::append(w, entry).map(drop)).await
    }
}
