//! Restore: a committed backup onto the action's server, then configured as its cluster's master
//! ("restore from S3 backup and configure as master") or as a slave of the cluster's master from
//! the backup's GTID position. The object is streamed from S3 into a staging directory beside
//! the datadir and checked against the manifest's sha256 before anything else changes: a bad
//! object, an unknown backup or a missing bucket leave the server untouched. Then mysqld is
//! stopped, the old datadir's contents moved aside (kept), the staged ones moved in, mysqld
//! started. Logical backups are loaded into the running mysqld once their sha256 checked out.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::{
    db::{
        backups::{self, Backup, BackupStatus, Manifest},
        clusters, servers,
    },
    spec::{BackupRef, ConfigureMasterParams, RestoreAs, RestoreParams, Strategy},
};

use super::replication;
use crate::{
    ctx::{ActionError, Ctx, Done},
    mysql::{ClientOpts, Db},
    transfer,
};

/// `p.backup` onto the action's server, which then takes the role `p.role` in `p.cluster`.
pub async fn restore(ctx: &Ctx<'_>, p: &RestoreParams) -> Result<Done, ActionError> {
    let (log, server) = (&ctx.log, ctx.server);
    let lineage = p.lineage.as_deref().unwrap_or(&p.cluster);
    let backup = resolve(ctx, &p.backup, lineage, p.before).await?;
    // For a slave: the cluster and its master must exist before anything changes.
    let master = match p.role {
        RestoreAs::Master => None,
        RestoreAs::Slave => Some(replication::cluster_master(ctx, &p.cluster).await?),
    };
    log.system(format!(
        "Restoring backup {} ({}, {:.1} MiB, taken {} from {}, GTID {}) onto {} as {}...",
        backup.id,
        backup.strategy.as_str(),
        backup.bytes.unwrap_or(0) as f64 / 1048576.0,
        backup.started_at.format("%Y-%m-%d %H:%M:%S"),
        backup.server,
        backup.gtid.as_deref().unwrap_or("-"),
        server.name,
        match p.role {
            RestoreAs::Master => "master",
            RestoreAs::Slave => "slave",
        }
    ))
    .await;
    let started = Instant::now();
    let mut db = restore_data(ctx, &backup).await?;
    log.system(format!(
        "Data restored in {:.1} s.",
        started.elapsed().as_secs_f64()
    ))
    .await;
    let result = configure(ctx, p, &backup, &mut db, master).await;
    db.close().await;
    let mut done = result?;
    if let Some(r) = done.result.as_mut() {
        r["restored_backup"] = json!(backup.id);
    }
    Ok(done)
}

async fn configure(
    ctx: &Ctx<'_>,
    p: &RestoreParams,
    backup: &Backup,
    db: &mut Db,
    master: Option<(clusters::Cluster, servers::Server)>,
) -> Result<Done, ActionError> {
    // A backup taken on a slave carries its replication settings: not ours.
    db.exec("STOP SLAVE").await?;
    db.exec("RESET SLAVE ALL").await?;
    match master {
        None => {
            // Its binary log starts at the backup's position, so that slaves seeded from the
            // same backup (or from a backup of this one) find where to replicate from.
            if let Some(gtid) = backup.gtid.as_deref().filter(|g| !g.is_empty()) {
                crate::mycnf::ensure_binlog(ctx, db, None).await?;
                db.exec("RESET MASTER").await?;
                db.exec(&format!(
                    "SET GLOBAL gtid_binlog_state = '{}'",
                    gtid.replace('\'', "")
                ))
                .await?;
                ctx.log
                    .system(format!(
                        "Its binary log starts at the backup's GTID {gtid}."
                    ))
                    .await;
            }
            let cp = ConfigureMasterParams {
                cluster: p.cluster.clone(),
                ..Default::default()
            };
            replication::configure_master(ctx, db, &cp, true).await
        }
        Some((cluster, master)) => {
            let gtid = backup.gtid.clone().unwrap_or_default().replace('\'', "");
            crate::mycnf::ensure_binlog(ctx, db, None).await?;
            db.exec("RESET MASTER").await?;
            db.exec(&format!("SET GLOBAL gtid_slave_pos = '{gtid}'"))
                .await?;
            ctx.log
                .system(format!(
                    "Catching up from {} from GTID {gtid}...",
                    master.name
                ))
                .await;
            let pos = replication::replicate(ctx, &cluster, &master, db).await?;
            clusters::add_slave(&ctx.worker.pool, &cluster.name, &ctx.server.name).await?;
            Ok(Done {
                exit_code: 0,
                result: Some(
                    json!({"cluster": cluster.name, "master": master.name, "gtid_slave_pos": pos}),
                ),
            })
        }
    }
}

