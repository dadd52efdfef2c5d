//! `backups`: one row per backup object, `uncommitted` until its upload and manifest are
//! complete. Restores and retention only ever count `committed` ones.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{types::Json, PgPool};

use crate::{retention, spec::Strategy};

/// `uncommitted` until its upload and manifest are complete.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Uncommitted,
    Committed,
}

/// How a backup's stream is compressed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }

    /// The object's file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Zstd => "zst",
            Compression::Gzip => "gz",
        }
    }

    /// The shell command that compresses stdin to stdout (fast levels).
    pub fn compress(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd -1 -T0 -q -c",
            Compression::Gzip => "gzip -1 -c",
        }
    }

    /// The shell command that decompresses stdin to stdout.
    pub fn decompress(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd -d -q -c",
            Compression::Gzip => "gzip -d -c",
        }
    }
}

/// A verification's verdict.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Good,
    Bad,
}

#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Backup {
    pub id: i64,
    pub lineage: String,
    pub cluster: Option<String>,
    pub server: String,
    pub strategy: Strategy,
    pub tag: Option<String>,
    pub status: BackupStatus,
    pub action_id: Option<i64>,
    /// Where the backup is: its chunks `chunk_key(object_key, 1..=chunks)`, or, without
    /// `chunks` (backups made before chunks), the one object `object_key`.
    pub object_key: String,
    pub chunks: Option<i32>,
    pub compression: Compression,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub gtid: Option<String>,
    #[schema(value_type = Option<Manifest>)]
    pub manifest: Option<Json<Manifest>>,
    pub verified: Option<Verdict>,
    pub verify_note: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
}

/// What a backup is: stored beside it (`manifest.json`), inside its last chunk and on its row,
/// and read back from the bucket years later (a restore without the control plane's database).
/// Fields are only ever added, as `Option`s; `version` says which were written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    /// 1: the fields below. Manifests written before the field existed read as 1.
    #[serde(default = "Manifest::first")]
    pub version: u32,
    pub id: i64,
    pub lineage: String,
    pub cluster: Option<String>,
    pub server: String,
    pub strategy: Strategy,
    pub tag: Option<String>,
    pub compression: Compression,
    pub object_key: String,
    /// Of the compressed stream (what the sha256 covers; the manifest frame comes after).
    pub bytes: u64,
    pub sha256: String,
    /// Chunk objects; absent for a backup stored as one object.
    #[serde(default)]
    pub chunks: Option<u64>,
    pub gtid: String,
    pub binlog_file: Option<String>,
    pub binlog_pos: Option<u64>,
    /// How long the global read lock was held (snapshots).
    pub lock_held_ms: Option<f64>,
    /// Exact row counts per `schema.table`, counted under the lock (snapshots).
    pub tables: Option<std::collections::BTreeMap<String, u64>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub action_id: Option<i64>,
    /// A slave's replication lag when its backup started (Seconds_Behind_Master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slave_lag_s: Option<u64>,
}

impl Manifest {
    pub const VERSION: u32 = 1;

    fn first() -> u32 {
        1
    }
}

impl Backup {
    /// The backup a manifest describes (the one inside its object), found at `object_key`.
    pub fn from_manifest(object_key: &str, m: &Manifest) -> Backup {
        Backup {
            id: m.id,
            lineage: m.lineage.clone(),
            cluster: m.cluster.clone(),
            server: m.server.clone(),
            strategy: m.strategy,
            tag: m.tag.clone(),
            status: BackupStatus::Committed,
            action_id: m.action_id,
            object_key: object_key.to_string(),
            chunks: m.chunks.and_then(|n| i32::try_from(n).ok()),
            compression: m.compression,
            bytes: i64::try_from(m.bytes).ok(),
            sha256: Some(m.sha256.clone()),
            gtid: Some(m.gtid.clone()),
            manifest: Some(Json(m.clone())),
            verified: None,
            verify_note: None,
            verified_at: None,
            started_at: m.started_at,
            committed_at: None,
        }
    }

    /// The objects whose concatenation is the backup, in order.
    pub fn object_keys(&self) -> Vec<String> {
        match self.chunks {
            Some(n) => (1..=n as usize)
                .map(|i| chunk_key(&self.object_key, i))
                .collect(),
            None => vec![self.object_key.clone()],
        }
    }

    /// The manifest object stored beside the backup.
    pub fn manifest_key(&self) -> String {
        format!("{}/{}/manifest.json", self.lineage, self.id)
    }
}

