//! What can go wrong calling Lark, classified so callers can act on it: wait and retry (rate
//! limit, transient faults), hold (monthly quota), refresh the token, or give up with a stable
//! reason word. Classification follows shared/lark-protocol.md §6.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Lark's answer to a failed call, kept for the operation log and for support tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub http_status: u16,
    /// Lark's `code`; absent when the body carried none.
    pub code: Option<i64>,
    pub msg: String,
    /// `error.log_id` of the body, or the `X-Tt-Logid` / `X-Request-Id` header.
    pub log_id: Option<String>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.http_status)?;
        if let Some(code) = self.code {
            write!(f, ", code {code}")?;
        }
        if !self.msg.is_empty() {
            write!(f, ": {}", self.msg)?;
        }
        if let Some(log_id) = &self.log_id {
            write!(f, " (log_id {log_id})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LarkError {
    /// HTTP 429, code 99991400, or IM's 230020: wait this long, then retry.
    #[error("rate limited by Lark, retry in {retry_after:?} ({answer})")]
    RateLimited { retry_after: Duration, answer: Answer },
    /// Code 99991403: the tenant's monthly API quota is spent until the 1st.
    #[error("this month's Lark API call quota is exhausted ({0})")]
    QuotaExhausted(Answer),
    /// The access token was refused (99991663 and kin); a tenant token is refreshed and the call
    /// retried once before this reaches the caller.
    #[error("Lark refused the access token ({0})")]
    InvalidToken(Answer),
    /// Wrong App ID or App Secret (99991543; 10014 for a known App ID with the wrong secret).
    #[error("Lark refused the App ID / App Secret ({0})")]
    WrongCredentials(Answer),
    /// The app is disabled, not installed or unavailable in the tenant (99991662, 99991673).
    #[error("the Lark app is disabled or not installed in this tenant ({0})")]
    AppUnavailable(Answer),
    /// 230002: the bot is not a member of the chat.
    #[error("the bot is not in this chat ({0})")]
    BotNotInChat(Answer),
    /// The user id does not exist or belongs to another app or tenant (99992351 and kin).
    #[error("no such Lark user for this app ({0})")]
    UserNotFound(Answer),
    /// The user is outside the app's availability scope: 230013 on IM calls, 20010 at login.
    #[error("the user is outside the app's availability scope ({0})")]
    UserNotVisible(Answer),
    /// 232009: the chat was disbanded.
    #[error("the chat has been disbanded ({0})")]
    ChatDisbanded(Answer),
    /// The app lacks a scope (99991672, 99991676, 99991679, 230027); `scope` names it when Lark's
    /// answer or the API called tells which.
    #[error("the Lark app lacks the scope {} ({answer})", scope.unwrap_or("the call needs"))]
    PermissionMissing {
        scope: Option<&'static str>,
        answer: Answer,
    },
    /// 5xx, timeouts, connection errors: worth retrying with backoff.
    #[error("Lark is unavailable: {cause}")]
    Transient { cause: String, http_status: Option<u16> },
    /// A body that is not Lark's JSON from a non-5xx answer (e.g. a base URL pointing elsewhere).
    #[error("unexpected answer from Lark (HTTP {http_status}): {cause}")]
    MalformedResponse { http_status: u16, cause: String },
    /// The client's own configuration cannot work (e.g. a base URL that is not http(s)).
    #[error("Lark client configuration: {0}")]
    Config(String),
    /// Any other refusal.
    #[error("Lark refused the call ({0})")]
    Other(Answer),
}

/// Waited after IM's 230020 (5 messages/s per receiver), which comes without a reset header.
pub const IM_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// Waited after a 429 / 99991400 that has no usable `x-ogw-ratelimit-reset`.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// Scopes an error can name (reference §5: the product's calls need these).
const KNOWN_SCOPES: [&str; 3] = ["contact:user.id:readonly", "im:message", "im:chat"];

impl LarkError {
    /// A stable snake_case word for logs, metrics and the operation log.
    pub fn reason(&self) -> &'static str {
        match self {
            LarkError::RateLimited { .. } => "rate_limited",
            LarkError::QuotaExhausted(_) => "quota_exhausted",
            LarkError::InvalidToken(_) => "invalid_token",
            LarkError::WrongCredentials(_) => "wrong_credentials",
            LarkError::AppUnavailable(_) => "app_unavailable",
            LarkError::BotNotInChat(_) => "bot_not_in_chat",
            LarkError::UserNotFound(_) => "user_not_found",
            LarkError::UserNotVisible(_) => "user_not_visible",
            LarkError::ChatDisbanded(_) => "chat_disbanded",
            LarkError::PermissionMissing { .. } => "permission_missing",
            LarkError::Transient { .. } => "transient",
            LarkError::MalformedResponse { .. } => "malformed_response",
            LarkError::Config(_) => "client_config",
            LarkError::Other(_) => "lark_error",
        }
    }

    /// Whether the same call may succeed soon without anyone changing anything. The monthly
    /// quota is not: it comes back on the 1st or when the plan changes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LarkError::RateLimited { .. } | LarkError::Transient { .. } | LarkError::InvalidToken(_)
        )
    }

    /// Lark's answer, when there was one.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            LarkError::RateLimited { answer, .. } | LarkError::PermissionMissing { answer, .. } => {
                Some(answer)
            }
            LarkError::QuotaExhausted(a)
            | LarkError::InvalidToken(a)
            | LarkError::WrongCredentials(a)
            | LarkError::AppUnavailable(a)
            | LarkError::BotNotInChat(a)
            | LarkError::UserNotFound(a)
            | LarkError::UserNotVisible(a)
            | LarkError::ChatDisbanded(a)
            | LarkError::Other(a) => Some(a),
            LarkError::Transient { .. } | LarkError::MalformedResponse { .. } | LarkError::Config(_) => None,
        }
    }

    /// Lark's `code`, when it answered with one.
    pub fn code(&self) -> Option<i64> {
        self.answer().and_then(|a| a.code)
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error) -> LarkError {
        // Every transport failure (connect, timeout, reset, body read) is worth a retry; the
        // error's Display carries no request headers, so no token leaks through it.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "connection failed"
        };
        LarkError::Transient {
            cause: format!("{kind}: {}", cause_chain(e)),
            http_status: e.status().map(|s| s.as_u16()),
        }
    }
}

