//! `GET /v1/backups?cluster=&lineage=&limit=`: backups, newest first, with their manifests;
//! `GET /v1/backups/{id}`. `status` says whether one counts (`committed`) or not.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    Json,
};
use shared::{
    db::backups::{self, Backup},
    validate,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(get, path = "/v1/backups", tag = "backups", params(
    ("cluster" = Option<String>, Query), ("lineage" = Option<String>, Query), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000)),
    responses((status = 200, description = "newest first", body = Vec<Backup>), (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Backup>>> {
    if let Some(k) = q
        .keys()
        .find(|k| !["cluster", "lineage", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError::bad(
            k,
            format!("{k}: unknown parameter (expected cluster, lineage, limit)"),
        ));
    }
    for f in ["cluster", "lineage"] {
        if let Some(v) = q.get(f) {
            validate::server_name(f, v)?;
        }
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad("limit", "limit: must be 1-1000"))?,
    };
    let mut rows = backups::list(
        &state.pool,
        q.get("cluster").map(String::as_str),
        q.get("lineage").map(String::as_str),
        limit,
    )
    .await?;
    rows.retain(|b| reachable(&caller, b));
    Ok(Json(rows))
}

#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups", params(("id" = i64, Path)), responses(
    (status = 200, description = "the backup", body = Backup), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Backup>> {
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad("id", format!("id: {raw:?} is not a backup id")))?;
    let backup = backups::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no backup with id {id}")))?;
    if !reachable(&caller, &backup) {
        return Err(caller.reach_cluster(&backup.lineage).unwrap_err());
    }
    Ok(Json(backup))
}

/// A backup is within a scope that covers its lineage (a cluster, or a lone server's name).
fn reachable(caller: &Caller, b: &Backup) -> bool {
    caller.scope().covers_cluster(&b.lineage) || caller.scope().servers.contains(&b.lineage)
}
