//! The Message Card Request URL's pipeline: find the integration, verify and type the request
//! ([`crate::lark::callback`]), drop redeliveries (a durable seen-set with a time-to-live that
//! outlives Lark's ~7 h of redelivery), and dispatch to the handlers other domains register.
//!
//! Events' seen-set is one row per delivery key, holding when it was seen, written in the same
//! commit as the event's inbox entry. Pruning, hourly, walks the whole set instead of a second
//! time-ordered index, which cost a second insert on every request to save a walk once an hour.
//! Card actions share a commit with nothing, so theirs is a [`SeenSet`]: a journal append and
//! one sync per batch instead of a B-tree commit, the callback path's largest cost (issue 18.6).
//!
//! Events are acknowledged as soon as they are durable: the dedup mark and the event itself are
//! written in one commit to an inbox, handled after the response, and removed once handled, so
//! an event Lark was told we have is processed even across a crash. Card actions are answered in
//! the response (toast and card), within Lark's 3 seconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::tables;
use super::{Integrations, Live};
use crate::clock::Clock;
use crate::lark::callback::{self, CallbackError, CallbackSecrets, EventDelivery, Inbound, SignatureHeaders};
use crate::lark::event::{CardAction, CardActionReply, Toast};
use crate::store::seen::SeenSet;
use crate::store::{Store, StoreError};

/// Handles one kind of event after Lark has been answered.
pub trait EventHandler: Send + Sync + 'static {
    fn handle<'a>(&'a self, integration: &'a Arc<Live>, event: &'a EventDelivery) -> BoxFuture<'a, ()>;
}

/// Answers card actions; what it returns is the callback's response.
pub trait CardActionHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        integration: &'a Arc<Live>,
        action: &'a CardAction,
    ) -> BoxFuture<'a, CardActionReply>;
}

/// How long a card action handler may take before the caller gets a "still working" toast:
/// Lark shows an error when the answer takes over 3 s (§3.2).
const CARD_ACTION_BUDGET: Duration = Duration::from_millis(2500);

/// Rows read (and at most removed) per transaction while pruning the seen-set.
const PRUNE_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("no integration {0}")]
    UnknownIntegration(String),
    #[error(transparent)]
    Rejected(#[from] CallbackError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An accepted event waiting for (or being given to) its handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    pub integration_id: String,
    pub event_id: String,
    pub event_type: String,
    pub event: crate::lark::event::Event,
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The pipeline and its registered handlers.
pub struct InboundPipeline {
    integrations: Arc<Integrations>,
    store: Store,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Card deliveries already seen, by the hash of their dedup key.
    cards_seen: SeenSet,
    event_handlers: RwLock<HashMap<&'static str, Arc<dyn EventHandler>>>,
    card_handler: RwLock<Option<Arc<dyn CardActionHandler>>>,
}

fn dedup_key(integration: &str, key: &str) -> String {
    format!("{integration}/{key}")
}

/// A dedup key as the card seen-set keeps it: the first 128 bits of its SHA-256.
fn seen_hash(dedup_key: &str) -> u128 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dedup_key.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("a SHA-256 digest has 32 bytes"))
}

impl InboundPipeline {
    pub fn new(
        integrations: Arc<Integrations>,
        store: Store,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        cards_seen: SeenSet,
    ) -> InboundPipeline {
        InboundPipeline {
            integrations,
            store,
            clock,
            ttl,
            cards_seen,
            event_handlers: RwLock::new(HashMap::new()),
            card_handler: RwLock::new(None),
        }
    }

    pub fn on_event(&self, event_type: &'static str, handler: Arc<dyn EventHandler>) {
        self.event_handlers
            .write()
            .expect("handlers lock")
            .insert(event_type, handler);
    }

    pub fn on_card_action(&self, handler: Arc<dyn CardActionHandler>) {
        *self.card_handler.write().expect("handlers lock") = Some(handler);
    }

    fn event_handler(&self, event_type: &str) -> Option<Arc<dyn EventHandler>> {
        self.event_handlers
            .read()
            .expect("handlers lock")
            .get(event_type)
            .cloned()
    }