/// The chain of causes under reqwest's error, which says what went wrong without repeating the
/// URL (the operation log already names the call).
fn cause_chain(e: &reqwest::Error) -> String {
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if !cause.is_empty() {
            cause.push_str(": ");
        }
        cause.push_str(&s.to_string());
        source = s.source();
    }
    if cause.is_empty() {
        cause = "request failed".into();
    }
    cause
}

/// What the client knows of a finished HTTP exchange, enough to classify it.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub http_status: u16,
    /// `x-ogw-ratelimit-reset`, seconds to wait.
    pub ratelimit_reset: Option<&'a str>,
    /// `X-Tt-Logid` or `X-Request-Id`.
    pub header_log_id: Option<&'a str>,
    /// The scope the API called needs, for a permission error that does not name it.
    pub api_scope: Option<&'static str>,
}

/// The outcome of an exchange whose body is `body`: `Ok` when Lark says success (`code` 0 and a
/// 2xx status), the classified error otherwise.
pub(crate) fn check(exchange: &Exchange<'_>, body: &[u8]) -> Result<Value, LarkError> {
    let status = exchange.http_status;
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let Some(json) = parsed else {
        // The body itself goes to the log only (see the client): it may come from anywhere.
        let cause = if body.iter().all(u8::is_ascii_whitespace) {
            "empty body".to_string()
        } else {
            format!("not a JSON object ({} bytes)", body.len())
        };
        return Err(if status >= 500 {
            LarkError::Transient {
                cause: format!("HTTP {status}, {cause}"),
                http_status: Some(status),
            }
        } else if status == 429 {
            rate_limited(exchange, None, String::new(), DEFAULT_RATE_LIMIT_WAIT)
        } else {
            LarkError::MalformedResponse {
                http_status: status,
                cause,
            }
        });
    };
    let code = json.get("code").and_then(Value::as_i64);
    let success = (200..300).contains(&status) && code.unwrap_or(0) == 0;
    if success {
        return Ok(json);
    }
    Err(classify(exchange, &json, code))
}

