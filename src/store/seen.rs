//! A durable set of 128-bit keys, each kept for a time-to-live after it was added: held in memory
//! and in an append-only journal of fixed-size records, one file per hour, with group commit.
//!
//! It exists for the callback path's dedup of card deliveries, which share a commit with no other
//! row. A batch costs one `pwrite` at the journal's tail and one `fdatasync`; a B-tree commit of
//! the same marks writes about eight pages (leaf, branches, table tree, freed-page tree, header)
//! and was a third of the server's CPU under a card-callback storm (issue 18.6).
//!
//! Each file is filled with zeros ahead of the tail, so an append overwrites blocks already
//! allocated and its `fdatasync` writes no file metadata. A zero record ends a file; so does a
//! torn one (its checksum fails). Nothing after that point was acknowledged, so at open it is
//! zeroed, and a later append can never be followed by a stale record from before a crash.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::StoreError;

/// Bytes per record: when it was added (ms), the key, a CRC-32 of both, and a marker.
const RECORD: usize = 32;
const MARKER: &[u8; 4] = b"SEEN";
/// Records per file span one hour of the time they were added.
const SEGMENT_MS: i64 = 3_600_000;
/// Zeros written ahead of the tail: the first step, doubled up to the largest.
const FIRST_FILL: u64 = 64 * 1024;
const MAX_FILL: u64 = 4 * 1024 * 1024;
/// Upper bound on inserts per batch, so one commit never grows without limit.
const MAX_BATCH: usize = 4096;

