//! `/api/v1/schedules` (schedules, their layers and overrides, who is on call, shifts),
//! `/api/v1/members/{id}/shifts` (one person's shifts), `/api/v1/calendar-feeds` (secret calendar
//! URLs) on the admin listener, and `GET /calendar/{token}.ics` on the public one, where
//! calendar apps fetch a feed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::{ApiError, ErrorCode, json};
use super::reply::Page;
use super::route::AnyJson;
use crate::route_table;
use crate::schedule::model::FeedTarget;
use crate::schedule::{
    FinalShift, LayersInput, OverrideInput, ScheduleChange, ScheduleError, ScheduleInput, ScheduleView,
    resolve,
};
use crate::services::Services;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, e.to_string()),
            ScheduleError::NotFound(_) => ApiError::not_found(e.to_string()),
            ScheduleError::Conflict(_) => ApiError::conflict(ErrorCode::Conflict, e.to_string()),
            ScheduleError::Store(s) => s.into(),
        }
    }
}

/// How far ahead "until" and "next" look.
const NEXT_LOOKAHEAD_DAYS: i64 = 14;
/// The default `shifts` window.
const DEFAULT_WINDOW_DAYS: i64 = 14;

type Query = HashMap<String, String>;

fn instant(query: &Query, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    query
        .get(field)
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::InvalidField,
                        format!("{field}: {text:?} is not an RFC 3339 instant such as 2026-12-07T09:00:00Z"),
                    )
                })
        })
        .transpose()
}

fn only_fields(query: &Query, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("{k}: unknown query parameter; expected {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `from` (now when absent) and `to` (two weeks later when absent).
fn window(app: &Services, query: &Query) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let from = instant(query, "from")?.unwrap_or_else(|| app.clock.now());
    let to = instant(query, "to")?.unwrap_or(from + Duration::days(DEFAULT_WINDOW_DAYS));
    crate::schedule::check_window(from, to)?;
    Ok((from, to))
}

fn people(app: &Services, ids: &[String]) -> Value {
    ids.iter()
        .map(|id| json!({"id": id, "name": app.schedules.member_name(id)}))
        .collect()
}

fn shift_view(app: &Services, f: &FinalShift) -> Value {
    json!({"start": f.shift.start, "end": f.shift.end, "members": people(app, &f.shift.members),
           "source": f.source})
}

async fn list(app: Arc<Services>) -> Result<Response, ApiError> {
    let now = app.clock.now();
    let items: Vec<Value> = app
        .schedules
        .list()?
        .into_iter()
        .map(|s| {
            let on_call = resolve::on_call(&s, now)
                .map(|f| f.shift.members)
                .unwrap_or_default();
            let mut v = serde_json::to_value(app.schedules.view(s)).unwrap_or(Value::Null);
            v["on_call_now"] = people(&app, &on_call);
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "items": items })))
}

async fn create(app: Arc<Services>, input: ScheduleInput) -> Result<Response, ApiError> {
    let schedule = app.schedules.create(input).await?;
    tracing::info!(schedule = %schedule.id, "schedule created");
    Ok(json(StatusCode::CREATED, &app.schedules.view(schedule)))
}

async fn get(app: Arc<Services>, id: String) -> Result<Response, ApiError> {
    let schedule = app.schedules.get(&id)?;
    Ok(json(StatusCode::OK, &app.schedules.view(schedule)))
}

async fn update(app: Arc<Services>, id: String, change: ScheduleChange) -> Result<Response, ApiError> {
    let schedule = app.schedules.update(&id, change).await?;
    Ok(json(StatusCode::OK, &app.schedules.view(schedule)))
}

async fn replace_layers(app: Arc<Services>, id: String, input: LayersInput) -> Result<Response, ApiError> {
    let schedule = app.schedules.replace_layers(&id, input).await?;
    tracing::info!(schedule = %schedule.id, versions = schedule.versions.len(), "schedule layers replaced");
    Ok(json(StatusCode::OK, &app.schedules.view(schedule)))
}