    /// Handles one request to `/lark/{integration_id}/callback`; `Ok` is the 200 body.
    pub async fn handle(
        self: &Arc<Self>,
        integration_id: &str,
        headers: &SignatureHeaders,
        body: &[u8],
    ) -> Result<Value, InboundError> {
        let live = self
            .integrations
            .get(integration_id)
            .ok_or_else(|| InboundError::UnknownIntegration(integration_id.to_string()))?;
        let secrets = CallbackSecrets {
            verification_token: &live.verification_token,
            encrypt: live.encrypt_key.as_deref().zip(live.cipher.as_ref()),
            allow_card_v1_token_signature: live.record.allow_card_v1_token_signature,
        };
        let now = self.clock.now();
        let inbound = callback::parse(
            &secrets,
            headers,
            body,
            now.timestamp(),
            self.ttl.as_secs() as i64,
        )
        .inspect_err(|e| {
            if let Some(not_logged) = live.note_error(e.reason(), &e.to_string()) {
                tracing::warn!(integration = %live.id(), reason = e.reason(), error = %e, not_logged,
                    "Lark callback refused (refusals are logged at most once a second)");
            }
        })?;
        self.dispatch(live, inbound, now).await
    }

    /// Handles one payload from the integration's long connection (§7): plaintext, so nothing
    /// to verify but its shape, then the same dedup, inbox and handlers as the Request URL.
    /// `Some` is a card action's answer for the ack; events have nothing to return.
    pub async fn handle_long_connection(
        self: &Arc<Self>,
        integration_id: &str,
        payload: &[u8],
    ) -> Result<Option<Value>, InboundError> {
        let live = self
            .integrations
            .get(integration_id)
            .ok_or_else(|| InboundError::UnknownIntegration(integration_id.to_string()))?;
        let inbound = callback::parse_long_connection(payload).inspect_err(|e| {
            if let Some(not_logged) = live.note_error(e.reason(), &e.to_string()) {
                tracing::warn!(integration = %live.id(), reason = e.reason(), error = %e, not_logged,
                    "long-connection payload refused (refusals are logged at most once a second)");
            }
        })?;
        let is_card_action = matches!(inbound, Inbound::CardAction(_));
        let answer = self.dispatch(live, inbound, self.clock.now()).await?;
        Ok(is_card_action.then_some(answer))
    }

