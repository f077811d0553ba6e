//! The tenant access token of one app: cached, refreshed shortly before it runs out, fetched by
//! one caller while the others wait for that same fetch.
//!
//! Lark hands out a new token only once the current one has less than 30 minutes left; earlier
//! requests return the same token (reference §5.1). So the cache refreshes when under 30 minutes
//! remain, the earliest moment a refresh actually yields a new token. A token issued with a
//! shorter life (tests, simulators) is refreshed at half its life instead.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::config::Secret;
use super::error::LarkError;
use crate::clock::Clock;

/// Refresh once less than this is left (Lark's own threshold for issuing a new token).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30 * 60);

/// A token as the token endpoint returned it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub token: Secret,
    /// Lark's `expire`: seconds the token stays valid from now.
    pub expires_in: Duration,
}

#[derive(Debug, Clone)]
struct Cached {
    token: Secret,
    expires_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    cached: Option<Cached>,
    /// The error of the latest fetch, with its sequence number, shared with the callers that
    /// queued behind it so a failing endpoint is asked once per wave, not once per caller.
    last_failure: Option<(u64, LarkError)>,
}

pub struct TokenCache {
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
    /// Fetches finished so far (success or failure).
    fetches: AtomicU64,
    /// When the cached token expires and when it is due for refresh, readable without waiting
    /// for a fetch in progress.
    schedule: Mutex<Option<(DateTime<Utc>, DateTime<Utc>)>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new(clock: Arc<dyn Clock>) -> TokenCache {
        TokenCache {
            clock,
            state: tokio::sync::Mutex::new(State::default()),
            fetches: AtomicU64::new(0),
            schedule: Mutex::new(None),
        }
    }

