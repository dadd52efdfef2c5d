//! `/v1/servers`: register, list, show (with the current lock), delete, unlock.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{
    auth::Role,
    db::{
        leases,
        servers::{self, NewServer, ServerError},
    },
    validate,
};

use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};
#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::{error::ErrorBody, openapi::ServerList};
#[allow(unused_imports)]
use shared::db::servers::Server;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    name: String,
    address: String,
    ssh_port: Option<u16>,
    ssh_user: String,
    host_key: Option<String>,
    db_port: Option<u16>,
    db_host: Option<String>,
    db_config_file: Option<String>,
    db_restart_command: Option<String>,
    db_datadir: Option<String>,
    db_stop_command: Option<String>,
    db_start_command: Option<String>,
    db_snapshot_command: Option<String>,
    db_snapshot_cleanup_command: Option<String>,
    /// The workers' MySQL user there (default SA_MYSQL_USER).
    db_user: Option<String>,
    /// A stored secret (`/v1/secrets`) holding that user's password (default SA_MYSQL_PASSWORD).
    db_password_ref: Option<String>,
    /// Run from the worker to fence this server when it is a dead master (e.g. a cloud CLI
    /// that stops its instance); `$SA_SERVER` and `$SA_ADDRESS` name it.
    db_fence_command: Option<String>,
    /// `prefer`, `neutral` (default) or `must_not`: how a cluster-level promote ranks it.
    promotion_rule: Option<servers::PromotionRule>,
    #[schema(value_type = Option<Object>)]
    tags: Option<serde_json::Map<String, Value>>,
}

fn validate_request(r: ServerRequest) -> ApiResult<NewServer> {
    validate::new_server_name(&r.name)?;
    validate::address(&r.address)?;
    validate::ssh_user(&r.ssh_user)?;
    if let Some(k) = &r.host_key {
        validate::host_key(k)?;
    }
    if let Some(h) = &r.db_host {
        validate::address(h).map_err(|_| {
            ApiError::bad("db_host", "db_host: must be an IP address or a host name")
        })?;
    }
    if let Some(f) = &r.db_config_file {
        validate::config_path(f)?;
    }
    if let Some(f) = &r.db_datadir {
        validate::config_path(f).map_err(|_| {
            ApiError::bad(
                "db_datadir",
                "db_datadir: must be an absolute path of letters, digits and / . _ - + (no ..)",
            )
        })?;
    }
    for (field, cmd) in [
        ("db_restart_command", &r.db_restart_command),
        ("db_stop_command", &r.db_stop_command),
        ("db_start_command", &r.db_start_command),
        ("db_snapshot_command", &r.db_snapshot_command),
        (
            "db_snapshot_cleanup_command",
            &r.db_snapshot_cleanup_command,
        ),
        ("db_fence_command", &r.db_fence_command),
    ] {
        if let Some(c) = cmd {
            validate::command(field, c)?;
        }
    }
    if let Some(u) = &r.db_user {
        validate::db_user(u)?;
    }
    if let Some(n) = &r.db_password_ref {
        validate::server_name("db_password_ref", n)?;
    }
    for (field, port) in [("ssh_port", r.ssh_port), ("db_port", r.db_port)] {
        if port == Some(0) {
            return Err(ApiError::bad(field, format!("{field}: must be 1-65535")));
        }
    }
    Ok(NewServer {
        name: r.name,
        address: r.address,
        ssh_port: r.ssh_port.unwrap_or(22),
        ssh_user: r.ssh_user,
        host_key: r.host_key,
        db_port: r.db_port.unwrap_or(3306),
        db_host: r.db_host,
        db_config_file: r.db_config_file,
        db_restart_command: r.db_restart_command,
        db_datadir: r.db_datadir,
        db_stop_command: r.db_stop_command,
        db_start_command: r.db_start_command,
        db_snapshot_command: r.db_snapshot_command,
        db_snapshot_cleanup_command: r.db_snapshot_cleanup_command,
        db_user: r.db_user,
        db_password_ref: r.db_password_ref,
        db_fence_command: r.db_fence_command,
        promotion_rule: r.promotion_rule.unwrap_or_default(),
        tags: Value::Object(r.tags.unwrap_or_default()),
    })
}