/// Refused while a rule names the schedule, so no level loses its people unnoticed.
async fn delete(app: Arc<Services>, id: String) -> Result<Response, ApiError> {
    let naming: Vec<String> = app
        .incidents
        .rules()?
        .into_iter()
        .filter(|r| r.levels.iter().any(|l| l.schedules.contains(&id)))
        .map(|r| r.name)
        .collect();
    if !naming.is_empty() {
        return Err(ApiError::conflict(
            ErrorCode::ScheduleInUse,
            format!("rules name this schedule: {}", naming.join(", ")),
        ));
    }
    app.schedules.delete(&id).await?;
    tracing::info!(schedule = %id, "schedule deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_override(app: Arc<Services>, id: String, input: OverrideInput) -> Result<Response, ApiError> {
    let created = app.schedules.add_override(&id, input).await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn remove_override(app: Arc<Services>, id: String, override_id: String) -> Result<Response, ApiError> {
    let result = app.schedules.remove_override(&id, &override_id).await?;
    Ok(json(StatusCode::OK, &json!({ "result": result })))
}

/// Who is on call at `at` (now when absent), until when, and who comes next.
async fn on_call(app: Arc<Services>, id: String, query: Query) -> Result<Response, ApiError> {
    only_fields(&query, &["at"])?;
    let at = instant(&query, "at")?.unwrap_or_else(|| app.clock.now());
    let schedule = app.schedules.get(&id)?;
    let ahead = resolve::shifts(&schedule, at, at + Duration::days(NEXT_LOOKAHEAD_DAYS));
    let (current, next) = resolve::current_and_next(&ahead, at);
    Ok(json(
        StatusCode::OK,
        &json!({
            "schedule_id": schedule.id,
            "at": at,
            "members": people(&app, current.map(|f| f.shift.members.as_slice()).unwrap_or_default()),
            "source": current.map(|f| &f.source),
            "until": current.map(|f| f.shift.end),
            "next": next.map(|f| shift_view(&app, f)),
        }),
    ))
}

/// The final schedule, each layer and the gaps of a window; `member` keeps that person's shifts.
async fn shifts(app: Arc<Services>, id: String, query: Query) -> Result<Response, ApiError> {
    only_fields(&query, &["from", "to", "member"])?;
    let (from, to) = window(&app, &query)?;
    let mut resolved = app.schedules.shifts(&id, from, to)?;
    if let Some(member) = query.get("member") {
        resolved.final_shifts.retain(|f| f.shift.members.contains(member));
        for layer in &mut resolved.layers {
            layer.shifts.retain(|s| s.members.contains(member));
        }
    }
    let final_shifts: Vec<Value> = resolved
        .final_shifts
        .iter()
        .map(|f| shift_view(&app, f))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"from": from, "to": to, "final": final_shifts, "layers": resolved.layers,
                "gaps": resolved.gaps}),
    ))
}

async fn member_shifts(app: Arc<Services>, member: String, query: Query) -> Result<Response, ApiError> {
    only_fields(&query, &["from", "to"])?;
    let (from, to) = window(&app, &query)?;
    app.incidents.members.get(&member)?;
    let items = app.schedules.member_shifts(&member, from, to)?;
    Ok(json(
        StatusCode::OK,
        &json!({"from": from, "to": to, "items": items}),
    ))
}

/// Exactly one of `schedule_id` and `member_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FeedInput {
    schedule_id: Option<String>,
    member_id: Option<String>,
}

async fn create_feed(app: Arc<Services>, input: FeedInput) -> Result<Response, ApiError> {
    let target = match (input.schedule_id, input.member_id) {
        (Some(id), None) => FeedTarget::Schedule(id),
        (None, Some(id)) => FeedTarget::Member(id),
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                "schedule_id: give exactly one of schedule_id and member_id",
            ));
        }
    };
    let (feed, token) = app.schedules.create_feed(target).await?;
    let url = format!("{}/calendar/{token}.ics", app.settings.public_base());
    tracing::info!(feed = %feed.id, "calendar feed created");
    let mut v = serde_json::to_value(&feed).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("token_hash");
        o.insert("url".into(), url.into());
    }
    Ok(json(StatusCode::CREATED, &v))
}

