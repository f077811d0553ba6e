//! Incident routes on the admin listener: members, incidents and their actions, alert sources,
//! escalation rules (admin auth), and the alert receivers (Alertmanager, the standard alert
//! event), which authenticate by their source's integration key instead.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::admin::authenticated;
use super::body;
use super::error::{ApiError, respond};
use crate::auth::Principal;
use crate::incident::ingest::{AlertmanagerPayload, StandardEvent};
use crate::incident::members::MemberInput;
use crate::incident::model::{Actor, AlertSource, Via};
use crate::incident::rules::RuleInput;
use crate::incident::war_room::Requester;
use crate::incident::{Action, AlertOutcome, IncidentError, IncidentQuery, NewIncident};
use crate::services::Services;

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Invalid { .. } => ApiError::bad_request("invalid_field", e.to_string()),
            IncidentError::NotFound(_) => ApiError::not_found(e.to_string()),
            IncidentError::Conflict(_) => ApiError::conflict("conflict", e.to_string()),
            IncidentError::Lark(_) => ApiError::new(StatusCode::BAD_GATEWAY, "lark_error", e.to_string()),
            IncidentError::WarRoomDisabled(_) => ApiError::conflict("war_room_disabled", e.to_string()),
            IncidentError::Store(s) => s.into(),
        }
    }
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn actor(principal: &Principal) -> Actor {
    let who = principal.describe();
    Actor {
        via: Via::Api,
        who: Some(who.clone()),
        name: Some(who),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    minutes: Option<u32>,
    assignees: Option<Vec<String>>,
    text: Option<String>,
}

/// `POST /api/v1/incidents/{id}/war-room`: optionally the member who asks (added to the room).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarRoomBody {
    member_id: Option<String>,
}

fn action(name: &str, body: ActionBody) -> Result<Action, ApiError> {
    let missing =
        |field: &str| ApiError::bad_request("invalid_field", format!("{field}: required for {name}"));
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

fn without_timeline(incident: &crate::incident::model::Incident) -> Value {
    let mut v = serde_json::to_value(incident).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("timeline");
    }
    v
}

fn incident_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = authenticated(app.clone())
        .map(move |p: Principal| (app.clone(), p))
        .untuple_one();

    let list = warp::path!("api" / "v1" / "incidents")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<IncidentQuery>())
        .map(|app: Arc<Services>, _p: Principal, q: IncidentQuery| {
            respond(app.incidents.list(&q).map_err(ApiError::from).map(|items| {
                let next_before = items.last().map(|i| i.number);
                let items: Vec<Value> = items.iter().map(without_timeline).collect();
                json_reply(
                    StatusCode::OK,
                    &json!({"items": items, "next_before": next_before}),
                )
            }))
        });
    let create = warp::path!("api" / "v1" / "incidents")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<NewIncident>(limit))
        .then(|app: Arc<Services>, p: Principal, new: NewIncident| async move {
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
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "incidents" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>, _p: Principal| {
            respond((|| {
                let incident = app.incidents.get(&id)?;
                let cards = app.incidents.cards(&incident.id)?;
                let war_room = app.incidents.war_room(&incident.id)?;
                let mut v = serde_json::to_value(&incident).unwrap_or(Value::Null);
                v["cards"] = serde_json::to_value(cards).unwrap_or(Value::Null);
                v["war_room"] = serde_json::to_value(war_room).unwrap_or(Value::Null);
                Ok::<_, ApiError>(json_reply(StatusCode::OK, &v))
            })())
        });
    let open_war_room = warp::path!("api" / "v1" / "incidents" / String / "war-room")
        .and(warp::post())
        .and(auth.clone())
        .and(body::raw(limit))
        .then(
            |id: String, app: Arc<Services>, p: Principal, bytes: Bytes| async move {
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
                Ok::<_, ApiError>(json_reply(status, &outcome))
            },
        )
        .map(respond);
    let get_war_room = warp::path!("api" / "v1" / "incidents" / String / "war-room")
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>, _p: Principal| {
            respond((|| {
                let incident = app.incidents.get(&id)?;
                let room = app.incidents.war_room(&incident.id)?.ok_or_else(|| {
                    ApiError::not_found(format!("incident #{} has no war room", incident.number))
                })?;
                Ok::<_, ApiError>(json_reply(StatusCode::OK, &room))
            })())
        });
    let act = warp::path!("api" / "v1" / "incidents" / String / String)
        .and(warp::post())
        .and(auth)
        .and(body::raw(limit))
        .then(
            |id: String, name: String, app: Arc<Services>, p: Principal, bytes: Bytes| async move {
                let action = action(&name, action_body(&bytes)?)?;
                let incident = app.incidents.act(&id, action, actor(&p)).await?;
                Ok(json_reply(StatusCode::OK, &incident))
            },
        )
        .map(respond);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(open_war_room)
        .unify()
        .or(get_war_room)
        .unify()
        .or(act)
        .unify()
        .boxed()
}

