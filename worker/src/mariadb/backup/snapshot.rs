//! `snapshot`: under a global read lock (short server-side timeout, retried), the position noted
//! and the server's snapshot command run; unlocked, the snapshot streams as a tar while every
//! table's rows are counted in a transaction opened under the lock.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{Inside, Taken};
use crate::{
    ctx::{ActionError, Ctx},
    mysql::{column, Db},
    s3::{Bucket, Uploaded},
    transfer::{self, piped},
};

/// The global read lock: each try waits at most this long, this many times.
const LOCK_WAIT_S: u64 = 2;
const LOCK_TRIES: u32 = 5;
/// How long the snapshot command may hold everyone's writes (with `SA_SSH_COMMAND_TIMEOUT_S`,
/// if lower).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(30);

pub async fn take(
    ctx: &Ctx<'_>,
    bucket: &Bucket,
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
    let up = transfer::upload(ctx, server, bucket, key, &cmd, counting, |u, _, counts| {
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
    // Every write waits while it runs: it gets little time, and the lock goes whatever happens.
    let limit = SNAPSHOT_DEADLINE.min(Duration::from_secs(worker.cfg.ssh_command_timeout_s));
    let out = worker
        .ssh
        .exec_within(
            server,
            &format!(
                "SA_DATADIR={} SA_BACKUP_ID={backup_id} sh -c {}",
                shlex::try_quote(datadir).unwrap_or_default(),
                shlex::try_quote(cmd).unwrap_or_default()
            ),
            b"",
            limit,
        )
        .await;
    lock.exec("UNLOCK TABLES").await?;
    let out = out?;
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
