//! `clusters`: a DB master, its slaves (servers with `cluster` and `db_role`), the replication
//! account, and the master's DNS record (the built-in DNS provider keeps it here).

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Cluster {
    pub name: String,
    pub master: Option<String>,
    pub repl_user: String,
    /// Secret: not serialized.
    pub repl_password: String,
    pub dns_name: String,
    pub dns_address: Option<String>,
    pub dns_ttl: i32,
    /// Whether a dead master must be fenced before its replacement takes writes.
    pub fence: Fence,
    /// Its own DNS provider (`store`, `rfc2136`, `route53`), else the workers' `SA_DNS_PROVIDER`.
    pub dns_provider: Option<String>,
    pub dns_zone: Option<String>,
    /// `rfc2136`: the authoritative server, `host:port`.
    pub dns_server: Option<String>,
    pub dns_key_name: Option<String>,
    /// The stored secret holding the TSIG key (base64).
    pub dns_key_ref: Option<String>,
    /// Semi-synchronous replication: set by every promote, kept by the watcher.
    pub semi_sync: bool,
}

/// A cluster's DNS settings as `PATCH /v1/clusters/{name}` takes them.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// `store` (the record kept here, served by the API), `rfc2136` or `route53`.
    pub provider: Option<String>,
    /// The master record's name (in `zone` for `rfc2136`).
    pub name: Option<String>,
    pub ttl: Option<u32>,
    pub zone: Option<String>,
    /// `rfc2136`: the authoritative server, `IP:port`.
    pub server: Option<String>,
    pub key_name: Option<String>,
    /// A stored secret (`/v1/secrets`) holding the TSIG key, base64 (HMAC-SHA256).
    pub key_ref: Option<String>,
}

/// `required`: a dead master's fence command must succeed before its replacement takes
/// writes; `optional`: it is tried and a failure logged.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Fence {
    #[default]
    Required,
    Optional,
}

/// The cluster lock an action holds (see `leases::take_cluster`): its fencing generation.
#[derive(Clone, Debug)]
pub struct ClusterLock {
    pub cluster: String,
    pub generation: i64,
}

/// A change of master that did not happen: the master was no longer the expected one, or
/// the lock that allowed it was lost.
#[derive(Debug, thiserror::Error)]
pub enum SetMasterError {
    #[error("the master of cluster {cluster} changed meanwhile (expected {expected}), or this action lost the cluster lock: nothing was changed")]
    LostRace { cluster: String, expected: String },
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The public view (`GET /v1/clusters/{name}`): no secrets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    pub name: String,
    pub master: Option<String>,
    /// The slaves in service (not detached).
    pub slaves: Vec<String>,
    /// Every member with its role, what a worker last saw of its replication, and why it is
    /// detached or awaits fencing, if it does.
    pub members: Vec<Member>,
    pub fence: Fence,
    /// The topology action holding the cluster lock, if any.
    pub locked_by: Option<i64>,
    /// The newest 50 events (promotes, fencing, detached slaves), newest first.
    pub events: Vec<Event>,
    /// `{"name", "address", "ttl", "provider", "zone", "server", "key_name", "key_ref"}`.
    #[schema(value_type = Object)]
    pub dns: Value,
    /// Automatic failover: on or off, the block after the last one, the watcher and its last
    /// analysis.
    pub failover: Option<super::watch::FailoverState>,
}

/// The cluster's spare: a server tagged `spare_for: <cluster>` that is not a member yet (the
/// first by name).
pub async fn spare(pool: &PgPool, cluster: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT name FROM servers WHERE tags->>'spare_for' = $1 AND cluster IS DISTINCT FROM $1
         ORDER BY name LIMIT 1",
    )
    .bind(cluster)
    .fetch_optional(pool)
    .await
}