fn classify(exchange: &Exchange<'_>, json: &Value, code: Option<i64>) -> LarkError {
    let status = exchange.http_status;
    let msg = message_of(json);
    let answer = Answer {
        http_status: status,
        code,
        msg: msg.clone(),
        log_id: json
            .pointer("/error/log_id")
            .and_then(Value::as_str)
            .or(exchange.header_log_id)
            .map(str::to_string),
    };
    match code {
        Some(99991403) => LarkError::QuotaExhausted(answer),
        Some(99991400) => rate_limited(exchange, code, msg, DEFAULT_RATE_LIMIT_WAIT),
        Some(230020) => rate_limited(exchange, code, msg, IM_RATE_LIMIT_WAIT),
        Some(99991661 | 99991663 | 99991664 | 99991668 | 99991671 | 99991677) => {
            LarkError::InvalidToken(answer)
        }
        Some(99991543 | 10014) => LarkError::WrongCredentials(answer),
        Some(99991662 | 99991673) => LarkError::AppUnavailable(answer),
        Some(230002) => LarkError::BotNotInChat(answer),
        Some(230013 | 20010) => LarkError::UserNotVisible(answer),
        Some(99992351 | 99992360 | 99992361 | 99992364) => LarkError::UserNotFound(answer),
        Some(232009) => LarkError::ChatDisbanded(answer),
        Some(99991672 | 99991676 | 99991679 | 230027) => LarkError::PermissionMissing {
            scope: named_scope(json).or(exchange.api_scope),
            answer,
        },
        _ if status == 429 => rate_limited(exchange, code, msg, DEFAULT_RATE_LIMIT_WAIT),
        _ if status >= 500 => LarkError::Transient {
            cause: answer.to_string(),
            http_status: Some(status),
        },
        _ => LarkError::Other(answer),
    }
}

fn rate_limited(exchange: &Exchange<'_>, code: Option<i64>, msg: String, default: Duration) -> LarkError {
    let retry_after = exchange
        .ratelimit_reset
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(default, |secs| Duration::from_secs_f64(secs.min(3600.0)));
    LarkError::RateLimited {
        retry_after,
        answer: Answer {
            http_status: exchange.http_status,
            code,
            msg,
            log_id: exchange.header_log_id.map(str::to_string),
        },
    }
}

