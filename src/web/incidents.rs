//! Incident routes on the admin listener: members, incidents and their actions, alert sources,
//! escalation rules (admin auth), and the alert receivers (Alertmanager, the standard alert
//! event), which authenticate by their source's integration key instead.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::body;
use super::error::{ApiError, ErrorCode};
use super::reply::{Created, Json, Page};
use crate::auth::Principal;
use crate::incident::ingest::{AlertmanagerPayload, StandardEvent};
use crate::incident::members::{LinkReport, MemberInput};
use crate::incident::model::{Actor, AlertSource, Incident, Member, Rule, SentCard, Severity, Status, Via};
use crate::incident::rules::{RuleInput, RuleView};
use crate::incident::war_room::{Requester, WarRoom, WarRoomOutcome};
use crate::incident::{Action, AlertOutcome, IncidentError, IncidentQuery, NewIncident};
use crate::route_table;
use crate::services::Services;

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, e.to_string()),
            IncidentError::NotFound(_) => ApiError::not_found(e.to_string()),
            IncidentError::Conflict(_) => ApiError::conflict(ErrorCode::Conflict, e.to_string()),
            IncidentError::Lark(_) => ApiError::new(ErrorCode::LarkError, e.to_string()),
            IncidentError::WarRoomDisabled(_) => {
                ApiError::conflict(ErrorCode::WarRoomDisabled, e.to_string())
            }
            IncidentError::Store(s) => s.into(),
        }
    }
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

route_table! {
    pub fn routes(app, limit = app.settings.max_body_bytes), const ROUTES, Admin;
    /// Lists incidents, newest first (without their timelines); `next_before` pages on.
    GET ["api" / "v1" / "incidents"] admin query(IncidentQuery)
        => list_incidents -> 200 json(IncidentPage);
    /// Opens an incident (201), or merges it into the open one with the same `dedup_key` (200).
    POST ["api" / "v1" / "incidents"] admin_as, json(NewIncident)
        => open_incident -> 201 json(Incident), 200 json(Incident);
    /// One incident with its timeline, cards and war room.
    GET ["api" / "v1" / "incidents" / {id}] admin => get_incident -> 200 json(IncidentDetail);
    /// Opens the incident's war room, a Lark group chat (201), or answers the one it has (200).
    POST ["api" / "v1" / "incidents" / {id} / "war-room"] admin_as, raw(WarRoomBody)
        => open_war_room -> 201 json(WarRoomOutcome), 200 json(WarRoomOutcome);
    /// The incident's war room.
    GET ["api" / "v1" / "incidents" / {id} / "war-room"] admin => get_war_room -> 200 json(WarRoom);
    /// Acts on an incident: `acknowledge`, `unacknowledge`, `resolve`, `snooze`, `reopen`,
    /// `reassign` or `note`.
    POST ["api" / "v1" / "incidents" / {id} / {action}] admin_as, raw(ActionBody)
        => act -> 200 json(Incident);
    /// Lists the members.
    GET ["api" / "v1" / "members"] admin => list_members -> 200 json(Page<Member>);
    /// Adds a member.
    POST ["api" / "v1" / "members"] admin, json(MemberInput) => create_member -> 201 json(Member);
    /// Links members to their Lark identities by email or mobile, for one integration.
    POST ["api" / "v1" / "members" / "link"] admin query(LinkQuery)
        => link_members -> 200 json(LinkReport);
    /// One member.
    GET ["api" / "v1" / "members" / {id}] admin => get_member -> 200 json(Member);
    /// Changes the given fields of a member.
    PATCH ["api" / "v1" / "members" / {id}] admin, json(MemberInput) => update_member -> 200 json(Member);
    /// Deletes a member.
    DELETE ["api" / "v1" / "members" / {id}] admin => delete_member -> 204;
    /// Lists the alert sources.
    GET ["api" / "v1" / "sources"] admin => list_sources -> 200 json(Page<SourceView>);
    /// Adds an alert source; the answer carries its integration key, this once.
    POST ["api" / "v1" / "sources"] admin, json(SourceInput) => create_source -> 201 json(SourceCreated);
    /// Deletes an alert source.
    DELETE ["api" / "v1" / "sources" / {id}] admin => delete_source -> 204;
    /// Lists the escalation rules, in order.
    GET ["api" / "v1" / "rules"] admin => list_rules -> 200 json(Page<RuleView>);
    /// Adds an escalation rule.
    POST ["api" / "v1" / "rules"] admin, json(RuleInput) => create_rule -> 201 json(Rule);
    /// One escalation rule, with what needs fixing for it to reach everyone.
    GET ["api" / "v1" / "rules" / {id}] admin => get_rule -> 200 json(RuleView);
    /// Replaces an escalation rule.
    PUT ["api" / "v1" / "rules" / {id}] admin, json(RuleInput) => replace_rule -> 200 json(Rule);
    /// Deletes an escalation rule.
    DELETE ["api" / "v1" / "rules" / {id}] admin => delete_rule -> 204;
    /// Receives an Alertmanager webhook.
    POST ["api" / "v1" / "alerts" / "alertmanager"] key with(integration_key()), raw(AlertmanagerPayload)
        => alertmanager -> 200 json(AlertOutcome);
    /// Receives a standard alert event; it answers in the event's own envelope, refusals
    /// included (other failures keep their status with the code `InternalError`).
    POST ["api" / "v1" / "alerts" / "standard"] key with(integration_key()), raw(StandardEvent)
        => standard_alert -> 200 json(StandardAnswer), 400 json(StandardRefusal), 401 json(StandardRefusal);
}