/// The launch profile a cluster's new members are made from: `None`, no such cluster.
pub async fn launch_profile(pool: &PgPool, name: &str) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar("SELECT launch_profile FROM clusters WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// `Ok(false)`: no such cluster.
pub async fn set_launch_profile(
    pool: &PgPool,
    name: &str,
    profile: Option<&str>,
) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE clusters SET launch_profile = $2 WHERE name = $1")
        .bind(name)
        .bind(profile)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<Cluster>> {
    sqlx::query_as(
        "SELECT name, master, repl_user, repl_password, dns_name, dns_address, dns_ttl, fence,
                dns_provider, dns_zone, dns_server, dns_key_name, dns_key_ref, semi_sync
         FROM clusters WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// The cluster, created with `dns_name` (default `<name>-master`) if it does not exist yet;
/// a given `dns_name` replaces the old one.
pub async fn ensure(pool: &PgPool, name: &str, dns_name: Option<&str>) -> sqlx::Result<Cluster> {
    sqlx::query_as(
        "INSERT INTO clusters (name, dns_name) VALUES ($1, COALESCE($2, $1 || '-master'))
         ON CONFLICT (name) DO UPDATE SET dns_name = COALESCE($2, clusters.dns_name)
         RETURNING name, master, repl_user, repl_password, dns_name, dns_address, dns_ttl, fence,
                dns_provider, dns_zone, dns_server, dns_key_name, dns_key_ref, semi_sync",
    )
    .bind(name)
    .bind(dns_name)
    .fetch_one(pool)
    .await
}

/// Make `server` the cluster's master if its master is still `expected` and `lock` still holds
/// the cluster (compare-and-set): a lost race changes nothing. The previous master leaves the
/// role (it stays a member).
pub async fn set_master(
    pool: &PgPool,
    lock: &ClusterLock,
    expected: Option<&str>,
    server: &str,
) -> Result<(), SetMasterError> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE clusters SET master = $2 WHERE name = $1 AND master IS NOT DISTINCT FROM $3
           AND EXISTS (SELECT 1 FROM cluster_leases c
                       JOIN server_leases l ON l.server = c.server AND l.generation = c.server_generation
                       WHERE c.cluster = $1 AND c.generation = $4)",
    )
    .bind(&lock.cluster)
    .bind(server)
    .bind(expected)
    .bind(lock.generation)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(SetMasterError::LostRace {
            cluster: lock.cluster.clone(),
            expected: expected.unwrap_or("none").into(),
        });
    }
    sqlx::query("UPDATE servers SET db_role = NULL WHERE cluster = $1 AND db_role = 'master'")
        .bind(&lock.cluster)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE servers SET cluster = $1, db_role = 'master', detached = NULL,
                repl_state = NULL, repl_state_at = NULL
         WHERE name = $2",
    )
    .bind(&lock.cluster)
    .bind(server)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `server` replicates from the cluster's master (in service: no longer detached or awaiting
/// fencing).
pub async fn add_slave(pool: &PgPool, cluster: &str, server: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE servers SET cluster = $1, db_role = 'slave', detached = NULL, fenced_pending = NULL
         WHERE name = $2",
    )
    .bind(cluster)
    .bind(server)
    .execute(pool)
    .await?;
    Ok(())
}

/// Point the cluster's master record at `address`.
pub async fn set_dns(pool: &PgPool, cluster: &str, address: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE clusters SET dns_address = $2 WHERE name = $1")
        .bind(cluster)
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

/// Take `server` out of service in its cluster (why): it keeps its membership, and
/// `db_configure_slave` brings it back. `fenced_pending`: it still has to be made read-only.
pub async fn detach(
    pool: &PgPool,
    server: &str,
    why: &str,
    fenced_pending: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE servers SET detached = $2, fenced_pending = COALESCE($3, fenced_pending),
                db_role = CASE WHEN db_role = 'master' THEN NULL ELSE db_role END
         WHERE name = $1",
    )
    .bind(server)
    .bind(why)
    .bind(fenced_pending)
    .execute(pool)
    .await?;
    Ok(())
}

/// Record what a worker saw of `server`'s replication.
pub async fn observed(pool: &PgPool, server: &str, state: &Value) -> sqlx::Result<()> {
    sqlx::query("UPDATE servers SET repl_state = $2, repl_state_at = now() WHERE name = $1")
        .bind(server)
        .bind(sqlx::types::Json(state))
        .execute(pool)
        .await?;
    Ok(())
}

/// One entry of a cluster's timeline.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub at: chrono::DateTime<chrono::Utc>,
    pub action_id: Option<i64>,
    pub message: String,
}

