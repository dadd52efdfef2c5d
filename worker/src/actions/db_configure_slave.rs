//! `db_configure_slave`: seed a slave from its cluster's master and start replication. The
//! initial copy is `mysqldump --single-transaction --gtid --master-data=1` of the master's
//! databases, streamed through the worker from the master's SSH session into `mysql` on the
//! slave (nothing lands on disk). It carries the GTID position; replication then starts from
//! there with `MASTER_USE_GTID=slave_pos`, so rows written to the master during the copy arrive.

use std::time::{Duration, Instant};

use openssh::Stdio;
use serde_json::json;
use shared::{
    db::{clusters, servers},
    validate,
};
use tokio::io::AsyncReadExt;

use super::{ActionError, Ctx, Done};
use crate::{
    mycnf,
    mysql::{column, ClientOpts, Db},
};

pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    let p = validate::cluster_params("db_configure_slave", &ctx.action.params)?;
    if p.from.as_deref() == Some("backup") {
        // Seeded from the cluster's latest backup, then caught up by replication.
        let done = super::db_restore::restore(
            ctx,
            &validate::RestoreParams {
                backup: validate::BackupRef::Latest(validate::LatestWord::Latest),
                before: None,
                lineage: None,
                role: validate::RestoreAs::Slave,
                cluster: p.cluster.clone(),
            },
        )
        .await?;
        if p.default_schedules != Some(false) {
            super::default_schedules(ctx, &p.cluster).await;
        }
        return Ok(done);
    }
    let pool = &ctx.worker.pool;
    let store = |e: sqlx::Error| ActionError::Failed(format!("store: {e}"));
    let cluster = clusters::get(pool, &p.cluster)
        .await
        .map_err(store)?
        .ok_or_else(|| {
            ActionError::Failed(format!(
                "no cluster named {}: configure its master first",
                p.cluster
            ))
        })?;
    let master_name = cluster
        .master
        .clone()
        .ok_or_else(|| ActionError::Failed(format!("cluster {} has no master", cluster.name)))?;
    if master_name == ctx.server.name {
        return Err(ActionError::Failed(format!(
            "{} is the master of {}",
            master_name, cluster.name
        )));
    }
    let master = servers::get(pool, &master_name)
        .await
        .map_err(store)?
        .ok_or_else(|| {
            ActionError::Failed(format!("master {master_name} is not a registered server"))
        })?;

    let mut mdb = Db::connect(ctx.worker, &master).await?;
    let mut sdb = match Db::connect(ctx.worker, ctx.server).await {
        Ok(db) => db,
        Err(e) => {
            mdb.close().await;
            return Err(e.into());
        }
    };
    let result = configure(ctx, &cluster, &master, &mut mdb, &mut sdb).await;
    mdb.close().await;
    sdb.close().await;
    let pos = result?;
    clusters::add_slave(pool, &cluster.name, &ctx.server.name)
        .await
        .map_err(store)?;
    if p.default_schedules != Some(false) {
        super::default_schedules(ctx, &cluster.name).await;
    }
    Ok(Done {
        exit_code: 0,
        result: Some(
            json!({"cluster": cluster.name, "master": master.name, "gtid_slave_pos": pos}),
        ),
    })
}

