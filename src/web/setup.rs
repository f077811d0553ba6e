//! `GET /api/v1/integrations/{id}/setup`: the live checks of the admin UI's set-up guide, each
//! `ok`, `bad`, `pending` or `not_needed` with the evidence behind it, and the events to subscribe to with
//! those that have arrived. The UI turns `reason` into words; a
//! script reads the same answer. Credentials and chats are checked with a real Lark call now;
//! the Request URL, encryption and sign-in checks read what has arrived so far.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::reply::Json;
use crate::integration::chats;
use crate::integration::{CallbackStats, IntegrationError, ReceiveMode, SUBSCRIBED_EVENTS};
use crate::lark::LarkError;
use crate::route_table;
use crate::services::Services;

#[derive(Serialize, Clone, Copy, PartialEq, Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
enum State {
    Ok,
    Bad,
    Pending,
    /// The integration does without it (the Request URL of one that only uses the long
    /// connection).
    NotNeeded,
}

#[derive(Serialize, ToSchema)]
struct Check {
    /// `credentials`, `request_url`, `encryption`, `chats`, `user_lookup` or `homepage`.
    #[schema(value_type = String)]
    id: &'static str,
    state: State,
    /// Why, as a stable code: `lark_10014`, `no_request_yet`, `refused:<reason>`, …
    reason: String,
    /// The evidence in plain English (Lark's code and message, a count, a time).
    detail: String,
}

fn lark_failure(e: &LarkError) -> (String, String) {
    match e.answer() {
        Some(a) => (
            a.code
                .map_or_else(|| e.reason().to_string(), |c| format!("lark_{c}")),
            format!(
                "HTTP {}, code {}",
                a.http_status,
                a.code.map_or("none".into(), |c| c.to_string())
            ),
        ),
        None => (e.reason().to_string(), e.to_string()),
    }
}

/// Whether Lark's posts reach the Request URL and verify. An integration that only uses the long
/// connection is never posted to, so waiting for a request there would stay pending forever.
fn request_url_check(modes: &[ReceiveMode], stats: &CallbackStats) -> Check {
    if !modes.contains(&ReceiveMode::Webhook) {
        return Check {
            id: "request_url",
            state: State::NotNeeded,
            reason: "long_connection_only".into(),
            detail: String::new(),
        };
    }
    let verified = stats.challenges + stats.accepted;
    match (&stats.last_error, verified) {
        (Some(note), _) if stats.last_accepted_at.is_none_or(|at| note.at > at) => Check {
            id: "request_url",
            state: State::Bad,
            reason: format!("refused:{}", note.reason),
            detail: format!("{} ({})", note.message, note.at.to_rfc3339()),
        },
        (_, 0) => Check {
            id: "request_url",
            state: State::Pending,
            reason: "no_request_yet".into(),
            detail: String::new(),
        },
        _ => Check {
            id: "request_url",
            state: State::Ok,
            reason: "verified".into(),
            detail: format!(
                "{verified} verified requests; last at {}",
                stats.last_accepted_at.map_or("—".into(), |t| t.to_rfc3339())
            ),
        },
    }
}

/// The set-up guide's checks and the events to subscribe to.
#[derive(Serialize, ToSchema)]
pub struct SetupAnswer {
    checks: Vec<Check>,
    events: Events,
}

#[derive(Serialize, ToSchema)]
struct Events {
    #[schema(value_type = Vec<String>)]
    subscribe: Vec<&'static str>,
    #[schema(value_type = Vec<String>)]
    arrived: Vec<&'static str>,
}

route_table! {
    pub fn routes(app, limit = 0), const ROUTES, Admin;
    /// The set-up guide's live checks of an integration.
    GET ["api" / "v1" / "integrations" / {id} / "setup"] admin => checks -> 200 json(SetupAnswer);
}

