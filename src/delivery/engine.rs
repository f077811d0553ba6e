//! The dispatcher: keeps every pending job of every integration in memory (mirroring the durable
//! outbox), starts the next job that Lark's limits and the quota allow, runs it through an
//! [`Executor`], and records the outcome — delivered, retried with backoff, held, or failed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::job::{
    CallClass, CallFailure, CallOutcome, FailureKind, HoldReason, Job, JobKind, JobState, NewJob,
};
use super::limits::{AppLimits, CallShape, LimitConfig, Resume};
use super::metrics::DeliveryMetrics;
use super::oplog::{self, OpEntry};
use super::quota::{self, DegradationPolicy, MonthUsage, Plan, QuotaReport};
use super::tables;
use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// Makes the Lark call a job describes. Implemented over the Open API client; the engine owns
/// when calls happen, the executor only how.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, job: &Job) -> impl Future<Output = CallOutcome> + Send;
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub limits: LimitConfig,
    pub degradation: DegradationPolicy,
    /// Time zone of the quota's calendar month.
    pub quota_timezone: Tz,
    /// A job still failing this long after its first attempt is marked failed.
    pub give_up_after: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Calls in flight at once per integration.
    pub max_in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            limits: LimitConfig::default(),
            degradation: DegradationPolicy::default(),
            quota_timezone: chrono_tz::Asia::Shanghai,
            give_up_after: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_in_flight: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no job {0}")]
    NoSuchJob(u64),
    #[error("job {0} has not failed; only failed jobs can be re-triggered")]
    NotFailed(u64),
}

/// One integration's limiter as the admin API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LimiterState {
    /// Pending jobs not yet started: waiting for the rate limits, a retry time or their turn.
    pub queued: usize,
    pub in_flight: usize,
    /// Jobs held for the monthly quota (released on the 1st or when the plan changes).
    pub held: usize,
    /// Since when the oldest queued job has waited (from its creation), in seconds.
    pub oldest_wait_seconds: Option<f64>,
}

/// Per-integration scheduling state.
struct Lane {
    limits: AppLimits,
    plan: Plan,
    /// rank → receiver → job ids, with a round-robin order of receivers per rank.
    ranks: BTreeMap<u8, RankQueue>,
    in_flight: usize,
    month: String,
    usage: MonthUsage,
    /// Lark answered 99991403 this month: every job waits for the month to end or the plan to
    /// change, whatever our own count says.
    quota_refused: bool,
    /// When Lark last took a call of this integration (delivered, or refused for a business
    /// reason, which it counts too).
    last_accepted: Option<DateTime<Utc>>,
    /// A group-bot webhook's lane: its windows run on the injected clock (see
    /// [`Delivery::lane_now`]) and it has no monthly quota.
    clocked: bool,
    /// When this lane last started a call, on its clock: group-bot posts are spaced by it in
    /// [`hook_busy_span`].
    last_started: Option<Instant>,
}

/// Whether a lane is a group-bot webhook's (its key is the webhook's id) rather than an
/// integration's.
pub fn is_bot_webhook_lane(lane: &str) -> bool {
    lane.starts_with(crate::ids::prefix::BOT_WEBHOOK)
}

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

/// Remembered group-bot state changes before the ones older than the spacing are forgotten.
const MAX_HOOK_STATE_ENTRIES: usize = 10_000;

/// A state change to a group-bot webhook waits this long after the previous one of its
/// incident, and later ones merge into it.
pub const BOT_WEBHOOK_STATE_SPACING: chrono::Duration = chrono::Duration::minutes(1);

/// On a plan with a quota, after this long without a call Lark took (and after a start), one
/// call goes out alone first: other tools of the tenant may have spent the quota meanwhile, and
/// one 99991403 then holds every job instead of one refusal per job in flight.
const QUOTA_PROBE_AFTER: chrono::Duration = chrono::Duration::minutes(1);

/// How far back the operation log seeds the limits at start: the longest window, with room.
const RESUME_LOOKBACK: chrono::Duration = chrono::Duration::seconds(61);

#[derive(Default)]
struct RankQueue {
    by_receiver: HashMap<String, VecDeque<u64>>,
    turn: VecDeque<String>,
}

impl RankQueue {
    fn push(&mut self, receiver: String, id: u64) {
        let q = self.by_receiver.entry(receiver.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(receiver);
        }
        q.push_back(id);
    }

