//! `GET /v1/clusters/{name}`: master, slaves and the master's DNS record (no secrets).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use shared::db::clusters::{self, ClusterView};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(get, path = "/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), responses(
    (status = 200, description = "master, slaves and DNS record (no secrets)", body = ClusterView), (status = 404, description = "not found", body = ErrorBody)))]
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
