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
}

/// The public view (`GET /v1/clusters/{name}`): no secrets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    pub name: String,
    pub master: Option<String>,
    pub slaves: Vec<String>,
    /// `{"name", "address", "ttl"}`.
    #[schema(value_type = Object)]
    pub dns: Value,
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<Cluster>> {
    sqlx::query_as(
        "SELECT name, master, repl_user, repl_password, dns_name, dns_address, dns_ttl
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
         RETURNING name, master, repl_user, repl_password, dns_name, dns_address, dns_ttl",
    )
    .bind(name)
    .bind(dns_name)
    .fetch_one(pool)
    .await
}

/// Record `server` as the cluster's master (any previous master leaves the role).
pub async fn set_master(pool: &PgPool, cluster: &str, server: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE servers SET db_role = NULL WHERE cluster = $1 AND db_role = 'master'")
        .bind(cluster)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE servers SET cluster = $1, db_role = 'master' WHERE name = $2")
        .bind(cluster)
        .bind(server)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE clusters SET master = $2 WHERE name = $1")
        .bind(cluster)
        .bind(server)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub async fn add_slave(pool: &PgPool, cluster: &str, server: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE servers SET cluster = $1, db_role = 'slave' WHERE name = $2")
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

/// The names of the cluster's slaves.
pub async fn slaves(pool: &PgPool, name: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM servers WHERE cluster = $1 AND db_role = 'slave' ORDER BY name",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

pub async fn view(pool: &PgPool, name: &str) -> sqlx::Result<Option<ClusterView>> {
    let Some(c) = get(pool, name).await? else {
        return Ok(None);
    };
    let slaves = slaves(pool, name).await?;
    Ok(Some(ClusterView {
        name: c.name,
        master: c.master,
        slaves,
        dns: json!({"name": c.dns_name, "address": c.dns_address, "ttl": c.dns_ttl}),
    }))
}
