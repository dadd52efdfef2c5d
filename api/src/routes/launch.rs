//! Servers on EC2: `/v1/launch-profiles` (what instances are made from), `POST
//! /v1/servers/launch` (register a server and queue its launch: `server_launch`, or
//! `db_launch_slave` / `db_launch_master` for a cluster) and `POST /v1/servers/{name}/terminate`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{
    action::ActionKind,
    auth::Role,
    db::{
        actions::SubmitError,
        clusters,
        profiles::{self, DeleteError, StoredProfile},
        servers::{self, DbRole, ServerError, ServerState},
    },
    http::ActionRequest,
    launch::LaunchProfile,
    spec::BackupRef,
    validate,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

fn no_profile(name: &str) -> ApiError {
    ApiError::not_found(format!("no launch profile named {name:?}"))
}

#[utoipa::path(post, path = "/v1/launch-profiles", tag = "launch", request_body = LaunchProfile, responses(
    (status = 201, description = "created", body = StoredProfile), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a profile of that name exists", body = ErrorBody)))]
/// A launch profile: `{name, image_id, instance_type, subnet_id, security_group_ids?,
/// iam_instance_profile?, tags?, ssh_user, ssh_port?, address?: private|public,
/// host_key_source?: generated|console, db_server?: {...}}`.
pub async fn create_profile(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<StoredProfile>)> {
    caller.require(Role::Admin, "creating a launch profile")?;
    let Json(mut body) = body?;
    let changes = body.clone();
    let name = match body.as_object_mut().and_then(|o| o.remove("name")) {
        Some(Value::String(n)) => n,
        _ => return Err(ApiError::bad("name", "name: a profile name is required")),
    };
    validate::server_name("name", &name)?;
    audit.target(format!("launch_profile:{name}"));
    let spec = LaunchProfile::parse(body)?;
    let stored = profiles::insert(&state.pool, &name, &spec)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("a launch profile named {name:?} exists"),
            )
            .field("name")
        })?;
    audit
        .commit(
            state.pool.begin().await?,
            StatusCode::CREATED,
            Some(changes),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

#[utoipa::path(get, path = "/v1/launch-profiles", tag = "launch", responses(
    (status = 200, description = "every launch profile", body = Object)))]
pub async fn list_profiles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "listing launch profiles")?;
    Ok(Json(
        json!({ "profiles": profiles::list(&state.pool).await? }),
    ))
}

#[utoipa::path(get, path = "/v1/launch-profiles/{name}", tag = "launch", params(("name" = String, Path)), responses(
    (status = 200, description = "the profile", body = StoredProfile), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show_profile(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<StoredProfile>> {
    caller.require(Role::Viewer, "reading a launch profile")?;
    super::named("launch profile", &name)?;
    profiles::get(&state.pool, &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_profile(&name))
}

#[utoipa::path(patch, path = "/v1/launch-profiles/{name}", tag = "launch", params(("name" = String, Path)), request_body = Object, responses(
    (status = 200, description = "the profile with the fields given replaced (null removes an optional one)", body = StoredProfile),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn patch_profile(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<StoredProfile>> {
    caller.require(Role::Admin, "changing a launch profile")?;
    super::named("launch profile", &name)?;
    audit.target(format!("launch_profile:{name}"));
    let Json(body) = body?;
    let Value::Object(patch) = &body else {
        return Err(ApiError::bad("body", "body: a JSON object of fields"));
    };
    if patch.contains_key("name") {
        return Err(ApiError::bad("name", "name: a profile is not renamed"));
    }
    let stored = profiles::get(&state.pool, &name)
        .await?
        .ok_or_else(|| no_profile(&name))?;
    let mut merged = json!(stored.spec.0);
    for (k, v) in patch {
        match v {
            Value::Null => merged.as_object_mut().map(|o| o.remove(k)),
            v => merged
                .as_object_mut()
                .map(|o| o.insert(k.clone(), v.clone())),
        };
    }
    let spec = LaunchProfile::parse(merged)?;
    let stored = profiles::replace(&state.pool, &name, &spec)
        .await?
        .ok_or_else(|| no_profile(&name))?;
    audit
        .commit(state.pool.begin().await?, StatusCode::OK, Some(body))
        .await?;
    Ok(Json(stored))
}

#[utoipa::path(delete, path = "/v1/launch-profiles/{name}", tag = "launch", params(("name" = String, Path)), responses(
    (status = 204, description = "deleted"), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "a cluster launches its members from it", body = ErrorBody)))]
