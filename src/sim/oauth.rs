//! Logging users in (reference §5.8): the authorize page's grant of single-use 5-minute codes,
//! the v2 token exchange (`authorization_code` → `u-…` user access token) and `user_info`.
//! The v2 error codes (20001 bad request, 20002 bad client, 20003 unknown code, 20004 expired
//! code, 20010 user without access) follow the reference where it names them (20010) and the
//! v2 documentation's numbering otherwise; no refresh tokens are issued. `user_info` carries the
//! email and mobile only when the app was granted their scopes, as Lark's does; a person who
//! declines on the authorize page is sent back with `error=access_denied`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::CallRecord;
use super::SimUser;
use super::open_api::{ApiRequest, Reject, Route, gate, ok, user_auth};
use super::state::{OAuthCode, Shared, State, UserToken};
use crate::ids::random_hex;

const OAUTH_CODE_MINUTES: i64 = 5;

/// `GET /open-apis/authen/v1/user_info` with a user access token.
pub(super) fn user_info(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let (app_id, open_id) = user_auth(st, req, now)?;
    record.app_id = Some(app_id.clone());
    gate(shared, st, route, &app_id, now)?;
    let user = st
        .world
        .user(&open_id)
        .ok_or_else(|| Reject::lark(400, 99991668, "user access token invalid"))?;
    record.receiver = Some(open_id.clone());
    record.summary = "user info".to_string();
    let scopes = shared
        .app(&app_id)
        .map(|a| a.user_scopes.clone())
        .unwrap_or_default();
    Ok(ok(user_json(user, &st.world.tenant_key, &scopes)))
}

fn user_json(u: &SimUser, tenant_key: &str, scopes: &[String]) -> Value {
    let mut info = json!({
        "name": u.name, "en_name": u.en_name, "avatar_url": "", "avatar_thumb": "",
        "avatar_middle": "", "avatar_big": "", "open_id": u.open_id, "union_id": u.union_id,
        "tenant_key": tenant_key, "employee_no": ""
    });
    if scopes.iter().any(|s| s == super::EMAIL_SCOPE) {
        info["email"] = u.email.clone().into();
        info["enterprise_email"] = "".into();
    }
    if scopes.iter().any(|s| s == super::MOBILE_SCOPE) {
        info["mobile"] = u.mobile.clone().into();
    }
    if scopes.iter().any(|s| s == "contact:user.employee_id:readonly") {
        info["user_id"] = u.user_id.clone().into();
    }
    info
}

/// The v2 token endpoint takes JSON (and, leniently, a form body).
fn oauth_params(req: &ApiRequest) -> HashMap<String, String> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&req.body) {
        return map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect();
    }
    url::form_urlencoded::parse(&req.body).into_owned().collect()
}

pub(super) fn token(
    shared: &Shared,
    st: &mut State,
    route: &Route,
    req: &ApiRequest,
    now: DateTime<Utc>,
    record: &mut CallRecord,
) -> Result<Value, Reject> {
    let params = oauth_params(req);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    record.summary = format!("grant_type={}", get("grant_type"));
    let app = shared
        .app(get("client_id"))
        .ok_or_else(|| Reject::oauth(20002, "invalid_client", "client_id is unknown"))?;
    record.app_id = Some(app.app_id.clone());
    gate(shared, st, route, &app.app_id, now)?;
    if get("grant_type") != "authorization_code" {
        return Err(Reject::oauth(
            20001,
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        ));
    }
    if !crate::lark::crypto::constant_time_eq(get("client_secret"), &app.app_secret) {
        return Err(Reject::oauth(20002, "invalid_client", "client_secret is invalid"));
    }
    // Single use: the code is gone once presented, whatever happens next.
    let code: OAuthCode = st
        .oauth_codes
        .remove(get("code"))
        .filter(|c| c.app_id == app.app_id)
        .ok_or_else(|| Reject::oauth(20003, "invalid_grant", "the authorization code is not valid"))?;
    if code.expires_at <= now {
        return Err(Reject::oauth(
            20004,
            "invalid_grant",
            "the authorization code has expired",
        ));
    }
    if !get("redirect_uri").is_empty() && get("redirect_uri") != code.redirect_uri {
        return Err(Reject::oauth(
            20001,
            "invalid_grant",
            "redirect_uri does not match",
        ));
    }
    let visible = st.world.user(&code.open_id).is_some_and(|u| u.app_visible);
    if !visible {
        return Err(Reject::oauth(
            20010,
            "access_denied",
            "the user has no access to the app",
        ));
    }
    record.receiver = Some(code.open_id.clone());
    let token = format!("u-{}", random_hex(20));
    st.user_tokens.insert(
        token.clone(),
        UserToken {
            app_id: app.app_id.clone(),
            open_id: code.open_id,
            expires_at: now + shared.token_lifetime,
        },
    );
    Ok(
        json!({"code": 0, "access_token": token, "expires_in": shared.token_lifetime.num_seconds(),
              "token_type": "Bearer", "scope": ""}),
    )
}

/// The authorize step (reference §5.8): validates the app and redirect, or says why not.
pub(crate) fn authorize_check<'a>(
    shared: &'a Shared,
    query: &HashMap<String, String>,
) -> Result<(&'a str, url::Url), String> {
    let app = shared
        .app(query.get("client_id").map_or("", String::as_str))
        .ok_or("unknown client_id")?;
    let redirect = query
        .get("redirect_uri")
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or("redirect_uri must be an absolute http(s) URL")?;
    Ok((&app.app_id, redirect))
}

/// The person declined: back to the redirect with `error=access_denied` and the state.
pub(crate) fn authorize_deny(shared: &Shared, query: &HashMap<String, String>) -> Result<String, String> {
    let (_, mut redirect) = authorize_check(shared, query)?;
    redirect
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", query.get("state").map_or("", String::as_str));
    Ok(redirect.to_string())
}

/// Issues a code for `open_id` and returns the redirect target with `code` and `state`.
pub(crate) fn authorize_grant(shared: &Shared, query: &HashMap<String, String>) -> Result<String, String> {
    let (app_id, mut redirect) = authorize_check(shared, query)?;
    let open_id = query.get("open_id").ok_or("pick a user")?;
    let now = shared.clock.now();
    let mut st = shared.lock();
    if st.world.user(open_id).is_none() {
        return Err("unknown user".to_string());
    }
    let code = random_hex(16);
    st.oauth_codes.insert(
        code.clone(),
        OAuthCode {
            app_id: app_id.to_string(),
            open_id: open_id.clone(),
            redirect_uri: query.get("redirect_uri").cloned().unwrap_or_default(),
            expires_at: now + chrono::Duration::minutes(OAUTH_CODE_MINUTES),
        },
    );
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", query.get("state").map_or("", String::as_str));
    Ok(redirect.to_string())
}