async fn list_feeds(app: Arc<Services>) -> Result<Response, ApiError> {
    let items: Vec<Value> = app
        .schedules
        .feeds()?
        .into_iter()
        .map(|f| {
            let mut v = serde_json::to_value(&f).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("token_hash");
            }
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "items": items })))
}

async fn revoke_feed(app: Arc<Services>, id: String) -> Result<Response, ApiError> {
    app.schedules.revoke_feed(&id).await?;
    tracing::info!(feed = %id, "calendar feed revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A feed by its secret: every unknown, revoked or malformed token gets the same 404.
async fn calendar(app: Arc<Services>, file: String) -> Result<Response, ApiError> {
    let token = file.strip_suffix(".ics").unwrap_or_default();
    match app.schedules.render_feed(token)? {
        Some(text) => Ok(warp::reply::with_header(
            warp::reply::with_header(text, "content-type", "text/calendar; charset=utf-8"),
            "cache-control",
            "private, max-age=300",
        )
        .into_response()),
        None => Err(ApiError::not_found("no such calendar")),
    }
}

route_table! {
    pub fn public_routes(app, limit = 0), const PUBLIC_ROUTES, Public;
    /// A calendar feed by its secret (`{token}.ics`); unknown, revoked and malformed tokens all
    /// answer the same 404.
    GET ["calendar" / {file}] public => calendar -> 200 other("text/calendar");
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Lists the schedules, with who is on call now.
    GET ["api" / "v1" / "schedules"] admin => list -> 200 json(Page<AnyJson>);
    /// Creates a schedule.
    POST ["api" / "v1" / "schedules"] admin, json(ScheduleInput) => create -> 201 json(ScheduleView);
    /// One schedule: the version in force now on top, every version below.
    GET ["api" / "v1" / "schedules" / {id}] admin => get -> 200 json(ScheduleView);
    /// Changes a schedule's name, description, notices or daily card.
    PATCH ["api" / "v1" / "schedules" / {id}] admin, json(ScheduleChange) => update -> 200 json(ScheduleView);
    /// Deletes a schedule (refused while an escalation rule names it).
    DELETE ["api" / "v1" / "schedules" / {id}] admin => delete -> 204;
    /// Replaces a schedule's layers from a moment on (a new version).
    PUT ["api" / "v1" / "schedules" / {id} / "layers"] admin, json(LayersInput)
        => replace_layers -> 200 json(ScheduleView);
    /// Adds an override: someone else covers a span.
    POST ["api" / "v1" / "schedules" / {id} / "overrides"] admin, json(OverrideInput)
        => add_override -> 201 json(AnyJson);
    /// Removes an override.
    DELETE ["api" / "v1" / "schedules" / {id} / "overrides" / {override_id}] admin
        => remove_override -> 200 json(AnyJson);
    /// Who is on call at `at` (now when absent), until when, and who comes next.
    GET ["api" / "v1" / "schedules" / {id} / "on-call"] admin with(warp::query::<Query>())
        => on_call -> 200 json(AnyJson);
    /// The final shifts, each layer's and the gaps of a window (`from`, `to`, `member`).
    GET ["api" / "v1" / "schedules" / {id} / "shifts"] admin with(warp::query::<Query>())
        => shifts -> 200 json(AnyJson);
    /// One person's shifts across every schedule in a window (`from`, `to`).
    GET ["api" / "v1" / "members" / {id} / "shifts"] admin with(warp::query::<Query>())
        => member_shifts -> 200 json(AnyJson);
    /// Lists the calendar feeds (never their secrets).
    GET ["api" / "v1" / "calendar-feeds"] admin => list_feeds -> 200 json(Page<AnyJson>);
    /// Creates a calendar feed of a schedule or a member; the answer carries its secret URL.
    POST ["api" / "v1" / "calendar-feeds"] admin, json(FeedInput) => create_feed -> 201 json(AnyJson);
    /// Revokes a calendar feed.
    DELETE ["api" / "v1" / "calendar-feeds" / {id}] admin => revoke_feed -> 204;
}
