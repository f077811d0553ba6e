//! Custom group-bot webhooks (next §2): `POST /open-apis/bot/v2/hook/{token}` into the one
//! group each custom bot belongs to. What a hook enforces, in this order: the token
//! (19001), the 20 KB body (9499 "Bad Request"), 5/s and 100/min per bot over arrival times on
//! the simulator's clock (11232; refused posts are not counted), a JSON object body (9499), the
//! signature when a secret is set — exactly HMAC-SHA256 keyed with `timestamp + "\n" + secret`
//! over an empty message, the timestamp within an hour of the clock (19021) —, the keywords
//! when any are set, looked for in text-like values only, not in links (19024), and `msg_type`
//! (19002). Around :00 and :30 a bot takes one post a second (see [`busy_span`]). Every answer
//! is HTTP 200 with Lark's body and a `Date` header from the clock.
//! With an IP whitelist set, a post from any other address is refused first (19022), before
//! the size or the signature are looked at.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use hyper::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::limits::Limit;
use super::state::Shared;
use super::{MessageSender, SimError, SimMessage};
use crate::ids::random_hex;

/// The path every hook URL starts with.
pub const HOOK_PATH: &str = "/open-apis/bot/v2/hook/";
const MAX_BODY_BYTES: usize = 20 * 1024;

/// A custom bot as its group's owner sets it up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimBotHookSetup {
    pub name: String,
    /// Its group; the world's first chat when absent.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// "签名校验": posts must be signed with it.
    #[serde(default)]
    pub secret: Option<String>,
    /// "自定义关键词": a post must contain one of them (up to 10).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// "IP 白名单": up to 10 addresses or ranges (`123.12.1.*`, `123.1.1.1/24`); posts from any
    /// other address get 19022.
    #[serde(default)]
    pub ip_whitelist: Vec<String>,
}

/// One post to a hook and how it was answered.
#[derive(Debug, Clone, Serialize)]
pub struct SimHookPost {
    pub at: DateTime<Utc>,
    pub code: i64,
    pub msg: String,
    /// Whether the post was signed (had `timestamp` and `sign`).
    pub signed: bool,
    pub msg_type: Option<String>,
    pub bytes: usize,
}

/// A custom bot and what reached it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct SimBotHook {
    pub token: String,
    pub name: String,
    pub chat_id: String,
    #[serde(skip)]
    pub secret: Option<String>,
    pub signed: bool,
    pub keywords: Vec<String>,
    pub ip_whitelist: Vec<String>,
    pub posts: Vec<SimHookPost>,
}

impl SimBotHook {
    /// Posts Lark answered with code 0.
    pub fn delivered(&self) -> usize {
        self.posts.iter().filter(|p| p.code == 0).count()
    }
}

pub(crate) fn add(shared: &Shared, setup: SimBotHookSetup) -> Result<SimBotHook, SimError> {
    let mut st = shared.lock();
    let chat_id = match setup.chat_id {
        Some(id) => id,
        None => st
            .world
            .chats
            .first()
            .map(|c| c.chat_id.clone())
            .ok_or_else(|| SimError::UnknownChat("(the world has no chats)".into()))?,
    };
    if st.world.chat(&chat_id).is_none() {
        return Err(SimError::UnknownChat(chat_id));
    }
    if setup.ip_whitelist.len() > 10 {
        return Err(SimError::BadSetup(
            "a custom bot's IP whitelist holds up to 10 entries".into(),
        ));
    }
    if let Some(bad) = setup.ip_whitelist.iter().find(|e| IpRule::parse(e).is_none()) {
        return Err(SimError::BadSetup(format!(
            "IP whitelist entry {bad:?} is not an address, a `*` range or a CIDR range"
        )));
    }
    let hook = SimBotHook {
        token: format!("{}-{}", random_hex(4), random_hex(12)),
        name: setup.name,
        chat_id,
        signed: setup.secret.is_some(),
        secret: setup.secret,
        keywords: setup.keywords.into_iter().take(10).collect(),
        ip_whitelist: setup.ip_whitelist,
        posts: Vec::new(),
    };
    st.bot_hooks.push(hook.clone());
    Ok(hook)
}

/// One IP whitelist entry: an IPv4 address, the same with trailing `*` octets, or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IpRule {
    network: u32,
    prefix: u32,
}