pub async fn add_event(
    pool: &PgPool,
    cluster: &str,
    action_id: Option<i64>,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO cluster_events (cluster, action_id, message) VALUES ($1, $2, $3)")
        .bind(cluster)
        .bind(action_id)
        .bind(message)
        .execute(pool)
        .await?;
    Ok(())
}

/// A member as `GET /v1/clusters/{name}` shows it.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub role: Option<String>,
    pub detached: Option<String>,
    pub fenced_pending: Option<String>,
    pub promotion_rule: String,
    /// `{"io_running", "sql_running", "seconds_behind_master", "received", "applied",
    /// "last_io_error", "last_sql_error", "master_host"}` as last seen, and when.
    #[schema(value_type = Option<Object>)]
    pub repl_state: Option<sqlx::types::Json<Value>>,
    pub repl_state_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Change the cluster's DNS settings (the fields given); a new provider, name, zone or server
/// forgets the published address. `Ok(false)`: no such cluster.
pub async fn set_dns_settings(pool: &PgPool, name: &str, d: &DnsSettings) -> sqlx::Result<bool> {
    let r = sqlx::query(
        // A record published elsewhere is not this one: the first change takes the name over.
        "UPDATE clusters SET dns_address = CASE
                    WHEN ($2 IS NOT NULL AND $2 IS DISTINCT FROM dns_provider)
                      OR ($3 IS NOT NULL AND $3 IS DISTINCT FROM dns_name)
                      OR ($5 IS NOT NULL AND $5 IS DISTINCT FROM dns_zone)
                      OR ($6 IS NOT NULL AND $6 IS DISTINCT FROM dns_server) THEN NULL
                    ELSE dns_address END,
                dns_provider = COALESCE($2, dns_provider), dns_name = COALESCE($3, dns_name),
                dns_ttl = COALESCE($4, dns_ttl), dns_zone = COALESCE($5, dns_zone),
                dns_server = COALESCE($6, dns_server), dns_key_name = COALESCE($7, dns_key_name),
                dns_key_ref = COALESCE($8, dns_key_ref)
         WHERE name = $1",
    )
    .bind(name)
    .bind(&d.provider)
    .bind(&d.name)
    .bind(d.ttl.map(|t| t as i32))
    .bind(&d.zone)
    .bind(&d.server)
    .bind(&d.key_name)
    .bind(&d.key_ref)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_fence(pool: &PgPool, name: &str, fence: Fence) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE clusters SET fence = $2 WHERE name = $1")
        .bind(name)
        .bind(fence)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The names of the cluster's slaves in service.
pub async fn slaves(pool: &PgPool, name: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM servers WHERE cluster = $1 AND db_role = 'slave' AND detached IS NULL
         ORDER BY name",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

/// The topology action holding the cluster lock, if one does.
pub async fn locked_by(pool: &PgPool, name: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT c.action_id FROM cluster_leases c
         JOIN server_leases l ON l.server = c.server AND l.generation = c.server_generation
         WHERE c.cluster = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

pub async fn view(pool: &PgPool, name: &str) -> sqlx::Result<Option<ClusterView>> {
    let Some(c) = get(pool, name).await? else {
        return Ok(None);
    };
    let slaves = slaves(pool, name).await?;
    let members = sqlx::query_as(
        "SELECT name, address, db_role AS role, detached, fenced_pending, promotion_rule,
                repl_state, repl_state_at
         FROM servers WHERE cluster = $1 ORDER BY db_role NULLS LAST, name",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let locked_by = locked_by(pool, name).await?;
    let events = sqlx::query_as(
        "SELECT at, action_id, message FROM cluster_events WHERE cluster = $1
         ORDER BY id DESC LIMIT 50",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(Some(ClusterView {
        name: c.name,
        master: c.master,
        slaves,
        members,
        fence: c.fence,
        locked_by,
        events,
        failover: super::watch::state(pool, name).await?,
        dns: json!({"name": c.dns_name, "address": c.dns_address, "ttl": c.dns_ttl,
                    "provider": c.dns_provider.as_deref().unwrap_or("default"), "zone": c.dns_zone,
                    "server": c.dns_server, "key_name": c.dns_key_name, "key_ref": c.dns_key_ref}),
    }))
}