    /// The cached token if it is not yet due for refresh; otherwise one caller runs `fetch`
    /// while concurrent callers wait and share its result.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, LarkError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, LarkError>>,
    {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        if let Some(cached) = state.cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        if let Some((seq, error)) = &state.last_failure
            && *seq > seen
        {
            return Err(error.clone());
        }
        let result = fetch().await;
        let seq = self.fetches.fetch_add(1, Ordering::AcqRel) + 1;
        match result {
            Ok(fetched) => {
                let now = self.clock.now();
                let life = fetched.expires_in;
                let margin = REFRESH_MARGIN.min(life / 2);
                let expires_at = now + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX);
                let refresh_at = expires_at - chrono::Duration::from_std(margin).unwrap_or_default();
                *self.schedule.lock().expect("token schedule lock") = Some((expires_at, refresh_at));
                state.last_failure = None;
                state.cached = Some(Cached {
                    token: fetched.token.clone(),
                    expires_at,
                    refresh_at,
                });
                Ok(fetched.token)
            }
            Err(error) => {
                // A token that is merely due for refresh is still valid: keep using it while
                // the refresh fails.
                if let Some(cached) = state.cached.as_ref().filter(|c| now < c.expires_at) {
                    tracing::warn!(error = %error, "tenant token refresh failed; using the current token");
                    return Ok(cached.token.clone());
                }
                state.last_failure = Some((seq, error.clone()));
                Err(error)
            }
        }
    }

    /// Forgets `rejected` after Lark refused it, so the next [`TokenCache::get`] fetches anew.
    /// A token already replaced by another caller's refresh is left alone.
    pub async fn discard(&self, rejected: &Secret) {
        let mut state = self.state.lock().await;
        if state.cached.as_ref().is_some_and(|c| c.token == *rejected) {
            state.cached = None;
            *self.schedule.lock().expect("token schedule lock") = None;
        }
    }

    /// When the cached token stops working; `None` before the first fetch.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.schedule.lock().expect("token schedule lock").map(|(e, _)| e)
    }

    /// From when the next call fetches a new token; `None` before the first fetch.
    pub fn refresh_at(&self) -> Option<DateTime<Utc>> {
        self.schedule.lock().expect("token schedule lock").map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ShiftedClock;
    use std::sync::atomic::AtomicUsize;

    fn cache() -> (Arc<ShiftedClock>, TokenCache) {
        let clock = Arc::new(ShiftedClock::default());
        (clock.clone(), TokenCache::new(clock))
    }

    fn issued(n: usize, secs: u64) -> Result<FetchedToken, LarkError> {
        Ok(FetchedToken {
            token: Secret::new(format!("t-{n}")),
            expires_in: Duration::from_secs(secs),
        })
    }

    #[tokio::test]
    async fn reuses_the_token_until_30_minutes_are_left() {
        let (clock, cache) = cache();
        let fetches = AtomicUsize::new(0);
        let get = || async {
            cache
                .get(|| async { issued(fetches.fetch_add(1, Ordering::SeqCst) + 1, 7200) })
                .await
                .unwrap()
        };
        assert_eq!(get().await.expose(), "t-1");
        let expires = cache.expires_at().unwrap();
        assert_eq!(
            cache.refresh_at().unwrap(),
            expires - chrono::Duration::minutes(30)
        );
        clock.advance(chrono::Duration::minutes(89));
        assert_eq!(get().await.expose(), "t-1");
        clock.advance(chrono::Duration::minutes(2));
        assert_eq!(get().await.expose(), "t-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(cache.expires_at().unwrap() > expires);
    }

    #[tokio::test]
    async fn short_lived_tokens_refresh_at_half_life() {
        let (clock, cache) = cache();
        let token = cache.get(|| async { issued(1, 60) }).await.unwrap();
        assert_eq!(token.expose(), "t-1");
        clock.advance(chrono::Duration::seconds(29));
        assert_eq!(
            cache.get(|| async { issued(2, 60) }).await.unwrap().expose(),
            "t-1"
        );
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(
            cache.get(|| async { issued(2, 60) }).await.unwrap().expose(),
            "t-2"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_fetch() {
        let (_clock, cache) = cache();
        let cache = Arc::new(cache);
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get(|| async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            issued(1, 7200)
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().expose(), "t-1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_shared_by_the_callers_waiting_for_it() {
        let (_clock, cache) = cache();
        let cache = Arc::new(cache);
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let down = |fetches: Arc<AtomicUsize>, gate: Arc<tokio::sync::Notify>| async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Err::<FetchedToken, _>(LarkError::Transient {
                cause: "down".into(),
                http_status: None,
            })
        };
        // On this single-threaded runtime the spawned callers run only when the test yields:
        // the first starts its fetch, the others then queue behind it.
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
                tokio::spawn(async move { cache.get(|| down(fetches, gate)).await })
            })
            .collect();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        gate.notify_one();
        for caller in callers {
            assert!(matches!(caller.await.unwrap(), Err(LarkError::Transient { .. })));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A caller arriving after the failure tries again.
        let token = cache.get(|| async { issued(3, 7200) }).await.unwrap();
        assert_eq!(token.expose(), "t-3");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_still_valid_token() {
        let (clock, cache) = cache();
        cache.get(|| async { issued(1, 7200) }).await.unwrap();
        clock.advance(chrono::Duration::minutes(100));
        let down = || async {
            Err::<FetchedToken, _>(LarkError::Transient {
                cause: "down".into(),
                http_status: None,
            })
        };
        assert_eq!(cache.get(down).await.unwrap().expose(), "t-1");
        clock.advance(chrono::Duration::minutes(21));
        assert!(cache.get(down).await.is_err());
    }

    #[tokio::test]
    async fn discarding_a_rejected_token_forces_a_fetch_once() {
        let (_clock, cache) = cache();
        let old = cache.get(|| async { issued(1, 7200) }).await.unwrap();
        cache.discard(&old).await;
        assert_eq!(cache.expires_at(), None);
        let new = cache.get(|| async { issued(2, 7200) }).await.unwrap();
        assert_eq!(new.expose(), "t-2");
        // A second caller that also saw the old token rejected must not throw away the new one.
        cache.discard(&old).await;
        assert_eq!(
            cache.get(|| async { issued(3, 7200) }).await.unwrap().expose(),
            "t-2"
        );
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = TokenCache::new(Arc::new(ShiftedClock::default()));
        let shown = format!("{cache:?}");
        assert!(shown.contains("expires_at"), "{shown}");
    }
}
