//! `/v1/runs`: one action per server of a target (servers by name, by tags or a deployment's),
//! grouped as a run with a concurrency and a failure threshold (`shared/src/db/runs.rs`).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{
    action::RetryPolicy,
    auth::Role,
    db::{
        runs::{self, NewRun, Run},
        servers::{self, Server},
    },
    ActionSpec,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    outbox,
    startup::AppState,
};

/// Which servers a run covers: exactly one of the three.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTarget {
    #[serde(default)]
    servers: Option<Vec<String>>,
    /// Every server (within the caller's scope) carrying all these tags.
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    /// Every server (within the caller's scope) of this deployment.
    #[serde(default)]
    deployment: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    target: RunTarget,
    kind: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
    /// At most this many of its actions queued or running at once (default: all).
    #[serde(default)]
    concurrency: Option<u32>,
    /// Dispatching stops once this many have failed (failed, timed out or interrupted).
    #[serde(default)]
    max_failures: Option<u32>,
    /// Dispatching stops once more than this percentage of its servers have failed.
    #[serde(default)]
    max_fail_percent: Option<u32>,
    #[serde(default)]
    timeout_s: Option<u32>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
}

pub const MAX_RUN_SERVERS: usize = 10_000;

/// The servers a target names: the listed ones in their order (a server named twice gets two
/// actions, run in that order), else the matching ones in name order.
fn select(all: Vec<Server>, t: &RunTarget, caller: &Caller) -> ApiResult<Vec<Server>> {
    let given = [
        t.servers.is_some(),
        t.tags.is_some(),
        t.deployment.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::bad(
            "target",
            "target: exactly one of servers, tags or deployment",
        ));
    }
    let out = match (&t.servers, &t.tags, &t.deployment) {
        (Some(names), _, _) => {
            let by_name: BTreeMap<&str, &Server> =
                all.iter().map(|s| (s.name.as_str(), s)).collect();
            let mut out = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                let field = format!("target.servers[{i}]");
                let s = by_name.get(n.as_str()).ok_or_else(|| {
                    ApiError::bad(&field, format!("{field}: no server named {n:?}"))
                })?;
                caller.reach(s)?;
                out.push((*s).clone());
            }
            out
        }
        (None, tags, deployment) => {
            let mut out: Vec<Server> = all
                .into_iter()
                .filter(|s| s.state.reachable() && caller.reach(s).is_ok())
                .filter(|s| match (tags, deployment) {
                    (Some(tags), _) => tags
                        .iter()
                        .all(|(k, v)| s.tags.0.get(k).and_then(Value::as_str) == Some(v)),
                    (_, Some(d)) => s.deployment.as_deref() == Some(d.as_str()),
                    _ => false,
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out
        }
    };
    if out.is_empty() {
        return Err(ApiError::bad(
            "target",
            "target: matches no server within your scope",
        ));
    }
    if out.len() > MAX_RUN_SERVERS {
        return Err(ApiError::bad(
            "target",
            format!("target: at most {MAX_RUN_SERVERS} actions in one run"),
        ));
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = RunRequest, responses(
    (status = 202, description = "the run and its actions' ids (server name order), the first `concurrency` published", body = Object),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 403, description = "a server out of scope, or the kind's role", body = ErrorBody),
    (status = 409, description = "a DB action that does not fit a server's place in its cluster", body = ErrorBody)))]