    fn remove(&mut self, receiver: &str, id: u64) {
        let Some(q) = self.by_receiver.get_mut(receiver) else {
            return;
        };
        q.retain(|queued| *queued != id);
        if q.is_empty() {
            self.by_receiver.remove(receiver);
            self.turn.retain(|r| r != receiver);
        }
    }
}

impl Lane {
    /// Takes every waiting job out of the schedule; returns their ids.
    fn unqueue_all(&mut self) -> Vec<u64> {
        let ranks = std::mem::take(&mut self.ranks);
        ranks
            .into_values()
            .flat_map(|q| q.by_receiver.into_values().flatten())
            .collect()
    }

    /// Takes a job that is waiting (pending, not in flight) out of the schedule. Every rank is
    /// looked at: a coalesced update may have been raised above the rank it was queued in.
    fn unqueue(&mut self, job: &Job) {
        let receiver = receiver_key(job);
        for queue in self.ranks.values_mut() {
            queue.remove(&receiver, job.id);
        }
        self.ranks.retain(|_, q| !q.turn.is_empty());
    }
}

struct Inner {
    lanes: HashMap<String, Lane>,
    /// Pending and held jobs by id (failed jobs live only in the store).
    jobs: HashMap<u64, Job>,
    /// Pending card updates by (integration, message id), for coalescing.
    pending_updates: HashMap<(String, String), u64>,
    /// Group-bot state changes by (webhook, incident): the pending job, if any, and when the
    /// latest one was scheduled to go.
    hook_state_changes: HashMap<(String, String), (Option<u64>, DateTime<Utc>)>,
    in_flight_ids: std::collections::HashSet<u64>,
}

pub struct Delivery {
    store: Store,
    clock: Arc<dyn Clock>,
    config: DeliveryConfig,
    inner: Mutex<Inner>,
    wake: Notify,
    pub metrics: DeliveryMetrics,
    delivered_hook: std::sync::RwLock<Option<DeliveredHook>>,
    finished_hooks: std::sync::RwLock<Vec<FinishedHook>>,
    /// A monotonic instant and the clock's reading at that instant, mapping the clock onto
    /// instants for clocked lanes.
    epoch: (Instant, DateTime<Utc>),
}

/// Runs inside the commit that records a delivered job, with the id Lark returned, so what a
/// producer remembers about sent messages (e.g. every card of an incident) is exactly as durable
/// as the outbox. Like every closure in a group commit it must fail before it writes anything.
pub type DeliveredHook =
    Arc<dyn Fn(&crate::store::WriteTx<'_>, &Job, Option<&str>) -> Result<(), StoreError> + Send + Sync>;

/// Told of a job that is done, after its commit (see [`Delivery::on_finished`]); must not block.
pub type FinishedHook = Arc<dyn Fn(&Job, &CallOutcome) + Send + Sync>;

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

/// The operation-log outcome of a held job.
fn hold_outcome(job: &Job) -> &'static str {
    match job.state {
        JobState::Held {
            reason: HoldReason::QuotaReserved,
        } => "quota_reserved",
        _ => "held_quota",
    }
}

/// (webhook, incident) of a group-bot state change, the unit it is spaced and merged by.
fn hook_state_key(job: &Job) -> Option<(String, String)> {
    match (&job.kind, &job.incident_id) {
        (
            JobKind::BotHook {
                webhook_id,
                state_change: true,
                ..
            },
            Some(incident),
        ) => Some((webhook_id.clone(), incident.clone())),
        _ => None,
    }
}

fn receiver_key(job: &Job) -> String {
    job.kind.receiver().unwrap_or_default()
}

