//! `db_promote`: make a slave its cluster's master, as in the seed's "DB promote to master" log.
//! If the old master answers it is made read-only, its GTID position noted and the slave waits
//! (bounded) until it has applied it; otherwise the slave must have applied everything it
//! received (or `force`). Then replication is stopped and unconfigured on the slave, the
//! replication account ensured, writes enabled, the old master (if alive) demoted to a slave of
//! the new one, and the cluster's master record moved. If a step fails after the old master was
//! made read-only, it is made writable again and the log says so.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::{
    db::{
        clusters,
        servers::{self, DbRole},
    },
    spec::{BackupParams, PromoteParams},
    ActionSpec,
};

use super::{ActionError, Ctx, Done};
use crate::{
    mariadb::replication,
    mycnf,
    mysql::{column, Db},
};

pub async fn run(ctx: &Ctx<'_>, p: &PromoteParams) -> Result<Done, ActionError> {
    let force = p.force;
    let (log, pool, slave) = (&ctx.log, &ctx.worker.pool, ctx.server);
    let (Some(cluster_name), Some(DbRole::Slave)) = (slave.cluster.as_deref(), slave.db_role)
    else {
        return Err(ActionError::Failed(format!(
            "{} is not a slave of a cluster: nothing to promote",
            slave.name
        )));
    };
    let cluster = clusters::get(pool, cluster_name)
        .await?
        .ok_or_else(|| ActionError::Failed(format!("cluster {cluster_name} is gone")))?;
    let old = match &cluster.master {
        Some(m) => servers::get(pool, m).await?,
        None => None,
    };
    log.system(format!(
        "Using cluster {}: master {}, promoting slave {}.",
        cluster.name,
        old.as_ref().map_or("(none)", |m| m.name.as_str()),
        slave.name
    ))
    .await;

    let mut sdb = Db::connect(ctx.worker, slave).await?;
    if sdb.query_first_row("SHOW SLAVE STATUS").await?.is_none() {
        sdb.close().await;
        return Err(ActionError::Failed(format!(
            "{} is not replicating: not a slave",
            slave.name
        )));
    }
    log.system("Stopping master (if alive), noting position, making RO, stopping and unconfiguring replication").await;
    let mut mdb = match &old {
        Some(m) => match Db::connect(ctx.worker, m).await {
            Ok(db) => Some(db),
            Err(e) => {
                log.system(format!(
                    "Previously connected master {} not reachable... ({e})",
                    m.address
                ))
                .await;
                log.system("...Warning: assuming old master is dead and that the current contents of the Slave is the latest and best we can get.").await;
                None
            }
        },
        None => None,
    };
    let promoted = promote(ctx, &cluster, &mut sdb, mdb.as_mut(), force).await;
    if let (Err(_), Some(m)) = (&promoted, mdb.as_mut()) {
        // Undo: the old master takes writes again.
        let unlocked = m.exec("UNLOCK TABLES").await.is_ok();
        if unlocked && m.exec("SET GLOBAL read_only = 0").await.is_ok() {
            log.system("Promotion failed: the old master was made writable again.")
                .await;
        }
    }
    // From here the new master takes writes: nothing is undone any more.
    let result = match promoted {
        Ok(()) => finish(ctx, &cluster, mdb.as_mut().zip(old.as_ref())).await,
        Err(e) => Err(e),
    };
    sdb.close().await;
    if let Some(m) = mdb {
        m.close().await;
    }
    let demoted = result?;
    backup_new_master(ctx, &cluster.name).await;
    log.system("Mission accomplished.").await;
    Ok(Done {
        exit_code: 0,
        result: Some(json!({"cluster": cluster.name, "master": slave.name,
                            "old_master": old.map(|m| m.name), "old_master_demoted": demoted})),
    })
}