impl IpRule {
    fn parse(entry: &str) -> Option<IpRule> {
        let entry = entry.trim();
        if let Some((address, prefix)) = entry.split_once('/') {
            let address: std::net::Ipv4Addr = address.parse().ok()?;
            let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
            return Some(IpRule {
                network: u32::from(address),
                prefix,
            });
        }
        let octets: Vec<&str> = entry.split('.').collect();
        if octets.len() != 4 {
            return None;
        }
        let fixed = octets.iter().take_while(|o| **o != "*").count();
        if octets[fixed..].iter().any(|o| *o != "*") {
            return None;
        }
        let mut network = 0u32;
        for (i, octet) in octets.iter().enumerate() {
            let value: u8 = if i < fixed { octet.parse().ok()? } else { 0 };
            network = (network << 8) | u32::from(value);
        }
        Some(IpRule {
            network,
            prefix: 8 * fixed as u32,
        })
    }

    fn admits(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return false,
            },
        };
        let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
        (u32::from(ip) & mask) == (self.network & mask)
    }
}

/// What Lark computes for `timestamp` and `secret`.
fn expected_sign(timestamp: &str, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key length");
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Every string in the body except links: where Lark looks for keywords.
fn text_values<'a>(value: &'a Value, key: Option<&str>, out: &mut Vec<&'a str>) {
    const LINK_KEYS: &[&str] = &[
        "href",
        "url",
        "pc_url",
        "ios_url",
        "android_url",
        "default_url",
        "image_key",
        "img_key",
    ];
    match value {
        Value::String(s) if !key.is_some_and(|k| LINK_KEYS.contains(&k)) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| text_values(v, key, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if k != "sign" && k != "timestamp" && k != "msg_type" {
                    text_values(v, Some(k), out);
                }
            }
        }
        _ => {}
    }
}

fn answer(shared: &Shared, code: i64, msg: &str) -> Response<Full<Bytes>> {
    let body = if code == 0 {
        json!({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})
    } else {
        json!({"code": code, "data": {}, "msg": msg})
    };
    let date = shared.clock.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Date", date)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static headers are valid")
}

/// Around the top and the half of the hour every cron-driven bot posts and Lark answers 11232
/// more often (next §2: "avoid 10:00, 17:30"); how much more is not published. Modelled as: from
/// 2 s before :00 and :30 to 10 s after, a bot takes one post a second.
fn busy_span(now: DateTime<Utc>) -> bool {
    let into_half_hour = now.timestamp().rem_euclid(1800);
    !(10..1798).contains(&into_half_hour)
}

