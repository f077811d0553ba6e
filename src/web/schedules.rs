//! `/api/v1/schedules` (schedules, their layers and overrides, who is on call, shifts),
//! `/api/v1/members/{id}/shifts` (one person's shifts), `/api/v1/calendar-feeds` (secret calendar
//! URLs) on the admin listener, and `GET /calendar/{token}.ics` on the public one, where
//! calendar apps fetch a feed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::body;
use super::error::{ApiError, json, respond};
use super::integrations::guarded;
use crate::schedule::model::FeedTarget;
use crate::schedule::{
    FinalShift, LayersInput, OverrideInput, ScheduleChange, ScheduleError, ScheduleInput, resolve,
};
use crate::services::Services;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid { .. } => ApiError::bad_request("invalid_field", e.to_string()),
            ScheduleError::NotFound(_) => ApiError::not_found(e.to_string()),
            ScheduleError::Conflict(_) => ApiError::conflict("conflict", e.to_string()),
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
                        "invalid_field",
                        format!("{field}: {text:?} is not an RFC 3339 instant such as 2026-12-07T09:00:00Z"),
                    )
                })
        })
        .transpose()
}

fn only_fields(query: &Query, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(
            "invalid_field",
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
            "schedule_in_use",
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

#[derive(Debug, Deserialize)]
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
                "invalid_field",
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

/// The public listener's route: calendar apps fetch feeds from the internet.
pub fn public_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    warp::path!("calendar" / String)
        .and(warp::get())
        .then(move |file: String| calendar(app.clone(), file))
        .map(respond)
        .boxed()
}

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = guarded(app);
    let query = || warp::query::<Query>();

    let list = warp::path!("api" / "v1" / "schedules")
        .and(warp::get())
        .and(auth.clone())
        .then(list)
        .map(respond);
    let create = warp::path!("api" / "v1" / "schedules")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<ScheduleInput>(limit))
        .then(create)
        .map(respond);
    let get = warp::path!("api" / "v1" / "schedules" / String)
        .and(warp::get())
        .and(auth.clone())
        .then(|id, app| get(app, id))
        .map(respond);
    let update = warp::path!("api" / "v1" / "schedules" / String)
        .and(warp::patch())
        .and(auth.clone())
        .and(body::json::<ScheduleChange>(limit))
        .then(|id, app, change| update(app, id, change))
        .map(respond);
    let delete = warp::path!("api" / "v1" / "schedules" / String)
        .and(warp::delete())
        .and(auth.clone())
        .then(|id, app| delete(app, id))
        .map(respond);
    let layers = warp::path!("api" / "v1" / "schedules" / String / "layers")
        .and(warp::put())
        .and(auth.clone())
        .and(body::json::<LayersInput>(limit))
        .then(|id, app, input| replace_layers(app, id, input))
        .map(respond);
    let add_override = warp::path!("api" / "v1" / "schedules" / String / "overrides")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<OverrideInput>(limit))
        .then(|id, app, input| add_override(app, id, input))
        .map(respond);
    let remove_override = warp::path!("api" / "v1" / "schedules" / String / "overrides" / String)
        .and(warp::delete())
        .and(auth.clone())
        .then(|id, oid, app| remove_override(app, id, oid))
        .map(respond);
    let on_call = warp::path!("api" / "v1" / "schedules" / String / "on-call")
        .and(warp::get())
        .and(auth.clone())
        .and(query())
        .then(|id, app, q| on_call(app, id, q))
        .map(respond);
    let shifts = warp::path!("api" / "v1" / "schedules" / String / "shifts")
        .and(warp::get())
        .and(auth.clone())
        .and(query())
        .then(|id, app, q| shifts(app, id, q))
        .map(respond);
    let member_shifts = warp::path!("api" / "v1" / "members" / String / "shifts")
        .and(warp::get())
        .and(auth.clone())
        .and(query())
        .then(|id, app, q| member_shifts(app, id, q))
        .map(respond);
    let list_feeds = warp::path!("api" / "v1" / "calendar-feeds")
        .and(warp::get())
        .and(auth.clone())
        .then(list_feeds)
        .map(respond);
    let create_feed = warp::path!("api" / "v1" / "calendar-feeds")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<FeedInput>(limit))
        .then(create_feed)
        .map(respond);
    let revoke_feed = warp::path!("api" / "v1" / "calendar-feeds" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id, app| revoke_feed(app, id))
        .map(respond);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(layers)
        .unify()
        .or(add_override)
        .unify()
        .or(remove_override)
        .unify()
        .or(on_call)
        .unify()
        .or(shifts)
        .unify()
        .or(member_shifts)
        .unify()
        .or(list_feeds)
        .unify()
        .or(create_feed)
        .unify()
        .or(revoke_feed)
        .unify()
        .boxed()
}