fn member_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = super::integrations::guarded(app);

    let list = warp::path!("api" / "v1" / "members")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            respond(
                app.incidents
                    .members
                    .list()
                    .map(|items| json_reply(StatusCode::OK, &json!({ "items": items })))
                    .map_err(ApiError::from),
            )
        });
    let create = warp::path!("api" / "v1" / "members")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<MemberInput>(limit))
        .then(|app: Arc<Services>, input| async move {
            let member = app.incidents.members.create(input).await?;
            Ok::<_, ApiError>(json_reply(StatusCode::CREATED, &member))
        })
        .map(respond);
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LinkQuery {
        integration_id: String,
    }
    let link = warp::path!("api" / "v1" / "members" / "link")
        .and(warp::post())
        .and(auth.clone())
        .and(warp::query::<LinkQuery>())
        .then(|app: Arc<Services>, q: LinkQuery| async move {
            let client = app
                .lark
                .get(&q.integration_id)
                .ok_or_else(|| ApiError::not_found(format!("no integration {}", q.integration_id)))?;
            let report = app
                .incidents
                .members
                .link_by_lookup(&q.integration_id, &client, None)
                .await?;
            Ok::<_, ApiError>(json_reply(StatusCode::OK, &report))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "members" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>| {
            respond(
                app.incidents
                    .members
                    .get(&id)
                    .map(|m| json_reply(StatusCode::OK, &m))
                    .map_err(ApiError::from),
            )
        });
    let update = warp::path!("api" / "v1" / "members" / String)
        .and(warp::patch())
        .and(auth.clone())
        .and(body::json::<MemberInput>(limit))
        .then(|id: String, app: Arc<Services>, input| async move {
            let member = app.incidents.members.update(&id, input).await?;
            Ok::<_, ApiError>(json_reply(StatusCode::OK, &member))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "members" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            app.incidents.members.delete(&id).await?;
            Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    list.or(create)
        .unify()
        .or(link)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

fn source_view(source: &AlertSource) -> Value {
    json!({"id": source.id, "name": source.name, "created_at": source.created_at})
}

fn source_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = super::integrations::guarded(app);
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SourceInput {
        name: String,
    }
    let list = warp::path!("api" / "v1" / "sources")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            respond(app.incidents.sources().map_err(ApiError::from).map(|items| {
                let items: Vec<Value> = items.iter().map(source_view).collect();
                json_reply(StatusCode::OK, &json!({ "items": items }))
            }))
        });
    let create = warp::path!("api" / "v1" / "sources")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<SourceInput>(limit))
        .then(|app: Arc<Services>, input: SourceInput| async move {
            let (source, key) = app.incidents.create_source(&input.name).await?;
            let mut view = source_view(&source);
            // Shown once; only its hash is kept.
            view["integration_key"] = json!(key);
            Ok::<_, ApiError>(json_reply(StatusCode::CREATED, &view))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "sources" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            app.incidents.delete_source(&id).await?;
            Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    list.or(create).unify().or(delete).unify().boxed()
}

fn rule_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let auth = super::integrations::guarded(app);
    let list = warp::path!("api" / "v1" / "rules")
        .and(warp::get())
        .and(auth.clone())
        .map(|app: Arc<Services>| {
            respond(
                app.incidents
                    .rule_views()
                    .map(|items| json_reply(StatusCode::OK, &json!({ "items": items })))
                    .map_err(ApiError::from),
            )
        });
    let create = warp::path!("api" / "v1" / "rules")
        .and(warp::post())
        .and(auth.clone())
        .and(body::json::<RuleInput>(limit))
        .then(|app: Arc<Services>, input: RuleInput| async move {
            let known = app.integrations.get(&input.integration_id).is_some();
            let rule = app.incidents.save_rule(None, input, known).await?;
            Ok::<_, ApiError>(json_reply(StatusCode::CREATED, &rule))
        })
        .map(respond);
    let get = warp::path!("api" / "v1" / "rules" / String)
        .and(warp::get())
        .and(auth.clone())
        .map(|id: String, app: Arc<Services>| {
            respond(
                app.incidents
                    .rule(&id)
                    .and_then(|r| app.incidents.rule_view(r))
                    .map(|r| json_reply(StatusCode::OK, &r))
                    .map_err(ApiError::from),
            )
        });
    let replace = warp::path!("api" / "v1" / "rules" / String)
        .and(warp::put())
        .and(auth.clone())
        .and(body::json::<RuleInput>(limit))
        .then(|id: String, app: Arc<Services>, input: RuleInput| async move {
            let known = app.integrations.get(&input.integration_id).is_some();
            let rule = app.incidents.save_rule(Some(&id), input, known).await?;
            Ok::<_, ApiError>(json_reply(StatusCode::OK, &rule))
        })
        .map(respond);
    let delete = warp::path!("api" / "v1" / "rules" / String)
        .and(warp::delete())
        .and(auth)
        .then(|id: String, app: Arc<Services>| async move {
            app.incidents.delete_rule(&id).await?;
            Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
        })
        .map(respond);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(replace)
        .unify()
        .or(delete)
        .unify()
        .boxed()
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

fn alert_routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.max_body_bytes;
    let with_app = warp::any().map(move || app.clone());
    let alertmanager = warp::path!("api" / "v1" / "alerts" / "alertmanager")
        .and(warp::post())
        .and(with_app.clone())
        .and(integration_key())
        .and(body::raw(limit))
        .then(
            |app: Arc<Services>, key: Option<String>, bytes: Bytes| async move {
                let source = source_for(&app, key)?;
                let payload: AlertmanagerPayload = body::decode_json(&bytes)?;
                let event = payload.into_event()?;
                let outcome = app.incidents.alert(&source, event).await?;
                Ok::<_, ApiError>(json_reply(StatusCode::OK, &outcome))
            },
        )
        .map(respond);
    let standard = warp::path!("api" / "v1" / "alerts" / "standard")
        .and(warp::post())
        .and(with_app)
        .and(integration_key())
        .and(body::raw(limit))
        .then(
            |app: Arc<Services>, key: Option<String>, bytes: Bytes| async move {
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
                match result {
                    Ok((alert_key, outcome)) => {
                        let mut data = serde_json::to_value(&outcome).unwrap_or(Value::Null);
                        data["alert_key"] = json!(alert_key);
                        json_reply(StatusCode::OK, &json!({"request_id": request_id, "data": data}))
                    }
                    Err(e) => {
                        let code = match e.status {
                            StatusCode::UNAUTHORIZED => "Unauthorized",
                            StatusCode::BAD_REQUEST => "InvalidParameter",
                            StatusCode::NOT_FOUND => "ResourceNotFound",
                            _ => "InternalError",
                        };
                        json_reply(
                            e.status,
                            &json!({"request_id": request_id, "error": {"code": code, "message": e.message}}),
                        )
                    }
                }
            },
        );
    alertmanager.or(standard).unify().boxed()
}

pub fn routes(app: Arc<Services>) -> BoxedFilter<(Response,)> {
    incident_routes(app.clone())
        .or(member_routes(app.clone()))
        .unify()
        .or(source_routes(app.clone()))
        .unify()
        .or(rule_routes(app.clone()))
        .unify()
        .or(alert_routes(app))
        .unify()
        .boxed()
}
