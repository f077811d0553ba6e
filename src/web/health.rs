//! `/healthz` (the process answers) and `/readyz` (it serves: the store is open, integrations
//! are loaded) on every listener, for load balancers and systemd.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::{ApiError, json};
use crate::route_table;
use crate::services::Services;

/// `ok`; for `/readyz`, `ready` or `not_ready` (with 503).
#[derive(Serialize, ToSchema)]
pub struct HealthView {
    #[schema(value_type = String)]
    status: &'static str,
}

route_table! {
    pub fn routes(app, limit = 0), const ROUTES, Both;
    /// The process answers.
    GET ["healthz"] public => healthz -> 200 json(HealthView);
    /// The appliance serves; 503 with `not_ready` until it does.
    GET ["readyz"] public => readyz -> 200 json(HealthView), 503 json(HealthView);
}

async fn healthz(_app: Arc<Services>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &HealthView { status: "ok" }))
}

async fn readyz(app: Arc<Services>) -> Result<Response, ApiError> {
    let ready = app.ready.load(Ordering::SeqCst);
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    Ok(json(status, &HealthView { status: word }))
}
