//! Alert sources: where alerts come from, each authenticated by its own integration key (shown
//! once, kept only as a SHA-256 hash).

use super::model::AlertSource;
use super::tables;
use super::{IncidentError, Incidents, invalid};

impl Incidents {
    /// Creates a source; its integration key is returned once and stored only as a hash.
    pub async fn create_source(&self, name: &str) -> Result<(AlertSource, String), IncidentError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let key = crate::ids::new_id(crate::ids::prefix::ALERT_SOURCE_KEY, 20);
        let source = AlertSource {
            id: crate::ids::new_id(crate::ids::prefix::ALERT_SOURCE, 6),
            name: name.to_string(),
            key_hash: crate::ids::sha256_hex(key.as_bytes()),
            created_at: self.clock.now(),
        };
        let stored = source.clone();
        self.store
            .write(move |w| {
                w.put(&tables::ALERT_SOURCES, stored.id.as_str(), &stored)?;
                w.put(&tables::ALERT_SOURCE_KEYS, stored.key_hash.as_str(), &stored.id)
            })
            .await?;
        Ok((source, key))
    }

    pub fn sources(&self) -> Result<Vec<AlertSource>, IncidentError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::ALERT_SOURCES, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    pub async fn delete_source(&self, id: &str) -> Result<(), IncidentError> {
        let source = self
            .store
            .read(|r| r.get(&tables::ALERT_SOURCES, id))?
            .ok_or_else(|| IncidentError::NotFound(format!("no alert source {id}")))?;
        self.store
            .write(move |w| {
                w.remove(&tables::ALERT_SOURCE_KEYS, source.key_hash.as_str())?;
                w.remove(&tables::ALERT_SOURCES, source.id.as_str()).map(drop)
            })
            .await?;
        Ok(())
    }

    /// The source an integration key belongs to.
    pub fn source_by_key(&self, key: &str) -> Result<Option<AlertSource>, IncidentError> {
        let hash = crate::ids::sha256_hex(key.as_bytes());
        Ok(self
            .store
            .read(|r| match r.get(&tables::ALERT_SOURCE_KEYS, hash.as_str())? {
                Some(id) => r.get(&tables::ALERT_SOURCES, id.as_str()),
                None => Ok(None),
            })?)
    }
}
