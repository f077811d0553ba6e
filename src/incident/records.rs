//! How an incident is kept in the state file: the incident row and the indexes that follow it
//! (`INCIDENT_NUMBERS`, `OPEN_INCIDENTS`, `INCIDENT_DEDUP`, `SNOOZES`, `ESCALATIONS`). Every incident write goes
//! through [`store_incident`], so no path can change an incident and forget an index.

use chrono::{DateTime, Utc};

use super::model::{Escalation, Incident, Status};
use super::tables;
use crate::store::{Store, StoreError, WriteTx, tables::META};

/// The `META` key saying `OPEN_INCIDENTS` has been built from every incident (state files from
/// before the index existed get it once, on open).
const OPEN_INDEX_BUILT: &str = "incident_open_index_built";

/// What a write does to the incident's escalation row.
#[derive(Debug, PartialEq)]
pub(super) enum EscalationChange {
    Keep,
    Remove,
    Put(Escalation),
}

/// The key of a snooze in `SNOOZES`: ordered by when it ends.
pub(super) fn snooze_key(until: DateTime<Utc>, incident_id: &str) -> String {
    format!("{:015}/{incident_id}", until.timestamp_millis().max(0))
}

/// Writes `after` (which was `before`, or is new when `before` is `None`) and brings every index
/// in line with it: the number of a new incident, its dedup key while it is open, its snooze,
/// its escalation. Reads come before the first write, so a group commit fails the closure before
/// it has written anything.
pub(super) fn store_incident(
    w: &WriteTx<'_>,
    before: Option<&Incident>,
    after: &Incident,
    escalation: EscalationChange,
) -> Result<(), StoreError> {
    let id = after.id.as_str();
    let dedup_holder = match (&after.dedup_key, before) {
        (Some(key), Some(_)) => w.get(&tables::INCIDENT_DEDUP, key.as_str())?,
        _ => None,
    };
    let snoozed_before = before.and_then(|b| b.snoozed_until);
    if before.is_none() {
        w.put(&tables::INCIDENT_NUMBERS, &after.number, &id.to_string())?;
    }
    if snoozed_before != after.snoozed_until {
        if let Some(until) = snoozed_before {
            w.remove(&tables::SNOOZES, snooze_key(until, id).as_str())?;
        }
        if let Some(until) = after.snoozed_until {
            w.put(&tables::SNOOZES, snooze_key(until, id).as_str(), &id.to_string())?;
        }
    }
    w.put(&tables::INCIDENTS, id, after)?;
    let open_before = before.is_some_and(|b| b.status != Status::Resolved);
    match (open_before, after.status != Status::Resolved) {
        (false, true) => w.put(&tables::OPEN_INCIDENTS, &after.number, &id.to_string())?,
        (true, false) => {
            w.remove(&tables::OPEN_INCIDENTS, &after.number)?;
        }
        _ => {}
    }
    match escalation {
        EscalationChange::Keep => {}
        EscalationChange::Remove => {
            w.remove(&tables::ESCALATIONS, id)?;
        }
        EscalationChange::Put(esc) => w.put(&tables::ESCALATIONS, id, &esc)?,
    }
    if let Some(key) = &after.dedup_key {
        match after.status {
            Status::Resolved if dedup_holder.as_deref() == Some(id) => {
                w.remove(&tables::INCIDENT_DEDUP, key.as_str())?;
            }
            Status::Triggered | Status::Acknowledged if dedup_holder.is_none() => {
                w.put(&tables::INCIDENT_DEDUP, key.as_str(), &id.to_string())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Builds `OPEN_INCIDENTS` from every incident, once per state file.
pub(super) fn build_open_index(store: &Store) -> Result<(), StoreError> {
    if store.read(|r| r.get(&META, OPEN_INDEX_BUILT))?.is_some() {
        return Ok(());
    }
    store.write_blocking(|w| {
        let mut after = None;
        loop {
            let chunk = w.page(&tables::INCIDENTS, after.as_ref(), 1000, false)?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            for (id, incident) in chunk {
                if incident.status != Status::Resolved {
                    w.put(&tables::OPEN_INCIDENTS, &incident.number, &id)?;
                }
            }
        }
        w.put(&META, OPEN_INDEX_BUILT, &1)
    })
}

/// Drops an escalation whose incident or rule is gone.
pub(super) fn remove_escalation(w: &WriteTx<'_>, incident_id: &str) -> Result<(), StoreError> {
    w.remove(&tables::ESCALATIONS, incident_id).map(drop)
}

/// Drops a snooze entry whose incident is no longer snoozed (or gone).
pub(super) fn remove_snooze_entry(w: &WriteTx<'_>, key: &str) -> Result<(), StoreError> {
    w.remove(&tables::SNOOZES, key).map(drop)
}
