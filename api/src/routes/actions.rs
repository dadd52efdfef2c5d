//! `/v1/actions`: submit (stored, then published), show, list with cursor paging.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    Json,
};
use serde_json::{json, Value};
use shared::{
    action::{Action, ActionKind, RetryPolicy, Status},
    auth::Role,
    db::{
        actions::{self, Filter, NewAction, SubmitError},
        leases,
    },
    http::{ActionList, ActionRequest},
    spec::SecretInput,
    validate, ActionSpec,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    outbox,
    startup::AppState,
};

const MAX_TIMEOUT_S: u32 = 7 * 24 * 3600;

/// A request's `timeout_s`, when it gives one: 1 s to a week.
pub(crate) fn check_timeout(timeout_s: Option<u32>) -> ApiResult<()> {
    match timeout_s {
        Some(t) if t == 0 || t > MAX_TIMEOUT_S => Err(ApiError::bad(
            "timeout_s",
            format!("timeout_s: must be between 1 and {MAX_TIMEOUT_S} seconds"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn validate_request(r: ActionRequest, caller: &Caller) -> ApiResult<NewAction> {
    validate::server_name("server", &r.server)?;
    let spec = ActionSpec::parse(&r.kind, r.params)?;
    let kind = spec.kind();
    check_timeout(r.timeout_s)?;
    if let Some(k) = &r.idempotency_key {
        if k.is_empty() || k.len() > 200 {
            return Err(ApiError::bad(
                "idempotency_key",
                "idempotency_key: must be 1-200 characters",
            ));
        }
        if k.starts_with(shared::action::INTERNAL_KEY_PREFIX) {
            return Err(ApiError::bad(
                "idempotency_key",
                format!(
                    "idempotency_key: keys beginning with {:?} are ServerActions' own",
                    shared::action::INTERNAL_KEY_PREFIX
                ),
            ));
        }
    }
    if let Some(retry) = &r.retry {
        retry.validate()?;
    }
    Ok(NewAction {
        server: r.server,
        spec,
        timeout_s: Some(r.timeout_s.unwrap_or_else(|| kind.default_timeout_s()) as i32),
        // A promote is what brings a site back: it never waits behind other work.
        urgent: r.urgent || matches!(kind, ActionKind::DbPromote | ActionKind::DbFailover),
        idempotency_key: r.idempotency_key,
        retry: r.retry.or_else(|| RetryPolicy::default_for(kind)),
        submitted_by: caller.origin(),
    })
}

/// The action with its audit row in one statement; with sealed secrets, they too, in one
/// transaction.
async fn store(
    state: &AppState,
    new: &NewAction,
    entry: &shared::db::audit::NewEntry,
    sealed: &[(String, shared::secrets::Sealed)],
) -> Result<(Action, bool), SubmitError> {
    if sealed.is_empty() {
        return actions::insert(&mut *state.pool.acquire().await?, new, Some(entry)).await;
    }
    let mut tx = state.pool.begin().await?;
    let (action, created) = actions::insert(&mut tx, new, Some(entry)).await?;
    if created {
        for (name, s) in sealed {
            shared::db::secrets::save_for_action(&mut tx, action.id, name, s).await?;
        }
    }
    tx.commit().await?;
    Ok((action, created))
}

/// A stored script's revision pinned and its inputs resolved for `server` (a `run_script` on a
/// `script_ref`, a `run_boot`); an unknown server is left to the store's own 400.
pub(crate) async fn prepare(
    state: &AppState,
    server: &str,
    spec: &mut ActionSpec,
) -> ApiResult<()> {
    use shared::db::scripts::{prepare_run_boot, prepare_run_script, StoreError};
    let prepared = match spec {
        ActionSpec::RunScript(p) if p.script_ref.is_some() => {
            prepare_run_script(&mut *state.pool.acquire().await?, server, p).await
        }
        ActionSpec::RunBoot(p) => {
            prepare_run_boot(&mut *state.pool.acquire().await?, server, p).await
        }
        _ => return Ok(()),
    };
    match prepared {
        Err(StoreError::NoServer(_)) => Ok(()),
        r => r.map_err(Into::into),
    }
}

/// Seal a `run_script`'s inline secret values (its params keep `***` in their place) and check
/// that the named ones exist.
pub(crate) async fn seal_secrets(
    state: &AppState,
    spec: &mut ActionSpec,
) -> ApiResult<Vec<(String, shared::secrets::Sealed)>> {
    let ActionSpec::RunScript(p) = spec else {
        return Ok(Vec::new());
    };
    let mut sealed = Vec::new();
    let mut refs = Vec::new();
    for (name, input) in p.secrets.iter_mut() {
        match input {
            SecretInput::Value(v) if v == shared::secrets::MASK => {
                return Err(ApiError::bad(
                    &format!("params.secrets.{name}"),
                    format!("params.secrets.{name}: \"***\" is the mask, not a value: give the value or a secret_ref"),
                ))
            }
            SecretInput::Value(v) => {
                sealed.push((name.clone(), state.keys.seal(v)));
                *v = shared::secrets::MASK.into();
            }
            SecretInput::Ref(r) => refs.push((name.clone(), r.secret_ref.clone())),
        }
    }
    let names: Vec<String> = refs.iter().map(|(_, r)| r.clone()).collect();
    let missing = shared::db::secrets::missing(&state.pool, &names).await?;
    if let Some((var, r)) = refs.iter().find(|(_, r)| missing.contains(r)) {
        let field = format!("params.secrets.{var}.secret_ref");
        return Err(ApiError::bad(
            &field,
            format!("{field}: no secret named {r:?} in the store"),
        ));
    }
    Ok(sealed)
}

/// A DB action that names a cluster must fit its server's place in it (see
/// `ActionSpec::refusal`); the worker checks again as it starts.
async fn check_membership(state: &AppState, new: &NewAction) -> ApiResult<()> {
    if new.spec.cluster().is_none() {
        return Ok(());
    }
    let Some(server) = shared::db::servers::get(&state.pool, &new.server).await? else {
        return Ok(()); // the store refuses an unknown server with its own 400
    };
    let master = server.db_role == Some(shared::db::servers::DbRole::Master);
    match new
        .spec
        .refusal(&server.name, server.cluster.as_deref(), master)
    {
        None => Ok(()),
        Some(why) => Err(ApiError::new(StatusCode::CONFLICT, why).field("params.cluster")),
    }
}

/// A promote records the master it replaces as it is submitted (see `PromoteParams::replaces`).
async fn expect_master(state: &AppState, new: &mut NewAction) -> ApiResult<()> {
    let ActionSpec::DbPromote(p) = &mut new.spec else {
        return Ok(());
    };
    if p.replaces.is_some() {
        return Ok(());
    }
    let cluster = match &p.cluster {
        Some(c) => Some(c.clone()),
        None => shared::db::servers::get(&state.pool, &new.server)
            .await?
            .and_then(|s| s.cluster),
    };
    if let Some(c) = cluster {
        p.replaces = shared::db::clusters::get(&state.pool, &c)
            .await?
            .and_then(|c| c.master);
    }
    Ok(())
}

/// An action with the lease of its server when it is running or waiting.
async fn view(state: &AppState, action: Action) -> ApiResult<Value> {
    let lock = if action.status.is_terminal() || action.status == Status::Queued {
        None
    } else {
        leases::get(&state.pool, &action.server).await?
    };
    let mut v = json!(action);
    v["lock"] = json!(lock);
    Ok(v)
}

/// The role of the body's `kind` (or the least that submits anything), checked before its
/// fields are.
pub(crate) fn require_kind(caller: &Caller, body: &Value) -> ApiResult<()> {
    let kind = body.get("kind").and_then(Value::as_str);
    match kind.and_then(|k| k.parse::<ActionKind>().ok()) {
        Some(k) => caller.require(k.required_role(), k.as_str()),
        None => caller.require(Role::Operator, "submitting an action"),
    }
}

#[utoipa::path(post, path = "/v1/actions", tag = "actions", request_body = ActionRequest, responses(
    (status = 202, description = "stored, then published", body = Action),
    (status = 200, description = "the first action of a reused idempotency key", body = Action), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a DB action naming a cluster its server is not a member of", body = ErrorBody)))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if let Some(server) = body.get("server").and_then(Value::as_str) {
        audit.target(format!("server:{server}"));
    }
    require_kind(&caller, &body)?;
    let new = validate_request(from_value(body)?, &caller)?;
    if let Some(route) = new.spec.kind().own_route() {
        return Err(ApiError::bad(
            "kind",
            format!("kind: {} is submitted through {route}", new.spec.kind()),
        ));
    }
    accept(&state, &caller, audit, new).await
}

/// Store a valid action (refused if its server is out of the caller's reach or it does not fit
/// the server's place in its cluster), then publish it: 202, or 200 with the first action of a
/// reused idempotency key.
pub(crate) async fn accept(
    state: &Arc<AppState>,
    caller: &Caller,
    audit: Audit,
    mut new: NewAction,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let state = state.clone();
    super::reach_server(&state, caller, &new.server).await?;
    check_membership(&state, &new).await?;
    expect_master(&state, &mut new).await?;
    prepare(&state, &new.server.clone(), &mut new.spec).await?;
    let sealed = seal_secrets(&state, &mut new.spec).await?;
    let entry = audit.entry(StatusCode::ACCEPTED);
    let (action, created) = match store(&state, &new, &entry, &sealed).await {
        Ok(r) => r,
        Err(SubmitError::UnknownServer(s)) => {
            return Err(ApiError::bad(
                "server",
                format!("server: no server named {s:?}"),
            ))
        }
        Err(SubmitError::Db(e)) => return Err(e.into()),
    };
    if !created {
        let changes = json!({"action": action.id, "kind": action.kind(), "reused": true});
        audit
            .commit(state.pool.begin().await?, StatusCode::OK, Some(changes))
            .await?;
        return Ok((StatusCode::OK, Json(view(&state, action).await?)));
    }
    audit.written();
    state
        .metrics
        .submitted
        .with_label_values(&[new.spec.kind().as_str()])
        .inc();
    outbox::publish(&state, action.id).await;
    Ok((StatusCode::ACCEPTED, Json(json!(action))))
}

#[utoipa::path(get, path = "/v1/actions/{id}", tag = "actions", params(("id" = i64, Path, description = "the action id")), responses(
    (status = 200, description = "the action; while waiting or running, `lock` is its server's lease", body = Action), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let action = super::reach_action(&state, &caller, &id).await?;
    Ok(Json(view(&state, action).await?))
}

#[utoipa::path(get, path = "/v1/actions", tag = "actions", params(
    ("server" = Option<String>, Query), ("kind" = Option<ActionKind>, Query), ("status" = Option<Status>, Query),
    ("since" = Option<String>, Query, description = "RFC 3339"), ("until" = Option<String>, Query, description = "RFC 3339"),
    ("limit" = Option<i64>, Query, minimum = 1, maximum = 500), ("before" = Option<i64>, Query, description = "cursor: ids below it")),
    responses((status = 200, description = "newest first", body = ActionList), (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let mut f = Filter {
        limit: 50,
        within: Some(caller.scope().clone()),
        ..Default::default()
    };
    for (key, value) in &q {
        match key.as_str() {
            "server" => {
                validate::server_name("server", value)?;
                f.server = Some(value.clone())
            }
            "kind" => {
                f.kind = Some(
                    value
                        .parse()
                        .map_err(|e: String| ApiError::bad("kind", format!("kind: {e}")))?,
                )
            }
            "status" => {
                f.status = Some(
                    value
                        .parse()
                        .map_err(|e: String| ApiError::bad("status", format!("status: {e}")))?,
                )
            }
            "limit" => {
                f.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=500).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad("limit", "limit: must be an integer from 1 to 500")
                    })?
            }
            "before" => f.before = Some(super::action_id(value).map_err(|e| e.field("before"))?),
            "since" | "until" => {
                let t = chrono::DateTime::parse_from_rfc3339(value)
                    .map_err(|_| {
                        ApiError::bad(
                            key,
                            format!("{key}: must be an RFC 3339 time such as 2026-11-28T16:00:00Z"),
                        )
                    })?
                    .with_timezone(&chrono::Utc);
                if key == "since" {
                    f.since = Some(t)
                } else {
                    f.until = Some(t)
                }
            }
            other => {
                return Err(ApiError::bad(
                    other,
                    format!(
                    "{other}: unknown filter (server, kind, status, since, until, limit, before)"
                ),
                ))
            }
        }
    }
    let rows = actions::list(&state.pool, &f).await?;
    let next_before = (rows.len() as i64 == f.limit)
        .then(|| rows.last().map(|a| a.id))
        .flatten();
    Ok(Json(json!(ActionList {
        actions: rows,
        next_before
    })))
}

