//! `servers`: the managed hosts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{types::Json, Connection, PgConnection, PgPool};

#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub ssh_port: i32,
    pub ssh_user: String,
    pub host_key: Option<String>,
    pub db_port: i32,
    #[schema(value_type = Object)]
    pub tags: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// Where mysqld listens, seen from the server (default 127.0.0.1).
    pub db_host: Option<String>,
    /// The DB cluster it belongs to, and its role there (`master`, `slave`).
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub db_role: Option<DbRole>,
    /// The option file the workers own on the server (`[mysqld]` settings they manage).
    #[serde(default)]
    pub db_config_file: Option<String>,
    /// How the workers restart mysqld there.
    #[serde(default)]
    pub db_restart_command: Option<String>,
    /// mysqld's data directory (restores write there).
    #[serde(default)]
    pub db_datadir: Option<String>,
    #[serde(default)]
    pub db_stop_command: Option<String>,
    #[serde(default)]
    pub db_start_command: Option<String>,
    /// Takes a read-only snapshot of the datadir (the `snapshot` backup strategy).
    #[serde(default)]
    pub db_snapshot_command: Option<String>,
    #[serde(default)]
    pub db_snapshot_cleanup_command: Option<String>,
    /// The workers' MySQL user there (default `SA_MYSQL_USER`).
    #[serde(default)]
    pub db_user: Option<String>,
    /// The stored secret holding that user's password (default `SA_MYSQL_PASSWORD`).
    #[serde(default)]
    pub db_password_ref: Option<String>,
    /// Run from the worker to fence it when it is a dead master (e.g. stop its instance).
    #[serde(default)]
    pub db_fence_command: Option<String>,
    /// Which slave a cluster-level promote prefers among equally advanced ones.
    #[serde(default)]
    pub promotion_rule: PromotionRule,
    /// An old master still to be made read-only when it answers again (why).
    #[serde(default)]
    pub fenced_pending: Option<String>,
    /// Out of service in its cluster (why): not repointed, or an old master.
    #[serde(default)]
    pub detached: Option<String>,
    /// What a worker last saw of its replication, and when.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub repl_state: Option<Json<serde_json::Value>>,
    #[serde(default)]
    pub repl_state_at: Option<DateTime<Utc>>,
    /// `registered` (added by hand) or where a launched one is in its life.
    #[serde(default)]
    pub state: ServerState,
    /// The EC2 instance, for a launched server.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The launch profile it was made from.
    #[serde(default)]
    pub launch_profile: Option<String>,
    /// Its server template (boot, operational and decommission scripts).
    #[serde(default)]
    pub template: Option<String>,
    /// The deployment it belongs to (input values for its scripts).
    #[serde(default)]
    pub deployment: Option<String>,
    /// Its own input values for scripts (above its deployment's).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: Json<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// A server's lifecycle (see the migration `ec2`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    #[default]
    Registered,
    Launching,
    Running,
    LaunchFailed,
    Stopped,
    Terminated,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Registered => "registered",
            ServerState::Launching => "launching",
            ServerState::Running => "running",
            ServerState::LaunchFailed => "launch_failed",
            ServerState::Stopped => "stopped",
            ServerState::Terminated => "terminated",
        }
    }

    /// Whether actions can reach it over SSH.
    pub fn reachable(self) -> bool {
        matches!(self, ServerState::Registered | ServerState::Running)
    }
}

impl Server {
    /// mysqld's data directory.
    pub fn datadir(&self) -> &str {
        self.db_datadir.as_deref().unwrap_or("/var/lib/mysql")
    }

    /// How mysqld is stopped and started (restores).
    pub fn db_stop(&self) -> &str {
        self.db_stop_command
            .as_deref()
            .unwrap_or("systemctl stop mariadb")
    }

    pub fn db_start(&self) -> &str {
        self.db_start_command
            .as_deref()
            .unwrap_or("systemctl start mariadb")
    }

    /// The lineage its backups belong to by default: its cluster, else its own name.
    pub fn lineage(&self) -> &str {
        self.cluster.as_deref().unwrap_or(&self.name)
    }
}

/// A server's role in its DB cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    Master,
    Slave,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Master => "master",
            DbRole::Slave => "slave",
        }
    }
}

