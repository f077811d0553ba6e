//! The one redb file: typed tables and their encoding, the schema version, the group-commit writer,
//! and consistent backup/restore. Other modules reach redb only through [`Store`], [`ReadTx`] and
//! [`WriteTx`], naming the typed tables declared in [`tables`]. Beside it, [`seen::SeenSet`]: a
//! journal-backed set for marks that share a commit with nothing else.

pub mod seen;
mod table;
pub mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition, TableHandle};

pub use table::{KeyBytes, ReadTx, StoreKey, Table, WriteTx};
pub use writer::CommitMetrics;

/// The page cache of [`Store::open`]: the `storage.cache_mb` default.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The schema this build writes. Older files are migrated at open; newer ones are refused.
pub const SCHEMA_VERSION: u64 = 1;

/// One migration step from version `n` to `n + 1`, indexed by `n - 1`.
type Migration = fn(&WriteTx<'_>) -> Result<(), StoreError>;
const MIGRATIONS: &[Migration] = &[];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state file {path} is in use by another process (is the service running?)")]
    Locked { path: PathBuf },
    #[error(
        "the state file was written by a newer lark-oncall (schema {found}, this build knows {supported}); upgrade the binary or restore a backup"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("the file {path} is not a lark-oncall state file: {reason}")]
    NotOurs { path: PathBuf, reason: String },
    #[error("storage error: {0}")]
    Redb(#[from] redb::Error),
    #[error("corrupt row in table {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("encoding error in table {table}: {reason}")]
    Encode { table: &'static str, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("the store is closed")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The application's state file. Cheap to clone; [`Store::close`] (or the last clone dropped)
/// stops the writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` once closed: later writes fail with [`StoreError::Closed`].
    writer: std::sync::Mutex<Option<writer::Writer>>,
    commit_metrics: CommitMetrics,
}

impl Store {
    /// Opens (creating if absent) the state file, checks and migrates its schema; caches up to
    /// [`DEFAULT_CACHE_BYTES`] of its pages.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (redb's own default is 1 GiB, which a
    /// long-running service would fill as its file grows).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        create_private(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.to_path_buf(),
                },
                redb::DatabaseError::Storage(redb::StorageError::Io(source))
                    if source.kind() != std::io::ErrorKind::InvalidData =>
                {
                    StoreError::Io {
                        path: path.to_path_buf(),
                        source,
                    }
                }
                other => StoreError::NotOurs {
                    path: path.to_path_buf(),
                    reason: other.to_string(),
                },
            })?;
        let db = Arc::new(db);
        let (writer, commit_metrics) = writer::Writer::start(db.clone());
        let store = Store {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                writer: std::sync::Mutex::new(Some(writer)),
                commit_metrics,
            }),
        };
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Commit durations and batch sizes since open.
    pub fn commit_metrics(&self) -> &CommitMetrics {
        &self.inner.commit_metrics
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let found = self.read(|r| r.get(&tables::META, "schema_version"))?;
        match found {
            None => self.write_blocking(|w| w.put(&tables::META, "schema_version", &SCHEMA_VERSION)),
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION,
            }),
            Some(v) if v < SCHEMA_VERSION => self.write_blocking(move |w| {
                for step in &MIGRATIONS[(v - 1) as usize..] {
                    step(w)?;
                }
                w.put(&tables::META, "schema_version", &SCHEMA_VERSION)
            }),
            Some(_) => Ok(()),
        }
    }

    /// Runs `f` in a read transaction (a consistent snapshot; never blocks the writer).
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.inner.db.begin_read()?;
        f(&ReadTx::new(tx))
    }

    /// Runs `f` inside the next group commit and resolves once that commit is durable.
    ///
    /// Closures share one transaction with others in the batch, so a closure that can fail must
    /// fail before it writes anything.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for synchronous callers (CLI commands, start-up).
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Copies every table from one read snapshot into a new state file at `out`.
    /// Safe while writes continue: the snapshot is consistent and never blocks them.
    pub fn backup_to(&self, out: &Path) -> Result<u64, StoreError> {
        let snapshot = self.inner.db.begin_read()?;
        copy_tables(&snapshot, out)
    }

    fn submit<R, F>(
        &self,
        f: F,
        deliver: impl FnOnce(Result<R, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        match &*self.inner.writer.lock().expect("writer lock") {
            Some(writer) => writer.submit(f, deliver),
            None => Err(StoreError::Closed),
        }
    }

    /// Waits for pending writes to commit, then stops writing; other clones see
    /// [`StoreError::Closed`] from then on.
    pub fn close(self) {
        let writer = self.inner.writer.lock().expect("writer lock").take();
        if let Some(writer) = writer {
            writer.stop();
        }
    }
}

/// Creates `path` empty and readable by its owner only, unless it exists: the state file and
/// backups hold every secret, and outside systemd the umask would leave them world-readable.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn raw_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn copy_tables(snapshot: &redb::ReadTransaction, out: &Path) -> Result<u64, StoreError> {
    let io = |source| StoreError::Io {
        path: out.to_path_buf(),
        source,
    };
    if out.exists() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "refusing to overwrite an existing file",
        )));
    }
    create_private(out).map_err(io)?;
    let target = Database::create(out)?;
    let tx = target.begin_write()?;
    let mut rows = 0u64;
    for handle in snapshot.list_tables()? {
        let def = raw_def(handle.name());
        let src = snapshot.open_table(def)?;
        let mut dst = tx.open_table(def)?;
        for entry in src.range::<&[u8]>(..)? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
            rows += 1;
        }
        debug_assert_eq!(src.len()?, dst.len()?);
    }
    tx.commit()?;
    drop(target);
    std::fs::File::open(out).and_then(|f| f.sync_all()).map_err(io)?;
    Ok(rows)
}

