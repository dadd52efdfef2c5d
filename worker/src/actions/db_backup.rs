//! `db_backup`: a consistent copy of a server's databases, streamed through the worker into S3,
//! recorded as `uncommitted` and committed only once the object and its manifest are complete;
//! then the lineage's retention rules delete what they let go.
//! The strategies are in `mariadb::backup`.

use std::time::Instant;

use serde_json::json;
use shared::{
    db::{
        backups::{self, Manifest, NewBackup},
        servers::DbRole,
    },
    retention,
    spec::{BackupParams, Strategy},
};

use super::{ActionError, Ctx, Done};
use crate::{
    mariadb::{
        backup::{logical, mariabackup, snapshot, Taken},
        compression,
    },
    mysql::{column, Db},
    s3::{Bucket, Uploaded},
    trailer,
};

pub async fn run(ctx: &Ctx<'_>, p: &BackupParams) -> Result<Done, ActionError> {
    let (log, pool, server) = (&ctx.log, &ctx.worker.pool, ctx.server);
    let bucket = ctx.s3()?;
    let strategy = p
        .strategy
        .unwrap_or(if server.db_snapshot_command.is_some() {
            Strategy::Snapshot
        } else {
            Strategy::Mariabackup
        });
    if strategy == Strategy::Snapshot && server.db_snapshot_command.is_none() {
        return Err(ActionError::Failed(format!(
            "the snapshot strategy needs a db_snapshot_command on {} (e.g. a btrfs or LVM snapshot of its datadir)",
            server.name
        )));
    }
    let slave_lag_s = replicating(ctx, p.max_lag_s.unwrap_or(BackupParams::MAX_LAG_S)).await?;
    let lineage = p.lineage.as_deref().unwrap_or(server.lineage());
    let compression = compression::detect(ctx).await?;
    let compress = compression.compress();
    let ext = match strategy {
        Strategy::Snapshot => "tar",
        Strategy::Mariabackup => "xbstream",
        Strategy::Logical => "sql",
    };
    let row = backups::begin(
        pool,
        &NewBackup {
            lineage,
            cluster: server.cluster.as_deref(),
            server: &server.name,
            strategy,
            tag: p.tag.as_deref(),
            action_id: ctx.action.id,
            compression,
            ext: &format!("{ext}.{}", compression.suffix()),
        },
    )
    .await?;
    log.system(format!(
        "Backup {} of {} ({}, {}) to s3://{}/{} (lineage {lineage})...",
        row.id,
        server.name,
        strategy.as_str(),
        compression.as_str(),
        bucket.name,
        row.object_key
    ))
    .await;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let manifest = |u: &Uploaded, t: &Taken| Manifest {
        version: Manifest::VERSION,
        id: row.id,
        lineage: lineage.to_string(),
        cluster: server.cluster.clone(),
        server: server.name.clone(),
        strategy,
        tag: p.tag.clone(),
        compression,
        object_key: row.object_key.clone(),
        bytes: u.bytes,
        sha256: u.sha256.clone(),
        chunks: Some(u.chunks as u64),
        gtid: t.gtid.clone(),
        binlog_file: t.binlog_file.clone(),
        binlog_pos: t.binlog_pos,
        lock_held_ms: t.lock_held_ms,
        tables: t.tables.clone(),
        started_at,
        finished_at: chrono::Utc::now(),
        seconds: started.elapsed().as_secs_f64(),
        action_id: Some(ctx.action.id),
        slave_lag_s,
    };
    // The manifest inside the object is written when the stream ends (its times are the
    // stream's); the one beside it and in PostgreSQL once the object is complete.
    let inside = |u: &Uploaded, t: &Taken| trailer::encode(compression, &json!(manifest(u, t)));
    let key = &row.object_key;
    let taken = match strategy {
        Strategy::Logical => logical::take(ctx, &bucket, key, compress, &inside).await,
        Strategy::Mariabackup => mariabackup::take(ctx, &bucket, key, compress, &inside).await,
        Strategy::Snapshot => snapshot::take(ctx, &bucket, key, row.id, compress, &inside).await,
    };
    let (uploaded, taken) = taken?;
    let secs = started.elapsed().as_secs_f64();
    let manifest = manifest(&uploaded, &taken);
    // And beside it, where a listing finds it without reading the backup.
    bucket
        .put(
            &row.manifest_key(),
            serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        )
        .await?;
    backups::commit(pool, &manifest).await?;
    log.system(format!(
        "Backup {} committed: {:.1} MiB in {secs:.1} s ({:.1} MiB/s), GTID {}.",
        row.id,
        uploaded.bytes as f64 / 1048576.0,
        uploaded.bytes as f64 / 1048576.0 / secs.max(0.001),
        taken.gtid
    ))
    .await;
    expire(ctx, &bucket, lineage).await;
    Ok(Done {
        exit_code: 0,
        result: Some(json!(manifest)),
    })
}

