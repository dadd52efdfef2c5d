//! `GET /v1/audit?since=&token=&target=&limit=&before=`: the audit trail, newest first.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Query, State},
    Json,
};
use shared::{auth::AuditList, db::audit};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(
    ("since" = Option<String>, Query, description = "RFC 3339"), ("token" = Option<String>, Query, description = "a token's name"),
    ("target" = Option<String>, Query, description = "e.g. server:web1, action:7"),
    ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000), ("before" = Option<i64>, Query, description = "cursor: ids below it")),
    responses((status = 200, description = "newest first", body = AuditList), (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditList>> {
    caller.require_unscoped("reading the audit trail")?;
    let mut f = audit::Filter {
        limit: 100,
        ..Default::default()
    };
    for (key, value) in &q {
        match key.as_str() {
            "since" => {
                f.since = Some(
                    chrono::DateTime::parse_from_rfc3339(value)
                        .map_err(|_| ApiError::bad("since", "since: must be an RFC 3339 time"))?
                        .with_timezone(&chrono::Utc),
                )
            }
            "token" => f.token = Some(value.clone()),
            "target" => f.target = Some(value.clone()),
            "limit" => {
                f.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad("limit", "limit: must be 1-1000"))?
            }
            "before" => {
                f.before = Some(value.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                    ApiError::bad("before", "before: must be a positive audit id")
                })?)
            }
            other => {
                return Err(ApiError::bad(
                    other,
                    format!("{other}: unknown filter (since, token, target, limit, before)"),
                ))
            }
        }
    }
    let entries = audit::list(&state.pool, &f).await?;
    let next_before = (entries.len() as i64 == f.limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditList {
        entries,
        next_before,
    }))
}
