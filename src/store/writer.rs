//! Group commit: one thread owns redb's single writer and commits every write submitted meanwhile
//! in one transaction, so a burst of small writes costs one fsync instead of one each.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

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

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &rx))
            .expect("spawn store writer thread");
        Writer { jobs, thread }
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

fn run(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
    }
}

fn commit_batch(db: &Database, batch: Vec<Job>) {
    let tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the batch drops each caller's sender, so every waiter sees the failure.
            tracing::error!(error = %StoreError::from(e), jobs = batch.len(), "store: cannot begin write transaction");
            return;
        }
    };
    let completions: Vec<Completion> = {
        let w = WriteTx::new(&tx);
        batch.into_iter().map(|job| job(&w)).collect()
    };
    let committed = tx.commit().map_err(StoreError::from);
    if let Err(e) = &committed {
        tracing::error!(error = %e, "store: commit failed");
    }
    for done in completions {
        done(committed.as_ref().map(|_| ()));
    }
}
