//! `/v1/clusters/{name}`: master, members with their replication state, the master's DNS
//! record, the lock and the timeline (no secrets); `PATCH` its fencing policy; `promote` its
//! most advanced slave.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{
    action::ActionKind,
    db::{
        clusters::{self, ClusterView, DnsSettings, Fence},
        watch::{self, FailoverState, GlobalSwitch},
    },
    http::ActionRequest,
};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

#[utoipa::path(get, path = "/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), responses(
    (status = 200, description = "master, members with their replication state, DNS record, lock and timeline (no secrets)", body = ClusterView), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterView>> {
    super::named("cluster", &name)?;
    caller.reach_cluster(&name)?;
    clusters::view(&state.pool, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    /// `required` (default): a dead master's db_fence_command must succeed before a promote
    /// gives writes to its replacement; `optional`: a failure is logged and the promote goes on.
    fence: Option<Fence>,
    /// Where the master record is published: `{"provider": "rfc2136", "zone", "server":
    /// "IP:port", "key_name", "key_ref", "name"?, "ttl"?}`, `{"provider": "route53", "zone":
    /// hosted zone id, "key_name"?: access key id, "key_ref"?: its secret key}` or
    /// `{"provider": "store"}`.
    dns: Option<DnsSettings>,
    /// Watch the cluster and fail it over automatically when its master is dead.
    auto_failover: Option<bool>,
    /// After an automatic failover, no second one for this long (seconds, 0 to 604800)
    /// unless acknowledged (`POST /v1/clusters/{name}/ack`).
    failover_block_s: Option<u32>,
    /// Semi-synchronous replication (MariaDB's built-in, wait point AFTER_SYNC): the master
    /// acknowledges a commit once a slave has it, so a failover loses no acknowledged write.
    /// Set by every promote and by the cluster's watcher within a probe.
    semi_sync: Option<bool>,
    /// The launch profile new members are made from (`POST /v1/servers/launch` with
    /// `cluster`); `""` clears it.
    launch_profile: Option<String>,
}

/// A DNS name as the settings take it (a trailing dot allowed).
fn dns_name(field: &str, v: &str) -> ApiResult<()> {
    let bare = v.strip_suffix('.').unwrap_or(v);
    if bare.parse::<std::net::IpAddr>().is_err() && shared::validate::address(bare).is_ok() {
        return Ok(());
    }
    Err(ApiError::bad(field, format!("{field}: must be a DNS name")))
}

/// The settings given, checked field by field and, merged with the cluster's, complete for
/// their provider.
async fn check_dns(
    state: &AppState,
    cluster: &clusters::Cluster,
    d: &DnsSettings,
) -> ApiResult<()> {
    if let Some(p) = &d.provider {
        if !["store", "rfc2136", "route53"].contains(&p.as_str()) {
            return Err(ApiError::bad(
                "dns.provider",
                "dns.provider: must be store, rfc2136 or route53",
            ));
        }
    }
    let provider = d.provider.as_deref().or(cluster.dns_provider.as_deref());
    for (field, v) in [
        ("dns.name", &d.name),
        ("dns.zone", &d.zone),
        ("dns.key_name", &d.key_name),
    ] {
        match v {
            // Route 53 names its zones by id and its keys by access key id.
            Some(v) if provider == Some("route53") && field != "dns.name" => {
                shared::validate::server_name(field, v)?
            }
            Some(v) => dns_name(field, v)?,
            None => {}
        }
    }
    if let Some(t) = d.ttl {
        if !(1..=86_400).contains(&t) {
            return Err(ApiError::bad(
                "dns.ttl",
                "dns.ttl: must be 1 to 86400 seconds",
            ));
        }
    }
    if let Some(s) = &d.server {
        if s.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad(
                "dns.server",
                "dns.server: must be IP:port (e.g. 192.0.2.53:53)",
            ));
        }
    }
    if let Some(r) = &d.key_ref {
        shared::validate::server_name("dns.key_ref", r)?;
        if !shared::db::secrets::missing(&state.pool, std::slice::from_ref(r))
            .await?
            .is_empty()
        {
            return Err(ApiError::bad(
                "dns.key_ref",
                format!("dns.key_ref: no secret named {r:?} (add it with sactl secrets set)"),
            ));
        }
    }
    if provider == Some("route53") && d.zone.is_none() && cluster.dns_zone.is_none() {
        return Err(ApiError::bad(
            "dns.zone",
            "dns.zone: the route53 provider needs the hosted zone id",
        ));
    }
    if provider == Some("rfc2136") {
        for (field, given, kept) in [
            ("dns.zone", &d.zone, &cluster.dns_zone),
            ("dns.server", &d.server, &cluster.dns_server),
            ("dns.key_name", &d.key_name, &cluster.dns_key_name),
            ("dns.key_ref", &d.key_ref, &cluster.dns_key_ref),
        ] {
            if given.is_none() && kept.is_none() {
                return Err(ApiError::bad(
                    field,
                    format!("{field}: the rfc2136 provider needs it"),
                ));
            }
        }
    }
    Ok(())
}

