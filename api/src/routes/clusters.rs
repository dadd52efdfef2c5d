//! `/v1/clusters/{name}`: master, members with their replication state, the master's DNS
//! record, the lock and the timeline (no secrets); `PATCH` its fencing policy; `promote` its
//! most advanced slave.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{
    action::ActionKind,
    db::clusters::{self, ClusterView, Fence},
    http::ActionRequest,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(get, path = "/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), responses(
    (status = 200, description = "master, members with their replication state, DNS record, lock and timeline (no secrets)", body = ClusterView), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterView>> {
    super::named("cluster", &name)?;
    caller.reach_cluster(&name)?;
    clusters::view(&state.pool, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    /// `required` (default): a dead master's db_fence_command must succeed before a promote
    /// gives writes to its replacement; `optional`: a failure is logged and the promote goes on.
    fence: Option<Fence>,
}

#[utoipa::path(patch, path = "/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), request_body = ClusterPatch, responses(
    (status = 200, description = "the cluster", body = ClusterView), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<ClusterView>> {
    super::named("cluster", &name)?;
    audit.target(format!("cluster:{name}"));
    caller.require(shared::auth::Role::Admin, "changing a cluster")?;
    caller.reach_cluster(&name)?;
    let Json(body) = body?;
    let changes = body.clone();
    let p: ClusterPatch = from_value(body)?;
    if let Some(f) = p.fence {
        if !clusters::set_fence(&state.pool, &name, f).await? {
            return Err(ApiError::not_found(format!("no cluster named {name:?}")));
        }
    }
    let view = clusters::view(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))?;
    audit
        .commit(state.pool.begin().await?, StatusCode::OK, Some(changes))
        .await?;
    Ok(Json(view))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Promote although it cannot be proven safe (each overridden check is logged).
    #[serde(default)]
    force: bool,
    idempotency_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/clusters/{name}/promote", tag = "clusters", params(("name" = String, Path)), request_body = PromoteRequest, responses(
    (status = 202, description = "a db_promote of the cluster's most advanced slave, on its master's server", body = shared::Action),
    (status = 200, description = "the first action of a reused idempotency key", body = shared::Action),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "the cluster has no master to replace", body = ErrorBody)))]
pub async fn promote(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    super::named("cluster", &name)?;
    audit.target(format!("cluster:{name}"));
    caller.require(ActionKind::DbPromote.required_role(), "db_promote")?;
    caller.reach_cluster(&name)?;
    // An empty body is a promote without options.
    let p: PromoteRequest = match body {
        Ok(Json(v)) => from_value(v)?,
        Err(JsonRejection::MissingJsonContentType(_)) => PromoteRequest::default(),
        Err(e) => return Err(e.into()),
    };
    let cluster = clusters::get(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))?;
    // The action runs on the master it replaces: that server's line is where it belongs.
    let Some(master) = cluster.master else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("cluster {name:?} has no master to replace: configure one, or restore one as master"),
        ));
    };
    let request = ActionRequest {
        server: master,
        kind: ActionKind::DbPromote.as_str().into(),
        params: Some(json!({"cluster": name, "force": p.force})),
        idempotency_key: p.idempotency_key,
        ..Default::default()
    };
    let new = super::actions::validate_request(request, &caller)?;
    super::actions::accept(&state, &caller, audit, new).await
}
