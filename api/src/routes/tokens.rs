//! `/v1/tokens`: create (the secret is answered once), list, revoke. An unscoped admin's.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde_json::{json, Value};
use shared::{
    auth::{TokenCreated, TokenInfo, TokenList, TokenRequest},
    db::tokens::{self, NewToken, TokenError},
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenRequest, responses(
    (status = 201, description = "made: `token` is the secret, shown only now", body = TokenCreated),
    (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a token with this name exists", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let Json(body) = body?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        audit.target(format!("token:{name}"));
    }
    caller.require_unscoped("managing tokens")?;
    let req: TokenRequest = from_value(body)?;
    let lifetime = req.validate()?;
    let mut tx = state.pool.begin().await?;
    let created = tokens::create(
        &mut tx,
        &NewToken {
            name: &req.name,
            role: req.role,
            scope: &req.scope,
            expires_at: lifetime.map(|l| chrono::Utc::now() + l),
            created_by: &caller.origin(),
        },
    )
    .await
    .map_err(|e| match e {
        TokenError::Duplicate(n) => ApiError::new(
            StatusCode::CONFLICT,
            format!("a token named {n:?} already exists"),
        )
        .field("name"),
        TokenError::Db(e) => e.into(),
    })?;
    let changes = json!({
        "role": req.role, "servers": req.scope.servers, "tags": req.scope.tags,
        "clusters": req.scope.clusters, "expires_at": created.info.expires_at,
    });
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses(
    (status = 200, description = "every token, revoked ones too (never a secret)", body = TokenList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<TokenList>> {
    caller.require_unscoped("managing tokens")?;
    Ok(Json(TokenList {
        tokens: tokens::list(&state.pool).await?,
    }))
}

#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path)), responses(
    (status = 200, description = "revoked: it answers 401 from now on", body = TokenInfo),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    caller.require_unscoped("managing tokens")?;
    super::named("token", &name)?;
    let mut tx = state.pool.begin().await?;
    let token = tokens::revoke(&mut tx, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no token named {name:?}")))?;
    audit
        .commit(
            tx,
            StatusCode::OK,
            Some(json!({"revoked_at": token.revoked_at})),
        )
        .await?;
    state.auth.forget(&name);
    Ok(Json(token))
}