pub async fn delete_profile(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, "deleting a launch profile")?;
    super::named("launch profile", &name)?;
    audit.target(format!("launch_profile:{name}"));
    match profiles::delete(&state.pool, &name).await {
        Ok(true) => {}
        Ok(false) => return Err(no_profile(&name)),
        Err(e @ DeleteError::InUse { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(DeleteError::Db(e)) => return Err(e.into()),
    }
    audit
        .commit(state.pool.begin().await?, StatusCode::NO_CONTENT, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a launched server becomes in its cluster.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchRole {
    #[default]
    Slave,
    Master,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// The new server's name.
    name: String,
    /// The launch profile (default: the cluster's, with `cluster`).
    profile: Option<String>,
    /// The server's tags (the profile's too); also put on the instance.
    tags: Option<BTreeMap<String, String>>,
    /// Launch a member of this cluster: `db_launch_slave` (seeded from the latest backup, or
    /// from the master when there is none), or with `role: master` `db_launch_master`.
    cluster: Option<String>,
    role: Option<LaunchRole>,
    /// `db_launch_master`: the backup to restore (default `latest`).
    backup: Option<BackupRef>,
    timeout_s: Option<u32>,
}

#[utoipa::path(post, path = "/v1/servers/launch", tag = "launch", request_body = LaunchRequest, responses(
    (status = 202, description = "the server, registered in state launching, and its launch action", body = Object),
    (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a server of that name exists, or the cluster has a master (role master)", body = ErrorBody)))]
pub async fn launch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        audit.target(format!("server:{name}"));
    }
    caller.require(Role::Operator, "launching a server")?;
    let changes = body.clone();
    let r: LaunchRequest = from_value(body)?;
    validate::new_server_name(&r.name)?;
    if r.cluster.is_none() && (r.role.is_some() || r.backup.is_some()) {
        let field = if r.role.is_some() { "role" } else { "backup" };
        return Err(ApiError::bad(
            field,
            format!("{field}: only with cluster (a member of a cluster is launched)"),
        ));
    }
    if matches!(r.role, Some(LaunchRole::Slave)) && r.backup.is_some() {
        return Err(ApiError::bad(
            "backup",
            "backup: only with role master (a slave is seeded from the latest backup)",
        ));
    }
    let profile_name = match (&r.profile, &r.cluster) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => {
            validate::server_name("cluster", c)?;
            clusters::launch_profile(&state.pool, c)
                .await?
                .ok_or_else(|| ApiError::bad("cluster", format!("cluster: no cluster named {c:?}")))?
                .ok_or_else(|| {
                    ApiError::bad(
                        "profile",
                        format!("profile: cluster {c:?} names no launch profile (PATCH it with launch_profile, or give one)"),
                    )
                })?
        }
        (None, None) => {
            return Err(ApiError::bad(
                "profile",
                "profile: the launch profile to make the server from",
            ))
        }
    };
    validate::server_name("profile", &profile_name)?;
    let profile = profiles::get(&state.pool, &profile_name)
        .await?
        .ok_or_else(|| {
            ApiError::bad(
                "profile",
                format!("profile: no launch profile named {profile_name:?}"),
            )
        })?
        .spec
        .0;
    let mut tags: BTreeMap<String, String> = profile.tags.clone();
    for (k, v) in r.tags.unwrap_or_default() {
        if k.is_empty() || k.len() > 128 || k.starts_with("serveractions:") {
            return Err(ApiError::bad(
                &format!("tags.{k}"),
                format!(
                    "tags.{k}: tag keys are 1-128 characters, not starting with serveractions:"
                ),
            ));
        }
        tags.insert(k, v);
    }
    let tags = json!(tags);
    caller.reach_parts(&r.name, &tags, r.cluster.as_deref())?;
    let (kind, params) = match (&r.cluster, r.role.unwrap_or_default()) {
        (None, _) => (ActionKind::ServerLaunch, json!({"profile": profile_name})),
        (Some(c), role) => {
            let cluster = clusters::get(&state.pool, c).await?.ok_or_else(|| {
                ApiError::bad("cluster", format!("cluster: no cluster named {c:?}"))
            })?;
            caller.reach_cluster(c)?;
            match role {
                LaunchRole::Slave => (
                    ActionKind::DbLaunchSlave,
                    json!({"cluster": c, "profile": profile_name}),
                ),
                LaunchRole::Master => {
                    if let Some(m) = cluster.master {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            format!("cluster {c:?} has a master ({m}): launch a slave, or delete the dead master first"),
                        )
                        .field("role"));
                    }
                    let backup = r.backup.unwrap_or(BackupRef::LATEST);
                    (
                        ActionKind::DbLaunchMaster,
                        json!({"cluster": c, "profile": profile_name, "backup": backup}),
                    )
                }
            }
        }
    };
    caller.require(kind.required_role(), kind.as_str())?;
    if kind != ActionKind::ServerLaunch && profile.db_server.is_none() {
        return Err(ApiError::bad(
            "profile",
            format!("profile: launch profile {profile_name:?} has no db_server settings: it makes no database servers"),
        ));
    }
    let request = ActionRequest {
        server: r.name.clone(),
        kind: kind.as_str().into(),
        params: Some(params),
        timeout_s: r.timeout_s,
        ..Default::default()
    };
    let new = super::actions::validate_request(request, &caller)?;
    let mut tx = state.pool.begin().await?;
    let port = profile.ssh_port.unwrap_or(22);
    let server = match servers::insert_launching(
        &mut tx,
        &r.name,
        &profile_name,
        &profile.ssh_user,
        port,
        &tags,
    )
    .await
    {
        Ok(s) => s,
        Err(ServerError::Duplicate(n)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a server named {n:?} already exists"),
            )
            .field("name"))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let action = match shared::db::actions::insert(&mut tx, &new, None).await {
        Ok((action, _)) => action,
        Err(SubmitError::UnknownServer(s)) => {
            return Err(ApiError::internal(format!("server {s:?} vanished")))
        }
        Err(SubmitError::Db(e)) => return Err(e.into()),
    };
    audit
        .commit(tx, StatusCode::ACCEPTED, Some(changes))
        .await?;
    crate::outbox::publish(&state, action.id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"server": server, "action": action})),
    ))
}