fn actor(principal: &Principal) -> Actor {
    let who = principal.describe();
    Actor {
        via: Via::Api,
        who: Some(who.clone()),
        name: Some(who),
    }
}

/// What an action takes: `minutes` (snooze), `assignees` (reassign), `text` (note).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    minutes: Option<u32>,
    assignees: Option<Vec<String>>,
    text: Option<String>,
}

/// `POST /api/v1/incidents/{id}/war-room`: optionally the member who asks (added to the room).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WarRoomBody {
    member_id: Option<String>,
}

fn action(name: &str, body: ActionBody) -> Result<Action, ApiError> {
    let missing =
        |field: &str| ApiError::bad_request(ErrorCode::InvalidField, format!("{field}: required for {name}"));
    Ok(match name {
        "acknowledge" => Action::Acknowledge,
        "unacknowledge" => Action::Unacknowledge,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        "snooze" => Action::Snooze {
            minutes: body.minutes.ok_or_else(|| missing("minutes"))?,
        },
        "reassign" => Action::Reassign {
            assignees: body.assignees.ok_or_else(|| missing("assignees"))?,
        },
        "note" => Action::Note {
            text: body.text.ok_or_else(|| missing("text"))?,
        },
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?}; use acknowledge, unacknowledge, resolve, snooze, reopen, reassign or note"
            )));
        }
    })
}

/// An action body may be empty (`acknowledge` needs nothing).
fn action_body(bytes: &Bytes) -> Result<ActionBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    body::decode_json(bytes)
}

/// An incident in a list: every field but the timeline (fields in name order, as the list has
/// always sent them).
#[derive(Serialize, ToSchema)]
pub struct IncidentSummary {
    /// Names of those who acknowledged it.
    acknowledged_by: Vec<String>,
    /// How many alerts merged into it (1 for the one that opened it).
    alert_count: u64,
    /// The responders, by member id.
    assignees: Vec<String>,
    created_at: DateTime<Utc>,
    dedup_key: Option<String>,
    description: String,
    id: String,
    /// The integration its cards go through (the rule's).
    integration_id: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    /// The short number people type (`#42`).
    number: u64,
    resolved_at: Option<DateTime<Utc>>,
    /// The escalation rule that matched when it opened (or reopened).
    rule_id: Option<String>,
    severity: Severity,
    /// Notifications pause until then.
    snoozed_until: Option<DateTime<Utc>>,
    /// The alert source it came from, if any.
    source_id: Option<String>,
    status: Status,
    title: String,
    updated_at: DateTime<Utc>,
    /// Bumped on every change.
    version: u64,
}

impl From<Incident> for IncidentSummary {
    /// Names every field, so a field added to `Incident` is a decision here too.
    fn from(incident: Incident) -> Self {
        let Incident {
            id,
            number,
            title,
            description,
            severity,
            labels,
            status,
            snoozed_until,
            assignees,
            acknowledged_by,
            dedup_key,
            source_id,
            rule_id,
            integration_id,
            alert_count,
            created_at,
            updated_at,
            resolved_at,
            version,
            timeline: _,
        } = incident;
        IncidentSummary {
            acknowledged_by,
            alert_count,
            assignees,
            created_at,
            dedup_key,
            description,
            id,
            integration_id,
            labels,
            number,
            resolved_at,
            rule_id,
            severity,
            snoozed_until,
            source_id,
            status,
            title,
            updated_at,
            version,
        }
    }
}

/// A page of incidents, newest first; `next_before` pages on.
#[derive(Serialize, ToSchema)]
pub struct IncidentPage {
    items: Vec<IncidentSummary>,
    next_before: Option<u64>,
}