async fn configure(
    ctx: &Ctx<'_>,
    cluster: &clusters::Cluster,
    master: &servers::Server,
    mdb: &mut Db,
    sdb: &mut Db,
) -> Result<serde_json::Value, ActionError> {
    let log = &ctx.log;
    // The slave logs binary logs too (it may be promoted), under a server_id of its own.
    let master_id = mdb
        .query_first_row("SELECT @@server_id AS id")
        .await?
        .and_then(|r| column(&r, "id").as_u64());
    mycnf::ensure_binlog(ctx, sdb, master_id).await?;
    let databases = mdb.user_databases().await?;
    // A fresh server has GTIDs of its own in its binary log: clear them (gtid_strict_mode).
    sdb.exec("STOP SLAVE").await?;
    sdb.exec("RESET SLAVE ALL").await?;
    sdb.exec("RESET MASTER").await?;
    if databases.is_empty() {
        let pos = mdb
            .query_first_row("SELECT @@gtid_binlog_pos AS p")
            .await?
            .map(|r| column(&r, "p"));
        let pos = pos
            .and_then(|p| p.as_str().map(str::to_string))
            .unwrap_or_default();
        log.system(format!(
            "The master has no databases to copy; starting from GTID {pos:?}."
        ))
        .await;
        sdb.exec(&format!(
            "SET GLOBAL gtid_slave_pos = '{}'",
            pos.replace('\'', "")
        ))
        .await?;
    } else {
        log.system(format!(
            "Copying {} from {} (mysqldump --single-transaction --gtid, streamed through the worker)...",
            databases.join(", "),
            master.name
        ))
        .await;
        copy(ctx, master, &databases).await?;
    }
    replicate(ctx, cluster, master, sdb).await
}

