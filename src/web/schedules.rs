//! `/api/v1/schedules` (schedules, their layers and overrides, who is on call, shifts),
//! `/api/v1/members/{id}/shifts` (one person's shifts), `/api/v1/calendar-feeds` (secret calendar
//! URLs) on the admin listener, and `GET /calendar/{token}.ics` on the public one, where
//! calendar apps fetch a feed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::{ApiError, ErrorCode, json};
use super::reply::{Created, Json, Page};
use crate::route_table;
use crate::schedule::model::{Feed, FeedTarget, Override};
use crate::schedule::resolve::{Gap, LayerShifts};
use crate::schedule::{
    FinalShift, LayersInput, MemberShift, OverrideInput, OverrideRemoval, ScheduleChange, ScheduleError,
    ScheduleInput, ScheduleView, Source, resolve,
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

/// Query parameters the route does not take; each query below refuses them by name (400 naming
/// the first), which a typed query with `deny_unknown_fields` would not.
type Unknown = BTreeMap<String, String>;

/// `GET /api/v1/schedules/{id}/on-call`'s query.
#[derive(Deserialize, IntoParams)]
struct OnCallQuery {
    /// The instant asked about (RFC 3339, e.g. `2026-12-07T09:00:00Z`); now when absent.
    #[param(format = DateTime)]
    at: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    unknown: Unknown,
}

/// `GET /api/v1/schedules/{id}/shifts`'s query.
#[derive(Deserialize, IntoParams)]
struct ShiftsQuery {
    /// The window's start (RFC 3339); now when absent.
    #[param(format = DateTime)]
    from: Option<String>,
    /// The window's end (RFC 3339); two weeks after `from` when absent, at most 90 days after it.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this member's (id) shifts.
    member: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    unknown: Unknown,
}

/// `GET /api/v1/members/{id}/shifts`'s query.
#[derive(Deserialize, IntoParams)]
struct WindowQuery {
    /// The window's start (RFC 3339); now when absent.
    #[param(format = DateTime)]
    from: Option<String>,
    /// The window's end (RFC 3339); two weeks after `from` when absent, at most 90 days after it.
    #[param(format = DateTime)]
    to: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    unknown: Unknown,
}

fn instant(field: &str, text: Option<&String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|text| {
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

fn no_unknown(unknown: &Unknown, allowed: &[&str]) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(k) => Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("{k}: unknown query parameter; expected {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `from` (now when absent) and `to` (two weeks later when absent).
fn window(
    app: &Services,
    from: Option<&String>,
    to: Option<&String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let from = instant("from", from)?.unwrap_or_else(|| app.clock.now());
    let to = instant("to", to)?.unwrap_or(from + Duration::days(DEFAULT_WINDOW_DAYS));
    crate::schedule::check_window(from, to)?;
    Ok((from, to))
}

/// A member as the schedule answers name them.
#[derive(Serialize, ToSchema)]
pub struct Person {
    id: String,
    /// The member's name, or the id when the member is gone.
    name: String,
}

fn people(app: &Services, ids: &[String]) -> Vec<Person> {
    ids.iter()
        .map(|id| Person {
            id: id.clone(),
            name: app.schedules.member_name(id),
        })
        .collect()
}

/// A final shift with its people named.
#[derive(Serialize, ToSchema)]
pub struct ShiftView {
    end: DateTime<Utc>,
    members: Vec<Person>,
    source: Source,
    start: DateTime<Utc>,
}

fn shift_view(app: &Services, f: &FinalShift) -> ShiftView {
    ShiftView {
        end: f.shift.end,
        members: people(app, &f.shift.members),
        source: f.source.clone(),
        start: f.shift.start,
    }
}

/// A schedule in the list, with who is on call in it now.
#[derive(Serialize, ToSchema)]
pub struct ScheduleListed {
    #[serde(flatten)]
    schedule: ScheduleView,
    on_call_now: Vec<Person>,
}

async fn list(app: Arc<Services>) -> Result<Page<ScheduleListed>, ApiError> {
    let now = app.clock.now();
    let items = app
        .schedules
        .list()?
        .into_iter()
        .map(|s| {
            let on_call = resolve::on_call(&s, now)
                .map(|f| f.shift.members)
                .unwrap_or_default();
            ScheduleListed {
                schedule: app.schedules.view(s),
                on_call_now: people(&app, &on_call),
            }
        })
        .collect();
    Ok(Page::new(items))
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

async fn add_override(
    app: Arc<Services>,
    id: String,
    input: OverrideInput,
) -> Result<Created<Override>, ApiError> {
    Ok(Created(app.schedules.add_override(&id, input).await?))
}

/// What removing an override did.
#[derive(Serialize, ToSchema)]
pub struct OverrideRemoved {
    result: OverrideRemoval,
}

async fn remove_override(
    app: Arc<Services>,
    id: String,
    override_id: String,
) -> Result<Json<OverrideRemoved>, ApiError> {
    let result = app.schedules.remove_override(&id, &override_id).await?;
    Ok(Json(OverrideRemoved { result }))
}

/// Who is on call at an instant, from which source, until when, and who comes next.
#[derive(Serialize, ToSchema)]
pub struct OnCallView {
    at: DateTime<Utc>,
    /// Empty: nobody is on call.
    members: Vec<Person>,
    /// The next shift within two weeks.
    next: Option<ShiftView>,
    schedule_id: String,
    source: Option<Source>,
    until: Option<DateTime<Utc>>,
}

/// Who is on call at `at` (now when absent), until when, and who comes next.
async fn on_call(app: Arc<Services>, id: String, query: OnCallQuery) -> Result<Json<OnCallView>, ApiError> {
    no_unknown(&query.unknown, &["at"])?;
    let at = instant("at", query.at.as_ref())?.unwrap_or_else(|| app.clock.now());
    let schedule = app.schedules.get(&id)?;
    let ahead = resolve::shifts(&schedule, at, at + Duration::days(NEXT_LOOKAHEAD_DAYS));
    let (current, next) = resolve::current_and_next(&ahead, at);
    Ok(Json(OnCallView {
        at,
        members: people(
            &app,
            current.map(|f| f.shift.members.as_slice()).unwrap_or_default(),
        ),
        next: next.map(|f| shift_view(&app, f)),
        schedule_id: schedule.id,
        source: current.map(|f| f.source.clone()),
        until: current.map(|f| f.shift.end),
    }))
}

/// A window's final shifts, each layer's own and the gaps where nobody is on call.
#[derive(Serialize, ToSchema)]
pub struct ShiftsView {
    #[serde(rename = "final")]
    final_shifts: Vec<ShiftView>,
    from: DateTime<Utc>,
    gaps: Vec<Gap>,
    layers: Vec<LayerShifts>,
    to: DateTime<Utc>,
}

/// The final schedule, each layer and the gaps of a window; `member` keeps that person's shifts.
async fn shifts(app: Arc<Services>, id: String, query: ShiftsQuery) -> Result<Json<ShiftsView>, ApiError> {
    no_unknown(&query.unknown, &["from", "to", "member"])?;
    let (from, to) = window(&app, query.from.as_ref(), query.to.as_ref())?;
    let mut resolved = app.schedules.shifts(&id, from, to)?;
    if let Some(member) = &query.member {
        resolved.final_shifts.retain(|f| f.shift.members.contains(member));
        for layer in &mut resolved.layers {
            layer.shifts.retain(|s| s.members.contains(member));
        }
    }
    Ok(Json(ShiftsView {
        final_shifts: resolved
            .final_shifts
            .iter()
            .map(|f| shift_view(&app, f))
            .collect(),
        from,
        gaps: resolved.gaps,
        layers: resolved.layers,
        to,
    }))
}

/// One person's shifts across every schedule in a window.
#[derive(Serialize, ToSchema)]
pub struct MemberShiftsView {
    from: DateTime<Utc>,
    items: Vec<MemberShift>,
    to: DateTime<Utc>,
}

async fn member_shifts(
    app: Arc<Services>,
    member: String,
    query: WindowQuery,
) -> Result<Json<MemberShiftsView>, ApiError> {
    no_unknown(&query.unknown, &["from", "to"])?;
    let (from, to) = window(&app, query.from.as_ref(), query.to.as_ref())?;
    app.incidents.members.get(&member)?;
    let items = app.schedules.member_shifts(&member, from, to)?;
    Ok(Json(MemberShiftsView { from, items, to }))
}

/// Exactly one of `schedule_id` and `member_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FeedInput {
    schedule_id: Option<String>,
    member_id: Option<String>,
}

/// A calendar feed as the API shows it (never its secret's digest).
#[derive(Serialize, ToSchema)]
pub struct FeedView {
    created_at: DateTime<Utc>,
    id: String,
    /// Whose shifts it carries: `schedule` or `member`, with the id.
    #[serde(flatten)]
    target: FeedTarget,
}

impl From<Feed> for FeedView {
    fn from(feed: Feed) -> Self {
        FeedView {
            created_at: feed.created_at,
            id: feed.id,
            target: feed.target,
        }
    }
}

/// A new calendar feed with its secret URL, shown this once (only its digest is kept).
#[derive(Serialize, ToSchema)]
pub struct FeedCreated {
    #[serde(flatten)]
    feed: FeedView,
    url: String,
}

async fn create_feed(app: Arc<Services>, input: FeedInput) -> Result<Created<FeedCreated>, ApiError> {
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
    Ok(Created(FeedCreated {
        feed: FeedView::from(feed),
        url,
    }))
}

async fn list_feeds(app: Arc<Services>) -> Result<Page<FeedView>, ApiError> {
    Ok(Page::new(
        app.schedules.feeds()?.into_iter().map(FeedView::from).collect(),
    ))
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
    GET ["api" / "v1" / "schedules"] admin => list -> 200 json(Page<ScheduleListed>);
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
        => add_override -> 201 json(Override);
    /// Removes an override.
    DELETE ["api" / "v1" / "schedules" / {id} / "overrides" / {override_id}] admin
        => remove_override -> 200 json(OverrideRemoved);
    /// Who is on call at `at` (now when absent), until when, and who comes next.
    GET ["api" / "v1" / "schedules" / {id} / "on-call"] admin query(OnCallQuery)
        => on_call -> 200 json(OnCallView);
    /// The final shifts, each layer's and the gaps of a window (`from`, `to`, `member`).
    GET ["api" / "v1" / "schedules" / {id} / "shifts"] admin query(ShiftsQuery)
        => shifts -> 200 json(ShiftsView);
    /// One person's shifts across every schedule in a window (`from`, `to`).
    GET ["api" / "v1" / "members" / {id} / "shifts"] admin query(WindowQuery)
        => member_shifts -> 200 json(MemberShiftsView);
    /// Lists the calendar feeds (never their secrets).
    GET ["api" / "v1" / "calendar-feeds"] admin => list_feeds -> 200 json(Page<FeedView>);
    /// Creates a calendar feed of a schedule or a member; the answer carries its secret URL.
    POST ["api" / "v1" / "calendar-feeds"] admin, json(FeedInput) => create_feed -> 201 json(FeedCreated);
    /// Revokes a calendar feed.
    DELETE ["api" / "v1" / "calendar-feeds" / {id}] admin => revoke_feed -> 204;
}