async fn checks(app: Arc<Services>, id: String) -> Result<Json<SetupAnswer>, ApiError> {
    let live = app
        .integrations
        .get(&id)
        .ok_or_else(|| ApiError::from(IntegrationError::NotFound(id.clone())))?;
    let client = app
        .lark
        .get(&id)
        .ok_or_else(|| ApiError::from(IntegrationError::NotFound(id.clone())))?;
    let view = app.integrations.view(&live);
    let stats = view.callback_stats;
    let mut out = Vec::new();

    let credentials = client.ensure_tenant_token().await;
    out.push(match &credentials {
        Ok(_) => Check {
            id: "credentials",
            state: State::Ok,
            reason: "token_obtained".into(),
            detail: String::new(),
        },
        Err(e) => {
            let (reason, detail) = lark_failure(e);
            Check {
                id: "credentials",
                state: State::Bad,
                reason,
                detail,
            }
        }
    });

    out.push(request_url_check(&live.record.receive_modes, &stats));

    out.push(Check {
        id: "encryption",
        state: if view.secrets.encrypt_key {
            State::Ok
        } else {
            State::Bad
        },
        reason: if view.secrets.encrypt_key {
            "encrypt_key_set".into()
        } else {
            "no_encrypt_key".into()
        },
        detail: String::new(),
    });

    out.push(if credentials.is_err() {
        Check {
            id: "chats",
            state: State::Pending,
            reason: "needs_credentials".into(),
            detail: String::new(),
        }
    } else {
        match chats::refresh(&app.store, &client, &id, app.clock.now()).await {
            Ok(items) => Check {
                id: "chats",
                state: State::Ok,
                reason: "listed".into(),
                detail: items.len().to_string(),
            },
            Err(chats::ChatsError::Lark(e)) => {
                let (reason, detail) = lark_failure(&e);
                Check {
                    id: "chats",
                    state: State::Bad,
                    reason,
                    detail,
                }
            }
            Err(chats::ChatsError::Store(e)) => return Err(e.into()),
        }
    });

    let members = app.incidents.members.list()?;
    let linked = |via: &str| {
        members
            .iter()
            .filter(|m| m.lark.get(&id).is_some_and(|l| l.linked_via == via))
            .count()
    };
    let (looked_up, signed_in) = (linked("lookup"), linked("oauth"));
    out.push(Check {
        id: "user_lookup",
        state: if looked_up > 0 { State::Ok } else { State::Pending },
        reason: if looked_up > 0 {
            "members_found".into()
        } else {
            "no_lookup_yet".into()
        },
        detail: looked_up.to_string(),
    });
    out.push(Check {
        id: "homepage",
        state: if signed_in > 0 { State::Ok } else { State::Pending },
        reason: if signed_in > 0 {
            "signed_in".into()
        } else {
            "no_sign_in_yet".into()
        },
        detail: signed_in.to_string(),
    });

    // The events to subscribe to, and which have arrived (the chat events arrive only when
    // someone adds or removes the bot or renames a chat).
    let arrived: Vec<&str> = SUBSCRIBED_EVENTS
        .into_iter()
        .filter(|e| stats.events_by_type.contains_key(*e))
        .collect();
    Ok(Json(SetupAnswer {
        checks: out,
        events: Events {
            subscribe: SUBSCRIBED_EVENTS.to_vec(),
            arrived,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_url_is_not_needed_without_the_webhook_mode() {
        let nothing_arrived = CallbackStats::default();
        let cases = [
            (
                vec![ReceiveMode::LongConnection],
                State::NotNeeded,
                "long_connection_only",
            ),
            (vec![ReceiveMode::Webhook], State::Pending, "no_request_yet"),
            (
                vec![ReceiveMode::Webhook, ReceiveMode::LongConnection],
                State::Pending,
                "no_request_yet",
            ),
        ];
        for (modes, state, reason) in cases {
            let check = request_url_check(&modes, &nothing_arrived);
            assert_eq!((check.state, check.reason.as_str()), (state, reason), "{modes:?}");
        }
        let mut verified = CallbackStats::default();
        verified.challenges = 1;
        let check = request_url_check(&[ReceiveMode::Webhook], &verified);
        assert_eq!(check.state, State::Ok);
    }
}
