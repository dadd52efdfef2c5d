//! The HTTP routes, one module per resource.

pub(crate) mod actions;
pub(crate) mod backups;
pub(crate) mod clusters;
pub(crate) mod health;
pub(crate) mod logs;
pub(crate) mod schedules;
pub(crate) mod servers;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};

use crate::startup::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/servers", post(servers::create).get(servers::list))
        .route(
            "/v1/servers/{name}",
            get(servers::show).delete(servers::delete),
        )
        .route("/v1/actions", post(actions::submit).get(actions::list))
        .route("/v1/clusters/{name}", get(clusters::show))
        .route("/v1/backups", get(backups::list))
        .route(
            "/v1/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/v1/schedules/{name}",
            get(schedules::show)
                .patch(schedules::patch)
                .delete(schedules::delete),
        )
        .route("/v1/backups/{id}", get(backups::show))
        .route("/v1/actions/{id}", get(actions::show))
        .route("/v1/actions/{id}/log", get(logs::show))
        .route("/v1/actions/{id}/cancel", post(actions::cancel))
        .route("/v1/actions/{id}/lines", get(logs::lines))
        .route("/v1/openapi.json", get(crate::openapi::document))
        .fallback(|| async { crate::error::ApiError::not_found("no such route") })
}

/// Parse an `{id}` path segment.
fn action_id(raw: &str) -> crate::error::ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        crate::error::ApiError::bad("id", format!("id: {raw:?} is not an action id"))
    })
}

/// A `{name}` path segment: only what registration accepts can name something; anything else
/// is a 404 without a look-up.
fn named(what: &str, raw: &str) -> crate::error::ApiResult<()> {
    shared::validate::server_name("name", raw)
        .map_err(|_| crate::error::ApiError::not_found(format!("no {what} named {raw:?}")))
}
