//! `GET /v1/clusters/{name}`: master, slaves and the master's DNS record (no secrets).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use shared::db::clusters::{self, ClusterView};

use crate::{
    error::{ApiError, ApiResult},
    startup::AppState,
};

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterView>> {
    clusters::view(&state.pool, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))
}