/// How a cluster-level promote ranks a slave among equally advanced ones.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PromotionRule {
    Prefer,
    #[default]
    Neutral,
    /// Never promoted by a cluster-level promote (a backup-only or remote slave).
    MustNot,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewServer {
    pub name: String,
    pub address: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub host_key: Option<String>,
    pub db_port: u16,
    pub db_host: Option<String>,
    pub db_config_file: Option<String>,
    pub db_restart_command: Option<String>,
    pub db_datadir: Option<String>,
    pub db_stop_command: Option<String>,
    pub db_start_command: Option<String>,
    pub db_snapshot_command: Option<String>,
    pub db_snapshot_cleanup_command: Option<String>,
    pub db_user: Option<String>,
    pub db_password_ref: Option<String>,
    pub db_fence_command: Option<String>,
    pub promotion_rule: PromotionRule,
    pub tags: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("a server named {0:?} already exists")]
    Duplicate(String),
    #[error("server {0:?} has unfinished actions")]
    Busy(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn insert(conn: &mut PgConnection, s: &NewServer) -> Result<Server, ServerError> {
    sqlx::query_as(
        "INSERT INTO servers (name, address, ssh_port, ssh_user, host_key, db_port, tags, db_host,
                              db_config_file, db_restart_command, db_datadir, db_stop_command,
                              db_start_command, db_snapshot_command, db_snapshot_cleanup_command,
                              db_user, db_password_ref, db_fence_command, promotion_rule)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         RETURNING *",
    )
    .bind(&s.name)
    .bind(&s.address)
    .bind(i32::from(s.ssh_port))
    .bind(&s.ssh_user)
    .bind(&s.host_key)
    .bind(i32::from(s.db_port))
    .bind(Json(&s.tags))
    .bind(&s.db_host)
    .bind(&s.db_config_file)
    .bind(&s.db_restart_command)
    .bind(&s.db_datadir)
    .bind(&s.db_stop_command)
    .bind(&s.db_start_command)
    .bind(&s.db_snapshot_command)
    .bind(&s.db_snapshot_cleanup_command)
    .bind(&s.db_user)
    .bind(&s.db_password_ref)
    .bind(&s.db_fence_command)
    .bind(s.promotion_rule)
    .fetch_one(conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ServerError::Duplicate(s.name.clone())
        }
        e => e.into(),
    })
}

/// Register a server to be launched from `profile`: state `launching`, no address yet.
pub async fn insert_launching(
    conn: &mut PgConnection,
    name: &str,
    profile: &str,
    ssh_user: &str,
    ssh_port: u16,
    tags: &serde_json::Value,
) -> Result<Server, ServerError> {
    sqlx::query_as(
        "INSERT INTO servers (name, address, ssh_user, ssh_port, tags, state, launch_profile)
         VALUES ($1, '', $2, $3, $4, 'launching', $5) RETURNING *",
    )
    .bind(name)
    .bind(ssh_user)
    .bind(i32::from(ssh_port))
    .bind(Json(tags))
    .bind(profile)
    .fetch_one(conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ServerError::Duplicate(name.into()),
        e => e.into(),
    })
}

/// The instance a launch made (recorded as soon as it exists).
pub async fn set_instance(pool: &PgPool, name: &str, instance_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE servers SET instance_id = $2 WHERE name = $1")
        .bind(name)
        .bind(instance_id)
        .execute(pool)
        .await
        .map(drop)
}

/// Where a launched instance is and the host key it must answer with; its DB settings from
/// its profile (`DB_FIELDS` with their values).
pub async fn set_launched(
    pool: &PgPool,
    name: &str,
    address: &str,
    host_key: &str,
    db_port: Option<u16>,
    db: &[(&'static str, Option<String>)],
) -> sqlx::Result<Server> {
    let get = |field: &str| {
        db.iter()
            .find(|(f, _)| *f == field)
            .and_then(|(_, v)| v.clone())
    };
    sqlx::query_as(
        "UPDATE servers SET address = $2, host_key = $3, db_port = COALESCE($4, db_port),
                db_host = $5, db_config_file = $6, db_datadir = $7, db_restart_command = $8,
                db_stop_command = $9, db_start_command = $10, db_user = $11, db_password_ref = $12
         WHERE name = $1 RETURNING *",
    )
    .bind(name)
    .bind(address)
    .bind(host_key)
    .bind(db_port.map(i32::from))
    .bind(get("db_host"))
    .bind(get("db_config_file"))
    .bind(get("db_datadir"))
    .bind(get("db_restart_command"))
    .bind(get("db_stop_command"))
    .bind(get("db_start_command"))
    .bind(get("db_user"))
    .bind(get("db_password_ref"))
    .fetch_one(pool)
    .await
}

pub async fn set_state(pool: &PgPool, name: &str, state: ServerState) -> sqlx::Result<()> {
    sqlx::query("UPDATE servers SET state = $2 WHERE name = $1")
        .bind(name)
        .bind(state)
        .execute(pool)
        .await
        .map(drop)
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<Server>> {
    sqlx::query_as("SELECT * FROM servers WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn get_conn(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<Server>> {
    sqlx::query_as("SELECT * FROM servers WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Server>> {
    sqlx::query_as("SELECT * FROM servers ORDER BY name")
        .fetch_all(pool)
        .await
}

/// Delete a server that has no queued, waiting or running action. `Ok(false)`: no such server.
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<bool, ServerError> {
    let mut tx = conn.begin().await?;
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM servers WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Ok(false);
    }
    let (busy,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM actions WHERE server = $1 AND status IN ('queued','waiting','running'))",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    if busy {
        return Err(ServerError::Busy(name.into()));
    }
    sqlx::query("DELETE FROM servers WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    // A cluster it was the master of has none now: nothing is watched, probed or written to
    // through the name, which another server may take.
    sqlx::query(
        "WITH c AS (UPDATE clusters SET master = NULL WHERE master = $1 RETURNING name)
         INSERT INTO cluster_events (cluster, message)
         SELECT name, 'Master server ' || $1 || ' deleted: the cluster has no master' FROM c",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
