//! Custom group-bot webhooks as a notification target (next §2): what an admin saves (name, the
//! webhook URL — only Feishu's and Lark's hook host and path —, an optional signing secret and
//! keyword), with the URL and the secret sealed at rest, write-only and never logged; and the
//! sender that makes an outbox job of kind [`JobKind::BotHook`] a signed post, classifying
//! Lark's HTTP-200 answers into what the outbox does next.
//!
//! A custom bot is not the app: its posts do not count against the app's monthly quota and
//! have their own limits (5/s, 100/min per bot), so each webhook is a lane of its own in the
//! outbox (its id is the lane key). Its cards cannot call back or be updated: incidents send a
//! card with URL buttons, and a short new message on each state change.

pub mod tables;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::delivery::{CallFailure, CallOutcome, Executor, FailureKind, Job, JobKind};
use crate::integration::secrets::{Sealed, SecretBox, SecretError};
use crate::store::{Store, StoreError};

/// Lark's hosts for custom-bot webhooks, and the path every hook URL starts with.
pub const HOOK_HOSTS: [&str; 2] = ["open.feishu.cn", "open.larksuite.com"];
pub const HOOK_PATH: &str = "/open-apis/bot/v2/hook/";
/// Lark refuses a request body over 20 KB (9499).
pub const MAX_BODY_BYTES: usize = 20 * 1024;
/// Lark accepts a signature's timestamp within an hour of its own clock.
pub const SIGNATURE_WINDOW: chrono::Duration = chrono::Duration::hours(1);
const MAX_KEYWORD_CHARS: usize = 50;
const MAX_SECRET_CHARS: usize = 256;

/// Whether any webhook exists (its URL is sealed with the integrations' key).
pub fn any(store: &Store) -> Result<bool, StoreError> {
    Ok(store.read(|r| r.count(&tables::BOT_WEBHOOKS))? > 0)
}

/// A webhook as stored: the URL and the secret sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotWebhookRecord {
    pub id: String,
    pub name: String,
    pub url: Sealed,
    pub secret: Option<Sealed>,
    /// Prefixed to the title or text of what is sent (the bot's "custom keyword" check).
    pub keyword: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook as the admin API shows it: the URL and the secret only as set or not.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BotWebhookView {
    pub id: String,
    pub name: String,
    pub url_set: bool,
    pub secret_set: bool,
    pub keyword: Option<String>,
    /// What a group bot cannot do, for the admin to know.
    #[schema(value_type = Vec<String>)]
    pub notes: &'static [&'static str],
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the admin UI says about every group-bot webhook.
pub const NOTES: &[&str] = &[
    "A group bot's card cannot call back: its buttons open the incident on the app homepage.",
    "A group bot's card cannot be updated: each state change sends a short new message, at most one per incident per minute.",
    "A group bot has its own limits, 5 posts a second and 100 a minute per webhook, and its posts do not count against the app's monthly quota.",
];