/// Replicate from `master` from the slave's `gtid_slave_pos` on: `CHANGE MASTER`, start, wait
/// until both threads run and lag is small, `read_only=1` (also in the option file). The
/// applied GTID position.
pub(super) async fn replicate(
    ctx: &Ctx<'_>,
    cluster: &clusters::Cluster,
    master: &servers::Server,
    sdb: &mut Db,
) -> Result<serde_json::Value, ActionError> {
    let log = &ctx.log;
    // The binary log starts where the copy is, so that once promoted this server can serve
    // slaves seeded from that position or later (e.g. from a backup of it). Its binary log is
    // empty here: RESET MASTER before the copy, which was loaded with sql_log_bin = 0.
    let seeded = sdb.string("SELECT @@gtid_slave_pos").await?;
    sdb.exec(&format!(
        "SET GLOBAL gtid_binlog_state = '{}'",
        seeded.replace('\'', "")
    ))
    .await?;
    let change = format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {}, MASTER_USER = '{}', MASTER_PASSWORD = '{}', \
         MASTER_USE_GTID = slave_pos",
        master.address, master.db_port, cluster.repl_user, cluster.repl_password
    );
    sdb.exec(&change).await?;
    sdb.exec("START SLAVE").await?;
    log.system(format!(
        "Replicating from {}:{} (GTID).",
        master.address, master.db_port
    ))
    .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sdb
            .query_first_row("SHOW SLAVE STATUS")
            .await?
            .ok_or_else(|| {
                ActionError::Failed("SHOW SLAVE STATUS is empty after START SLAVE".into())
            })?;
        let (io, sql, lag) = (
            column(&s, "Slave_IO_Running"),
            column(&s, "Slave_SQL_Running"),
            column(&s, "Seconds_Behind_Master"),
        );
        if io == "Yes" && sql == "Yes" && lag.as_i64().is_some_and(|l| l <= 5) {
            log.system(format!(
                "Slave running: IO thread Yes, SQL thread Yes, Seconds_Behind_Master {lag}."
            ))
            .await;
            break;
        }
        for k in ["Last_IO_Error", "Last_SQL_Error"] {
            if let Some(e) = column(&s, k).as_str().filter(|e| !e.is_empty()) {
                if e.contains("not in the master's binlog") {
                    return Err(ActionError::Failed(format!(
                        "the master's binary log does not reach back to GTID {seeded:?} (a backup \
                         taken before a promote, or purged binary logs): seed from the master, or \
                         from a backup of it. {k}: {e}"
                    )));
                }
                if Instant::now() + Duration::from_secs(50) > deadline {
                    return Err(ActionError::Failed(format!(
                        "replication does not start: {k}: {e}"
                    )));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(ActionError::Failed(format!(
                "replication not running after 60 s (IO {io}, SQL {sql}, lag {lag})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sdb.exec("SET GLOBAL read_only = 1").await?;
    mycnf::set(ctx.worker, ctx.server, &[("read_only", "1")]).await?;
    log.system(format!(
        "read_only=1 on the slave (also in {}: a restart keeps it read-only).",
        mycnf::config_file(ctx.server)
    ))
    .await;
    let pos = sdb
        .query_first_row("SELECT @@gtid_slave_pos AS p")
        .await?
        .map(|r| column(&r, "p"));
    Ok(pos.unwrap_or_default())
}

/// Stream `mysqldump` on the master into `mysql` on the slave.
async fn copy(
    ctx: &Ctx<'_>,
    master: &servers::Server,
    databases: &[String],
) -> Result<(), ActionError> {
    let worker = ctx.worker;
    let mopts = ClientOpts::new(worker, master).await?;
    let sopts = match ClientOpts::new(worker, ctx.server).await {
        Ok(o) => o,
        Err(e) => {
            mopts.cleanup(worker, master).await;
            return Err(e.into());
        }
    };
    let names: Vec<String> = databases
        .iter()
        .map(|d| {
            shlex::try_quote(d)
                .map(|q| q.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let dump = format!(
        "mysqldump {} --single-transaction --gtid --master-data=1 --routines --events --triggers --databases {}",
        mopts.args,
        names.join(" ")
    );
    // Not into the slave's own binary log: its GTIDs would conflict with the master's position.
    let load = format!(
        "mysql {} --init-command='SET SESSION sql_log_bin = 0'",
        sopts.args
    );
    let result = stream(ctx, master, &dump, &load).await;
    mopts.cleanup(worker, master).await;
    sopts.cleanup(worker, ctx.server).await;
    let bytes = result?;
    ctx.log
        .system(format!(
            "Copied {:.1} MiB from {} to {}.",
            bytes as f64 / 1048576.0,
            master.name,
            ctx.server.name
        ))
        .await;
    Ok(())
}

async fn stream(
    ctx: &Ctx<'_>,
    master: &servers::Server,
    dump: &str,
    load: &str,
) -> Result<u64, ActionError> {
    let ssh = &ctx.worker.ssh;
    let failed = |what: &str, e: openssh::Error| {
        ActionError::Failed(format!("{what}: {}", crate::ssh::describe(&e)))
    };
    let m = ssh.session(master).await?;
    let s = ssh.session(ctx.server).await?;
    let mut dumper = m
        .session
        .clone()
        .arc_raw_command(dump)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(|e| failed("mysqldump", e))?;
    let mut loader = s
        .session
        .clone()
        .arc_raw_command(load)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(|e| failed("mysql", e))?;
    let mut out = dumper.stdout().take().expect("piped");
    let mut input = loader.stdin().take().expect("piped");
    let mut derr = dumper.stderr().take().expect("piped");
    let mut lerr = loader.stderr().take().expect("piped");
    let pipe = async {
        let n = tokio::io::copy(&mut out, &mut input).await;
        drop(input);
        n
    };
    let (mut de, mut le) = (String::new(), String::new());
    let (n, _, _) = tokio::join!(
        pipe,
        derr.read_to_string(&mut de),
        lerr.read_to_string(&mut le)
    );
    let dumped = dumper.wait().await;
    let loaded = loader.wait().await;
    let n = n.map_err(|e| ActionError::Failed(format!("copy interrupted: {e}")))?;
    if !matches!(dumped, Ok(ref s) if s.success()) {
        return Err(ActionError::Failed(format!(
            "mysqldump on {} failed: {}",
            master.name,
            de.trim()
        )));
    }
    if !matches!(loaded, Ok(ref s) if s.success()) {
        return Err(ActionError::Failed(format!(
            "mysql on {} failed: {}",
            ctx.server.name,
            le.trim()
        )));
    }
    Ok(n)
}
