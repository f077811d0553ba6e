//! The dispatcher: keeps every pending job of every integration in memory (mirroring the durable
//! outbox), starts the next job that Lark's limits and the quota allow, runs it through an
//! [`Executor`], and records the outcome — delivered, retried with backoff, held, or failed.
//!
//! The parts: `enqueue` (jobs entering the outbox and the schedule, coalescing and
//! cancelling), `dispatch` (the loop that picks what Lark's limits and the quota allow and
//! runs it through the executor) and `outcomes` (recording what a call did: delivered,
//! retried, held or failed); this file keeps the handle, its state and its public views.

mod dispatch;
mod enqueue;
mod outcomes;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::job::{CallClass, CallOutcome, Job, JobKind, JobState};
use super::limits::{AppLimits, CallShape, LimitConfig, Resume};
use super::metrics::DeliveryMetrics;
use super::oplog;
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
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
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
    /// [`dispatch::hook_busy_span`].
    last_started: Option<Instant>,
}

/// Whether a lane is a group-bot webhook's (its key is the webhook's id) rather than an
/// integration's.
pub fn is_bot_webhook_lane(lane: &str) -> bool {
    lane.starts_with(crate::ids::prefix::BOT_WEBHOOK)
}

/// A state change to a group-bot webhook waits this long after the previous one of its
/// incident, and later ones merge into it.
pub const BOT_WEBHOOK_STATE_SPACING: chrono::Duration = chrono::Duration::minutes(1);

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
}
