//! `db_backup`: a consistent copy of a server's databases, streamed through the worker into S3,
//! recorded as `uncommitted` and committed only once the object and its manifest are complete;
//! then the lineage's retention rules delete what they let go.
//!
//! Strategies:
//! - `snapshot` (the seed's): global read lock, taken with a short server-side timeout and
//!   retried (a lock request never queues behind a long query for long: it is also killed from a
//!   second session when it expires), binlog position and GTID noted, the server's snapshot
//!   command run, unlock; then the snapshot is streamed as a compressed tar and removed.
//! - `mariabackup`: `mariadb-backup --backup --stream=xbstream`, compressed, streamed.
//! - `logical`: `mysqldump --single-transaction --gtid` of the non-system databases.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::json;
use shared::{
    db::backups::{self, NewBackup},
    retention,
    spec::{BackupParams, Strategy},
};

use super::{ActionError, Ctx, Done};
use crate::{
    mariadb::compression,
    mysql::{column, ClientOpts, Db},
    s3::{Store, Uploaded},
    trailer,
    transfer::{self, piped},
};

/// The global read lock: each try waits at most this long, this many times.
const LOCK_WAIT_S: u64 = 2;
const LOCK_TRIES: u32 = 5;

/// What a strategy found out besides the upload.
#[derive(Default, Clone)]
struct Taken {
    gtid: String,
    binlog_file: Option<String>,
    binlog_pos: Option<u64>,
    lock_held_ms: Option<f64>,
    /// Exact row counts at the backup's point (when the strategy can take them there).
    tables: Option<BTreeMap<String, u64>>,
}

pub async fn run(ctx: &Ctx<'_>, p: &BackupParams) -> Result<Done, ActionError> {
    let (log, pool, server) = (&ctx.log, &ctx.worker.pool, ctx.server);
    let store = ctx.s3()?;
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
        store.bucket,
        row.object_key
    ))
    .await;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let opts = ClientOpts::new(ctx.worker, server).await?;
    let manifest = |u: &Uploaded, t: &Taken| {
        json!({
            "id": row.id, "lineage": lineage, "cluster": server.cluster, "server": server.name,
            "strategy": strategy.as_str(), "tag": p.tag, "compression": compression,
            "object_key": row.object_key, "bytes": u.bytes, "sha256": u.sha256,
            "chunks": u.chunks, "gtid": t.gtid, "binlog_file": t.binlog_file,
            "binlog_pos": t.binlog_pos, "lock_held_ms": t.lock_held_ms,
            "tables": t.tables, "started_at": started_at, "finished_at": chrono::Utc::now(),
            "seconds": started.elapsed().as_secs_f64(), "action_id": ctx.action.id,
        })
    };
    // The manifest inside the object is written when the stream ends (its times are the
    // stream's); the one beside it and in PostgreSQL once the object is complete.
    let inside = |u: &Uploaded, t: &Taken| trailer::encode(compression, &manifest(u, t));
    let key = &row.object_key;
    let taken = match strategy {
        Strategy::Logical => logical(ctx, &store, key, &opts, compress, &inside).await,
        Strategy::Mariabackup => mariabackup(ctx, &store, key, &opts, compress, &inside).await,
        Strategy::Snapshot => snapshot(ctx, &store, key, row.id, compress, &inside).await,
    };
    opts.cleanup(ctx.worker, server).await;
    let (uploaded, taken) = taken?;
    let secs = started.elapsed().as_secs_f64();
    let manifest = manifest(&uploaded, &taken);
    // And beside it, where a listing finds it without reading the backup.
    store
        .put(
            &row.manifest_key(),
            serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        )
        .await?;
    backups::commit(
        pool,
        row.id,
        uploaded.bytes as i64,
        uploaded.chunks as i32,
        &uploaded.sha256,
        &taken.gtid,
        &manifest,
    )
    .await?;
    log.system(format!(
        "Backup {} committed: {:.1} MiB in {secs:.1} s ({:.1} MiB/s), GTID {}.",
        row.id,
        uploaded.bytes as f64 / 1048576.0,
        uploaded.bytes as f64 / 1048576.0 / secs.max(0.001),
        taken.gtid
    ))
    .await;
    expire(ctx, &store, lineage).await;
    Ok(Done {
        exit_code: 0,
        result: Some(manifest),
    })
}