/// What an admin sends to create (name and url required) or update (any subset) a webhook. On
/// update an empty `secret` or `keyword` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotWebhookInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub keyword: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BotWebhookError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no bot webhook {0}")]
    NotFound(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> BotWebhookError {
    BotWebhookError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A webhook with its URL and secret opened, as the sender uses it.
struct Open {
    record: BotWebhookRecord,
    url: String,
    secret: Option<String>,
}

/// `sign` of a post at `timestamp` (Unix seconds): HMAC-SHA256 keyed with `timestamp + "\n" +
/// secret` over an empty message, in standard Base64 (next §2).
pub fn sign(timestamp: i64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key length");
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a hook URL: Lark's hook hosts over HTTPS and the hook path with a token, or, with
/// `allow_any_host` (`lark.allow_api_base_url_override`, for the simulator), any http(s) host.
fn parse_url(raw: &str, allow_any_host: bool) -> Result<String, BotWebhookError> {
    let wrong = || {
        invalid(
            "url",
            format!(
                "must be a custom bot webhook URL, https://{}{HOOK_PATH}<token> or https://{}{HOOK_PATH}<token>",
                HOOK_HOSTS[0], HOOK_HOSTS[1]
            ),
        )
    };
    let url = url::Url::parse(raw.trim()).map_err(|_| wrong())?;
    let host_ok = match url.host_str() {
        Some(host) if allow_any_host => matches!(url.scheme(), "http" | "https") && !host.is_empty(),
        Some(host) => url.scheme() == "https" && HOOK_HOSTS.contains(&host) && url.port().is_none(),
        None => false,
    };
    let token = url.path().strip_prefix(HOOK_PATH).unwrap_or_default();
    let token_ok = !token.is_empty()
        && token.len() <= 128
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let clean = url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if host_ok && token_ok && clean {
        Ok(url.to_string())
    } else {
        Err(wrong())
    }
}

/// Every group-bot webhook, stored and open in memory, and the sender of their posts.
pub struct BotWebhooks {
    store: Store,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    allow_any_host: bool,
    open: RwLock<HashMap<String, Arc<Open>>>,
}

impl BotWebhooks {
    pub fn open(
        store: Store,
        secrets: SecretBox,
        clock: Arc<dyn Clock>,
        allow_any_host: bool,
    ) -> Result<Arc<BotWebhooks>, BotWebhookError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("lark-oncall/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with the ring provider");
        let hooks = BotWebhooks {
            store,
            secrets,
            clock,
            http,
            allow_any_host,
            open: RwLock::new(HashMap::new()),
        };
        let records = hooks
            .store
            .read(|r| r.page(&tables::BOT_WEBHOOKS, None, usize::MAX, false))?;
        for (_, record) in records {
            hooks.remember(record)?;
        }
        Ok(Arc::new(hooks))
    }

    fn remember(&self, record: BotWebhookRecord) -> Result<Arc<Open>, BotWebhookError> {
        let open = Arc::new(Open {
            url: self.secrets.open(&record.url)?,
            secret: record.secret.as_ref().map(|s| self.secrets.open(s)).transpose()?,
            record,
        });
        self.open
            .write()
            .expect("bot webhooks lock")
            .insert(open.record.id.clone(), open.clone());
        Ok(open)
    }

    fn view(open: &Open) -> BotWebhookView {
        let r = &open.record;
        BotWebhookView {
            id: r.id.clone(),
            name: r.name.clone(),
            url_set: !open.url.is_empty(),
            secret_set: open.secret.is_some(),
            keyword: r.keyword.clone(),
            notes: NOTES,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    /// Every webhook, oldest first.
    pub fn list(&self) -> Vec<BotWebhookView> {
        let open = self.open.read().expect("bot webhooks lock");
        let mut all: Vec<&Arc<Open>> = open.values().collect();
        all.sort_by(|a, b| (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id)));
        all.into_iter().map(|o| Self::view(o)).collect()
    }

    pub fn get(&self, id: &str) -> Result<BotWebhookView, BotWebhookError> {
        self.open
            .read()
            .expect("bot webhooks lock")
            .get(id)
            .map(|o| Self::view(o))
            .ok_or_else(|| BotWebhookError::NotFound(id.to_string()))
    }

    pub fn exists(&self, id: &str) -> bool {
        self.open.read().expect("bot webhooks lock").contains_key(id)
    }

    pub async fn create(&self, input: BotWebhookInput) -> Result<BotWebhookView, BotWebhookError> {
        if input.name.is_none() {
            return Err(invalid("name", "is required"));
        }
        if input.url.is_none() {
            return Err(invalid("url", "is required"));
        }
        let now = self.clock.now();
        let mut record = BotWebhookRecord {
            id: crate::ids::new_id(crate::ids::prefix::BOT_WEBHOOK, 6),
            name: String::new(),
            url: self.secrets.seal(""),
            secret: None,
            keyword: None,
            created_at: now,
            updated_at: now,
        };
        self.apply(&mut record, input)?;
        self.save(record).await
    }

    pub async fn update(&self, id: &str, input: BotWebhookInput) -> Result<BotWebhookView, BotWebhookError> {
        let mut record = self
            .open
            .read()
            .expect("bot webhooks lock")
            .get(id)
            .map(|o| o.record.clone())
            .ok_or_else(|| BotWebhookError::NotFound(id.to_string()))?;
        self.apply(&mut record, input)?;
        record.updated_at = self.clock.now();
        self.save(record).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), BotWebhookError> {
        let key = id.to_string();
        let existed = self
            .store
            .write(move |w| w.remove(&tables::BOT_WEBHOOKS, key.as_str()))
            .await?;
        self.open.write().expect("bot webhooks lock").remove(id);
        if existed {
            Ok(())
        } else {
            Err(BotWebhookError::NotFound(id.to_string()))
        }
    }

    fn apply(&self, record: &mut BotWebhookRecord, input: BotWebhookInput) -> Result<(), BotWebhookError> {
        if let Some(name) = input.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(invalid("name", "must be 1 to 100 characters"));
            }
            record.name = name.to_string();
        }
        if let Some(url) = input.url {
            record.url = self.secrets.seal(&parse_url(&url, self.allow_any_host)?);
        }
        if let Some(secret) = input.secret {
            let secret = secret.trim();
            if secret.chars().count() > MAX_SECRET_CHARS || secret.chars().any(char::is_control) {
                return Err(invalid(
                    "secret",
                    "must be up to 256 characters without control characters",
                ));
            }
            record.secret = (!secret.is_empty()).then(|| self.secrets.seal(secret));
        }
        if let Some(keyword) = input.keyword {
            let keyword = keyword.trim();
            if keyword.chars().count() > MAX_KEYWORD_CHARS || keyword.chars().any(char::is_control) {
                return Err(invalid(
                    "keyword",
                    "must be up to 50 characters without control characters",
                ));
            }
            record.keyword = (!keyword.is_empty()).then(|| keyword.to_string());
        }
        Ok(())
    }

    async fn save(&self, record: BotWebhookRecord) -> Result<BotWebhookView, BotWebhookError> {
        let stored = record.clone();
        self.store
            .write(move |w| w.put(&tables::BOT_WEBHOOKS, stored.id.as_str(), &stored))
            .await?;
        let open = self.remember(record)?;
        Ok(Self::view(&open))
    }

    /// Posts a [`JobKind::BotHook`] job: the keyword put in front of its title or text, signed
    /// at this moment when a secret is set.
    pub async fn send(&self, job: &Job) -> CallOutcome {
        let JobKind::BotHook { webhook_id, body, .. } = &job.kind else {
            return permanent(
                "not_a_bot_webhook_post",
                None,
                "this job is not a group-bot post".into(),
            );
        };
        let Some(hook) = self
            .open
            .read()
            .expect("bot webhooks lock")
            .get(webhook_id)
            .cloned()
        else {
            return permanent(
                "bot_webhook_deleted",
                None,
                format!("bot webhook {webhook_id} was deleted"),
            );
        };
        let Ok(mut message) = serde_json::from_str::<Value>(body) else {
            return permanent("bad_request", None, "the message is not JSON".into());
        };
        if let Some(keyword) = &hook.record.keyword {
            prefix_keyword(&mut message, keyword);
        }
        let now = self.clock.now();
        if let (Some(secret), Some(fields)) = (&hook.secret, message.as_object_mut()) {
            let timestamp = now.timestamp();
            fields.insert("timestamp".into(), Value::String(timestamp.to_string()));
            fields.insert("sign".into(), Value::String(sign(timestamp, secret)));
        }
        let payload = message.to_string();
        if payload.len() > MAX_BODY_BYTES {
            return permanent(
                "too_large",
                None,
                format!("the message is {} bytes; Lark takes at most 20 KB", payload.len()),
            );
        }
        let sent = self
            .http
            .post(&hook.url)
            .header("Content-Type", "application/json")
            .body(payload)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Without the URL: it is the webhook's credential.
            Err(e) => return transient(format!("cannot reach Lark: {}", e.without_url())),
        };
        let status = response.status().as_u16();
        let lark_date = response
            .headers()
            .get("date")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        match response.bytes().await {
            Ok(bytes) => classify(status, &bytes, lark_date, now, job.attempts),
            Err(e) => transient(format!("cannot read Lark's answer: {}", e.without_url())),
        }
    }
}