#[utoipa::path(patch, path = "/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), request_body = ClusterPatch, responses(
    (status = 200, description = "the cluster", body = ClusterView), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<ClusterView>> {
    super::named("cluster", &name)?;
    audit.target(format!("cluster:{name}"));
    caller.require(shared::auth::Role::Admin, "changing a cluster")?;
    caller.reach_cluster(&name)?;
    let Json(body) = body?;
    let changes = body.clone();
    let p: ClusterPatch = from_value(body)?;
    if let Some(d) = &p.dns {
        let cluster = clusters::get(&state.pool, &name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))?;
        check_dns(&state, &cluster, d).await?;
        clusters::set_dns_settings(&state.pool, &name, d).await?;
    }
    if let Some(b) = p.failover_block_s.filter(|b| *b > 604_800) {
        return Err(ApiError::bad(
            "failover_block_s",
            format!("failover_block_s: {b} is more than 604800 seconds (a week)"),
        ));
    }
    if p.auto_failover.is_some() || p.failover_block_s.is_some() || p.semi_sync.is_some() {
        let block = p.failover_block_s.map(|b| b as i32);
        if !watch::configure(&state.pool, &name, p.auto_failover, block, p.semi_sync).await? {
            return Err(ApiError::not_found(format!("no cluster named {name:?}")));
        }
    }
    if let Some(lp) = &p.launch_profile {
        let lp = (!lp.is_empty()).then_some(lp.as_str());
        if let Some(n) = lp {
            shared::validate::server_name("launch_profile", n)?;
            if shared::db::profiles::get(&state.pool, n).await?.is_none() {
                return Err(ApiError::bad(
                    "launch_profile",
                    format!("launch_profile: no launch profile named {n:?}"),
                ));
            }
        }
        if !clusters::set_launch_profile(&state.pool, &name, lp).await? {
            return Err(ApiError::not_found(format!("no cluster named {name:?}")));
        }
    }
    if let Some(f) = p.fence {
        if !clusters::set_fence(&state.pool, &name, f).await? {
            return Err(ApiError::not_found(format!("no cluster named {name:?}")));
        }
    }
    let view = clusters::view(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))?;
    audit
        .commit(state.pool.begin().await?, StatusCode::OK, Some(changes))
        .await?;
    Ok(Json(view))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Promote although it cannot be proven safe (each overridden check is logged).
    #[serde(default)]
    force: bool,
    idempotency_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/clusters/{name}/promote", tag = "clusters", params(("name" = String, Path)), request_body = PromoteRequest, responses(
    (status = 202, description = "a db_promote of the cluster's most advanced slave, on its master's server", body = shared::Action),
    (status = 200, description = "the first action of a reused idempotency key", body = shared::Action),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "the cluster has no master to replace", body = ErrorBody)))]
pub async fn promote(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    super::named("cluster", &name)?;
    audit.target(format!("cluster:{name}"));
    caller.require(ActionKind::DbPromote.required_role(), "db_promote")?;
    caller.reach_cluster(&name)?;
    // An empty body is a promote without options.
    let p: PromoteRequest = match body {
        Ok(Json(v)) => from_value(v)?,
        Err(JsonRejection::MissingJsonContentType(_)) => PromoteRequest::default(),
        Err(e) => return Err(e.into()),
    };
    let cluster = clusters::get(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))?;
    // The action runs on the master it replaces: that server's line is where it belongs.
    let Some(master) = cluster.master else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("cluster {name:?} has no master to replace: configure one, or restore one as master"),
        ));
    };
    let request = ActionRequest {
        server: master,
        kind: ActionKind::DbPromote.as_str().into(),
        params: Some(json!({"cluster": name, "force": p.force})),
        idempotency_key: p.idempotency_key,
        ..Default::default()
    };
    let new = super::actions::validate_request(request, &caller)?;
    super::actions::accept(&state, &caller, audit, new).await
}