async fn list_incidents(app: Arc<Services>, q: IncidentQuery) -> Result<Json<IncidentPage>, ApiError> {
    let items = app.incidents.list(&q)?;
    let next_before = items.last().map(|i| i.number);
    Ok(Json(IncidentPage {
        items: items.into_iter().map(IncidentSummary::from).collect(),
        next_before,
    }))
}

async fn open_incident(app: Arc<Services>, p: Principal, new: NewIncident) -> Result<Response, ApiError> {
    let outcome = app.incidents.open(new, actor(&p)).await?;
    let (status, id) = match &outcome {
        AlertOutcome::Opened { incident_id, .. } => (StatusCode::CREATED, incident_id.clone()),
        AlertOutcome::Merged { incident_id, .. } | AlertOutcome::Resolved { incident_id, .. } => {
            (StatusCode::OK, incident_id.clone())
        }
        AlertOutcome::NothingOpen => return Err(ApiError::internal("no incident opened")),
    };
    let incident = app.incidents.get(&id)?;
    Ok(json_reply(status, &incident))
}

/// An incident with the cards sent for it and its war room.
#[derive(Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    incident: Incident,
    cards: Vec<SentCard>,
    war_room: Option<WarRoom>,
}

async fn get_incident(app: Arc<Services>, id: String) -> Result<Json<IncidentDetail>, ApiError> {
    let incident = app.incidents.get(&id)?;
    let cards = app.incidents.cards(&incident.id)?;
    let war_room = app.incidents.war_room(&incident.id)?;
    Ok(Json(IncidentDetail {
        incident,
        cards,
        war_room,
    }))
}

async fn open_war_room(
    app: Arc<Services>,
    id: String,
    p: Principal,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: WarRoomBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        WarRoomBody::default()
    } else {
        body::decode_json(&bytes)?
    };
    let requester = match body.member_id {
        Some(member_id) => Requester::Member { member_id },
        None => Requester::Nobody { name: p.describe() },
    };
    let outcome = app.incidents.open_war_room(&id, requester).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_reply(status, &outcome))
}

async fn get_war_room(app: Arc<Services>, id: String) -> Result<Response, ApiError> {
    let incident = app.incidents.get(&id)?;
    let room = app
        .incidents
        .war_room(&incident.id)?
        .ok_or_else(|| ApiError::not_found(format!("incident #{} has no war room", incident.number)))?;
    Ok(json_reply(StatusCode::OK, &room))
}

async fn act(
    app: Arc<Services>,
    id: String,
    name: String,
    p: Principal,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let action = action(&name, action_body(&bytes)?)?;
    let incident = app.incidents.act(&id, action, actor(&p)).await?;
    Ok(json_reply(StatusCode::OK, &incident))
}

async fn list_members(app: Arc<Services>) -> Result<Page<Member>, ApiError> {
    Ok(Page::new(app.incidents.members.list()?))
}