/// `{target: {servers: [...]} | {tags: {K: V}} | {deployment}, kind, params, concurrency?,
/// max_failures? | max_fail_percent?, timeout_s?, retry?}`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let changes = body.clone();
    super::actions::require_kind(&caller, &body)?;
    let r: RunRequest = from_value(body)?;
    let spec = ActionSpec::parse(&r.kind, r.params.clone())?;
    let kind = spec.kind();
    if kind.own_route().is_some() {
        return Err(ApiError::bad(
            "kind",
            format!("kind: {kind} is not run across a fleet"),
        ));
    }
    super::actions::check_timeout(r.timeout_s)?;
    if r.concurrency == Some(0) {
        return Err(ApiError::bad("concurrency", "concurrency: at least 1"));
    }
    if r.max_failures == Some(0) {
        return Err(ApiError::bad(
            "max_failures",
            "max_failures: at least 1 (it stops once that many have failed)",
        ));
    }
    if r.max_fail_percent.is_some_and(|p| p > 100) {
        return Err(ApiError::bad(
            "max_fail_percent",
            "max_fail_percent: 0 to 100",
        ));
    }
    if r.max_failures.is_some() && r.max_fail_percent.is_some() {
        return Err(ApiError::bad(
            "max_fail_percent",
            "max_fail_percent: give max_failures or max_fail_percent, not both",
        ));
    }
    if let Some(retry) = &r.retry {
        retry.validate()?;
    }
    if let Some(d) = &r.target.deployment {
        super::named("deployment", d)?;
        if shared::db::scripts::deployment(&mut *state.pool.acquire().await?, d)
            .await?
            .is_none()
        {
            return Err(ApiError::bad(
                "target.deployment",
                format!("target.deployment: no deployment named {d:?}"),
            ));
        }
    }
    let targets = select(servers::list(&state.pool).await?, &r.target, &caller)?;
    // Each server's own action: its inputs resolved, its place in a cluster checked.
    let mut specs = Vec::with_capacity(targets.len());
    let mut sealed = Vec::with_capacity(targets.len());
    for s in &targets {
        let mut spec = spec.clone();
        let master = s.db_role == Some(servers::DbRole::Master);
        if let Some(why) = spec.refusal(&s.name, s.cluster.as_deref(), master) {
            return Err(ApiError::new(StatusCode::CONFLICT, why).field("target"));
        }
        super::actions::prepare(&state, &s.name, &mut spec)
            .await
            .map_err(|e| ApiError {
                message: format!("server {}: {}", s.name, e.message),
                ..e
            })?;
        sealed.push(super::actions::seal_secrets(&state, &mut spec).await?);
        specs.push((s.name.clone(), spec));
    }
    let total = specs.len() as u32;
    let concurrency = r.concurrency.unwrap_or(total).min(total) as i32;
    let new = NewRun {
        target: serde_json::to_value(json!({
            "servers": r.target.servers, "tags": r.target.tags, "deployment": r.target.deployment,
        }))
        .unwrap_or_default(),
        kind,
        params: spec.params(),
        concurrency,
        max_failures: r.max_failures.map(|m| m as i32),
        max_fail_percent: r.max_fail_percent.map(|m| m as i32),
        timeout_s: r.timeout_s.unwrap_or_else(|| kind.default_timeout_s()) as i32,
        urgent: false,
        retry: r.retry.or_else(|| RetryPolicy::default_for(kind)),
        submitted_by: caller.origin(),
        specs: &specs,
    };
    let mut tx = state.pool.begin().await?;
    let (run, ids, queued) = runs::create(&mut tx, &new).await?;
    for (id, secrets) in ids.iter().zip(&sealed) {
        for (name, s) in secrets {
            shared::db::secrets::save_for_action(&mut tx, *id, name, s).await?;
        }
    }
    audit.target(format!("run:{}", run.id));
    let mut changes = changes;
    changes["run"] = json!(run.id);
    changes["actions"] = json!(ids.len());
    audit
        .commit(tx, StatusCode::ACCEPTED, Some(changes))
        .await?;
    state
        .metrics
        .submitted
        .with_label_values(&[kind.as_str()])
        .inc_by(ids.len() as u64);
    futures::future::join_all(queued.iter().map(|id| outbox::publish(&state, *id))).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run": run, "actions": ids})),
    ))
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", responses(
    (status = 200, description = "the newest 100 runs", body = Object)))]
pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "listing runs")?;
    Ok(Json(json!({ "runs": runs::list(&state.pool, 100).await? })))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = i64, Path)), responses(
    (status = 200, description = "the run with its counts by status and its actions (those within your scope)", body = Run),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "reading a run")?;
    let id: i64 = raw
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::bad("id", format!("id: {raw:?} is not a run id")))?;
    let run = runs::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let mut actions = runs::actions(&state.pool, id).await?;
    if !caller.scope().is_everything() {
        let all: BTreeMap<String, Server> = servers::list(&state.pool)
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        actions.retain(|a| all.get(&a.server).is_some_and(|s| caller.reach(s).is_ok()));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &actions {
        *counts.entry(a.status.as_str()).or_default() += 1;
    }
    let mut v = json!(run);
    v["counts"] = json!(counts);
    v["actions"] = json!(actions);
    Ok(Json(v))
}
