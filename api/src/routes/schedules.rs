//! `/v1/schedules`: create, list (with next fire time and last runs), show, change, delete.
//! Body: `{"name","target":{"server"}|{"cluster","role"},"kind","params"?,"cron"|"every_s",
//! "jitter_s"?,"enabled"?,"catch_up"?: "once"|"skip"}`. The kind and its params are validated
//! as for `POST /v1/actions`.

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
        schedules::{self, NewSchedule, Schedule, ScheduleError},
        servers::DbRole,
    },
    schedule::Timing,
    validate, ActionSpec,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    name: String,
    target: Target,
    #[schema(value_type = shared::ActionKind)]
    kind: String,
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
    cron: Option<String>,
    every_s: Option<i64>,
    jitter_s: Option<i64>,
    enabled: Option<bool>,
    catch_up: Option<String>,
}

/// `{"server"}` or `{"cluster", "role": "master" | "slave"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    server: Option<String>,
    cluster: Option<String>,
    role: Option<DbRole>,
}

fn validate_request(r: ScheduleRequest) -> ApiResult<(NewSchedule, Timing)> {
    validate::server_name("name", &r.name)?;
    let (server, cluster, role) = match (r.target.server, r.target.cluster, r.target.role) {
        (Some(s), None, None) => {
            validate::server_name("target.server", &s)?;
            (Some(s), None, None)
        }
        (None, Some(c), Some(role)) => {
            validate::server_name("target.cluster", &c)?;
            (None, Some(c), Some(role))
        }
        (None, Some(_), _) => {
            return Err(ApiError::bad(
                "target.role",
                "target.role: must be \"master\" or \"slave\" with target.cluster",
            ))
        }
        _ => {
            return Err(ApiError::bad(
                "target",
                "target: give {\"server\"} or {\"cluster\", \"role\"}",
            ))
        }
    };
    let spec = ActionSpec::parse(&r.kind, r.params)?;
    if let ActionSpec::RunScript(p) = &spec {
        if let Some(name) = p
            .secrets
            .iter()
            .find_map(|(n, v)| matches!(v, shared::spec::SecretInput::Value(_)).then_some(n))
        {
            let field = format!("params.secrets.{name}");
            return Err(ApiError::bad(
                &field,
                format!("{field}: a schedule keeps its params: name a stored secret with {{\"secret_ref\": NAME}}"),
            ));
        }
    }
    let timing = Timing::parse(r.cron.as_deref(), r.every_s).map_err(|e| {
        let f = e.field.clone();
        ApiError::bad(&f, format!("{f}: {}", e.message))
    })?;
    let jitter_s = match r.jitter_s {
        None => 0,
        Some(j) if (0..=86_400).contains(&j) => j as i32,
        Some(_) => return Err(ApiError::bad("jitter_s", "jitter_s: must be 0-86400")),
    };
    let catch_up = match r.catch_up.as_deref() {
        None | Some("once") => "once",
        Some("skip") => "skip",
        Some(_) => {
            return Err(ApiError::bad(
                "catch_up",
                "catch_up: must be \"once\" (one run after downtime) or \"skip\"",
            ))
        }
    };
    Ok((
        NewSchedule {
            name: r.name,
            target_server: server,
            target_cluster: cluster,
            target_role: role,
            spec,
            cron: r.cron,
            every_s: r.every_s.map(|s| s as i32),
            jitter_s,
            enabled: r.enabled.unwrap_or(true),
            catch_up: catch_up.to_string(),
        },
        timing,
    ))
}

/// A schedule as the API shows it: its definition, next fire time and last runs.
async fn view(state: &AppState, s: Schedule) -> ApiResult<Value> {
    let runs = schedules::runs(&state.pool, s.id, 10).await?;
    let target = match (&s.target_server, &s.target_cluster) {
        (Some(server), _) => json!({"server": server}),
        (_, Some(cluster)) => json!({"cluster": cluster, "role": s.target_role}),
        _ => Value::Null,
    };
    Ok(json!({
        "name": s.name, "target": target, "kind": s.spec.kind(), "params": s.spec.params(),
        "cron": s.cron, "every_s": s.every_s, "jitter_s": s.jitter_s, "enabled": s.enabled,
        "catch_up": s.catch_up, "next_slot": s.next_slot,
        "next_fire_at": if s.enabled { json!(s.next_fire_at) } else { Value::Null },
        "created_at": s.created_at, "last_runs": runs,
    }))
}