async fn create_member(app: Arc<Services>, input: MemberInput) -> Result<Created<Member>, ApiError> {
    Ok(Created(app.incidents.members.create(input).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LinkQuery {
    integration_id: String,
}

async fn link_members(app: Arc<Services>, q: LinkQuery) -> Result<Json<LinkReport>, ApiError> {
    let client = app
        .lark
        .get(&q.integration_id)
        .ok_or_else(|| ApiError::not_found(format!("no integration {}", q.integration_id)))?;
    let report = app
        .incidents
        .members
        .link_by_lookup(&q.integration_id, &client, None)
        .await?;
    Ok(Json(report))
}

async fn get_member(app: Arc<Services>, id: String) -> Result<Json<Member>, ApiError> {
    Ok(Json(app.incidents.members.get(&id)?))
}

async fn update_member(app: Arc<Services>, id: String, input: MemberInput) -> Result<Json<Member>, ApiError> {
    Ok(Json(app.incidents.members.update(&id, input).await?))
}

async fn delete_member(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.incidents.members.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An alert source (never its key).
#[derive(Serialize, ToSchema)]
pub struct SourceView {
    id: String,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&AlertSource> for SourceView {
    fn from(source: &AlertSource) -> Self {
        SourceView {
            id: source.id.clone(),
            name: source.name.clone(),
            created_at: source.created_at,
        }
    }
}

/// A new alert source with its integration key, shown this once (only its hash is kept).
#[derive(Serialize, ToSchema)]
pub struct SourceCreated {
    #[serde(flatten)]
    view: SourceView,
    integration_key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SourceInput {
    name: String,
}

async fn list_sources(app: Arc<Services>) -> Result<Page<SourceView>, ApiError> {
    Ok(Page::new(
        app.incidents.sources()?.iter().map(SourceView::from).collect(),
    ))
}

async fn create_source(app: Arc<Services>, input: SourceInput) -> Result<Created<SourceCreated>, ApiError> {
    let (source, key) = app.incidents.create_source(&input.name).await?;
    Ok(Created(SourceCreated {
        view: SourceView::from(&source),
        integration_key: key,
    }))
}

async fn delete_source(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.incidents.delete_source(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_rules(app: Arc<Services>) -> Result<Page<RuleView>, ApiError> {
    Ok(Page::new(app.incidents.rule_views()?))
}

async fn create_rule(app: Arc<Services>, input: RuleInput) -> Result<Created<Rule>, ApiError> {
    let known = app.integrations.get(&input.integration_id).is_some();
    Ok(Created(app.incidents.save_rule(None, input, known).await?))
}

async fn get_rule(app: Arc<Services>, id: String) -> Result<Json<RuleView>, ApiError> {
    let rule = app.incidents.rule(&id).and_then(|r| app.incidents.rule_view(r))?;
    Ok(Json(rule))
}

async fn replace_rule(app: Arc<Services>, id: String, input: RuleInput) -> Result<Json<Rule>, ApiError> {
    let known = app.integrations.get(&input.integration_id).is_some();
    Ok(Json(app.incidents.save_rule(Some(&id), input, known).await?))
}

async fn delete_rule(app: Arc<Services>, id: String) -> Result<StatusCode, ApiError> {
    app.incidents.delete_rule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The integration key from `?integration_key=` or `Authorization: Bearer`.
fn integration_key() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and(warp::header::optional::<String>("authorization"))
        .map(|query: String, authz: Option<String>| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "integration_key")
                .map(|(_, v)| v.into_owned())
                .or_else(|| authz.and_then(|a| a.strip_prefix("Bearer ").map(|k| k.trim().to_string())))
                .filter(|k| !k.is_empty())
        })
}

fn source_for(app: &Services, key: Option<String>) -> Result<AlertSource, ApiError> {
    let key = key.ok_or_else(|| {
        ApiError::unauthorized("give the source's integration_key as a query parameter or a bearer token")
    })?;
    app.incidents
        .source_by_key(&key)?
        .ok_or_else(|| ApiError::unauthorized("unknown integration_key"))
}

async fn alertmanager(
    app: Arc<Services>,
    key: Option<String>,
    bytes: Bytes,
) -> Result<Json<AlertOutcome>, ApiError> {
    let source = source_for(&app, key)?;
    let payload: AlertmanagerPayload = body::decode_json(&bytes)?;
    let event = payload.into_event()?;
    Ok(Json(app.incidents.alert(&source, event).await?))
}

/// The standard alert event's answer: what the alert did, under the request's id.
#[derive(Serialize, ToSchema)]
pub struct StandardAnswer {
    data: StandardOutcome,
    request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct StandardOutcome {
    /// The event's `alert_key`, or the one derived from its title and labels.
    alert_key: String,
    #[serde(flatten)]
    outcome: AlertOutcome,
}

/// A refused standard alert event, in the event's own envelope.
#[derive(Serialize, ToSchema)]
pub struct StandardRefusal {
    error: StandardError,
    request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct StandardError {
    /// `Unauthorized`, `InvalidParameter`, `ResourceNotFound` or `InternalError`.
    #[schema(value_type = String)]
    code: &'static str,
    message: String,
}

/// Answers in the standard alert event's own envelope, errors included.
async fn standard_alert(app: Arc<Services>, key: Option<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let request_id = crate::ids::random_hex(16);
    let result = async {
        let source = source_for(&app, key)?;
        let event: StandardEvent = body::decode_json(&bytes)?;
        let event = event.into_event()?;
        let alert_key = event.key.clone();
        let outcome = app.incidents.alert(&source, event).await?;
        Ok::<_, ApiError>((alert_key, outcome))
    }
    .await;
    Ok(match result {
        Ok((alert_key, outcome)) => json_reply(
            StatusCode::OK,
            &StandardAnswer {
                data: StandardOutcome { alert_key, outcome },
                request_id,
            },
        ),
        Err(e) => {
            let code = match e.status {
                StatusCode::UNAUTHORIZED => "Unauthorized",
                StatusCode::BAD_REQUEST => "InvalidParameter",
                StatusCode::NOT_FOUND => "ResourceNotFound",
                _ => "InternalError",
            };
            json_reply(
                e.status,
                &StandardRefusal {
                    error: StandardError {
                        code,
                        message: e.message,
                    },
                    request_id,
                },
            )
        }
    })
}
