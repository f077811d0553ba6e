//! Periodic jobs on tokio-cron-scheduler (dedup and log retention, token refresh, retry sweeps…):
//! each has a name and a cron schedule, can be run on demand, and keeps its last run and outcome
//! for the admin API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: {0}")]
    Cron(#[from] JobSchedulerError),
    #[error("no scheduled job named {0}")]
    NoSuchJob(String),
}

/// One job's schedule and last outcome.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    #[schema(value_type = String)]
    pub name: &'static str,
    /// Cron expression with seconds, in UTC.
    pub schedule: String,
    pub runs: u64,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    /// `ok: …` with what it did, or `error: …`.
    pub last_outcome: Option<String>,
}

/// A job body: what it did, or why it failed.
pub type Task = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

pub struct Scheduler {
    cron: JobScheduler,
    jobs: Mutex<BTreeMap<&'static str, (Task, JobStatus)>>,
}

impl Scheduler {
    pub async fn new() -> Result<Arc<Scheduler>, SchedulerError> {
        Ok(Arc::new(Scheduler {
            cron: JobScheduler::new().await?,
            jobs: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Adds a job that runs on `schedule` (cron with seconds, UTC), and on demand.
    pub async fn add(
        self: &Arc<Self>,
        name: &'static str,
        schedule: &str,
        task: Task,
    ) -> Result<(), SchedulerError> {
        let status = JobStatus {
            name,
            schedule: schedule.to_string(),
            runs: 0,
            last_started_at: None,
            last_finished_at: None,
            last_outcome: None,
        };
        self.jobs
            .lock()
            .expect("scheduler lock")
            .insert(name, (task, status));
        let me = Arc::downgrade(self);
        let job = Job::new_async(schedule, move |_id, _lock| {
            let me = me.clone();
            Box::pin(async move {
                if let Some(me) = me.upgrade() {
                    let _ = me.run(name).await;
                }
            })
        })?;
        self.cron.add(job).await?;
        Ok(())
    }

    pub async fn start(&self) -> Result<(), SchedulerError> {
        Ok(self.cron.start().await?)
    }

    /// Runs `name` now and records the outcome; returns it.
    pub async fn run(&self, name: &str) -> Result<JobStatus, SchedulerError> {
        let task = {
            let mut jobs = self.jobs.lock().expect("scheduler lock");
            let (task, status) = jobs
                .get_mut(name)
                .ok_or_else(|| SchedulerError::NoSuchJob(name.to_string()))?;
            status.last_started_at = Some(Utc::now());
            task.clone()
        };
        let outcome = task().await;
        match &outcome {
            Ok(did) => tracing::debug!(job = name, outcome = %did, "scheduled job done"),
            Err(e) => tracing::error!(job = name, error = %e, "scheduled job failed"),
        }
        let mut jobs = self.jobs.lock().expect("scheduler lock");
        let (_, status) = jobs.get_mut(name).expect("job present");
        status.runs += 1;
        status.last_finished_at = Some(Utc::now());
        status.last_outcome = Some(match outcome {
            Ok(did) => format!("ok: {did}"),
            Err(e) => format!("error: {e}"),
        });
        Ok(status.clone())
    }

    pub fn status(&self) -> Vec<JobStatus> {
        self.jobs
            .lock()
            .expect("scheduler lock")
            .values()
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub async fn shutdown(&self) {
        let mut cron = self.cron.clone();
        if let Err(e) = cron.shutdown().await {
            tracing::warn!(error = %e, "scheduler did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn jobs_run_on_demand_and_record_outcomes() {
        let sched = Scheduler::new().await.unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let task: Task = Arc::new(move || {
            let c = c.clone();
            Box::pin(async move {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 2 {
                    Err("second run fails".into())
                } else {
                    Ok(format!("run {n}"))
                }
            })
        });
        sched.add("counter", "0 0 * * * *", task).await.unwrap();
        assert_eq!(
            sched.run("counter").await.unwrap().last_outcome.as_deref(),
            Some("ok: run 1")
        );
        let second = sched.run("counter").await.unwrap();
        assert_eq!(second.last_outcome.as_deref(), Some("error: second run fails"));
        assert_eq!(second.runs, 2);
        assert!(matches!(
            sched.run("nope").await,
            Err(SchedulerError::NoSuchJob(_))
        ));
        assert_eq!(sched.status()[0].schedule, "0 0 * * * *");
    }
}