#[utoipa::path(post, path = "/v1/clusters/{name}/ack", tag = "clusters", params(("name" = String, Path)), responses(
    (status = 200, description = "the last automatic failover is acknowledged: the block is lifted", body = FailoverState),
    (status = 404, description = "not found", body = ErrorBody)))]
/// Acknowledge the cluster's last automatic failover: a second one may happen at once.
pub async fn ack(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<Json<FailoverState>> {
    super::named("cluster", &name)?;
    audit.target(format!("cluster:{name}"));
    caller.require(
        ActionKind::DbFailover.required_role(),
        "acknowledging a failover",
    )?;
    caller.reach_cluster(&name)?;
    if !watch::ack(&state.pool, &name, &caller.origin()).await? {
        return Err(ApiError::not_found(format!("no cluster named {name:?}")));
    }
    audit
        .commit(state.pool.begin().await?, StatusCode::OK, None)
        .await?;
    failover_state(&state, &name).await.map(Json)
}

async fn failover_state(state: &AppState, name: &str) -> ApiResult<FailoverState> {
    watch::state(&state.pool, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster named {name:?}")))
}

#[utoipa::path(get, path = "/v1/clusters/{name}/failover-plan", tag = "clusters", params(("name" = String, Path)), responses(
    (status = 200, description = "what a failover would do now, as the cluster's watcher last saw it (`plan`), with its analysis", body = FailoverState),
    (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "no watcher has looked at the cluster yet (auto_failover is off)", body = ErrorBody)))]
/// The dry run: the candidate, the GTID differences, the fence step, the spare and what would
/// be lost, from the watcher's last probe (the api never connects to a server).
pub async fn failover_plan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<FailoverState>> {
    super::named("cluster", &name)?;
    caller.reach_cluster(&name)?;
    let f = failover_state(&state, &name).await?;
    if f.plan.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            if f.auto_failover {
                format!(
                    "cluster {name:?} has not been probed yet: its watcher starts within seconds"
                )
            } else {
                format!("cluster {name:?} is not watched: turn auto_failover on (PATCH /v1/clusters/{name}) to get its plan")
            },
        ));
    }
    Ok(Json(f))
}

#[utoipa::path(get, path = "/v1/auto-failover", tag = "clusters", responses(
    (status = 200, description = "the global switch of automatic failover", body = GlobalSwitch)))]
pub async fn global(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> ApiResult<Json<GlobalSwitch>> {
    Ok(Json(watch::global(&state.pool).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalSwitchRequest {
    /// `false`: no automatic failover on any cluster (maintenance); watchers keep watching.
    enabled: bool,
    reason: Option<String>,
}

#[utoipa::path(put, path = "/v1/auto-failover", tag = "clusters", request_body = GlobalSwitchRequest, responses(
    (status = 200, description = "the global switch, changed", body = GlobalSwitch),
    (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn set_global(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<GlobalSwitch>> {
    audit.target("auto-failover".to_string());
    caller.require(shared::auth::Role::Admin, "switching automatic failover")?;
    let Json(body) = body?;
    let changes = body.clone();
    let r: GlobalSwitchRequest = from_value(body)?;
    if let Some(reason) = r.reason.as_deref() {
        if reason.len() > 500 || reason.chars().any(char::is_control) {
            return Err(ApiError::bad(
                "reason",
                "reason: at most 500 characters on one line",
            ));
        }
    }
    watch::set_global(
        &state.pool,
        r.enabled,
        r.reason.as_deref(),
        &caller.origin(),
    )
    .await?;
    audit
        .commit(state.pool.begin().await?, StatusCode::OK, Some(changes))
        .await?;
    Ok(Json(watch::global(&state.pool).await?))
}