/// Delete what the lineage's retention lets go: objects first, then rows.
async fn expire(ctx: &Ctx<'_>, store: &Store, lineage: &str) {
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
            let mut keys = store.chunks_of(&b.object_key).await?;
            keys.extend([b.object_key.clone(), b.manifest_key()]);
            store.delete_all(&keys).await
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

/// What goes after a backup's stream: the manifest, from the upload and the position taken.
type Inside<'a> = dyn Fn(&Uploaded, &Taken) -> Vec<u8> + Sync + 'a;

async fn logical(
    ctx: &Ctx<'_>,
    store: &Store,
    key: &str,
    opts: &ClientOpts,
    compress: &str,
    inside: &Inside<'_>,
) -> Result<(Uploaded, Taken), ActionError> {
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let databases = db.user_databases().await;
    db.close().await;
    let databases = databases?;
    if databases.is_empty() {
        return Err(ActionError::Failed(
            "nothing to back up: the server has no databases of its own".into(),
        ));
    }
    let names: Vec<String> = databases
        .iter()
        .filter_map(|d| shlex::try_quote(d).ok().map(|q| q.into_owned()))
        .collect();
    // The position is in the dump as comments (binlog file at the top, GTID at the end): awk
    // copies those lines to stderr on the way.
    let dump = format!(
        "mysqldump {} --single-transaction --gtid --master-data=2 --routines --events --triggers --databases {}",
        opts.args,
        names.join(" ")
    );
    let copy_position = "awk '/^-- (SET GLOBAL gtid_slave_pos|CHANGE MASTER TO MASTER_LOG_FILE)/ { print \"sa-pos:\" $0 > \"/dev/stderr\" } { print }'";
    let cmd = piped(&dump, &format!("{copy_position} | {compress}"));
    let nothing = async { Ok(()) };
    let (up, stderr, ()) =
        transfer::upload(ctx, ctx.server, store, key, &cmd, nothing, |u, tail, _| {
            inside(u, &dump_position(tail))
        })
        .await?;
    Ok((up, dump_position(&stderr)))
}

/// The position mysqldump wrote (copied to stderr by the backup's pipeline).
fn dump_position(stderr: &str) -> Taken {
    let mut taken = Taken::default();
    for line in stderr.lines().filter_map(|l| l.strip_prefix("sa-pos:")) {
        if line.contains("gtid_slave_pos") {
            if let Some(g) = quoted(line, 0) {
                taken.gtid = g;
            }
        } else if line.contains("MASTER_LOG_FILE") {
            taken.binlog_file = quoted(line, 0);
            taken.binlog_pos = line
                .split("MASTER_LOG_POS=")
                .nth(1)
                .and_then(|p| p.trim_end_matches(';').trim().parse().ok());
        }
    }
    taken
}

/// The `n`th single-quoted string of `line`.
fn quoted(line: &str, n: usize) -> Option<String> {
    line.split('\'').nth(2 * n + 1).map(str::to_string)
}

async fn mariabackup(
    ctx: &Ctx<'_>,
    store: &Store,
    key: &str,
    opts: &ClientOpts,
    compress: &str,
    inside: &Inside<'_>,
) -> Result<(Uploaded, Taken), ActionError> {
    let datadir = ctx.server.datadir();
    // Its chatter goes to a file; the info file (position, GTID) is copied to stderr at the end.
    let cmd = format!(
        "d=$(mktemp -d); mkdir $d/info; {}; tail -n 5 $d/log >&2; \
         sed 's/^/sa-info:/' $d/info/mariadb_backup_info $d/info/xtrabackup_info >&2 2>/dev/null; rm -rf $d",
        piped(
            &format!(
                "mariadb-backup {} --backup --stream=xbstream --datadir={datadir} --target-dir=$d/t \
                 --extra-lsndir=$d/info 2>$d/log",
                opts.backup_args
            ),
            compress
        )
    );
    let nothing = async { Ok(()) };
    let (up, stderr, ()) =
        transfer::upload(ctx, ctx.server, store, key, &cmd, nothing, |u, tail, _| {
            inside(u, &info_position(tail))
        })
        .await?;
    let chatter: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("sa-info:"))
        .collect();
    ctx.log
        .system(format!(
            "mariadb-backup: {}",
            transfer::last_lines(&chatter.join("\n"), 1)
        ))
        .await;
    Ok((up, info_position(&stderr)))
}

/// The position in mariadb-backup's info file (copied to stderr by the backup's command).
fn info_position(stderr: &str) -> Taken {
    let mut taken = Taken::default();
    for line in stderr.lines().filter_map(|l| l.strip_prefix("sa-info:")) {
        // binlog_pos = filename 'bin.000002', position '1234', GTID of the last change '0-1-6'
        if let Some(v) = line.trim().strip_prefix("binlog_pos = ") {
            taken.binlog_file = quoted(v, 0);
            taken.binlog_pos = quoted(v, 1).and_then(|p| p.parse().ok());
            taken.gtid = quoted(v, 2).unwrap_or_default();
        }
    }
    taken
}

