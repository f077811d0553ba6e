//! Outbound incident webhooks: admin-configured URLs that receive every incident event
//! (`i_new`, `i_ack`, `i_rslv`, …) as JSON signed with HMAC-SHA256 over the body. Each event is
//! written to a durable queue before it is attempted, retried with backoff on transient failures
//! (5xx, 408, 429, timeouts, connection errors) until it is delivered or given up, and every
//! attempt's outcome lands in the operation log. Lark's limits and quota do not apply here, so
//! webhooks keep their own queue instead of the Lark outbox.
//!
//! A URL's userinfo and query string often carry the receiver's credentials: every view and log
//! line shows the URL [`redact_url`]ed. With `webhooks.allow_private_targets = false`, loopback,
//! private and link-local targets are refused when a webhook is saved and, after DNS, at every
//! send (the resolver drops internal addresses, so a name cannot be rebound to one); redirects
//! are never followed.

pub mod tables;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::delivery::oplog::{self, OpEntry};
use crate::integration::secrets::{Sealed, SecretBox};
use crate::store::{Store, StoreError};

/// The header carrying `sha256=<hex HMAC-SHA256 of the body with the subscription's secret>`.
pub const SIGNATURE_HEADER: &str = "x-lark-oncall-signature";
/// The header naming the event type, for routing without parsing the body.
pub const EVENT_HEADER: &str = "x-lark-oncall-event";

/// Incident event types, as on-call tools already name them.
pub const EVENT_TYPES: [&str; 10] = [
    "i_new", "i_ack", "i_unack", "i_snooze", "i_wake", "i_rslv", "i_reopen", "i_assign", "i_comm", "i_esc",
];