/// Point the cluster (master record, DNS) at the new master, then demote the old one if it
/// answers: its remaining client connections are closed, its global read lock released, and it
/// replicates from the new master. `Ok(true)` when it was demoted.
async fn finish(
    ctx: &Ctx<'_>,
    cluster: &clusters::Cluster,
    old: Option<(&mut Db, &servers::Server)>,
) -> Result<bool, ActionError> {
    let (log, pool, slave) = (&ctx.log, &ctx.worker.pool, ctx.server);
    clusters::set_master(pool, &cluster.name, &slave.name).await?;
    replication::point_dns(ctx, cluster, slave).await?;
    let Some((m, old)) = old else {
        return Ok(false);
    };
    log.system("Demoting old master...").await;
    // The old master stays read-only whatever happens here.
    match demote(m, cluster, slave).await {
        Ok(closed) => {
            log.system(format!(
                "Old master is read-only and replicates from {} ({closed} client connections closed).",
                slave.name
            ))
            .await;
            if let Err(e) = mycnf::set(ctx.worker, old, &[("read_only", "1")]).await {
                log.system(format!(
                    "Warning: read_only=1 not saved in the old master's option file: {e}"
                ))
                .await;
            }
            clusters::add_slave(pool, &cluster.name, &old.name).await?;
            Ok(true)
        }
        Err(e) => {
            log.system(format!(
                "Could not demote the old master ({e}): it stays read-only, not replicating."
            ))
            .await;
            Ok(false)
        }
    }
}

