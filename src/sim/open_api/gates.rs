//! Who may call and how often: the app and tenant token endpoints, bearer-token checks (tenant
//! and user tokens), each API's frequency limits, the per-receiver window and the monthly quota.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{ApiRequest, Reject, Route, str_field};
use crate::sim::CallRecord;
use crate::sim::limits::Limit;
use crate::sim::state::{Shared, State, TokenKind};

const PER_API_PER_SECOND: usize = 50;
const SENDS_PER_MINUTE: usize = 1000;
const CARD_UPDATES_PER_MINUTE: usize = 1000;

/// The tenant token's app, past the frequency limits and the quota.
pub(super) fn tenant_gate(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<String, Reject> {
    let app_id = tenant_auth(st, req, now)?;
    record.app_id = Some(app_id.clone());
    granted(shared, route)?;
    gate(shared, st, route, &app_id, now)?;
    Ok(app_id)
}

/// The scopes any one of which lets the app call the route (next §1; an empty list: the
/// simulator checks none).
fn scopes_of(route: &Route) -> &'static [&'static str] {
    match route {
        Route::CreateChat => &["im:chat", "im:chat:create"],
        Route::AddMembers(_) => &["im:chat", "im:chat.members:write_only"],
        Route::PutTopNotice(_) => &["im:chat", "im:chat.top_notice:write_only"],
        Route::UpdateChat(_) => &["im:chat", "im:chat:update"],
        Route::ShareLink(_) => &["im:chat", "im:chat:read", "im:chat:readonly"],
        Route::Pin => &[
            "im:message",
            "im:message.pins:write_only",
            "im:message:send_as_bot",
        ],
        _ => &[],
    }
}

/// 99991672 (HTTP 400) when the app was granted none of the route's scopes.
fn granted(shared: &Shared, route: &Route) -> Result<(), Reject> {
    let scopes = scopes_of(route);
    let missing = shared.faults.lock().expect("faults lock").missing_scopes.clone();
    if scopes.is_empty() || scopes.iter().any(|s| !missing.iter().any(|m| m == s)) {
        return Ok(());
    }
    Err(Reject::lark(
        400,
        99991672,
        &format!(
            "Access denied. One of the following scopes is required: [{}].",
            scopes.join(", ")
        ),
    ))
}

/// The frequency limits of the call's API, then the monthly quota.
pub(in crate::sim) fn gate(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    app_id: &str,
    now: DateTime<Utc>,
) -> Result<(), Reject> {
    if shared.enforce_limits {
        let mut limits = vec![Limit::per_second(
            format!("api:{app_id}:{}", route.api()),
            PER_API_PER_SECOND,
        )];
        match route {
            Route::SendMessage | Route::Reply(_) => {
                limits.push(Limit::per_minute(format!("send:{app_id}"), SENDS_PER_MINUTE));
            }
            Route::CardUpdate => {
                limits.push(Limit::per_minute(
                    format!("card_update:{app_id}"),
                    CARD_UPDATES_PER_MINUTE,
                ));
            }
            _ => {}
        }
        if let Err(refusal) = st.windows.admit(&limits, now) {
            let mut reject = Reject::lark(429, 99991400, "request trigger frequency limit");
            reject.headers = vec![
                ("x-ogw-ratelimit-limit", refusal.limit.to_string()),
                ("x-ogw-ratelimit-reset", refusal.reset_secs.to_string()),
            ];
            return Err(reject);
        }
    }
    if !st.quota.take(now) {
        return Err(Reject::lark(
            429,
            99991403,
            "This month's API call quota has been exceeded",
        ));
    }
    Ok(())
}

/// The receiver's 5/s window (shared by every bot for a group), or 230020.
pub(super) fn receiver_limit(
    shared: &Shared,
    st: &mut State,
    key: String,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<(), Reject> {
    if shared.enforce_limits && st.windows.admit(&[Limit::per_second(key, limit)], now).is_err() {
        return Err(Reject::im(230020, "This operation triggers the frequency limit."));
    }
    Ok(())
}

fn bearer(req: &ApiRequest) -> Result<&str, Reject> {
    req.authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Reject::lark(
                400,
                99991661,
                "Missing access token for authorization. Please make a request with token attached.",
            )
        })
}

fn invalid_token() -> Reject {
    Reject::lark(
        400,
        99991663,
        "Invalid access token for authorization. Please make a request with token attached.",
    )
}

/// The app a tenant access token belongs to.
fn tenant_auth(st: &State, req: &ApiRequest, now: DateTime<Utc>) -> Result<String, Reject> {
    let token = bearer(req)?;
    if !["t-", "u-", "a-"].iter().any(|p| token.starts_with(p)) {
        return Err(Reject::lark(
            400,
            99991671,
            "token format error, must start with t- or u-",
        ));
    }
    match st.tokens.get(token) {
        Some(t) if t.kind == TokenKind::Tenant && t.expires_at > now => Ok(t.app_id.clone()),
        _ => Err(invalid_token()),
    }
}

/// The app and user of a user access token.
pub(in crate::sim) fn user_auth(
    st: &State,
    req: &ApiRequest,
    now: DateTime<Utc>,
) -> Result<(String, String), Reject> {
    let token = bearer(req)?;
    match st.user_tokens.get(token) {
        Some(t) if t.expires_at > now => Ok((t.app_id.clone(), t.open_id.clone())),
        _ => Err(Reject::lark(
            400,
            99991668,
            "user access token invalid or expired",
        )),
    }
}

pub(super) fn token(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let bad = || Reject::lark(400, 99991543, "app_id or app_secret is invalid");
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| bad())?;
    let app_id = str_field(&body, "app_id").unwrap_or_default();
    record.summary = format!("app_id={app_id}");
    let app = shared.app(app_id).ok_or_else(bad)?;
    // A known App ID with the wrong secret is refused as Lark does it, with its own code.
    let wrong_secret = || Reject::lark(400, 10014, "app secret invalid");
    record.app_id = Some(app.app_id.clone());
    gate(shared, st, route, &app.app_id, now)?;
    let secret = str_field(&body, "app_secret").unwrap_or_default();
    if !crate::lark::crypto::constant_time_eq(secret, &app.app_secret) {
        return Err(wrong_secret());
    }
    let (tenant, tenant_left) = st.issue_token(&app.app_id, TokenKind::Tenant, now, shared.token_lifetime);
    Ok(match route {
        Route::AppToken => {
            let (app_token, left) = st.issue_token(&app.app_id, TokenKind::App, now, shared.token_lifetime);
            json!({"code": 0, "msg": "ok", "app_access_token": app_token, "expire": left,
                   "tenant_access_token": tenant})
        }
        _ => json!({"code": 0, "msg": "ok", "tenant_access_token": tenant, "expire": tenant_left}),
    })
}