async fn snapshot(
    ctx: &Ctx<'_>,
    store: &Store,
    key: &str,
    backup_id: i64,
    compress: &str,
    inside: &Inside<'_>,
) -> Result<(Uploaded, Taken), ActionError> {
    let (worker, server, log) = (ctx.worker, ctx.server, &ctx.log);
    let mut lock = Db::connect(worker, server).await?;
    let mut side = match Db::connect(worker, server).await {
        Ok(db) => db,
        Err(e) => {
            lock.close().await;
            return Err(e.into());
        }
    };
    let taken = locked_snapshot(ctx, &mut lock, &mut side, backup_id).await;
    // Whatever happened, no lock stays behind.
    let _ = lock.exec("UNLOCK TABLES").await;
    lock.close().await;
    let (mut taken, snap) = match taken {
        Ok(t) => t,
        Err(e) => {
            side.close().await;
            return Err(e);
        }
    };
    let quoted_snap = match shlex::try_quote(&snap) {
        Ok(q) => q.into_owned(),
        Err(_) => {
            side.close().await;
            return Err(ActionError::Failed(format!("odd snapshot path {snap:?}")));
        }
    };
    // Exact row counts in the transaction opened while the lock was held, while the snapshot
    // streams: the manifest inside the object waits for them.
    let counting = async {
        let started = Instant::now();
        let counts = count_rows(&mut side).await;
        side.close().await;
        let counts = counts?;
        log.system(format!(
            "Rows counted in {} tables ({:.1} s).",
            counts.len(),
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(counts)
    };
    let cmd = piped(&format!("tar -C {quoted_snap} -cf - ."), compress);
    let up = transfer::upload(ctx, server, store, key, &cmd, counting, |u, _, counts| {
        inside(
            u,
            &Taken {
                tables: Some(counts.clone()),
                ..taken.clone()
            },
        )
    })
    .await;
    match &server.db_snapshot_cleanup_command {
        Some(cleanup) => {
            let out = worker
                .ssh
                .exec_input(
                    server,
                    &format!(
                        "SA_SNAPSHOT={quoted_snap} sh -c {}",
                        shlex::try_quote(cleanup).unwrap_or_default()
                    ),
                    b"",
                )
                .await;
            match out {
                Ok(o) if o.code == 0 => log.system(format!("Snapshot {snap} removed.")).await,
                Ok(o) => {
                    log.system(format!(
                        "Warning: removing snapshot {snap} failed (exit {}): {}",
                        o.code, o.stderr
                    ))
                    .await
                }
                Err(e) => {
                    log.system(format!("Warning: removing snapshot {snap}: {e}"))
                        .await
                }
            }
        }
        None => {
            log.system(format!(
                "Warning: no db_snapshot_cleanup_command: snapshot {snap} is left in place."
            ))
            .await
        }
    }
    let (up, _, counts) = up?;
    taken.tables = Some(counts);
    Ok((up, taken))
}

/// Take the global read lock (bounded tries), note the position, open the counting transaction
/// on `side`, run the snapshot command, unlock. The snapshot's path.
async fn locked_snapshot(
    ctx: &Ctx<'_>,
    lock: &mut Db,
    side: &mut Db,
    backup_id: i64,
) -> Result<(Taken, String), ActionError> {
    let (worker, server, log) = (ctx.worker, ctx.server, &ctx.log);
    // Dirty pages are flushed before the lock: the snapshot then has little left to flush
    // while writes wait (a snapshot right after a big load otherwise holds the lock for seconds).
    let datadir = server.datadir();
    let _ = worker
        .ssh
        .exec(server, &format!("sync -f {datadir} 2>/dev/null || sync"))
        .await;
    let id = lock.string("SELECT CONNECTION_ID()").await?;
    lock.exec(&format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_S}"))
        .await?;
    let mut tries = 0;
    loop {
        tries += 1;
        // The server gives up after lock_wait_timeout; if it does not (a FLUSH waiting for a
        // long query), the request is killed from the second session. The request itself is
        // always awaited to its end, so the session stays in step.
        let limit = Duration::from_millis(LOCK_WAIT_S * 1000 + 500);
        let killed = std::sync::atomic::AtomicBool::new(false);
        let killer = async {
            tokio::time::sleep(limit).await;
            killed.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = side.exec(&format!("KILL QUERY {id}")).await;
            std::future::pending::<()>().await
        };
        let attempt = tokio::select! {
            r = lock.exec("FLUSH TABLES WITH READ LOCK") => r,
            () = killer => unreachable!("the killer never ends"),
        };
        let reason = match attempt {
            Ok(()) => break,
            Err(_) if killed.load(std::sync::atomic::Ordering::Relaxed) => {
                format!("no lock within {LOCK_WAIT_S} s: the request was killed")
            }
            Err(e) => e.to_string(),
        };
        if tries >= LOCK_TRIES {
            return Err(ActionError::Failed(format!(
                "could not take the global read lock in {LOCK_TRIES} tries of {LOCK_WAIT_S} s (a long query or transaction holds tables): {reason}"
            )));
        }
        log.system(format!(
            "Read lock not obtained (try {tries} of {LOCK_TRIES}): {reason}; retrying in 1 s."
        ))
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let locked = Instant::now();
    let mut taken = Taken {
        gtid: lock.string("SELECT @@gtid_current_pos").await?,
        ..Taken::default()
    };
    if let Some(row) = lock.query_first_row("SHOW MASTER STATUS").await? {
        taken.binlog_file = column(&row, "File").as_str().map(str::to_string);
        taken.binlog_pos = column(&row, "Position").as_u64();
    }
    side.exec("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    side.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let cmd = server.db_snapshot_command.as_deref().unwrap_or_default();
    let out = worker
        .ssh
        .exec_input(
            server,
            &format!(
                "SA_DATADIR={} SA_BACKUP_ID={backup_id} sh -c {}",
                shlex::try_quote(datadir).unwrap_or_default(),
                shlex::try_quote(cmd).unwrap_or_default()
            ),
            b"",
        )
        .await?;
    lock.exec("UNLOCK TABLES").await?;
    let held = locked.elapsed().as_secs_f64() * 1000.0;
    taken.lock_held_ms = Some(held);
    log.system(format!(
        "Read lock held {held:.0} ms: binlog {} {}, GTID {}.",
        taken.binlog_file.as_deref().unwrap_or("-"),
        taken.binlog_pos.unwrap_or(0),
        taken.gtid
    ))
    .await;
    let snap = out
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if out.code != 0 || snap.is_empty() {
        return Err(ActionError::Failed(format!(
            "the snapshot command failed (exit {}): {}",
            out.code,
            if out.stderr.is_empty() {
                "it printed no snapshot path"
            } else {
                &out.stderr
            }
        )));
    }
    log.system(format!("Snapshot taken: {snap}.")).await;
    Ok((taken, snap))
}

async fn count_rows(db: &mut Db) -> Result<BTreeMap<String, u64>, ActionError> {
    use mysql_async::prelude::Queryable;
    let tables = db.user_tables().await?;
    let mut counts = BTreeMap::new();
    for (schema, name) in tables {
        let n: Option<u64> = db
            .conn
            .query_first(format!(
                "SELECT COUNT(*) FROM {}",
                crate::mysql::table_ident(&schema, &name)
            ))
            .await
            .map_err(|e| {
                ActionError::Failed(format!(
                    "counting the rows of {schema}.{name}: {}",
                    db.error(e)
                ))
            })?;
        counts.insert(format!("{schema}.{name}"), n.unwrap_or(0));
    }
    db.exec("COMMIT").await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::{dump_position, info_position, quoted};

    #[test]
    fn a_dump_and_a_mariabackup_log_give_their_position() {
        let dump = "sa-pos:-- SET GLOBAL gtid_slave_pos='0-1-5';\nnoise\n\
                    sa-pos:-- CHANGE MASTER TO MASTER_LOG_FILE='bin.000003', MASTER_LOG_POS=987;";
        let t = dump_position(dump);
        assert_eq!(t.gtid, "0-1-5");
        assert_eq!(t.binlog_file.as_deref(), Some("bin.000003"));
        assert_eq!(t.binlog_pos, Some(987));
        let info = "sa-info: binlog_pos = filename 'bin.000002', position '1234', GTID of the last change '0-1-6'";
        let t = info_position(info);
        assert_eq!(
            (t.gtid.as_str(), t.binlog_file.as_deref(), t.binlog_pos),
            ("0-1-6", Some("bin.000002"), Some(1234))
        );
        assert_eq!(dump_position("no marks here").gtid, "");
    }

    #[test]
    fn positions_are_read_from_quoted_values() {
        let v = "filename 'bin.000002', position '1234', GTID of the last change '0-1-6'";
        assert_eq!(quoted(v, 0).as_deref(), Some("bin.000002"));
        assert_eq!(quoted(v, 1).as_deref(), Some("1234"));
        assert_eq!(quoted(v, 2).as_deref(), Some("0-1-6"));
        assert_eq!(
            quoted("-- SET GLOBAL gtid_slave_pos='0-1-5';", 0).as_deref(),
            Some("0-1-5")
        );
    }
}