/// The `n`th (from 1) chunk object of the backup at `object_key`: `<object_key>.000001`...
pub fn chunk_key(object_key: &str, n: usize) -> String {
    format!("{object_key}.{n:06}")
}

pub struct NewBackup<'a> {
    pub lineage: &'a str,
    pub cluster: Option<&'a str>,
    pub server: &'a str,
    pub strategy: Strategy,
    pub tag: Option<&'a str>,
    pub action_id: i64,
    pub compression: Compression,
    /// The object's file extension (`tar.zst`, `xbstream.zst`, `sql.zst`...).
    pub ext: &'a str,
}

/// Record a backup about to be uploaded (`uncommitted`); its object key is
/// `<lineage>/<id>/backup.<ext>`.
pub async fn begin(pool: &PgPool, b: &NewBackup<'_>) -> sqlx::Result<Backup> {
    sqlx::query_as(
        "WITH n AS (SELECT nextval('backups_id_seq') AS id)
         INSERT INTO backups (id, lineage, cluster, server, strategy, tag, action_id, compression, object_key)
         SELECT n.id, $1, $2, $3, $4, $5, $6, $7, $1 || '/' || n.id || '/backup.' || $8 FROM n
         RETURNING *",
    )
    .bind(b.lineage)
    .bind(b.cluster)
    .bind(b.server)
    .bind(b.strategy)
    .bind(b.tag)
    .bind(b.action_id)
    .bind(b.compression)
    .bind(b.ext)
    .fetch_one(pool)
    .await
}

/// The upload and the manifest object are complete: the backup counts from now on.
pub async fn commit(pool: &PgPool, m: &Manifest) -> sqlx::Result<Backup> {
    sqlx::query_as(
        "UPDATE backups SET status = 'committed', committed_at = now(), bytes = $2, sha256 = $3,
                gtid = $4, manifest = $5, chunks = $6
         WHERE id = $1 RETURNING *",
    )
    .bind(m.id)
    .bind(m.bytes as i64)
    .bind(&m.sha256)
    .bind(&m.gtid)
    .bind(Json(m))
    .bind(m.chunks.map(|n| n as i32))
    .fetch_one(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Backup>> {
    sqlx::query_as("SELECT * FROM backups WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The newest committed backup of `lineage` (taken before `before`, if given).
pub async fn latest(
    pool: &PgPool,
    lineage: &str,
    before: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Backup>> {
    sqlx::query_as(
        "SELECT * FROM backups WHERE lineage = $1 AND status = 'committed'
           AND ($2::timestamptz IS NULL OR started_at < $2)
         ORDER BY started_at DESC, id DESC LIMIT 1",
    )
    .bind(lineage)
    .bind(before)
    .fetch_optional(pool)
    .await
}

/// Backups, newest first, of a cluster and/or a lineage (all if neither).
pub async fn list(
    pool: &PgPool,
    cluster: Option<&str>,
    lineage: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Backup>> {
    sqlx::query_as(
        "SELECT * FROM backups WHERE ($1::text IS NULL OR cluster = $1) AND ($2::text IS NULL OR lineage = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(cluster)
    .bind(lineage)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct WithRun {
    #[sqlx(flatten)]
    backup: Backup,
    /// Its backup action is still queued or running.
    running: bool,
}

/// The backups of `lineage` that `policy` lets go.
pub async fn expired(
    pool: &PgPool,
    lineage: &str,
    policy: &retention::Policy,
) -> sqlx::Result<Vec<Backup>> {
    let items: Vec<WithRun> = sqlx::query_as(
        "SELECT b.*, COALESCE(a.status IN ('queued', 'waiting', 'running'), false) AS running
         FROM backups b LEFT JOIN actions a ON a.id = b.action_id WHERE b.lineage = $1",
    )
    .bind(lineage)
    .fetch_all(pool)
    .await?;
    let view: Vec<retention::Item> = items
        .iter()
        .map(|i| retention::Item {
            id: i.backup.id,
            committed: i.backup.status == BackupStatus::Committed,
            at: i.backup.started_at,
            running: i.running,
        })
        .collect();
    let gone = retention::expired(&view, policy);
    Ok(items
        .into_iter()
        .map(|i| i.backup)
        .filter(|b| gone.contains(&b.id))
        .collect())
}

pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM backups WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_verified(
    pool: &PgPool,
    id: i64,
    verdict: Verdict,
    note: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE backups SET verified = $2, verify_note = $3, verified_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(verdict)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(())
}