/// The committed backup `r` names in `lineage`.
pub async fn resolve(
    ctx: &Ctx<'_>,
    r: &BackupRef,
    lineage: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Backup, ActionError> {
    let pool = &ctx.worker.pool;
    match r {
        BackupRef::Id(id) => {
            let b = backups::get(pool, *id)
                .await?
                .ok_or_else(|| ActionError::Failed(format!("no backup with id {id}")))?;
            if b.status != BackupStatus::Committed {
                return Err(ActionError::Failed(format!(
                    "backup {id} is not committed (its upload did not complete): it cannot be restored"
                )));
            }
            Ok(b)
        }
        BackupRef::Object { object } => {
            let bucket = ctx.s3()?;
            let at = format!("s3://{}/{object}", bucket.name);
            // Its chunks, or one object as backups were before chunks; the manifest is at the end.
            let chunks = bucket.chunks_of(object).await?;
            let last = chunks.last().map_or(object.as_str(), String::as_str);
            let m = bucket
                .manifest_inside(last)
                .await?
                .ok_or_else(|| {
                    ActionError::Failed(format!(
                        "{at} has no manifest inside: not a backup of this tool (or one older than manifests inside objects)"
                    ))
                })?;
            let m: Manifest = serde_json::from_value(m.clone()).map_err(|e| {
                ActionError::Failed(format!("the manifest inside {at} does not read ({e}): {m}"))
            })?;
            let b = Backup::from_manifest(object, &m);
            let listed = if chunks.is_empty() {
                vec![object.clone()]
            } else {
                chunks
            };
            if b.object_keys() != listed {
                return Err(ActionError::BadData(format!(
                    "{at} is incomplete: {} chunks in the bucket, its manifest says {}",
                    listed.len(),
                    b.object_keys().len()
                )));
            }
            Ok(b)
        }
        BackupRef::Latest(_) => backups::latest(pool, lineage, before)
            .await?
            .ok_or_else(|| {
                ActionError::Failed(match before {
                    Some(t) => format!("no committed backup in lineage {lineage} taken before {t}"),
                    None => format!("no committed backup in lineage {lineage}"),
                })
            }),
    }
}

/// Stream `backup` into a staging directory (or file), check it, then put it in place and have
/// mysqld running on it: the connection to it.
async fn restore_data(ctx: &Ctx<'_>, backup: &Backup) -> Result<Db, ActionError> {
    let (worker, server, log) = (ctx.worker, ctx.server, &ctx.log);
    let bucket = ctx.s3()?;
    let datadir = server.datadir();
    let staging = format!("{datadir}.sa-restore-{}", ctx.action.id);
    let dec = backup.compression.decompress();
    if backup.strategy == Strategy::Logical {
        let file = format!("{staging}.sql");
        let fetched =
            transfer::download(ctx, server, &bucket, backup, &format!("cat > {file}")).await;
        if let Err(e) = fetched {
            let _ = worker.ssh.exec(server, &format!("rm -f {file}")).await;
            return Err(e);
        }
        log.system("Backup downloaded and its sha256 checked; loading it...")
            .await;
        let opts = ClientOpts::new(worker, server).await?;
        let load = worker
            .ssh
            .exec_within(
                server,
                &opts.command(&format!(
                    "{}; rc=$?; rm -f {file}; exit $rc",
                    transfer::piped(
                        &format!("{dec} < {file}"),
                        &format!(
                            "mysql {} --init-command='SET SESSION sql_log_bin = 0'",
                            opts.args
                        )
                    )
                )),
                b"",
                ctx.action.timeout(),
            )
            .await;
        opts.cleanup(worker, server).await;
        let load = load?;
        if load.code != 0 || !transfer::marked_ok(&load.stderr) {
            return Err(ActionError::Failed(format!(
                "loading the dump failed: {}",
                transfer::last_lines(&load.stderr, 5)
            )));
        }
        return Ok(Db::connect(worker, server).await?);
    }
    let unpack = match backup.strategy {
        Strategy::Mariabackup => format!("mbstream -x -C {staging}"),
        Strategy::Snapshot | Strategy::Logical => format!("tar -x -C {staging}"),
    };
    let fetched = transfer::download(
        ctx,
        server,
        &bucket,
        backup,
        &format!(
            "rm -rf {staging} && mkdir -p {staging} && {}",
            transfer::piped(dec, &unpack)
        ),
    )
    .await;
    if let Err(e) = fetched {
        let _ = worker.ssh.exec(server, &format!("rm -rf {staging}")).await;
        log.system(format!("{datadir} was not touched.")).await;
        return Err(e);
    }
    log.system("Backup downloaded and its sha256 checked.")
        .await;
    if backup.strategy == Strategy::Mariabackup {
        let prep = worker
            .ssh
            .exec_within(
                server,
                &format!(
                    "mariadb-backup --prepare --target-dir={staging} > {staging}.log 2>&1 || {{ tail -n 5 {staging}.log >&2; exit 1; }}; rm -f {staging}.log"
                ),
                b"",
                ctx.action.timeout(),
            )
            .await?;
        if prep.code != 0 {
            let _ = worker
                .ssh
                .exec(server, &format!("rm -rf {staging} {staging}.log"))
                .await;
            return Err(ActionError::Failed(format!(
                "mariadb-backup --prepare failed: {}",
                transfer::last_lines(&prep.stderr, 5)
            )));
        }
        log.system("mariadb-backup --prepare done.").await;
    }
    // The files belong to whoever owns the datadir (mysqld's user), not to the SSH user.
    let _ = worker
        .ssh
        .exec(
            server,
            &format!("chown -R --reference={datadir} {staging} 2>/dev/null"),
        )
        .await;
    run_step(ctx, "stopping mysqld", server.db_stop()).await?;
    let aside = format!("{datadir}.sa-before-restore-{}", ctx.action.id);
    // The datadir itself stays (it may be a mount point or a subvolume): its contents move.
    run_step(
        ctx,
        "swapping the datadir's contents",
        &format!(
            "set -e; mkdir {aside}; find {datadir} -mindepth 1 -maxdepth 1 -exec mv -t {aside} {{}} +; \
             find {staging} -mindepth 1 -maxdepth 1 -exec mv -t {datadir} {{}} +; rmdir {staging}"
        ),
    )
    .await?;
    log.system(format!(
        "The previous contents of {datadir} are kept in {aside}."
    ))
    .await;
    run_step(ctx, "starting mysqld", server.db_start()).await?;
    let db = Db::wait_up(worker, server, Duration::from_secs(120))
        .await
        .map_err(|e| {
            ActionError::Failed(format!(
                "mysqld did not come up on the restored data within 120 s: {e}"
            ))
        })?;
    log.system("mysqld is up on the restored data.").await;
    Ok(db)
}

async fn run_step(ctx: &Ctx<'_>, what: &str, cmd: &str) -> Result<(), ActionError> {
    let out = ctx
        .worker
        .ssh
        .exec_within(ctx.server, cmd, b"", ctx.action.timeout())
        .await?;
    if out.code != 0 {
        return Err(ActionError::Failed(format!(
            "{what} ({cmd:?}) failed (exit {}): {}",
            out.code,
            transfer::last_lines(&out.stderr, 5)
        )));
    }
    Ok(())
}
