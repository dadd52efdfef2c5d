//! `db_verify_backup`: prove a backup good by restoring it, as the seed advises. On this server
//! (the verify host) the backup is streamed into a scratch directory (its sha256 checked against
//! the manifest), a scratch mysqld started on it (own socket, no network, no grants, no
//! replication), every table checked with `CHECK TABLE` and counted; the counts must equal the
//! manifest's where it has them (snapshot backups count under the lock). The verdict (`good` or
//! `bad`, with the reason) is recorded on the backup; a bad backup fails the action. The scratch
//! mysqld and directory are removed in every case; the server's own mysqld is not touched.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::json;
use shared::{
    db::backups::{self, Backup, Verdict},
    spec::{Strategy, VerifyParams},
};

use super::{ActionError, Ctx, Done};
use crate::{mariadb::restore, mysql::Db, transfer};

pub async fn run(ctx: &Ctx<'_>, p: &VerifyParams) -> Result<Done, ActionError> {
    let server = ctx.server;
    let lineage = p.lineage.as_deref().unwrap_or(server.lineage());
    let backup = restore::resolve(ctx, &p.backup, lineage, None).await?;
    ctx.log
        .system(format!(
            "Verifying backup {} ({}, taken {} from {}) by restoring it into a scratch mysqld on {}...",
            backup.id,
            backup.strategy.as_str(),
            backup.started_at.format("%Y-%m-%d %H:%M:%S"),
            backup.server,
            server.name
        ))
        .await;
    let (_, out) = ctx
        .worker
        .ssh
        .exec(server, "mktemp -d \"${TMPDIR:-/tmp}/sa-verify-XXXXXX\"")
        .await?;
    let scratch = out.trim().to_string();
    if !scratch.starts_with('/') || scratch.contains(char::is_whitespace) {
        return Err(ActionError::Failed(format!(
            "could not make a scratch directory on {}",
            server.name
        )));
    }
    let outcome = verify(ctx, &backup, &scratch).await;
    // The scratch mysqld and its files go, whatever happened.
    let _ = ctx
        .worker
        .ssh
        .exec(
            server,
            &format!(
                "if [ -s {scratch}/mysqld.pid ]; then kill \"$(cat {scratch}/mysqld.pid)\"; \
                 i=0; while [ -e {scratch}/mysqld.pid ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; fi; rm -rf {scratch}"
            ),
        )
        .await;
    // Could not verify (S3 or SSH down...): no verdict.
    let (verdict, note, report) = match outcome? {
        Ok(report) => (
            Verdict::Good,
            "restored; every table checked OK and counted".to_string(),
            report,
        ),
        Err(reason) => (Verdict::Bad, reason, json!(null)),
    };
    backups::set_verified(&ctx.worker.pool, backup.id, verdict, &note).await?;
    let word = json!(verdict);
    ctx.log
        .system(format!(
            "Backup {} is {}: {note}.",
            backup.id,
            word.as_str().unwrap_or_default()
        ))
        .await;
    Ok(Done {
        exit_code: if verdict == Verdict::Good { 0 } else { 1 },
        result: Some(
            json!({"backup": backup.id, "verified": word, "note": note, "report": report}),
        ),
    })
}

/// `Ok(Ok(report))`: good; `Ok(Err(reason))`: bad; `Err`: could not tell.
type Checked = Result<Result<serde_json::Value, String>, ActionError>;