enum Job {
    Insert {
        key: u128,
        at_ms: i64,
        done: tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
    },
    Prune {
        before_ms: i64,
        done: tokio::sync::oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// The set and its journal; inserts are answered once durable.
pub struct SeenSet {
    dir: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Written once the caller has seeded the set from elsewhere, so that is done once.
const SEEDED: &str = "seeded";

impl SeenSet {
    /// Opens (or creates) the journal in `dir`, loads every key added at or after `keep_from_ms`
    /// and deletes the hour files wholly older than that.
    pub fn open(dir: &Path, keep_from_ms: i64) -> Result<SeenSet, StoreError> {
        let mut journal = Journal::open(dir)?;
        journal.prune(keep_from_ms)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("seen-writer".into())
            .spawn(move || journal.run(&rx))
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(SeenSet {
            dir: dir.to_path_buf(),
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Adds `key`, seen at `at_ms`: `true` once that is durable, `false` if it was already in
    /// the set (a concurrent insert of the same key in the same batch counts as already in).
    pub async fn insert(&self, key: u128, at_ms: i64) -> Result<bool, StoreError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Insert { key, at_ms, done })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Forgets every key added before `before_ms`, to the hour: returns how many were removed.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Prune { before_ms, done })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether [`SeenSet::mark_seeded`] was called on this journal before.
    pub fn is_seeded(&self) -> bool {
        self.dir.join(SEEDED).exists()
    }

    /// Records, durably, that the caller's one-time seeding of the set is complete.
    pub fn mark_seeded(&self) -> Result<(), StoreError> {
        let path = self.dir.join(SEEDED);
        File::create(&path)
            .and_then(|f| f.sync_all())
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .map_err(io(&path))
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }
}

impl Drop for SeenSet {
    /// Lets queued inserts finish before the process goes on to exit.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The hour file appended to now.
struct Tail {
    hour: i64,
    file: File,
    path: PathBuf,
    /// Bytes of valid records.
    len: u64,
    /// Bytes known to be zeros or records (the file's length).
    filled: u64,
}

struct Journal {
    dir: PathBuf,
    keys: HashSet<u128>,
    /// Hour files by hour, oldest first; the last may be `tail`.
    hours: Vec<i64>,
    tail: Option<Tail>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode(key: u128, at_ms: i64) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[..8].copy_from_slice(&at_ms.to_le_bytes());
    record[8..24].copy_from_slice(&key.to_le_bytes());
    let crc = crc32fast::hash(&record[..24]);
    record[24..28].copy_from_slice(&crc.to_le_bytes());
    record[28..].copy_from_slice(MARKER);
    record
}

/// The key of a whole record, or `None` for a zero or torn one.
fn decode(record: &[u8]) -> Option<u128> {
    let crc = u32::from_le_bytes(record[24..28].try_into().ok()?);
    if &record[28..] != MARKER || crc32fast::hash(&record[..24]) != crc {
        return None;
    }
    Some(u128::from_le_bytes(record[8..24].try_into().ok()?))
}

fn file_name(hour: i64) -> String {
    format!("{hour}.seen")
}

impl Journal {
    fn open(dir: &Path) -> Result<Journal, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let mut hours: Vec<i64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?.strip_suffix(".seen")?.parse().ok()
            })
            .collect();
        hours.sort_unstable();
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            keys: HashSet::new(),
            hours: Vec::new(),
            tail: None,
        };
        for hour in hours {
            let path = dir.join(file_name(hour));
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let mut len = 0;
            for record in bytes.chunks_exact(RECORD) {
                let Some(key) = decode(record) else { break };
                journal.keys.insert(key);
                len += RECORD;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            if bytes[len..].iter().any(|b| *b != 0) {
                // A torn batch: none of it was acknowledged, and none of it may come back.
                file.write_all_at(&vec![0u8; bytes.len() - len], len as u64)
                    .map_err(io(&path))?;
                file.sync_data().map_err(io(&path))?;
            }
            journal.hours.push(hour);
            journal.tail = Some(Tail {
                hour,
                file,
                path,
                len: len as u64,
                filled: bytes.len() as u64,
            });
        }
        Ok(journal)
    }

    fn run(mut self, rx: &mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            // The first insert's wake-up preempts the thread still handling the rest of a burst
            // when both share a core, and the batch would hold that one insert. Yielding once
            // lets the burst queue up; with nothing else runnable it returns at once.
            std::thread::yield_now();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Runs one batch: prunes in order, checks and appends the inserts, syncs once, answers.
    fn commit(&mut self, batch: Vec<Job>) {
        let mut records = Vec::new();
        let mut added = Vec::new();
        let mut answers = Vec::new();
        let mut newest = i64::MIN;
        for job in batch {
            match job {
                Job::Insert { key, at_ms, done } => {
                    let new = self.keys.insert(key);
                    if new {
                        records.extend_from_slice(&encode(key, at_ms));
                        added.push(key);
                        newest = newest.max(at_ms);
                    }
                    answers.push((done, new));
                }
                Job::Prune { before_ms, done } => {
                    let _ = done.send(self.prune(before_ms));
                }
            }
        }
        let written = if records.is_empty() {
            Ok(())
        } else {
            self.append(&records, newest)
        };
        if let Err(e) = &written {
            tracing::error!(error = %e, keys = added.len(), "seen-set: cannot write the journal");
            for key in &added {
                self.keys.remove(key);
            }
        }
        for (done, new) in answers {
            let _ = done.send(match &written {
                Ok(()) => Ok(new),
                Err(e) => Err(StoreError::CommitFailed(e.to_string())),
            });
        }
    }

    /// Writes `records` at the tail of the hour file for `newest_ms` and syncs them.
    fn append(&mut self, records: &[u8], newest_ms: i64) -> Result<(), StoreError> {
        let hour = newest_ms.div_euclid(SEGMENT_MS);
        if self.tail.as_ref().is_none_or(|t| t.hour < hour) {
            self.start_hour(hour)?;
        }
        let tail = self.tail.as_mut().expect("a tail was just opened");
        let end = tail.len + records.len() as u64;
        if end > tail.filled {
            // Zeros ahead of the tail, so the syncs that follow write no metadata.
            let step = tail.filled.clamp(FIRST_FILL, MAX_FILL);
            let filled = (tail.filled + step).max(end.next_multiple_of(FIRST_FILL));
            tail.file
                .write_all_at(&vec![0u8; (filled - tail.filled) as usize], tail.filled)
                .map_err(io(&tail.path))?;
            tail.filled = filled;
        }
        tail.file
            .write_all_at(records, tail.len)
            .map_err(io(&tail.path))?;
        tail.file.sync_data().map_err(io(&tail.path))?;
        tail.len = end;
        Ok(())
    }

    fn start_hour(&mut self, hour: i64) -> Result<(), StoreError> {
        let path = self.dir.join(file_name(hour));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // The new name must outlive a crash as much as the records in it.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.hours.push(hour);
        self.tail = Some(Tail {
            hour,
            file,
            path,
            len: 0,
            filled: 0,
        });
        Ok(())
    }

    /// Deletes the hour files that end at or before `before_ms`, forgetting their keys.
    fn prune(&mut self, before_ms: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        while let Some(&hour) = self.hours.first() {
            if (hour + 1).saturating_mul(SEGMENT_MS) > before_ms {
                break;
            }
            let path = self.dir.join(file_name(hour));
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io(&path)(e)),
            };
            for record in bytes.chunks_exact(RECORD) {
                let Some(key) = decode(record) else { break };
                removed += u64::from(self.keys.remove(&key));
            }
            if self.tail.as_ref().is_some_and(|t| t.hour == hour) {
                self.tail = None;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.hours.remove(0);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = SEGMENT_MS;

    #[tokio::test]
    async fn a_key_is_new_once_and_stays_seen_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let set = SeenSet::open(&path, 0).unwrap();
        assert!(set.insert(7, 10 * HOUR).await.unwrap());
        assert!(!set.insert(7, 10 * HOUR + 1).await.unwrap());
        assert!(set.insert(8, 11 * HOUR).await.unwrap());
        drop(set);
        let set = SeenSet::open(&path, 0).unwrap();
        assert!(!set.insert(7, 12 * HOUR).await.unwrap());
        assert!(!set.insert(8, 12 * HOUR).await.unwrap());
        assert!(set.insert(9, 12 * HOUR).await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_inserts_of_one_key_admit_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let set = std::sync::Arc::new(SeenSet::open(dir.path(), 0).unwrap());
        let tries = (0..50).map(|_| {
            let set = set.clone();
            tokio::spawn(async move { set.insert(42, HOUR).await.unwrap() })
        });
        let mut admitted = 0;
        for t in tries {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 1);
    }

    #[tokio::test]
    async fn pruning_forgets_whole_hours_before_the_cutoff_only() {
        let dir = tempfile::tempdir().unwrap();
        let set = SeenSet::open(dir.path(), 0).unwrap();
        assert!(set.insert(1, 5 * HOUR + 10).await.unwrap());
        assert!(set.insert(2, 6 * HOUR + 10).await.unwrap());
        // The cutoff falls inside hour 6: hour 5 goes, hour 6 stays whole.
        assert_eq!(set.prune(6 * HOUR + 500).await.unwrap(), 1);
        assert!(set.insert(1, 7 * HOUR).await.unwrap());
        assert!(!set.insert(2, 7 * HOUR).await.unwrap());
        drop(set);
        assert!(!dir.path().join(file_name(5)).exists());
        // At open, the same cutoff applies.
        let set = SeenSet::open(dir.path(), 8 * HOUR).unwrap();
        assert!(set.insert(2, 8 * HOUR).await.unwrap());
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_cannot_resurface_after_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let set = SeenSet::open(dir.path(), 0).unwrap();
        assert!(set.insert(1, HOUR).await.unwrap());
        drop(set);
        // A crash mid-batch: record 2 torn, record 3 whole, neither acknowledged.
        let path = dir.path().join(file_name(1));
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut torn = encode(2, HOUR);
        torn[10] ^= 0xff;
        file.write_all_at(&torn, RECORD as u64).unwrap();
        file.write_all_at(&encode(3, HOUR), 2 * RECORD as u64).unwrap();
        drop(file);

        let set = SeenSet::open(dir.path(), 0).unwrap();
        assert!(
            set.insert(4, HOUR).await.unwrap(),
            "appended where the torn record was"
        );
        drop(set);
        let set = SeenSet::open(dir.path(), 0).unwrap();
        assert!(!set.insert(1, HOUR).await.unwrap());
        assert!(!set.insert(4, HOUR).await.unwrap());
        assert!(
            set.insert(3, HOUR).await.unwrap(),
            "a record after a torn one was never acknowledged"
        );
    }

    #[test]
    fn records_round_trip_and_a_zero_record_is_no_key() {
        let key = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        assert_eq!(decode(&encode(key, -5)), Some(key));
        assert_eq!(decode(&[0u8; RECORD]), None);
    }
}
