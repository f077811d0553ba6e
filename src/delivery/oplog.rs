//! The operation log: one entry per job outcome (delivered, failed, held, …), queryable with
//! filters and paging, pruned by retention.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tables;
use crate::store::{Store, StoreError, WriteTx};

/// `Default` is for entries that record no Lark call (a refused attempt, a re-send decision):
/// they name what they know and leave the call's fields empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OpEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub integration_id: String,
    pub incident_id: Option<String>,
    pub job_id: Option<u64>,
    pub receiver: Option<String>,
    pub kind: String,
    /// `delivered`, `failed`, `retry` (an attempt failed, the job waits to try again),
    /// `held_quota`, `quota_reserved`, `app_not_linked`, …
    pub outcome: String,
    /// For failures: a stable reason word (`user_not_found`, `bot_not_in_chat`, `gave_up`, …).
    pub reason: Option<String>,
    pub lark_code: Option<i64>,
    pub lark_message: Option<String>,
    pub attempts: u32,
    /// How long the call took; set exactly when the entry records a call made to Lark.
    pub latency_ms: Option<u64>,
    /// The message a send or reply created, or a card update changed.
    pub message_id: Option<String>,
    /// The chat a `create_chat` job created.
    #[serde(default)]
    pub chat_id: Option<String>,
}

/// Appends an entry inside a write transaction; fills in `seq`.
pub fn append(w: &WriteTx<'_>, mut entry: OpEntry) -> Result<u64, StoreError> {
    let seq = w.next_sequence("oplog")?;
    entry.seq = seq;
    w.put(&tables::OPLOG, &seq, &entry)?;
    Ok(seq)
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OpQuery {
    pub integration: Option<String>,
    pub incident: Option<String>,
    pub outcome: Option<String>,
    /// Only entries about this receiver (an open_id, chat_id or user id, as the entry names it).
    pub receiver: Option<String>,
    /// Only entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Entries older than this sequence number (for paging back).
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

/// How much later than its `at` an entry may be numbered: entries get their sequence number at
/// commit, a little after the time they record, so a newest-first scan reads this far past a
/// time bound before it stops.
const COMMIT_SKEW: chrono::Duration = chrono::Duration::seconds(5);

pub const MAX_PAGE: usize = 500;

/// Newest first; at most `limit` (default 100, max 500) entries matching every given filter.
pub fn query(store: &Store, q: &OpQuery) -> Result<Vec<OpEntry>, StoreError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let mut out = Vec::new();
    let mut cursor = q.before;
    // Page through in chunks so sparse filters do not load the whole log at once.
    loop {
        let chunk = store.read(|r| r.page(&tables::OPLOG, cursor.as_ref(), 1000, true))?;
        let Some(last) = chunk.last().map(|(k, _)| *k) else {
            break;
        };
        for (_, e) in chunk {
            if q.since.is_some_and(|since| e.at < since - COMMIT_SKEW) {
                return Ok(out);
            }
            let keep = q.integration.as_ref().is_none_or(|i| &e.integration_id == i)
                && q.incident
                    .as_ref()
                    .is_none_or(|i| e.incident_id.as_ref() == Some(i))
                && q.outcome.as_ref().is_none_or(|o| &e.outcome == o)
                && q.receiver.as_ref().is_none_or(|r| e.receiver.as_ref() == Some(r))
                && q.since.is_none_or(|since| e.at >= since)
                && q.until.is_none_or(|until| e.at < until);
            if keep {
                out.push(e);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        cursor = Some(last);
    }
    Ok(out)
}

/// The entries that record a call made to Lark at `since` or later, newest first.
pub fn calls_since(store: &Store, since: DateTime<Utc>) -> Result<Vec<OpEntry>, StoreError> {
    let stop = since - COMMIT_SKEW;
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let chunk = store.read(|r| r.page(&tables::OPLOG, cursor.as_ref(), 1000, true))?;
        let Some(last) = chunk.last().map(|(k, _)| *k) else {
            return Ok(out);
        };
        for (_, e) in chunk {
            if e.at < stop {
                return Ok(out);
            }
            if e.at >= since && e.latency_ms.is_some() {
                out.push(e);
            }
        }
        cursor = Some(last);
    }
}

/// Removes entries older than `cutoff`; returns how many.
pub async fn prune(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let old: Vec<u64> = store.read(|r| {
            Ok(r.page(&tables::OPLOG, None, 1000, false)?
                .into_iter()
                .take_while(|(_, e)| e.at < cutoff)
                .map(|(k, _)| k)
                .collect())
        })?;
        if old.is_empty() {
            return Ok(removed);
        }
        removed += old.len() as u64;
        store
            .write(move |w| {
                for k in &old {
                    w.remove(&tables::OPLOG, k)?;
                }
                Ok(())
            })
            .await?;
    }
}