#[utoipa::path(post, path = "/v1/servers/{name}/terminate", tag = "launch", params(("name" = String, Path)), responses(
    (status = 202, description = "a server_terminate action", body = shared::Action),
    (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "a cluster's master, a server with unfinished actions, or not a launched one", body = ErrorBody)))]
pub async fn terminate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    super::named("server", &name)?;
    audit.target(format!("server:{name}"));
    caller.require(
        ActionKind::ServerTerminate.required_role(),
        "server_terminate",
    )?;
    let server = servers::get(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no server named {name:?}")))?;
    caller.reach(&server)?;
    let conflict = |m: String| Err(ApiError::new(StatusCode::CONFLICT, m));
    if server.instance_id.is_none() {
        return conflict(format!(
            "server {name:?} was not launched here (no instance id): delete it instead"
        ));
    }
    if server.state == ServerState::Terminated {
        return conflict(format!("server {name:?} is terminated already"));
    }
    if server.db_role == Some(DbRole::Master) {
        return conflict(format!(
            "server {name:?} is the master of cluster {:?}: promote another server first",
            server.cluster.as_deref().unwrap_or("?")
        ));
    }
    if shared::db::actions::unfinished(&state.pool, &name).await? {
        return conflict(format!(
            "server {name:?} has queued or running actions: wait for them or cancel them"
        ));
    }
    let request = ActionRequest {
        server: name,
        kind: ActionKind::ServerTerminate.as_str().into(),
        ..Default::default()
    };
    let new = super::actions::validate_request(request, &caller)?;
    super::actions::accept(&state, &caller, audit, new).await
}