/// `msg`, or the OAuth endpoints' `error_description` / `error`.
fn message_of(json: &Value) -> String {
    ["msg", "error_description", "error"]
        .iter()
        .filter_map(|k| json.get(*k).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// The first known scope mentioned by `msg` or `error.permission_violations`.
fn named_scope(json: &Value) -> Option<&'static str> {
    let mut texts: Vec<&str> = json.get("msg").and_then(Value::as_str).into_iter().collect();
    if let Some(violations) = json.pointer("/error/permission_violations") {
        collect_strings(violations, &mut texts);
    }
    texts.iter().find_map(|text| scope_in(text))
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// A known scope appearing in `text` as a whole token: `im:message:send_as_bot` names
/// `im:message`'s family, so it counts, but `im:chatx` does not name `im:chat`.
fn scope_in(text: &str) -> Option<&'static str> {
    let tokens = text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_')));
    for token in tokens {
        for scope in KNOWN_SCOPES {
            let rest = token.strip_prefix(scope);
            if rest.is_some_and(|r| r.is_empty() || r.starts_with(':')) {
                return Some(scope);
            }
        }
    }
    None
}

/// The start of a body, for the log.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let text = text.trim();
    if text.is_empty() {
        "empty body".into()
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exchange(status: u16) -> Exchange<'static> {
        Exchange {
            http_status: status,
            ratelimit_reset: None,
            header_log_id: None,
            api_scope: None,
        }
    }

    fn err(status: u16, body: Value) -> LarkError {
        check(&exchange(status), body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn success_needs_code_zero_and_2xx() {
        let body = json!({"code": 0, "msg": "ok", "data": {"x": 1}});
        assert_eq!(check(&exchange(200), body.to_string().as_bytes()).unwrap(), body);
        // OAuth v2 success bodies may carry no code at all.
        let token = json!({"access_token": "u-1", "expires_in": 7200});
        assert!(check(&exchange(200), token.to_string().as_bytes()).is_ok());
        assert!(matches!(
            err(400, json!({"code": 0, "msg": ""})),
            LarkError::Other(_)
        ));
        assert!(matches!(
            err(200, json!({"code": 1234, "msg": "x"})),
            LarkError::Other(_)
        ));
    }

    #[test]
    fn rate_limit_reads_the_reset_header() {
        let ex = Exchange {
            ratelimit_reset: Some("7"),
            header_log_id: Some("log-1"),
            ..exchange(429)
        };
        let body = json!({"code": 99991400, "msg": "request trigger frequency limit"});
        let e = check(&ex, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            e,
            LarkError::RateLimited {
                retry_after: Duration::from_secs(7),
                answer: Answer {
                    http_status: 429,
                    code: Some(99991400),
                    msg: "request trigger frequency limit".into(),
                    log_id: Some("log-1".into()),
                },
            }
        );
        assert_eq!(e.reason(), "rate_limited");
        assert!(e.is_retryable());
        // Older APIs answer HTTP 400 with the same code; no header → the default wait.
        match err(400, body) {
            LarkError::RateLimited { retry_after, .. } => assert_eq!(retry_after, DEFAULT_RATE_LIMIT_WAIT),
            other => panic!("{other:?}"),
        }
        // A bare 429 without Lark's body still means "wait".
        let e = check(&ex, b"Too Many Requests").unwrap_err();
        assert!(
            matches!(e, LarkError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7))
        );
    }

    #[test]
    fn im_frequency_limit_waits_briefly() {
        match err(
            400,
            json!({"code": 230020, "msg": "This operation triggers the frequency limit."}),
        ) {
            LarkError::RateLimited { retry_after, answer } => {
                assert_eq!(retry_after, IM_RATE_LIMIT_WAIT);
                assert_eq!(answer.code, Some(230020));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusable_reset_headers_fall_back_to_the_default() {
        for bad in ["soon", "-3", "NaN", ""] {
            let ex = Exchange {
                ratelimit_reset: Some(bad),
                ..exchange(429)
            };
            let e = check(&ex, br#"{"code":99991400,"msg":"limit"}"#).unwrap_err();
            assert!(
                matches!(e, LarkError::RateLimited { retry_after, .. } if retry_after == DEFAULT_RATE_LIMIT_WAIT),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn quota_wins_over_the_429_status() {
        let e = err(
            429,
            json!({"code": 99991403, "msg": "This month's API call quota has been exceeded"}),
        );
        assert!(matches!(e, LarkError::QuotaExhausted(_)));
        assert_eq!(e.reason(), "quota_exhausted");
        assert!(!e.is_retryable());
    }

    #[test]
    fn codes_map_to_their_kinds() {
        let cases: [(i64, &str); 17] = [
            (10014, "wrong_credentials"),
            (99991661, "invalid_token"),
            (99991663, "invalid_token"),
            (99991664, "invalid_token"),
            (99991671, "invalid_token"),
            (99991543, "wrong_credentials"),
            (99991662, "app_unavailable"),
            (99991673, "app_unavailable"),
            (230002, "bot_not_in_chat"),
            (230013, "user_not_visible"),
            (20010, "user_not_visible"),
            (99992351, "user_not_found"),
            (99992361, "user_not_found"),
            (232009, "chat_disbanded"),
            (99991672, "permission_missing"),
            (230027, "permission_missing"),
            (230001, "lark_error"),
        ];
        for (code, reason) in cases {
            let e = err(400, json!({"code": code, "msg": "m"}));
            assert_eq!(e.reason(), reason, "code {code}");
            assert_eq!(e.code(), Some(code));
        }
    }

    #[test]
    fn server_errors_are_transient_json_or_not() {
        let e = err(500, json!({"code": 1, "msg": "internal error"}));
        assert!(
            matches!(
                e,
                LarkError::Transient {
                    http_status: Some(500),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let e = check(&exchange(502), b"<html>Bad Gateway</html>").unwrap_err();
        assert!(
            matches!(
                e,
                LarkError::Transient {
                    http_status: Some(502),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = check(&exchange(503), b"").unwrap_err();
        assert!(e.to_string().contains("empty body"), "{e}");
    }

    #[test]
    fn non_json_from_a_non_server_error_is_malformed() {
        let e = check(&exchange(200), b"<html>login page</html>").unwrap_err();
        assert_eq!(e.reason(), "malformed_response");
        assert!(!e.is_retryable());
        let e = check(&exchange(404), b"[1,2]").unwrap_err();
        assert!(matches!(e, LarkError::MalformedResponse { http_status: 404, .. }));
    }

    #[test]
    fn log_id_comes_from_the_body_or_the_header() {
        let ex = Exchange {
            header_log_id: Some("hdr"),
            ..exchange(400)
        };
        let body = json!({"code": 230002, "msg": "Bot/User can NOT be out of the chat.", "error": {"log_id": "body-log"}});
        let e = check(&ex, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.answer().unwrap().log_id.as_deref(), Some("body-log"));
        assert!(e.to_string().contains("body-log"), "{e}");
        let e = check(&ex, br#"{"code":230002,"msg":"x"}"#).unwrap_err();
        assert_eq!(e.answer().unwrap().log_id.as_deref(), Some("hdr"));
    }

    #[test]
    fn permission_errors_name_the_scope() {
        let e = err(
            400,
            json!({"code": 99991672, "msg": "Access denied. One of the following scopes is required: [im:message:send_as_bot, im:message]."}),
        );
        assert!(
            matches!(
                e,
                LarkError::PermissionMissing {
                    scope: Some("im:message"),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = err(
            400,
            json!({"code": 99991676, "msg": "denied", "error": {"permission_violations": [{"type": "action_scope_required", "subject": "contact:user.id:readonly"}]}}),
        );
        assert!(matches!(
            e,
            LarkError::PermissionMissing {
                scope: Some("contact:user.id:readonly"),
                ..
            }
        ));
        assert!(e.to_string().contains("contact:user.id:readonly"), "{e}");
        // The message names nothing: the scope of the API called is the answer.
        let ex = Exchange {
            api_scope: Some("im:chat"),
            ..exchange(400)
        };
        let e = check(&ex, br#"{"code":230027,"msg":"Lack of necessary permissions"}"#).unwrap_err();
        assert!(matches!(
            e,
            LarkError::PermissionMissing {
                scope: Some("im:chat"),
                ..
            }
        ));
        let e = err(400, json!({"code": 99991672, "msg": "scope im:chatx required"}));
        assert!(
            matches!(e, LarkError::PermissionMissing { scope: None, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn oauth_errors_read_error_description() {
        let e = err(
            400,
            json!({"code": 20003, "error": "invalid_grant", "error_description": "The code is expired"}),
        );
        assert_eq!(e.answer().unwrap().msg, "The code is expired");
    }
}