/// Replaces the state file at `path` with the backup at `from` (offline: the file must not be open).
/// The backup is verified first; the replaced file is kept beside it as `<name>.pre-restore`.
pub fn restore(path: &Path, from: &Path) -> Result<PathBuf, StoreError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    if !from.is_file() {
        return Err(StoreError::Io {
            path: from.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such backup file"),
        });
    }
    {
        let backup = Store::open(from)?;
        backup.close();
    }
    if path.exists() {
        // Take the lock to prove the service is not running.
        let live = Store::open(path)?;
        live.close();
    }
    let staging = path.with_extension("restoring");
    std::fs::copy(from, &staging).map_err(io(&staging))?;
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(io(&staging))?;
    let previous = path.with_extension("pre-restore");
    if path.exists() {
        std::fs::rename(path, &previous).map_err(io(path))?;
    }
    std::fs::rename(&staging, path).map_err(io(path))?;
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: Table<u64, String> = Table::new("test_rows_v1");

    #[test]
    fn refuses_a_newer_schema_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        store
            .write_blocking(|w| w.put(&tables::META, "schema_version", &(SCHEMA_VERSION + 1)))
            .unwrap();
        store.close();
        match Store::open(&path) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_foreign_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
        let err = Store::open(&path).err();
        assert!(matches!(err, Some(StoreError::NotOurs { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let writes = (0..500u64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.write(move |w| w.put(&ROWS, &i, &format!("row {i}"))).await })
        });
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let rows = store.read(|r| r.page(&ROWS, None, usize::MAX, false)).unwrap();
        assert_eq!(rows.len(), 500);
        assert_eq!(rows[499], (499, "row 499".to_string()));
        let newest_first = store.read(|r| r.page(&ROWS, Some(&100), 2, true)).unwrap();
        assert_eq!(newest_first.iter().map(|r| r.0).collect::<Vec<_>>(), vec![99, 98]);
        assert_eq!(store.read(|r| r.count(&ROWS)).unwrap(), 500);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_with_its_transaction_and_the_store_keeps_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let writes: Vec<_> = (0..64u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let written = store
                        .write(move |w| {
                            w.put(&ROWS, &i, &format!("row {i}"))?;
                            assert!(i != 31, "a bug in write {i}");
                            Ok(())
                        })
                        .await;
                    (i, written.is_ok())
                })
            })
            .collect();
        let mut failed = 0;
        for w in writes {
            let (i, ok) = w.await.unwrap();
            let stored = store.read(|r| r.get(&ROWS, &i)).unwrap();
            // Acknowledged means stored; failed means not stored, never half.
            assert_eq!(stored.is_some(), ok, "write {i}");
            failed += usize::from(!ok);
        }
        assert!(failed >= 1, "the panicking write must fail");
        assert!(store.read(|r| r.get(&ROWS, &31)).unwrap().is_none());
        store
            .write(|w| w.put(&ROWS, &100, &"after".to_string()))
            .await
            .unwrap();
        assert_eq!(
            store.read(|r| r.get(&ROWS, &100)).unwrap().as_deref(),
            Some("after")
        );
    }

    #[test]
    fn a_write_reads_its_own_rows_through_the_tables_it_keeps_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let (count, first, gone) = store
            .write_blocking(|w| {
                for i in 0..10u64 {
                    w.put(&ROWS, &i, &format!("row {i}"))?;
                }
                let first = w.get(&ROWS, &0)?;
                let gone = w.remove(&ROWS, &3)? && !w.remove(&ROWS, &3)?;
                let page = w.page(&ROWS, Some(&8), 5, false)?;
                assert_eq!(page, vec![(9, "row 9".to_string())]);
                Ok((w.count(&ROWS)?, first, gone))
            })
            .unwrap();
        assert_eq!((count, first.as_deref(), gone), (9, Some("row 0"), true));
        assert_eq!(store.read(|r| r.count(&ROWS)).unwrap(), 9);
        assert_eq!(store.read(|r| r.get(&ROWS, &3)).unwrap(), None);
    }

    #[test]
    fn prefix_scans_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        const NAMED: Table<String, u64> = Table::new("test_named_v1");
        store
            .write_blocking(|w| {
                for (k, v) in [("a/1", 1), ("a/2", 2), ("ab/1", 3), ("b/1", 4)] {
                    w.put(&NAMED, k, &v)?;
                }
                Ok(())
            })
            .unwrap();
        let a = store.read(|r| r.scan_prefix(&NAMED, "a/", 10)).unwrap();
        assert_eq!(a, vec![("a/1".to_string(), 1), ("a/2".to_string(), 2)]);
        assert_eq!(store.read(|r| r.scan_prefix(&NAMED, "", 10)).unwrap().len(), 4);
    }
}
