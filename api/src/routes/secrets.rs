//! `/v1/secrets`: the named secret store (an unscoped admin's). Values go in and never come out:
//! the list has names only; the workers open a value when an action that names it runs.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde_json::Value;
use shared::{
    db::secrets,
    http::{SecretInfo, SecretList, SecretRequest},
    validate,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

/// The largest value the store takes.
const MAX_VALUE_BYTES: usize = 64 * 1024;

#[utoipa::path(post, path = "/v1/secrets", tag = "secrets", request_body = SecretRequest, responses(
    (status = 201, description = "stored", body = SecretInfo),
    (status = 200, description = "its value replaced", body = SecretInfo),
    (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SecretInfo>)> {
    let Json(body) = body?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        audit.target(format!("secret:{name}"));
    }
    caller.require_unscoped("managing secrets")?;
    let req: SecretRequest = from_value(body)?;
    validate::server_name("name", &req.name)?;
    if req.value.is_empty() || req.value.len() > MAX_VALUE_BYTES || req.value.contains('\0') {
        return Err(ApiError::bad(
            "value",
            format!("value: must be 1 to {MAX_VALUE_BYTES} bytes without NUL"),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let sealed = state.keys.seal(&req.value);
    let created = secrets::put(&mut tx, &req.name, &sealed, &caller.origin()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    audit.commit(tx, status, None).await?;
    let info = secrets::list(&state.pool)
        .await?
        .into_iter()
        .find(|s| s.name == req.name)
        .ok_or_else(|| ApiError::internal("a stored secret vanished"))?;
    Ok((status, Json(info)))
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", responses(
    (status = 200, description = "the names (never a value)", body = SecretList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<SecretList>> {
    caller.require_unscoped("managing secrets")?;
    Ok(Json(SecretList {
        secrets: secrets::list(&state.pool).await?,
    }))
}

#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), responses(
    (status = 204, description = "deleted"), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "a server's database password", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_unscoped("managing secrets")?;
    super::named("secret", &name)?;
    let mut tx = state.pool.begin().await?;
    let users: Vec<String> =
        sqlx::query_scalar("SELECT name FROM servers WHERE db_password_ref = $1 ORDER BY name")
            .bind(&name)
            .fetch_all(&mut *tx)
            .await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "secret {name:?} is the database password of {}",
                users.join(", ")
            ),
        ));
    }
    if !secrets::delete(&mut tx, &name).await? {
        return Err(ApiError::not_found(format!("no secret named {name:?}")));
    }
    audit.commit(tx, StatusCode::NO_CONTENT, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