fn conflict(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::Duplicate(n) => ApiError::new(
            StatusCode::CONFLICT,
            format!("a schedule named {n:?} already exists"),
        )
        .field("name"),
        ScheduleError::Db(e) => ApiError::internal(e),
    }
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleRequest, responses(
    (status = 201, description = "created, with its next fire time", body = Object), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a schedule with this name exists", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        audit.target(format!("schedule:{name}"));
    }
    caller.require(Role::Admin, "creating a schedule")?;
    let changes = body.clone();
    let (new, timing) = validate_request(from_value(body)?)?;
    reach_target(&state, &caller, &new.target_server, &new.target_cluster).await?;
    let mut tx = state.pool.begin().await?;
    let s = schedules::insert(&mut tx, &new, &timing)
        .await
        .map_err(conflict)?;
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(view(&state, s).await?)))
}

/// 403 unless what a schedule fires on is within the caller's scope.
async fn reach_target(
    state: &AppState,
    caller: &Caller,
    server: &Option<String>,
    cluster: &Option<String>,
) -> ApiResult<()> {
    if let Some(s) = server {
        super::reach_server(state, caller, s).await?;
    }
    if let Some(c) = cluster {
        caller.reach_cluster(c)?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses(
    (status = 200, description = "every schedule", body = Vec<Object>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Value>>> {
    let mut out = Vec::new();
    for s in schedules::list(&state.pool).await? {
        if reach_target(&state, &caller, &s.target_server, &s.target_cluster)
            .await
            .is_ok()
        {
            out.push(view(&state, s).await?);
        }
    }
    Ok(Json(out))
}

async fn find(state: &AppState, name: &str) -> ApiResult<Schedule> {
    super::named("schedule", name)?;
    schedules::get(&state.pool, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))
}

#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)), responses((status = 200, description = "the schedule with its next fire time and last runs", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = find(&state, &name).await?;
    reach_target(&state, &caller, &s.target_server, &s.target_cluster).await?;
    Ok(Json(view(&state, s).await?))
}

/// Merge the body's fields into the schedule and validate the whole again.
#[utoipa::path(patch, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    request_body(content = Object, description = "any fields of a schedule: merged, then the whole is checked again"),
    responses((status = 200, description = "the schedule with its next fire time and last runs", body = Object), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "the new name is taken", body = ErrorBody)))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin, "changing a schedule")?;
    let Json(body) = body?;
    let Value::Object(changes) = body else {
        return Err(ApiError::bad("body", "body: must be a JSON object"));
    };
    let s = find(&state, &name).await?;
    reach_target(&state, &caller, &s.target_server, &s.target_cluster).await?;
    let mut current = view(&state, s.clone()).await?;
    let obj = current.as_object_mut().expect("an object");
    for k in ["next_slot", "next_fire_at", "created_at", "last_runs"] {
        obj.remove(k);
    }
    let mut changed = serde_json::Map::new();
    for (k, v) in changes {
        let before = obj.get(&k).cloned().unwrap_or(Value::Null);
        if before != v {
            changed.insert(k.clone(), json!({"from": before, "to": v}));
        }
        // Giving one of cron/every_s replaces the other.
        if k == "cron" {
            obj.insert("every_s".into(), Value::Null);
        }
        if k == "every_s" {
            obj.insert("cron".into(), Value::Null);
        }
        obj.insert(k, v);
    }
    let (new, timing) = validate_request(from_value(current)?)?;
    reach_target(&state, &caller, &new.target_server, &new.target_cluster).await?;
    let mut tx = state.pool.begin().await?;
    let s = schedules::update(&mut tx, s.id, &new, &timing)
        .await
        .map_err(conflict)?;
    audit
        .commit(tx, StatusCode::OK, Some(Value::Object(changed)))
        .await?;
    Ok(Json(view(&state, s).await?))
}

#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)), responses(
    (status = 204, description = "deleted"), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, "deleting a schedule")?;
    let s = find(&state, &name).await?;
    reach_target(&state, &caller, &s.target_server, &s.target_cluster).await?;
    let mut tx = state.pool.begin().await?;
    if schedules::delete(&mut tx, &name).await? {
        audit.commit(tx, StatusCode::NO_CONTENT, None).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no schedule named {name:?}")))
    }
}