/// The checks, in Lark's order; `Ok` carries the message to show in the group.
fn check(
    shared: &Shared,
    hook: &SimBotHook,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Value, (i64, &'static str)> {
    const BAD_REQUEST: (i64, &str) = (9499, "Bad Request");
    if body.len() > MAX_BODY_BYTES {
        return Err(BAD_REQUEST);
    }
    let mut limits = vec![
        Limit::per_second(format!("bot_hook:{}", hook.token), 5),
        Limit::per_minute(format!("bot_hook_minute:{}", hook.token), 100),
    ];
    if busy_span(now) {
        limits.push(Limit::per_second(format!("bot_hook_busy:{}", hook.token), 1));
    }
    if shared.enforce_limits && shared.lock().windows.admit(&limits, now).is_err() {
        return Err((
            11232,
            "frequency limited psm[lark.oapi.app_platform_runtime]appID[1500]",
        ));
    }
    let message: Value = serde_json::from_slice(body).map_err(|_| BAD_REQUEST)?;
    if !message.is_object() {
        return Err(BAD_REQUEST);
    }
    if let Some(secret) = &hook.secret {
        const SIGN_FAIL: (i64, &str) = (
            19021,
            "sign match fail or timestamp is not within one hour from current time",
        );
        let timestamp = match &message["timestamp"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(SIGN_FAIL),
        };
        let seconds: i64 = timestamp.parse().map_err(|_| SIGN_FAIL)?;
        if (now.timestamp() - seconds).abs() > 3600 {
            return Err(SIGN_FAIL);
        }
        if message["sign"].as_str() != Some(expected_sign(&timestamp, secret).as_str()) {
            return Err(SIGN_FAIL);
        }
    }
    if !hook.keywords.is_empty() {
        let mut texts = Vec::new();
        text_values(&message, None, &mut texts);
        let found = texts
            .iter()
            .any(|t| hook.keywords.iter().any(|k| t.contains(k.as_str())));
        if !found {
            return Err((19024, "Key Words Not Found"));
        }
    }
    let content_ok = match message["msg_type"].as_str() {
        Some("interactive") => message["card"].is_object(),
        Some(_) => message["content"].is_object(),
        None => return Err((19002, "params error, msg_type need")),
    };
    if !content_ok {
        return Err(BAD_REQUEST);
    }
    Ok(message)
}

/// `POST /open-apis/bot/v2/hook/{token}`.
pub(crate) fn handle(
    shared: &Shared,
    token: &str,
    peer: std::net::IpAddr,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let now = shared.clock.now();
    let Some(hook) = shared.lock().bot_hooks.iter().find(|h| h.token == token).cloned() else {
        return answer(
            shared,
            19001,
            "param invalid: incoming webhook access token invalid",
        );
    };
    let allowed = hook.ip_whitelist.is_empty()
        || hook
            .ip_whitelist
            .iter()
            .filter_map(|e| IpRule::parse(e))
            .any(|rule| rule.admits(peer));
    let outcome = if allowed {
        check(shared, &hook, body, now)
    } else {
        Err((19022, "Ip Not Allowed"))
    };
    let (code, msg) = match &outcome {
        Ok(_) => (0, "success"),
        Err((code, msg)) => (*code, *msg),
    };
    let mut st = shared.lock();
    if let Ok(message) = &outcome {
        let msg_type = message["msg_type"].as_str().unwrap_or("text").to_string();
        let content = if msg_type == "interactive" {
            message["card"].to_string()
        } else {
            message["content"].to_string()
        };
        st.push_message(SimMessage {
            message_id: format!("om_{}", random_hex(16)),
            chat_id: hook.chat_id.clone(),
            chat_type: "group".into(),
            user_open_id: None,
            sender: MessageSender::BotHook {
                name: hook.name.clone(),
            },
            msg_type,
            content,
            updates: 0,
            uuid: None,
            parent_id: None,
            created_at: now,
            updated_at: now,
        });
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let post = SimHookPost {
        at: now,
        code,
        msg: msg.to_string(),
        signed: parsed.as_ref().is_some_and(|m| m.get("sign").is_some()),
        msg_type: parsed
            .as_ref()
            .and_then(|m| m["msg_type"].as_str())
            .map(str::to_string),
        bytes: body.len(),
    };
    if let Some(stored) = st.bot_hooks.iter_mut().find(|h| h.token == token) {
        stored.posts.push(post);
    }
    drop(st);
    answer(shared, code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_reference_construction() {
        assert_eq!(
            expected_sign("1599360473", "demo"),
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
    }

    #[test]
    fn keywords_are_looked_for_in_text_not_links() {
        let body = json!({"msg_type": "post", "content": {"post": {"zh_cn": {"title": "disk",
            "content": [[{"tag": "a", "text": "open", "href": "https://x/alert"}]]}}}});
        let mut texts = Vec::new();
        text_values(&body, None, &mut texts);
        assert!(texts.contains(&"disk") && texts.contains(&"open"));
        assert!(!texts.iter().any(|t| t.contains("alert")));
    }

    #[test]
    fn the_ip_whitelist_takes_addresses_star_ranges_and_cidr() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let star = IpRule::parse("123.12.1.*").unwrap();
        assert!(star.admits(ip("123.12.1.200")));
        assert!(!star.admits(ip("123.12.2.1")));
        let cidr = IpRule::parse("123.1.1.1/24").unwrap();
        assert!(cidr.admits(ip("123.1.1.254")) && !cidr.admits(ip("123.1.2.1")));
        let exact = IpRule::parse("10.0.0.7").unwrap();
        assert!(exact.admits(ip("10.0.0.7")) && !exact.admits(ip("10.0.0.8")));
        assert!(exact.admits(ip("::ffff:10.0.0.7")));
        assert!(IpRule::parse("0.0.0.0/0").unwrap().admits(ip("8.8.8.8")));
        for bad in ["10.0.*.1", "10.0.0", "10.0.0.1/33", "host.example", "10.0.0.256"] {
            assert_eq!(IpRule::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_busy_spans_are_around_the_top_and_half_of_the_hour() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(busy_span(at("2026-12-07T10:00:00Z")));
        assert!(busy_span(at("2026-12-07T10:00:09Z")));
        assert!(!busy_span(at("2026-12-07T10:00:10Z")));
        assert!(busy_span(at("2026-12-07T17:29:58Z")));
        assert!(!busy_span(at("2026-12-07T17:29:57Z")));
        assert!(!busy_span(at("2026-12-07T17:15:00Z")));
    }
}
