//! Group commit: one thread owns redb's single writer and commits every write submitted meanwhile
//! in one transaction, so a burst of small writes costs one fsync instead of one each.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use redb::Database;

use super::{StoreError, WriteTx};

/// Upper bound on closures per transaction, so one commit never grows without limit.
const MAX_BATCH: usize = 4096;

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTx<'_>) -> Completion + Send>;

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// How long commits take and how many writes each carries, for the metrics endpoint: a slow
/// commit delays every request waiting on it.
#[derive(Clone)]
pub struct CommitMetrics {
    pub seconds: Histogram,
    pub batch_size: Histogram,
}

impl CommitMetrics {
    fn new() -> CommitMetrics {
        CommitMetrics {
            seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ]),
            batch_size: Histogram::new([1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 500.0, 4096.0]),
        }
    }
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> (Writer, CommitMetrics) {
        let (jobs, rx) = mpsc::channel::<Job>();
        let metrics = CommitMetrics::new();
        let recorded = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &rx, &recorded))
            .expect("spawn store writer thread");
        (Writer { jobs, thread }, metrics)
    }

    /// Queues `f` for the next commit; `deliver` gets its result once the commit is durable
    /// (or the commit's error). Dropped unrun if the writer is gone.
    pub(super) fn submit<R, F>(
        &self,
        f: F,
        deliver: impl FnOnce(Result<R, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let job: Job = Box::new(move |w| {
            let result = f(w);
            Box::new(move |commit: Result<(), &StoreError>| {
                deliver(match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::CommitFailed(e.to_string())),
                })
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)
    }

    /// Closes the queue and waits until every submitted write is committed.
    pub(super) fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>, metrics: &CommitMetrics) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics.batch_size.observe(batch.len() as f64);
        let started = Instant::now();
        commit_batch(db, batch);
        metrics.seconds.observe(started.elapsed().as_secs_f64());
    }
}

fn commit_batch(db: &Database, batch: Vec<Job>) {
    let mut pending = batch;
    while !pending.is_empty() {
        pending = commit_some(db, pending);
    }
}

/// Runs `batch` in one transaction and commits it. A write that panics rolls its transaction
/// back: it and the writes run before it in that transaction fail, and the writer goes on with
/// the rest (returned, for the next transaction) instead of dying and closing the store.
fn commit_some(db: &Database, batch: Vec<Job>) -> Vec<Job> {
    let tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the batch drops each caller's sender, so every waiter sees the failure.
            tracing::error!(error = %StoreError::from(e), jobs = batch.len(), "store: cannot begin write transaction");
            return Vec::new();
        }
    };
    let mut jobs = batch.into_iter();
    let mut completions: Vec<Completion> = Vec::new();
    let mut panicked = false;
    {
        let w = WriteTx::new(&tx);
        for job in jobs.by_ref() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(&w))) {
                Ok(done) => completions.push(done),
                Err(_) => {
                    panicked = true;
                    break;
                }
            }
        }
    }
    let committed = if panicked {
        tracing::error!(
            failed = completions.len() + 1,
            "store: a write panicked; its transaction is rolled back and the writes in it fail"
        );
        if let Err(e) = tx.abort() {
            tracing::error!(error = %StoreError::from(e), "store: cannot roll back");
        }
        Err(StoreError::CommitFailed(
            "a write in the same transaction failed unexpectedly; nothing of it was stored".into(),
        ))
    } else {
        tx.commit().map_err(StoreError::from)
    };
    if let (false, Err(e)) = (panicked, &committed) {
        tracing::error!(error = %e, "store: commit failed");
    }
    for done in completions {
        done(committed.as_ref().map(|_| ()));
    }
    jobs.collect()
}