/// The database steps up to the new master taking writes. A live old master is fenced first:
/// `read_only` (ordinary accounts), then a global read lock held by this session (accounts
/// with READ_ONLY ADMIN too, such as root), kept until it is demoted.
async fn promote(
    ctx: &Ctx<'_>,
    cluster: &clusters::Cluster,
    sdb: &mut Db,
    mdb: Option<&mut Db>,
    force: bool,
) -> Result<(), ActionError> {
    let log = &ctx.log;
    let slave = ctx.server;
    match &mdb {
        Some(_) => {}
        None => {
            // Dead master: the slave must have applied what it received.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let Some(s) = sdb.query_first_row("SHOW SLAVE STATUS").await? else {
                    return Err(ActionError::Failed(
                        "the slave stopped being a slave".into(),
                    ));
                };
                let received = column(&s, "Gtid_IO_Pos");
                let applied = sdb
                    .query_first_row("SELECT @@gtid_slave_pos AS p")
                    .await?
                    .map(|r| column(&r, "p"));
                if Some(&received) == applied.as_ref() || received.as_str() == Some("") {
                    break;
                }
                if Instant::now() > deadline || column(&s, "Slave_SQL_Running") != "Yes" {
                    if force {
                        log.system(format!("Warning: received {received} but applied {}: promoting anyway (force).", applied.unwrap_or_default())).await;
                        break;
                    }
                    return Err(ActionError::Failed(format!(
                        "{} has not applied everything it received (received {received}, applied {}): \
                         refusing to promote it; start its SQL thread or use params.force",
                        slave.name,
                        applied.unwrap_or_default()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Some(m) = mdb {
        m.exec("SET GLOBAL read_only = 1").await?;
        // Waits for running writes to finish; a long one makes the promote fail (and undo).
        m.exec("SET SESSION lock_wait_timeout = 10").await?;
        m.exec("FLUSH TABLES WITH READ LOCK").await?;
        let pos = m
            .query_first_row("SELECT @@gtid_binlog_pos AS p")
            .await?
            .map(|r| column(&r, "p"))
            .unwrap_or_default();
        let pos = pos.as_str().unwrap_or_default().replace('\'', "");
        log.system(format!("Old master is read-only at GTID {pos}; waiting until the slave catches up (at most 30 s)...")).await;
        let waited = sdb
            .query_first_row(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30) AS w"))
            .await?
            .map(|r| column(&r, "w"));
        if waited != Some(json!(0)) {
            return Err(ActionError::Failed(format!(
                "the slave did not reach the old master's position {pos} within 30 s"
            )));
        }
    }
    log.system("Promoting slave...").await;
    sdb.exec("STOP SLAVE").await?;
    sdb.exec("RESET SLAVE ALL").await?;
    let pos = sdb
        .query_first_row("SELECT @@gtid_binlog_pos AS p")
        .await?
        .map(|r| column(&r, "p"))
        .unwrap_or_default();
    log.system(format!(
        "Retrieved new master info... GTID position: {}",
        pos.as_str().unwrap_or("")
    ))
    .await;
    log.system("granting rep rights...").await;
    replication::replication_account(sdb, cluster).await?;
    log.system("done with rights...").await;
    sdb.exec("SET GLOBAL read_only = 0").await?;
    log.system("Unlocking tables: read_only=0 on the new master.")
        .await;
    // From here the new master takes writes: a config file that cannot be written is reported,
    // not a reason to undo the promotion.
    if let Err(e) = mycnf::set(ctx.worker, slave, &[("read_only", "0")]).await {
        log.system(format!(
            "Warning: read_only=0 not saved in the option file: {e}"
        ))
        .await;
    }
    Ok(())
}

/// Close the old master's client connections (writes waiting on the read lock fail instead of
/// landing after it), release the lock and replicate from the new master. How many were closed.
async fn demote(
    m: &mut Db,
    cluster: &clusters::Cluster,
    slave: &shared::db::servers::Server,
) -> Result<usize, ActionError> {
    let clients = m
        .strings(
            "SELECT id FROM information_schema.processlist
             WHERE id <> CONNECTION_ID() AND user NOT IN ('system user', 'event_scheduler')
               AND command NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
        )
        .await?;
    for id in &clients {
        // Already gone is fine.
        let _ = m.exec(&format!("KILL CONNECTION {id}")).await;
    }
    m.exec("UNLOCK TABLES").await?;
    m.exec("STOP SLAVE").await.ok();
    m.exec(&format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {}, MASTER_USER = '{}', MASTER_PASSWORD = '{}', \
         MASTER_USE_GTID = slave_pos, MASTER_DEMOTE_TO_SLAVE = 1",
        slave.address, slave.db_port, cluster.repl_user, cluster.repl_password
    ))
    .await?;
    m.exec("START SLAVE").await?;
    Ok(clients.len())
}

/// A cluster that backs up gets a backup of its new master at once (new slaves are seeded from
/// the current master's backups); its role-based schedules follow by themselves.
async fn backup_new_master(ctx: &Ctx<'_>, cluster: &str) {
    let pool = &ctx.worker.pool;
    match shared::db::schedules::cluster_backs_up(pool, cluster).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            ctx.log
                .system(format!(
                    "Warning: could not check the backup schedules: {e}"
                ))
                .await;
            return;
        }
    }
    let backup = shared::db::actions::NewAction {
        server: ctx.server.name.clone(),
        spec: ActionSpec::DbBackup(BackupParams {
            tag: Some("after-promote".into()),
            ..Default::default()
        }),
        timeout_s: None,
        urgent: false,
        idempotency_key: Some(format!(
            "{}after-promote-{}",
            shared::action::INTERNAL_KEY_PREFIX,
            ctx.action.id
        )),
        retry: None,
        submitted_by: "system:after-promote".into(),
    };
    let inserted = match pool.acquire().await {
        Ok(mut conn) => shared::db::actions::insert(&mut conn, &backup, None).await,
        Err(e) => Err(e.into()),
    };
    match inserted {
        Ok((a, _)) => {
            // Published now (the api's outbox relay would otherwise do it within seconds).
            if ctx.worker.publisher.publish(a.id).await.is_ok() {
                let _ = shared::db::actions::mark_published(pool, &[a.id]).await;
            }
            ctx.log
                .system(format!(
                    "Backup of the new master queued (action {}).",
                    a.id
                ))
                .await
        }
        Err(e) => {
            ctx.log
                .system(format!("Warning: backup of the new master not queued: {e}"))
                .await
        }
    }
}