/// Whether any subscription exists (its signing secret is sealed with the integrations' key).
pub fn any_subscription(store: &Store) -> Result<bool, StoreError> {
    Ok(store.read(|r| r.count(&tables::WEBHOOKS))? > 0)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    pub url: String,
    pub secret: Sealed,
    /// Event types sent; empty = all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A subscription as the admin API shows it (never the secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        SubscriptionView {
            id: s.id.clone(),
            name: s.name.clone(),
            url: redact_url(&s.url),
            event_types: s.event_types.clone(),
            enabled: s.enabled,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Who caused an incident event, and from where (`card`, `bot`, `homepage`, `api`, `alert`,
/// `escalation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub source: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

/// One event in flight to one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub incident_id: Option<String>,
    /// The exact body sent (and signed) on every attempt.
    pub body: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no webhook {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How attempts are spaced and when to give up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct Webhooks {
    store: Store,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    policy: RetryPolicy,
    /// `webhooks.allow_private_targets`.
    allow_private_targets: bool,
    wake: Notify,
}

/// `url` with its userinfo and query string replaced by `***`: what views and logs show.
pub fn redact_url(raw: &str) -> String {
    let Ok(url) = url::Url::parse(raw) else {
        return "(unparsable URL)".into();
    };
    let credentials = if url.username().is_empty() && url.password().is_none() {
        ""
    } else {
        "***@"
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let query = if url.query().is_some() { "?***" } else { "" };
    format!(
        "{}://{credentials}{host}{port}{}{query}",
        url.scheme(),
        url.path()
    )
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast or multicast: an
/// address inside the network rather than a receiver on the internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match crate::auth::client_ip::canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why a send was not attempted: every address of the target is internal.
#[derive(Debug, thiserror::Error)]
#[error("the target resolves only to internal addresses (webhooks.allow_private_targets = false)")]
struct InternalTarget;

/// DNS that drops internal addresses, used when `webhooks.allow_private_targets` is off; the
/// connection goes to an address this checked, so a rebinding name cannot slip one in.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(InternalTarget) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn caused_by_internal_target(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<InternalTarget>() {
            return true;
        }
        source = err.source();
    }
    false
}

enum Attempt {
    Delivered { status: u16 },
    Retry { reason: String },
    Permanent { reason: String },
}

impl Webhooks {
    pub fn new(
        store: Store,
        secrets: SecretBox,
        clock: Arc<dyn Clock>,
        policy: RetryPolicy,
        allow_private_targets: bool,
    ) -> Arc<Webhooks> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            // A redirect could lead anywhere, past the target checks.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .user_agent(concat!("lark-oncall/", env!("CARGO_PKG_VERSION")));
        if !allow_private_targets {
            http = http.dns_resolver(PublicOnlyResolver);
        }
        Arc::new(Webhooks {
            store,
            secrets,
            clock,
            http: http.build().expect("HTTP client with the ring provider"),
            policy,
            allow_private_targets,
            wake: Notify::new(),
        })
    }

    /// Refuses an internal target when `webhooks.allow_private_targets` is off: an address
    /// literal or `localhost` by itself, a name by what it resolves to now (checked again at
    /// every send).
    async fn check_target(&self, url: &str) -> Result<(), WebhookError> {
        if self.allow_private_targets {
            return Ok(());
        }
        let refused = || {
            invalid(
                "url",
                "targets an internal address, which webhooks.allow_private_targets = false refuses",
            )
        };
        let parsed = url::Url::parse(url).map_err(|_| invalid("url", "is not a URL"))?;
        match parsed.host() {
            Some(url::Host::Ipv4(v4)) if is_internal(v4.into()) => Err(refused()),
            Some(url::Host::Ipv6(v6)) if is_internal(v6.into()) => Err(refused()),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(refused());
                }
                // A name that does not resolve yet is left to the send-time check.
                let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map(Iterator::collect)
                    .unwrap_or_default();
                if !resolved.is_empty() && resolved.iter().all(|a| is_internal(a.ip())) {
                    return Err(refused());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Result<Vec<Subscription>, StoreError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::WEBHOOKS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    pub fn get(&self, id: &str) -> Result<Subscription, WebhookError> {
        self.store
            .read(|r| r.get(&tables::WEBHOOKS, id))?
            .ok_or_else(|| WebhookError::NotFound(id.to_string()))
    }

    /// Creates a subscription; returns it with its signing secret, shown this once.
    pub async fn create(&self, input: SubscriptionInput) -> Result<(Subscription, String), WebhookError> {
        let secret = crate::ids::random_hex(24);
        let mut sub = Subscription {
            id: crate::ids::new_id(crate::ids::prefix::WEBHOOK, 6),
            name: String::new(),
            url: String::new(),
            secret: self.secrets.seal(&secret),
            event_types: Vec::new(),
            enabled: true,
            created_at: self.clock.now(),
        };
        if input.name.is_none() {
            return Err(invalid("name", "is required"));
        }
        if input.url.is_none() {
            return Err(invalid("url", "is required"));
        }
        apply(&mut sub, input)?;
        self.check_target(&sub.url).await?;
        let stored = sub.clone();
        self.store
            .write(move |w| w.put(&tables::WEBHOOKS, stored.id.as_str(), &stored))
            .await?;
        Ok((sub, secret))
    }

    pub async fn update(&self, id: &str, input: SubscriptionInput) -> Result<Subscription, WebhookError> {
        let mut sub = self.get(id)?;
        apply(&mut sub, input)?;
        self.check_target(&sub.url).await?;
        let stored = sub.clone();
        self.store
            .write(move |w| w.put(&tables::WEBHOOKS, stored.id.as_str(), &stored))
            .await?;
        Ok(sub)
    }

    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let key = id.to_string();
        let existed = self
            .store
            .write(move |w| w.remove(&tables::WEBHOOKS, key.as_str()))
            .await?;
        if existed {
            Ok(())
        } else {
            Err(WebhookError::NotFound(id.to_string()))
        }
    }

    /// Queues `event_type` about an incident for every enabled subscription that wants it; the
    /// queue is durable before this returns. Returns the event id.
    pub async fn publish(
        &self,
        event_type: &str,
        operator: &Operator,
        incident_id: Option<&str>,
        incident: &Value,
    ) -> Result<String, StoreError> {
        let now = self.clock.now();
        let event_id = crate::ids::new_id(crate::ids::prefix::WEBHOOK_EVENT, 10);
        let body = serde_json::json!({
            "event_id": event_id,
            "event_type": event_type,
            "event_time": now.timestamp_millis(),
            "operator": operator,
            "incident": incident,
        })
        .to_string();
        let targets: Vec<QueuedEvent> = self
            .list()?
            .into_iter()
            .filter(|s| {
                s.enabled && (s.event_types.is_empty() || s.event_types.iter().any(|t| t == event_type))
            })
            .map(|s| QueuedEvent {
                subscription_id: s.id,
                event_id: event_id.clone(),
                event_type: event_type.to_string(),
                incident_id: incident_id.map(str::to_string),
                body: body.clone(),
                attempts: 0,
                created_at: now,
                next_attempt_at: now,
            })
            .collect();
        if targets.is_empty() {
            return Ok(event_id);
        }
        self.store
            .write(move |w| {
                for t in &targets {
                    let seq = w.next_sequence("webhook_queue")?;
                    w.put(&tables::WEBHOOK_QUEUE, &seq, t)?;
                }
                Ok(())
            })
            .await?;
        self.wake.notify_one();
        Ok(event_id)
    }

    /// Sends what is due until `stop` turns true; in order per subscription.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let next = match self.send_due().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "webhook queue unreadable");
                    Some(self.clock.now() + chrono::Duration::seconds(5))
                }
            };
            let sleep = next
                .map(|at| (at - self.clock.now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Attempts every due event once; returns when the next one is due.
    pub async fn send_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let queued = self
            .store
            .read(|r| r.page(&tables::WEBHOOK_QUEUE, None, 500, false))?;
        let now = self.clock.now();
        let mut next: Option<DateTime<Utc>> = None;
        // A subscription whose head event waits blocks its later events: receivers see order.
        let mut waiting: Vec<String> = Vec::new();
        for (seq, event) in queued {
            if waiting.contains(&event.subscription_id) {
                continue;
            }
            if event.next_attempt_at > now {
                next = Some(next.map_or(event.next_attempt_at, |n| n.min(event.next_attempt_at)));
                waiting.push(event.subscription_id.clone());
                continue;
            }
            if let Some(retry_at) = self.attempt(seq, event.clone()).await? {
                next = Some(next.map_or(retry_at, |n| n.min(retry_at)));
                waiting.push(event.subscription_id);
            }
        }
        Ok(next)
    }

    /// One attempt; returns the retry time when the event stays queued.
    async fn attempt(&self, seq: u64, mut event: QueuedEvent) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sub = match self.get(&event.subscription_id) {
            Ok(s) => s,
            Err(WebhookError::NotFound(_)) => {
                self.store
                    .write(move |w| w.remove(&tables::WEBHOOK_QUEUE, &seq).map(drop))
                    .await?;
                return Ok(None);
            }
            Err(WebhookError::Store(e)) => return Err(e),
            Err(WebhookError::Invalid { .. }) => unreachable!("get does not validate"),
        };
        let started = std::time::Instant::now();
        let outcome = match self.secrets.open(&sub.secret) {
            Ok(secret) => self.post(&sub.url, &secret, &event).await,
            Err(e) => Attempt::Permanent {
                reason: format!("secret unusable: {e}"),
            },
        };
        let latency = started.elapsed();
        event.attempts += 1;
        let now = self.clock.now();
        let expired = (now - event.created_at).to_std().unwrap_or_default() >= self.policy.give_up_after;
        let (outcome_word, reason, retry_at) = match outcome {
            Attempt::Delivered { status } => ("delivered", Some(format!("HTTP {status}")), None),
            Attempt::Permanent { reason } => ("failed", Some(reason), None),
            Attempt::Retry { reason } if expired => ("failed", Some(format!("gave up: {reason}")), None),
            Attempt::Retry { reason } => {
                let backoff = self
                    .policy
                    .base
                    .saturating_mul(2u32.saturating_pow(event.attempts.saturating_sub(1).min(16)))
                    .min(self.policy.max);
                (
                    "retrying",
                    Some(reason),
                    Some(now + chrono::Duration::from_std(backoff).unwrap_or_default()),
                )
            }
        };
        let entry = OpEntry {
            seq: 0,
            at: now,
            integration_id: format!("webhook:{}", sub.id),
            incident_id: event.incident_id.clone(),
            job_id: None,
            receiver: Some(redact_url(&sub.url)),
            kind: format!("webhook:{}", event.event_type),
            outcome: outcome_word.into(),
            reason,
            lark_code: None,
            lark_message: None,
            attempts: event.attempts,
            latency_ms: Some(latency.as_millis() as u64),
            message_id: Some(event.event_id.clone()),
            chat_id: None,
        };
        if outcome_word != "delivered" {
            tracing::warn!(webhook = %sub.id, url = %redact_url(&sub.url), event = %event.event_type, outcome = outcome_word, "webhook attempt did not deliver");
        }
        match retry_at {
            Some(at) => {
                event.next_attempt_at = at;
                self.store
                    .write(move |w| {
                        w.put(&tables::WEBHOOK_QUEUE, &seq, &event)?;
                        oplog::append(w, entry).map(drop)
                    })
                    .await?;
                Ok(Some(at))
            }
            None => {
                self.store
                    .write(move |w| {
                        w.remove(&tables::WEBHOOK_QUEUE, &seq)?;
                        oplog::append(w, entry).map(drop)
                    })
                    .await?;
                Ok(None)
            }
        }
    }

    async fn post(&self, url: &str, secret: &str, event: &QueuedEvent) -> Attempt {
        // Address literals skip DNS, so the resolver cannot check them; names are checked there.
        if !self.allow_private_targets
            && let Ok(parsed) = url::Url::parse(url)
            && let Some(ip) = match parsed.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::from(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::from(v6)),
                _ => None,
            }
            && is_internal(ip)
        {
            return Attempt::Permanent {
                reason: InternalTarget.to_string(),
            };
        }
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(EVENT_HEADER, &event.event_type)
            .header(SIGNATURE_HEADER, signature(secret, event.body.as_bytes()))
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => Attempt::Delivered {
                status: res.status().as_u16(),
            },
            Ok(res) => {
                let status = res.status().as_u16();
                let reason = format!("HTTP {status}");
                if res.status().is_server_error() || matches!(status, 408 | 429) {
                    Attempt::Retry { reason }
                } else {
                    Attempt::Permanent { reason }
                }
            }
            Err(e) if caused_by_internal_target(&e) => Attempt::Permanent {
                reason: InternalTarget.to_string(),
            },
            Err(e) => Attempt::Retry {
                reason: if e.is_timeout() {
                    "timeout".into()
                } else {
                    "connection failed".into()
                },
            },
        }
    }
}

fn apply(sub: &mut Subscription, input: SubscriptionInput) -> Result<(), WebhookError> {
    if let Some(name) = input.name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "must be 1 to 100 characters"));
        }
        sub.name = name.to_string();
    }
    if let Some(url) = input.url {
        let parsed =
            url::Url::parse(url.trim()).map_err(|e| invalid("url", format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid("url", "must be an http(s) URL with a host"));
        }
        sub.url = parsed.to_string();
    }
    if let Some(types) = input.event_types {
        if let Some(bad) = types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
            return Err(invalid(
                "event_types",
                format!("unknown event type {bad:?}; known: {}", EVENT_TYPES.join(", ")),
            ));
        }
        sub.event_types = types;
    }
    if let Some(enabled) = input.enabled {
        sub.enabled = enabled;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