fn permanent(reason: &'static str, code: Option<i64>, message: String) -> CallOutcome {
    CallOutcome::Failed(CallFailure {
        kind: FailureKind::Permanent { reason },
        code,
        message,
    })
}

fn transient(message: String) -> CallOutcome {
    CallOutcome::Failed(CallFailure {
        kind: FailureKind::Transient,
        code: None,
        message,
    })
}

/// Puts `keyword` in front of a card's header title or a text's text (Lark looks for it in
/// text-like values only).
fn prefix_keyword(message: &mut Value, keyword: &str) {
    let place = if message["msg_type"] == "interactive" {
        message.pointer_mut("/card/header/title/content")
    } else {
        message.pointer_mut("/content/text")
    };
    if let Some(Value::String(text)) = place
        && !text.contains(keyword)
    {
        *text = format!("{keyword} {text}");
    }
}

/// What Lark's answer to a post means (next §2): HTTP 200 with `code` 0 is delivered; 11232
/// and 9499 "too many request" are rate limits, retried after a backoff; 19021, 19022, 19024,
/// 19001 and 9499 "Bad Request" are permanent, each with its reason in words; anything else
/// unreadable or a 5xx is transient.
pub fn classify(
    status: u16,
    body: &[u8],
    lark_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    attempts: u32,
) -> CallOutcome {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let code = answer.as_ref().and_then(|a| {
        a.get("code")
            .or_else(|| a.get("StatusCode"))
            .and_then(Value::as_i64)
    });
    let msg = answer
        .as_ref()
        .and_then(|a| a.get("msg").or_else(|| a.get("StatusMessage")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(code) = code else {
        return transient(format!("HTTP {status} without a readable answer"));
    };
    if code == 0 && status == 200 {
        return CallOutcome::Delivered { returned_id: None };
    }
    let too_many = code == 11232 || (code == 9499 && msg.to_ascii_lowercase().contains("too many"));
    if too_many {
        let retry_after = Duration::from_secs(1u64 << attempts.clamp(1, 6));
        return CallOutcome::Failed(CallFailure {
            kind: FailureKind::RateLimited { retry_after },
            code: Some(code),
            message: format!(
                "Lark limited this bot's posts ({code}: {msg}); retrying in {}s",
                retry_after.as_secs()
            ),
        });
    }
    let (reason, words) = match code {
        19021 => match lark_date.filter(|d| (now - *d).abs() > SIGNATURE_WINDOW - chrono::Duration::minutes(1)) {
            Some(lark) => (
                "clock_skew",
                format!(
                    "check this server's clock (NTP): it reads {now}, Lark's reads {lark}, and Lark refuses signatures more than an hour off"
                ),
            ),
            None => (
                "sign_mismatch",
                "the signature does not match: set the same signing secret here as in the custom bot's security settings".to_string(),
            ),
        },
        19022 => (
            "ip_not_allowed",
            "Lark refused this server's IP address: add it to the custom bot's IP whitelist".to_string(),
        ),
        19024 => (
            "keyword_not_found",
            "the message lacks the custom bot's keyword: set one of its keywords here".to_string(),
        ),
        19001 => (
            "webhook_invalid",
            "the webhook URL is no longer valid: the custom bot was removed or its URL was reset".to_string(),
        ),
        9499 | 19002 => (
            "bad_request",
            "Lark could not read the message (too large or malformed)".to_string(),
        ),
        _ if status >= 500 => return transient(format!("HTTP {status} ({code}: {msg})")),
        _ => ("bot_webhook_refused", "Lark refused the post".to_string()),
    };
    permanent(reason, Some(code), format!("{words} (Lark {code}: {msg})"))
}

/// An [`Executor`] that posts group-bot jobs itself and hands every other job to `inner`.
pub struct WithBotWebhooks<E> {
    pub inner: E,
    pub hooks: Arc<BotWebhooks>,
}

impl<E: Executor> Executor for WithBotWebhooks<E> {
    async fn execute(&self, job: &Job) -> CallOutcome {
        match job.kind {
            JobKind::BotHook { .. } => self.hooks.send(job).await,
            _ => self.inner.execute(job).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_reference_vectors() {
        assert_eq!(
            sign(1599360473, "demo"),
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
        assert_eq!(sign(100, "demo"), "jquNHnVOwmDRfw+vqTIrY5dooJAgi5EcRtLsQE4wfXg=");
        // Not the common mistake (key = secret, message = the string to sign).
        assert_ne!(
            sign(1599360473, "demo"),
            "DkEDUyVoOOJ539qBvUgMyzkzIdRWlf4e/V3Rq+ONJnQ="
        );
    }

    #[test]
    fn only_lark_hook_urls_are_taken() {
        let ok = "https://open.feishu.cn/open-apis/bot/v2/hook/2b1c-9f";
        assert_eq!(parse_url(ok, false).unwrap(), ok);
        assert!(parse_url("https://open.larksuite.com/open-apis/bot/v2/hook/abc", false).is_ok());
        for bad in [
            "http://open.feishu.cn/open-apis/bot/v2/hook/abc",
            "https://evil.example/open-apis/bot/v2/hook/abc",
            "https://open.feishu.cn/open-apis/im/v1/messages",
            "https://open.feishu.cn/open-apis/bot/v2/hook/",
            "https://open.feishu.cn/open-apis/bot/v2/hook/abc?x=1",
            "https://u:p@open.feishu.cn/open-apis/bot/v2/hook/abc",
            "https://open.feishu.cn:8443/open-apis/bot/v2/hook/abc",
        ] {
            assert!(parse_url(bad, false).is_err(), "{bad}");
        }
        assert!(parse_url("http://127.0.0.1:9/open-apis/bot/v2/hook/abc", true).is_ok());
        assert!(parse_url("http://127.0.0.1:9/elsewhere", true).is_err());
    }

    fn reason(outcome: CallOutcome) -> (String, Option<i64>) {
        match outcome {
            CallOutcome::Delivered { .. } => ("delivered".into(), None),
            CallOutcome::Failed(f) => match f.kind {
                FailureKind::Permanent { reason } => (reason.into(), f.code),
                FailureKind::RateLimited { .. } => ("rate_limited".into(), f.code),
                FailureKind::Transient => ("transient".into(), f.code),
                FailureKind::QuotaExhausted => ("quota".into(), f.code),
            },
        }
    }

    #[test]
    fn answers_are_classified_as_lark_means_them() {
        let now = Utc::now();
        let body =
            |code: i64, msg: &str| serde_json::json!({"code": code, "msg": msg, "data": {}}).to_string();
        let cases = [
            (200, body(0, "success"), "delivered"),
            (200, body(11232, "frequency limited"), "rate_limited"),
            (400, body(9499, "too many request"), "rate_limited"),
            (200, body(9499, "Bad Request"), "bad_request"),
            (200, body(19022, "Ip Not Allowed"), "ip_not_allowed"),
            (200, body(19024, "Key Words Not Found"), "keyword_not_found"),
            (
                200,
                body(19001, "param invalid: incoming webhook access token invalid"),
                "webhook_invalid",
            ),
            (502, "<html>bad gateway</html>".to_string(), "transient"),
        ];
        for (status, answer, expected) in cases {
            assert_eq!(
                reason(classify(status, answer.as_bytes(), Some(now), now, 1)).0,
                expected,
                "{answer}"
            );
        }
        let sign_fail = body(
            19021,
            "sign match fail or timestamp is not within one hour from current time",
        );
        assert_eq!(
            reason(classify(200, sign_fail.as_bytes(), Some(now), now, 1)),
            ("sign_mismatch".into(), Some(19021))
        );
        let skewed = now - chrono::Duration::minutes(90);
        let CallOutcome::Failed(f) = classify(200, sign_fail.as_bytes(), Some(skewed), now, 1) else {
            panic!("a skewed clock is a failure");
        };
        assert_eq!(f.kind, FailureKind::Permanent { reason: "clock_skew" });
        assert!(
            f.message.contains("check this server's clock (NTP)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn the_keyword_goes_in_front_of_the_title_or_text() {
        let mut card = serde_json::json!({"msg_type": "interactive", "card": {"header": {"title": {"tag": "plain_text", "content": "#1 disk"}}}});
        prefix_keyword(&mut card, "[oncall]");
        assert_eq!(card["card"]["header"]["title"]["content"], "[oncall] #1 disk");
        let mut text = serde_json::json!({"msg_type": "text", "content": {"text": "#1 resolved"}});
        prefix_keyword(&mut text, "[oncall]");
        assert_eq!(text["content"]["text"], "[oncall] #1 resolved");
    }
}
