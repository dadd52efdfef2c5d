//! The HTTP routes, one module per resource.

pub(crate) mod actions;
pub(crate) mod audit;
pub(crate) mod backups;
pub(crate) mod clusters;
pub(crate) mod health;
pub(crate) mod launch;
pub(crate) mod logs;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod scripts;
pub(crate) mod secrets;
pub(crate) mod servers;
pub(crate) mod tokens;
pub(crate) mod webhooks;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};

use crate::{auth::Caller, error::ApiResult, startup::AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/servers", post(servers::create).get(servers::list))
        .route(
            "/v1/servers/{name}",
            get(servers::show)
                .delete(servers::delete)
                .patch(scripts::place_server),
        )
        .route("/v1/servers/{name}/unlock", post(servers::unlock))
        .route("/v1/servers/launch", post(launch::launch))
        .route("/v1/servers/{name}/terminate", post(launch::terminate))
        .route(
            "/v1/launch-profiles",
            post(launch::create_profile).get(launch::list_profiles),
        )
        .route(
            "/v1/launch-profiles/{name}",
            get(launch::show_profile)
                .patch(launch::patch_profile)
                .delete(launch::delete_profile),
        )
        .route("/v1/actions", post(actions::submit).get(actions::list))
        .route(
            "/v1/clusters/{name}",
            get(clusters::show).patch(clusters::patch),
        )
        .route("/v1/clusters/{name}/promote", post(clusters::promote))
        .route("/v1/clusters/{name}/ack", post(clusters::ack))
        .route(
            "/v1/clusters/{name}/failover-plan",
            get(clusters::failover_plan),
        )
        .route(
            "/v1/auto-failover",
            get(clusters::global).put(clusters::set_global),
        )
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
        .route("/v1/actions/{id}/repeat", post(actions::repeat))
        .route("/v1/actions/{id}/lines", get(logs::lines))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/v1/audit", get(audit::list))
        .route("/v1/secrets", post(secrets::put).get(secrets::list))
        .route("/v1/secrets/{name}", axum::routing::delete(secrets::delete))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/scripts", post(scripts::create).get(scripts::list))
        .route(
            "/v1/scripts/{name}",
            get(scripts::show).put(scripts::revise),
        )
        .route("/v1/scripts/{name}/revisions", get(scripts::revisions))
        .route("/v1/scripts/{name}/diff", get(scripts::diff))
        .route(
            "/v1/scripts/{name}/attachments/{file}",
            axum::routing::put(scripts::attach).delete(scripts::detach),
        )
        .route(
            "/v1/templates",
            post(scripts::create_template).get(scripts::list_templates),
        )
        .route(
            "/v1/templates/{name}",
            get(scripts::show_template).put(scripts::revise_template),
        )
        .route(
            "/v1/deployments",
            post(scripts::create_deployment).get(scripts::list_deployments),
        )
        .route(
            "/v1/deployments/{name}",
            get(scripts::show_deployment)
                .patch(scripts::patch_deployment)
                .delete(scripts::delete_deployment),
        )
        .route(
            "/v1/deployments/{name}/clone",
            post(scripts::clone_deployment),
        )
        .route("/v1/runs", post(runs::create).get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
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

/// 403 unless the server named `name` is within the caller's scope. A server that does not
/// exist is within it only by name (its route then answers its own 400 or 404).
async fn reach_server(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    if caller.scope().is_everything() {
        return Ok(());
    }
    match shared::db::servers::get(&state.pool, name).await? {
        Some(server) => caller.reach(&server),
        None => caller.reach_parts(name, &serde_json::Value::Null, None),
    }
}

/// The action `{id}`, 404 if missing, 403 if its server is outside the caller's scope.
async fn reach_action(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<shared::Action> {
    let id = action_id(raw)?;
    let action = shared::db::actions::get(&state.pool, id)
        .await?
        .ok_or_else(|| crate::error::ApiError::not_found(format!("no action {id}")))?;
    reach_server(state, caller, &action.server).await?;
    Ok(action)
}