async fn verify(ctx: &Ctx<'_>, backup: &Backup, scratch: &str) -> Checked {
    let (worker, server, log) = (ctx.worker, ctx.server, &ctx.log);
    let bucket = ctx.s3()?;
    let dec = backup.compression.decompress();
    let data = format!("{scratch}/data");
    let fetch = match backup.strategy {
        Strategy::Logical => format!("cat > {scratch}/dump"),
        Strategy::Mariabackup => format!(
            "mkdir {data} && {}",
            transfer::piped(dec, &format!("mbstream -x -C {data}"))
        ),
        Strategy::Snapshot => format!(
            "mkdir {data} && {}",
            transfer::piped(dec, &format!("tar -x -C {data}"))
        ),
    };
    match transfer::download(ctx, server, &bucket, backup, &fetch).await {
        Ok(_) => {}
        Err(ActionError::BadData(reason)) => return Ok(Err(reason)),
        Err(e) => return Err(e),
    }
    log.system("Downloaded; sha256 matches the manifest.").await;
    let prepare = match backup.strategy {
        Strategy::Logical => Some(format!(
            "mariadb-install-db --no-defaults --datadir={data} --auth-root-authentication-method=normal --skip-test-db > {scratch}/install.log 2>&1 || {{ tail -n 5 {scratch}/install.log >&2; exit 1; }}"
        )),
        Strategy::Mariabackup => Some(format!(
            "mariadb-backup --prepare --target-dir={data} > {scratch}/prepare.log 2>&1 || {{ tail -n 5 {scratch}/prepare.log >&2; exit 1; }}"
        )),
        Strategy::Snapshot => None,
    };
    if let Some(cmd) = prepare {
        if let Err(bad) = step(ctx, "preparing the scratch datadir", &cmd).await? {
            return Ok(Err(bad));
        }
    }
    // Leftovers of the source's own replication must not start in the scratch instance. A
    // physical copy recovers with its own binary log (prepared transactions are resolved from it).
    let started = step(
        ctx,
        "starting the scratch mysqld",
        &format!(
            "idx=$(ls {data}/*.index 2>/dev/null | head -n 1); \
             if [ -n \"$idx\" ]; then binlog=\"--log-bin=$(basename \"$idx\" .index) --server-id=1\"; else binlog=--skip-log-bin; fi; \
             setsid /usr/sbin/mariadbd --no-defaults --datadir={data} --socket={scratch}/mysqld.sock \
             --pid-file={scratch}/mysqld.pid --log-error={scratch}/error.log --tmpdir={scratch} \
             --skip-networking --skip-grant-tables --skip-slave-start $binlog \
             --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &"
        ),
    )
    .await?;
    if let Err(bad) = started {
        return Ok(Err(bad));
    }
    let sock = format!("{scratch}/mysqld.sock");
    let began = Instant::now();
    let mut db = loop {
        let gone = || async {
            // Started more than 2 s ago and no longer running: it gave up (see its error log).
            began.elapsed() > Duration::from_secs(2)
                && worker
                    .ssh
                    .exec(
                        server,
                        &format!("pgrep -f -- '--datadir={data} ' >/dev/null"),
                    )
                    .await
                    .is_ok_and(|(code, _)| code != 0)
        };
        match Db::connect_socket(worker, server, &sock).await {
            Ok(db) => break db,
            Err(_) if began.elapsed() < Duration::from_secs(120) && !gone().await => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => {
                let (_, errlog) = worker
                    .ssh
                    .exec(server, &format!("tail -n 5 {scratch}/error.log"))
                    .await?;
                return Ok(Err(format!(
                    "the scratch mysqld did not start on the restored data: {e}: {}",
                    transfer::last_lines(&errlog, 3)
                )));
            }
        }
    };
    let checked = check(ctx, &mut db, backup, scratch, dec).await;
    db.close().await;
    checked
}

async fn check(ctx: &Ctx<'_>, db: &mut Db, backup: &Backup, scratch: &str, dec: &str) -> Checked {
    if backup.strategy == Strategy::Logical {
        let loaded = step(
            ctx,
            "loading the dump",
            &transfer::piped(
                &format!("{dec} < {scratch}/dump"),
                &format!("mariadb --socket={scratch}/mysqld.sock"),
            ),
        )
        .await?;
        if let Err(bad) = loaded {
            return Ok(Err(bad));
        }
    }
    let tables = db.user_tables().await?;
    let expected = backup.manifest.as_ref().and_then(|m| m.tables.clone());
    let mut counts = serde_json::Map::new();
    for (schema, name) in &tables {
        let t = crate::mysql::table_ident(schema, name);
        let rows: Vec<(String, String, String, String)> = db
            .conn
            .query(format!("CHECK TABLE {t}"))
            .await
            .map_err(|e| db.error(e))?;
        if let Some((_, _, kind, msg)) = rows
            .iter()
            .find(|(_, _, kind, msg)| kind == "error" || (kind == "status" && msg != "OK"))
        {
            return Ok(Err(format!("CHECK TABLE {schema}.{name}: {kind}: {msg}")));
        }
        let n: u64 = db
            .conn
            .query_first(format!("SELECT COUNT(*) FROM {t}"))
            .await
            .map_err(|e| db.error(e))?
            .unwrap_or(0);
        let key = format!("{schema}.{name}");
        if let Some(want) = expected.as_ref().and_then(|e| e.get(&key)) {
            if *want != n {
                return Ok(Err(format!("{key} has {n} rows, the manifest says {want}")));
            }
        }
        counts.insert(key, n.into());
    }
    if let Some(e) = &expected {
        if let Some(missing) = e.keys().find(|k| !counts.contains_key(*k)) {
            return Ok(Err(format!(
                "{missing} is in the manifest but not in the backup"
            )));
        }
    }
    ctx.log
        .system(format!(
            "{} tables checked (CHECK TABLE: OK){}.",
            tables.len(),
            if expected.is_some() {
                ", row counts equal to the manifest's"
            } else {
                ""
            }
        ))
        .await;
    Ok(Ok(
        json!({"tables": counts, "counts_compared": expected.is_some()}),
    ))
}

/// Run a step of the verification: `Ok(Err(why))` when it failed (the backup is bad).
async fn step(ctx: &Ctx<'_>, what: &str, cmd: &str) -> Result<Result<(), String>, ActionError> {
    let out = ctx
        .worker
        .ssh
        .exec_within(ctx.server, cmd, b"", ctx.action.timeout())
        .await?;
    if out.code != 0 || !transfer::marked_ok(&out.stderr) {
        return Ok(Err(format!(
            "{what} failed: {}",
            transfer::last_lines(&out.stderr, 5)
        )));
    }
    Ok(Ok(()))
}