    /// Dedups, queues and dispatches a verified request; `Ok` is the answer for Lark.
    async fn dispatch(
        self: &Arc<Self>,
        live: Arc<Live>,
        inbound: Inbound,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Value, InboundError> {
        let keys = inbound.dedup_keys();
        match inbound {
            Inbound::Challenge { challenge } => {
                live.stats.lock().expect("stats lock").challenges += 1;
                tracing::info!(integration = %live.id(), "answered Lark's url_verification challenge");
                Ok(json!({ "challenge": challenge }))
            }
            Inbound::Event(delivery) => {
                let handler = self.event_handler(&delivery.event_type);
                let entry = handler.as_ref().map(|_| InboxEntry {
                    integration_id: live.id().to_string(),
                    event_id: delivery.event_id.clone(),
                    event_type: delivery.event_type.clone(),
                    event: delivery.event.clone(),
                    created_at: delivery.created_at,
                });
                let Some(inbox_seq) = self
                    .mark_seen(live.id(), keys, now.timestamp_millis(), entry)
                    .await?
                else {
                    self.count_duplicate(&live, &delivery.event_id);
                    return Ok(json!({"msg": "success"}));
                };
                {
                    let mut stats = live.stats.lock().expect("stats lock");
                    stats.accepted += 1;
                    stats.last_accepted_at = Some(now);
                    *stats
                        .events_by_type
                        .entry(delivery.event_type.clone())
                        .or_default() += 1;
                    if handler.is_none() {
                        stats.unhandled_events += 1;
                    }
                }
                if let (Some(handler), Some(seq)) = (handler, inbox_seq) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        handler.handle(&live, &delivery).await;
                        me.done(seq).await;
                    });
                }
                Ok(json!({"msg": "success"}))
            }
            Inbound::CardAction(action) => {
                if !self
                    .mark_card_seen(live.id(), &keys, now.timestamp_millis())
                    .await?
                {
                    self.count_duplicate(&live, &action.delivery_id);
                    return Ok(json!({}));
                }
                {
                    let mut stats = live.stats.lock().expect("stats lock");
                    stats.accepted += 1;
                    stats.card_actions += 1;
                    stats.last_accepted_at = Some(now);
                }
                let handler = self.card_handler.read().expect("handlers lock").clone();
                let reply = match handler {
                    None => CardActionReply::default(),
                    Some(h) => match tokio::time::timeout(CARD_ACTION_BUDGET, h.handle(&live, &action)).await
                    {
                        Ok(reply) => reply,
                        Err(_) => {
                            tracing::warn!(integration = %live.id(), "card action took longer than Lark waits");
                            CardActionReply {
                                toast: Some(Toast {
                                    kind: "warning".into(),
                                    content: "Still working on it; the card updates when done.".into(),
                                    i18n: None,
                                }),
                                card: None,
                            }
                        }
                    },
                };
                Ok(reply.to_body(action.version))
            }
        }
    }

    fn count_duplicate(&self, live: &Live, id: &str) {
        live.stats.lock().expect("stats lock").duplicates += 1;
        tracing::debug!(integration = %live.id(), delivery = id, "duplicate Lark delivery dropped");
    }

    /// Marks `keys` seen unless any already is; with `entry`, also queues it in the inbox.
    /// `None`: a duplicate. `Some(seq)`: accepted, with the inbox sequence when one was written.
    async fn mark_seen(
        &self,
        integration: &str,
        keys: Vec<String>,
        now_ms: i64,
        entry: Option<InboxEntry>,
    ) -> Result<Option<Option<u64>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| dedup_key(integration, k)).collect();
        // The check runs inside the commit, so two concurrent redeliveries cannot both pass.
        self.store
            .write(move |w| {
                for k in &keys {
                    if w.get(&tables::DEDUP, k.as_str())?.is_some() {
                        return Ok(None);
                    }
                }
                for k in &keys {
                    w.put(&tables::DEDUP, k.as_str(), &now_ms)?;
                }
                let seq = match entry {
                    Some(entry) => {
                        let seq = w.next_sequence("inbox")?;
                        w.put(&tables::INBOX, &seq, &entry)?;
                        Some(seq)
                    }
                    None => None,
                };
                Ok(Some(seq))
            })
            .await
    }

    /// Marks a card delivery's keys seen; `false` if any already was.
    async fn mark_card_seen(
        &self,
        integration: &str,
        keys: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        for k in keys {
            if !self
                .cards_seen
                .insert(seen_hash(&dedup_key(integration, k)), now_ms)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn done(&self, seq: u64) {
        if let Err(e) = self
            .store
            .write(move |w| w.remove(&tables::INBOX, &seq).map(drop))
            .await
        {
            tracing::error!(error = %e, seq, "cannot clear a handled event from the inbox; it will be handled again at start");
        }
    }

    /// Hands events accepted before a crash (still in the inbox) to their handlers. Call once,
    /// after every domain has registered its handlers.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        if !self.cards_seen.is_seeded() {
            self.adopt_card_rows().await?;
            self.cards_seen.mark_seeded()?;
        }
        let pending = self
            .store
            .read(|r| r.page(&tables::INBOX, None, usize::MAX, false))?;
        let count = pending.len();
        for (seq, entry) in pending {
            let live = self.integrations.get(&entry.integration_id);
            let handler = self.event_handler(&entry.event_type);
            if let (Some(live), Some(handler)) = (live, handler) {
                let delivery = EventDelivery {
                    event_id: entry.event_id,
                    event_type: entry.event_type,
                    event: entry.event,
                    created_at: entry.created_at,
                };
                handler.handle(&live, &delivery).await;
            }
            self.done(seq).await;
        }
        if count > 0 {
            tracing::info!(events = count, "handled events accepted before the last stop");
        }
        Ok(count)
    }

    /// Moves card deliveries that older builds marked in the events' seen-set into the card
    /// seen-set, so a redelivery across the upgrade is still recognised. Once per state: the walk
    /// reads every event mark, and this build never writes card marks there.
    async fn adopt_card_rows(&self) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .read(|r| r.page(&tables::DEDUP, after.as_ref(), PRUNE_PAGE, false))?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            let cards: Vec<(String, i64)> = page
                .into_iter()
                .filter(|(k, _)| k.split_once('/').is_some_and(|(_, key)| key.starts_with("card:")))
                .collect();
            if cards.is_empty() {
                continue;
            }
            let marks = cards
                .iter()
                .map(|(k, ms)| self.cards_seen.insert(seen_hash(k), *ms));
            for marked in futures_util::future::join_all(marks).await {
                marked?;
            }
            self.store
                .write(move |w| {
                    for (k, _) in &cards {
                        w.remove(&tables::DEDUP, k.as_str())?;
                    }
                    Ok(())
                })
                .await?;
        }
    }

    /// Forgets dedup entries older than the time-to-live; returns how many were removed. Also
    /// empties the time-ordered index older builds kept beside the set.
    pub async fn prune_seen(&self) -> Result<u64, StoreError> {
        let cutoff = self.clock.now().timestamp_millis() - self.ttl.as_millis() as i64;
        let mut removed = self.cards_seen.prune(cutoff).await?;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .read(|r| r.page(&tables::DEDUP, after.as_ref(), PRUNE_PAGE, false))?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let expired: Vec<String> = page
                .into_iter()
                .filter(|(_, seen_ms)| *seen_ms < cutoff)
                .map(|(k, _)| k)
                .collect();
            if expired.is_empty() {
                continue;
            }
            removed += self
                .store
                .write(move |w| {
                    let mut removed = 0;
                    for k in &expired {
                        // Seen again since the read: a newer mark, kept.
                        if w.get(&tables::DEDUP, k.as_str())?.is_some_and(|ms| ms < cutoff) {
                            w.remove(&tables::DEDUP, k.as_str())?;
                            removed += 1;
                        }
                    }
                    Ok(removed)
                })
                .await?;
        }
        loop {
            let legacy: Vec<String> = self.store.read(|r| {
                Ok(r.page(&tables::DEDUP_EXPIRY, None, PRUNE_PAGE, false)?
                    .into_iter()
                    .map(|(k, ())| k)
                    .collect())
            })?;
            if legacy.is_empty() {
                return Ok(removed);
            }
            self.store
                .write(move |w| {
                    for k in &legacy {
                        w.remove(&tables::DEDUP_EXPIRY, k.as_str())?;
                    }
                    Ok(())
                })
                .await?;
        }
    }

    /// How many deliveries are remembered (for tests and the admin API).
    pub fn seen_count(&self) -> Result<u64, StoreError> {
        self.store.read(|r| r.count(&tables::DEDUP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ShiftedClock;
    use crate::lark::event::Event;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Arc<AtomicUsize>);

    impl EventHandler for Counting {
        fn handle<'a>(&'a self, _i: &'a Arc<Live>, _e: &'a EventDelivery) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    async fn pipeline(
        dir: &std::path::Path,
        clock: Arc<ShiftedClock>,
    ) -> (Arc<InboundPipeline>, String, Store) {
        let store = Store::open(&dir.join("state.redb")).unwrap();
        let integrations =
            Arc::new(Integrations::open(store.clone(), dir, "https://x.example", false, false).unwrap());
        let id = integrations
            .create(crate::integration::IntegrationInput {
                name: Some("t".into()),
                app_id: Some("cli_t1".into()),
                app_secret: Some("s".into()),
                verification_token: Some("tok".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .id()
            .to_string();
        let cards_seen = SeenSet::open(&dir.join("state.redb.seen"), 0).unwrap();
        let p = Arc::new(InboundPipeline::new(
            integrations,
            store.clone(),
            clock,
            Duration::from_secs(8 * 3600),
            cards_seen,
        ));
        (p, id, store)
    }

    fn event(id: &str) -> Vec<u8> {
        json!({"schema":"2.0","header":{"event_id": id,"event_type":"im.chat.disbanded_v1","token":"tok"},
               "event":{"chat_id":"oc_1","operator_id":{"open_id":"ou_1"}}})
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ShiftedClock::default());
        let (p, id, store) = pipeline(dir.path(), clock.clone()).await;
        let h = SignatureHeaders::default();
        p.handle(&id, &h, &event("e1")).await.unwrap();
        clock.advance(chrono::Duration::hours(4));
        p.handle(&id, &h, &event("e2")).await.unwrap();
        assert_eq!(p.seen_count().unwrap(), 2);
        // One row per delivery: nothing in the time-ordered index older builds also wrote.
        assert_eq!(store.read(|r| r.count(&tables::DEDUP_EXPIRY)).unwrap(), 0);
        // Such a leftover index is emptied by the next prune.
        store
            .write(|w| w.put(&tables::DEDUP_EXPIRY, "000000000000001/x/event:old", &()))
            .await
            .unwrap();
        clock.advance(chrono::Duration::hours(4) + chrono::Duration::seconds(1));
        assert_eq!(p.prune_seen().await.unwrap(), 1, "only e1 is past 8 h");
        assert_eq!(p.seen_count().unwrap(), 1);
        assert_eq!(store.read(|r| r.count(&tables::DEDUP_EXPIRY)).unwrap(), 0);
        // e2 is still a duplicate; e1 would be new again (its signed form would be stale by now).
        let live = p.integrations.get(&id).unwrap();
        p.handle(&id, &h, &event("e2")).await.unwrap();
        assert_eq!(live.stats.lock().unwrap().duplicates, 1);
        clock.advance(chrono::Duration::hours(8));
        assert_eq!(p.prune_seen().await.unwrap(), 1);
        assert_eq!(p.seen_count().unwrap(), 0);
    }

    fn card(delivery: &str) -> Vec<u8> {
        json!({"schema":"2.0","header":{"event_id": delivery,"event_type":"card.action.trigger","token":"tok"},
               "event":{"operator":{"open_id":"ou_1"},"token":"c-1",
                        "action":{"tag":"button","value":{"action":"ack","incident":"1"}},
                        "context":{"open_message_id":"om_1","open_chat_id":"oc_1"}}})
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn card_marks_of_older_builds_move_to_the_card_seen_set_at_resume() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ShiftedClock::default());
        let (p, id, store) = pipeline(dir.path(), clock.clone()).await;
        let now_ms = clock.now().timestamp_millis();
        let (old_card, event_row) = (format!("{id}/card:d-old"), format!("{id}/event:e-old"));
        store
            .write(move |w| {
                w.put(&tables::DEDUP, old_card.as_str(), &now_ms)?;
                w.put(&tables::DEDUP, event_row.as_str(), &now_ms)
            })
            .await
            .unwrap();
        p.resume().await.unwrap();
        assert_eq!(
            p.seen_count().unwrap(),
            1,
            "the event's row stays, the card's moved"
        );
        let h = SignatureHeaders::default();
        let live = p.integrations.get(&id).unwrap();
        p.handle(&id, &h, &card("d-old")).await.unwrap();
        p.handle(&id, &h, &card("d-new")).await.unwrap();
        p.handle(&id, &h, &card("d-new")).await.unwrap();
        let stats = live.stats.lock().unwrap().clone();
        assert_eq!((stats.card_actions, stats.duplicates), (1, 2), "{stats:?}");
    }

    #[tokio::test]
    async fn events_left_in_the_inbox_are_handled_at_resume() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ShiftedClock::default());
        let (p, id, store) = pipeline(dir.path(), clock.clone()).await;
        // As if the process died after acknowledging but before handling.
        let entry = InboxEntry {
            integration_id: id.clone(),
            event_id: "e9".into(),
            event_type: "im.chat.disbanded_v1".into(),
            event: Event::Other,
            created_at: None,
        };
        store
            .write(move |w| {
                let seq = w.next_sequence("inbox")?;
                w.put(&tables::INBOX, &seq, &entry)
            })
            .await
            .unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        p.on_event("im.chat.disbanded_v1", Arc::new(Counting(handled.clone())));
        assert_eq!(p.resume().await.unwrap(), 1);
        assert_eq!(handled.load(Ordering::SeqCst), 1);
        assert_eq!(store.read(|r| r.count(&tables::INBOX)).unwrap(), 0);
        // A live event goes through the inbox and leaves it once handled.
        p.handle(&id, &SignatureHeaders::default(), &event("e10"))
            .await
            .unwrap();
        for _ in 0..200 {
            if handled.load(Ordering::SeqCst) == 2 && store.read(|r| r.count(&tables::INBOX)).unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the live event was not handled and cleared");
    }
}