/// Delete what the lineage's retention lets go: objects first, then rows.
async fn expire(ctx: &Ctx<'_>, bucket: &Bucket, lineage: &str) {
    let pool = &ctx.worker.pool;
    let gone = match backups::expired(pool, lineage, &retention::Policy::default()).await {
        Ok(g) => g,
        Err(e) => {
            ctx.log.system(format!("Retention skipped: {e}")).await;
            return;
        }
    };
    let mut deleted = Vec::new();
    for b in gone {
        // Whatever of it is in the bucket: an uncommitted backup's upload deleted its chunks,
        // unless the store was unreachable then; a manifest may exist.
        let removed = async {
            let mut keys = bucket.chunks_of(&b.object_key).await?;
            keys.extend([b.object_key.clone(), b.manifest_key()]);
            bucket.delete_all(&keys).await
        };
        match removed.await {
            Err(e) => {
                ctx.log
                    .system(format!("Retention: could not delete backup {}: {e}", b.id))
                    .await
            }
            Ok(()) => {
                if backups::delete(pool, b.id).await.is_ok() {
                    deleted.push(b.id.to_string());
                }
            }
        }
    }
    if !deleted.is_empty() {
        ctx.log
            .system(format!(
                "Retention: deleted backups {} of lineage {lineage}.",
                deleted.join(", ")
            ))
            .await;
    }
}

/// On a slave: its lag, once it is shown to replicate (both threads running) within `max_lag_s`;
/// a slave whose replication broke or fell behind is not backed up (its copy would be old or
/// wrong, and retention would let it push out good ones). `None` on any other server.
async fn replicating(ctx: &Ctx<'_>, max_lag_s: u32) -> Result<Option<u64>, ActionError> {
    if ctx.server.db_role != Some(DbRole::Slave) {
        return Ok(None);
    }
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let status = db.query_first_row("SHOW SLAVE STATUS").await;
    db.close().await;
    let name = &ctx.server.name;
    let Some(s) = status? else {
        return Err(ActionError::Failed(format!(
            "{name} is a slave of its cluster but replicates from nothing: not backed up"
        )));
    };
    let (io, sql, lag) = (
        column(&s, "Slave_IO_Running"),
        column(&s, "Slave_SQL_Running"),
        column(&s, "Seconds_Behind_Master"),
    );
    if io != "Yes" || sql != "Yes" {
        let errors: Vec<String> = ["Last_IO_Error", "Last_SQL_Error"]
            .iter()
            .filter_map(|k| {
                column(&s, k)
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .map(|e| format!("{k}: {e}"))
            })
            .collect();
        return Err(ActionError::Failed(format!(
            "{name}'s replication is broken (IO thread {}, SQL thread {}){}: not backed up",
            io.as_str().unwrap_or("?"),
            sql.as_str().unwrap_or("?"),
            if errors.is_empty() {
                String::new()
            } else {
                format!("; {}", errors.join("; "))
            }
        )));
    }
    match lag.as_u64() {
        Some(l) if l <= u64::from(max_lag_s) => {
            ctx.log
                .system(format!("{name} replicates, {l} s behind its master."))
                .await;
            Ok(Some(l))
        }
        l => Err(ActionError::Failed(format!(
            "{name} lags its master by {} (more than max_lag_s {max_lag_s} s): not backed up",
            l.map_or_else(|| "an unknown time".to_string(), |l| format!("{l} s"))
        ))),
    }
}