#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = ServerRequest, responses(
    (status = 201, description = "registered", body = Server), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a server with this name exists", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        audit.target(format!("server:{name}"));
    }
    caller.require(Role::Admin, "registering a server")?;
    let changes = body.clone();
    let new = validate_request(from_value(body)?)?;
    caller.reach_parts(&new.name, &new.tags, None)?;
    if let Some(n) = &new.db_password_ref {
        if !shared::db::secrets::missing(&state.pool, std::slice::from_ref(n))
            .await?
            .is_empty()
        {
            return Err(ApiError::bad(
                "db_password_ref",
                format!("db_password_ref: no secret named {n:?} (add it with sactl secrets set)"),
            ));
        }
    }
    let mut tx = state.pool.begin().await?;
    match servers::insert(&mut tx, &new).await {
        Ok(s) => {
            audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
            Ok((StatusCode::CREATED, Json(json!(s))))
        }
        Err(ServerError::Duplicate(n)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a server named {n:?} already exists"),
        )
        .field("name")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[utoipa::path(get, path = "/v1/servers", tag = "servers", responses(
    (status = 200, description = "every server", body = ServerList)))]
pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    let mut all = servers::list(&state.pool).await?;
    all.retain(|s| caller.reach(s).is_ok());
    Ok(Json(json!({ "servers": all })))
}

#[utoipa::path(get, path = "/v1/servers/{name}", tag = "servers", params(("name" = String, Path)), responses(
    (status = 200, description = "the server with its current lock", body = Server), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    super::named("server", &name)?;
    let server = servers::get(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no server named {name:?}")))?;
    caller.reach(&server)?;
    let lock = leases::get(&state.pool, &name).await?;
    let mut v = json!(server);
    v["lock"] = json!(lock);
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/servers/{name}", tag = "servers", params(("name" = String, Path)), responses(
    (status = 204, description = "deleted"), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "it has unfinished actions", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, "deleting a server")?;
    super::named("server", &name)?;
    super::reach_server(&state, &caller, &name).await?;
    let mut tx = state.pool.begin().await?;
    match servers::delete(&mut tx, &name).await {
        Ok(true) => {
            audit.commit(tx, StatusCode::NO_CONTENT, None).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::not_found(format!("no server named {name:?}"))),
        Err(ServerError::Busy(n)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("server {n:?} has queued or running actions"),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[utoipa::path(post, path = "/v1/servers/{name}/unlock", tag = "servers", params(("name" = String, Path)), responses(
    (status = 200, description = "the lock kept after an action could not be stopped is released"),
    (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "the server is not stuck: it is free or a live action holds it", body = ErrorBody)))]
/// An action that could not be stopped keeps its server locked; once an operator has checked
/// that nothing of it runs there any more, this lets the next action start.
pub async fn unlock(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin, "unlocking a server")?;
    super::named("server", &name)?;
    super::reach_server(&state, &caller, &name).await?;
    let mut tx = state.pool.begin().await?;
    let next = match leases::unlock(&mut tx, &name).await? {
        leases::Unlocked::Released { next } => next,
        leases::Unlocked::NotStuck(None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("server {name:?} is not locked"),
            ))
        }
        leases::Unlocked::NotStuck(Some(l)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "server {name:?} is held by running action {} (worker {}): cancel it instead",
                    l.action_id, l.holder
                ),
            ))
        }
    };
    audit.commit(tx, StatusCode::OK, None).await?;
    if let Some(id) = next {
        crate::outbox::publish(&state, id).await;
    }
    Ok(Json(json!({ "server": name, "next": next })))
}