/// `POST /v1/actions/{id}/repeat`: a new action with the same spec on the same server: a stored
/// script's pinned revision with the inputs as they were resolved then. Inline secret values
/// are not kept (400 naming them: give them again); launches and terminations have their routes.
#[utoipa::path(post, path = "/v1/actions/{id}/repeat", tag = "actions", params(("id" = i64, Path, description = "the action id")), responses(
    (status = 202, description = "the new action", body = Action), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn repeat(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Operator, "repeating an action")?;
    let action = super::reach_action(&state, &caller, &id).await?;
    let kind = action.kind();
    caller.require(kind.required_role(), kind.as_str())?;
    audit.target(format!("server:{}", action.server));
    if kind.own_route().is_some() || kind == ActionKind::DbFailover {
        return Err(ApiError::bad("id", format!("id: a {kind} is not repeated")));
    }
    let new = NewAction {
        server: action.server.clone(),
        spec: action.spec.clone(),
        timeout_s: action.timeout_s,
        urgent: action.urgent,
        idempotency_key: None,
        retry: action.retry,
        submitted_by: caller.origin(),
    };
    accept(&state, &caller, audit, new).await
}

/// `POST /v1/actions/{id}/cancel`: a queued or waiting action never starts (200); a running
/// one is stopped by its worker, which kills its process group (202); a finished one is 409.
#[utoipa::path(post, path = "/v1/actions/{id}/cancel", tag = "actions", params(("id" = i64, Path, description = "the action id")), responses(
    (status = 200, description = "cancelled before it started", body = Action),
    (status = 202, description = "its worker is killing it", body = Action), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "it already ended", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Operator, "cancelling an action")?;
    let action = super::reach_action(&state, &caller, &id).await?;
    let id = action.id;
    // Stopping an action half-way is as much as starting it: at least an operator's.
    let role = action.kind().required_role().max(Role::Operator);
    caller.require(role, &format!("cancelling a {}", action.kind()))?;
    let reason = format!("Cancelled by request of {}", caller.origin());
    let mut tx = state.pool.begin().await?;
    let outcome = leases::cancel(&mut tx, id, &reason).await?;
    let status = match &outcome {
        leases::Cancel::Missing => return Err(ApiError::not_found(format!("no action {id}"))),
        leases::Cancel::Finished(s) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("action {id} already ended ({s}); nothing to cancel"),
            ))
        }
        leases::Cancel::Cancelled { .. } => StatusCode::OK,
        leases::Cancel::Requested => StatusCode::ACCEPTED,
    };
    audit.commit(tx, status, None).await?;
    if let leases::Cancel::Cancelled { kick: Some(next) } = outcome {
        outbox::publish(&state, next).await;
    }
    let action = actions::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no action {id}")))?;
    Ok((status, Json(view(&state, action).await?)))
}