impl Delivery {
    /// Loads the outbox. Call [`Delivery::set_plan`] for each integration, then [`Delivery::run`].
    pub fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
        metrics: DeliveryMetrics,
    ) -> Result<Arc<Delivery>, StoreError> {
        let stored = store.read(|r| r.page(&tables::OUTBOX, None, usize::MAX, false))?;
        let delivery = Arc::new(Delivery {
            store,
            config,
            inner: Mutex::new(Inner {
                lanes: HashMap::new(),
                jobs: HashMap::new(),
                pending_updates: HashMap::new(),
                hook_state_changes: HashMap::new(),
                in_flight_ids: Default::default(),
            }),
            wake: Notify::new(),
            metrics,
            delivered_hook: std::sync::RwLock::new(None),
            finished_hooks: std::sync::RwLock::new(Vec::new()),
            epoch: (Instant::now(), clock.now()),
            clock,
        });
        let resumes = delivery.resumes(&stored)?;
        {
            let mut inner = delivery.inner.lock().expect("delivery lock");
            for (_, job) in stored {
                if !matches!(job.state, JobState::Failed { .. }) {
                    delivery.admit(&mut inner, job);
                }
            }
            for (lane_key, resume) in resumes {
                let now = delivery.lane_now(is_bot_webhook_lane(&lane_key), Instant::now());
                delivery
                    .lane(&mut inner.lanes, &lane_key)
                    .limits
                    .resume(&resume, now);
            }
        }
        Ok(delivery)
    }

    /// What the previous run left for each integration's limits: the calls of the last minute
    /// from the operation log, and how many calls may have gone out unrecorded — a job in
    /// flight is still pending in the outbox, and at most `max_in_flight` were.
    fn resumes(&self, stored: &[(u64, Job)]) -> Result<HashMap<String, Resume>, StoreError> {
        let wall = self.clock.now();
        let mut resumes: HashMap<String, Resume> = HashMap::new();
        for entry in oplog::calls_since(&self.store, wall - RESUME_LOOKBACK)? {
            let Some(api) = JobKind::api_of(&entry.kind) else {
                continue;
            };
            let hook_lane = entry
                .receiver
                .as_deref()
                .and_then(|r| r.strip_prefix(super::job::BOT_WEBHOOK_RECEIVER))
                .filter(|_| entry.kind == "bot_hook")
                .map(str::to_string);
            let now = self.lane_now(hook_lane.is_some(), Instant::now());
            let lane_key = hook_lane.unwrap_or_else(|| entry.integration_id.clone());
            let ago = (wall - entry.at).to_std().unwrap_or_default();
            let call = CallShape {
                api,
                is_send: JobKind::is_send(&entry.kind),
                receiver: entry.receiver,
                message: entry
                    .message_id
                    .filter(|_| matches!(entry.kind.as_str(), "update_card" | "pin")),
            };
            let answered = now.checked_sub(ago).unwrap_or(now);
            resumes.entry(lane_key).or_default().calls.push((call, answered));
        }
        for (_, job) in stored.iter().filter(|(_, j)| j.state == JobState::Pending) {
            let resume = resumes.entry(job.lane().to_string()).or_default();
            resume.unrecorded += 1;
            resume.unrecorded_sends += usize::from(JobKind::is_send(job.kind.name()));
        }
        for resume in resumes.values_mut() {
            resume.unrecorded = resume.unrecorded.min(self.config.max_in_flight);
            resume.unrecorded_sends = resume.unrecorded_sends.min(self.config.max_in_flight);
        }
        Ok(resumes)
    }

    /// Where a lane's windows stand now. An integration's run on the monotonic clock; a
    /// group-bot webhook's on the injected clock mapped onto instants, so a test moves it
    /// through a minute of 100 posts instead of waiting (wall-clock jumps would move them too,
    /// which at worst delays or hastens posts by the jump).
    fn lane_now(&self, clocked: bool, real: Instant) -> Instant {
        if !clocked {
            return real;
        }
        let (instant, wall) = self.epoch;
        instant + (self.clock.now() - wall).to_std().unwrap_or_default()
    }

    fn lane<'a>(&self, lanes: &'a mut HashMap<String, Lane>, integration: &str) -> &'a mut Lane {
        lanes.entry(integration.to_string()).or_insert_with(|| {
            let month = quota::month_key(self.clock.now(), self.config.quota_timezone);
            let usage = self.load_usage(integration, &month);
            let clocked = is_bot_webhook_lane(integration);
            let (limits, plan) = if clocked {
                (LimitConfig::bot_webhook(self.config.limits.margin), Plan::Paid)
            } else {
                (
                    self.config.limits.clone(),
                    Plan::BasicFree {
                        monthly_quota: 10_000,
                    },
                )
            };
            Lane {
                limits: AppLimits::new(limits),
                plan,
                ranks: BTreeMap::new(),
                in_flight: 0,
                month,
                usage,
                quota_refused: false,
                last_accepted: None,
                clocked,
                last_started: None,
            }
        })
    }

    fn load_usage(&self, integration: &str, month: &str) -> MonthUsage {
        let key = format!("{integration}/{month}");
        self.store
            .read(|r| r.get(&tables::QUOTA, key.as_str()))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Puts a known job into the in-memory schedule.
    fn admit(&self, inner: &mut Inner, job: Job) {
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

    /// Sets the hook run inside the commit of every delivered job (one producer owns it today:
    /// incidents remember their cards).
    pub fn on_delivered(&self, hook: DeliveredHook) {
        *self.delivered_hook.write().expect("hook lock") = Some(hook);
    }

    /// Adds a hook told of every job that is done (delivered, failed for good, or ended without
    /// a call), after the commit that records it: producers whose next call depends on this one
    /// (a war room's set-up) take their next step from here.
    pub fn on_finished(&self, hook: FinishedHook) {
        self.finished_hooks.write().expect("hook lock").push(hook);
    }

    fn finished(&self, job: &Job, outcome: &CallOutcome) {
        let hooks = self.finished_hooks.read().expect("hook lock").clone();
        for hook in hooks {
            hook(job, outcome);
        }
    }

    /// One job of the outbox (pending, held or failed); `None` once it was delivered.
    pub fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        self.store.read(|r| r.get(&tables::OUTBOX, &id))
    }

    /// Sets (or changes) an integration's plan; jobs held for quota are re-evaluated.
    pub fn set_plan(&self, integration: &str, plan: Plan) {
        let mut inner = self.inner.lock().expect("delivery lock");
        let lane = self.lane(&mut inner.lanes, integration);
        lane.plan = plan;
        lane.quota_refused = false;
        self.release_holds(&mut inner, integration);
        drop(inner);
        self.wake.notify_one();
    }

    fn release_holds(&self, inner: &mut Inner, integration: &str) {
        let held: Vec<u64> = inner
            .jobs
            .values()
            .filter(|j| j.lane() == integration && matches!(j.state, JobState::Held { .. }))
            .map(|j| j.id)
            .collect();
        for id in held {
            let job = inner.jobs.get_mut(&id).expect("held job");
            job.state = JobState::Pending;
            let (rank, receiver) = (job.rank(), receiver_key(job));
            self.lane(&mut inner.lanes, integration)
                .ranks
                .entry(rank)
                .or_default()
                .push(receiver, id);
        }
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

    /// Counts calls made outside the outbox (token fetches, user look-ups, OAuth) in the ledger.
    pub async fn count_calls(&self, integration: &str, class: CallClass, n: u64) -> Result<(), StoreError> {
        let (key, usage, crossed) = {
            let mut inner = self.inner.lock().expect("delivery lock");
            let lane = self.lane(&mut inner.lanes, integration);
            let day = quota::day_key(self.clock.now(), self.config.quota_timezone);
            let crossed = quota::count(&mut lane.usage, class, n, lane.plan, day);
            (
                format!("{integration}/{}", lane.month),
                lane.usage.clone(),
                crossed,
            )
        };
        self.warn_quota(integration, &crossed);
        self.store
            .write(move |w| w.put(&tables::QUOTA, key.as_str(), &usage))
            .await
    }

    fn warn_quota(&self, integration: &str, crossed: &[u8]) {
        for pct in crossed {
            tracing::warn!(integration, percent = pct, "monthly Lark API quota {pct}% used");
            self.metrics.quota_warnings.inc();
        }
    }

    pub fn quota_report(&self, integration: &str) -> QuotaReport {
        let mut inner = self.inner.lock().expect("delivery lock");
        let lane = self.lane(&mut inner.lanes, integration);
        quota::report(
            &lane.usage,
            lane.plan,
            self.clock.now(),
            self.config.quota_timezone,
        )
    }

    /// What the limiter holds back for one integration now: jobs waiting their turn, calls in
    /// flight, jobs held for the quota, and how long the longest-waiting job has waited.
    pub fn limiter_state(&self, integration: &str) -> LimiterState {
        let now = self.clock.now();
        let inner = self.inner.lock().expect("delivery lock");
        let mut state = LimiterState {
            in_flight: inner.lanes.get(integration).map_or(0, |l| l.in_flight),
            ..LimiterState::default()
        };
        let mut oldest: Option<DateTime<Utc>> = None;
        for job in inner.jobs.values().filter(|j| j.integration_id == integration) {
            match job.state {
                JobState::Held { .. } => state.held += 1,
                JobState::Pending if !inner.in_flight_ids.contains(&job.id) => {
                    state.queued += 1;
                    oldest = Some(oldest.map_or(job.created_at, |o| o.min(job.created_at)));
                }
                _ => {}
            }
        }
        state.oldest_wait_seconds = oldest.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        state
    }

    /// Puts a failed job back in the queue (admin action).
    pub async fn retrigger(&self, id: u64) -> Result<(), DeliveryError> {
        let job = self
            .store
            .read(|r| r.get(&tables::OUTBOX, &id))?
            .ok_or(DeliveryError::NoSuchJob(id))?;
        if !matches!(job.state, JobState::Failed { .. }) {
            return Err(DeliveryError::NotFailed(id));
        }
        let job = Job {
            state: JobState::Pending,
            attempts: 0,
            first_attempt_at: None,
            next_attempt_at: None,
            ..job
        };
        let stored = job.clone();
        self.store
            .write(move |w| w.put(&tables::OUTBOX, &stored.id, &stored))
            .await?;
        self.admit(&mut self.inner.lock().expect("delivery lock"), job);
        self.wake.notify_one();
        Ok(())
    }

    /// Jobs in the outbox (pending, held and failed), oldest first, after `after`.
    pub fn jobs(&self, after: Option<u64>, limit: usize) -> Result<Vec<Job>, StoreError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::OUTBOX, after.as_ref(), limit, false))?
            .into_iter()
            .map(|(_, j)| j)
            .collect())
    }

    /// Jobs waiting in memory (pending or held), for tests and the admin API.
    pub fn pending_count(&self) -> usize {
        self.inner.lock().expect("delivery lock").jobs.len()
    }

    /// The retry sweep: puts back in the schedule any job the outbox holds as pending or held
    /// that the dispatcher does not know (a safety net: every path that keeps a job also keeps
    /// it in memory today), and wakes the dispatcher. Returns how many were put back.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let stored = self
            .store
            .read(|r| r.page(&tables::OUTBOX, None, usize::MAX, false))?;
        let mut inner = self.inner.lock().expect("delivery lock");
        let mut readmitted = 0;
        for (id, job) in stored {
            let known = inner.jobs.contains_key(&id) || inner.in_flight_ids.contains(&id);
            if !known && !matches!(job.state, JobState::Failed { .. }) {
                tracing::warn!(
                    job = id,
                    "retry sweep: an outbox job was not scheduled; scheduling it"
                );
                self.admit(&mut inner, job);
                readmitted += 1;
            }
        }
        drop(inner);
        self.wake.notify_one();
        Ok(readmitted)
    }

    /// Jobs of one integration waiting or in flight.
    pub fn pending_for(&self, integration: &str) -> usize {
        let inner = self.inner.lock().expect("delivery lock");
        inner.jobs.values().filter(|j| j.lane() == integration).count()
            + inner.lanes.get(integration).map_or(0, |l| l.in_flight)
    }

    /// Re-evaluates the calendar month (the quota resets on the 1st) and wakes the dispatcher.
    pub fn tick(&self) {
        let month = quota::month_key(self.clock.now(), self.config.quota_timezone);
        let mut inner = self.inner.lock().expect("delivery lock");
        let rolled: Vec<String> = inner
            .lanes
            .iter()
            .filter(|(_, lane)| lane.month != month)
            .map(|(id, _)| id.clone())
            .collect();
        for id in rolled {
            let usage = self.load_usage(&id, &month);
            let lane = inner.lanes.get_mut(&id).expect("lane");
            lane.month = month.clone();
            lane.usage = usage;
            lane.quota_refused = false;
            tracing::info!(integration = %id, %month, "quota month rolled over; held jobs released");
            self.release_holds(&mut inner, &id);
        }
        drop(inner);
        self.wake.notify_one();
    }

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
    async fn hold_refused(
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

    /// Stores a job that stays in the outbox after a call, with the call's count in this
    /// month's quota and its operation-log entry, in one commit.
    async fn store_attempt(
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

    fn entry(
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

    fn requeue(&self, inner: &mut Inner, mut job: Job, at: Option<DateTime<Utc>>) {
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

    async fn finish_delivered(
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

    async fn finish_failed(
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
