//! Seeding a new slave and starting its replication: from the cluster's latest backup
//! (`from_backup`), or (`from_master`) from `mysqldump --single-transaction --gtid
//! --master-data=1` of the master's databases, streamed through the worker from the master's
//! SSH session into `mysql` on the slave (nothing lands on disk). The copy carries the GTID
//! position; replication then starts from there with `MASTER_USE_GTID=slave_pos`, so rows
//! written to the master during the copy arrive.

use openssh::Stdio;
use serde_json::json;
use shared::{
    db::{clusters, servers},
    spec::{BackupRef, RestoreAs, RestoreParams},
};
use tokio::io::AsyncReadExt;

use super::{replication, restore};
use crate::{
    ctx::{ActionError, Ctx, Done},
    mycnf,
    mysql::{column, ClientOpts, Db},
};

/// Seed the action's server from the cluster's latest committed backup, then replicate.
pub async fn from_backup(ctx: &Ctx<'_>, cluster: &str) -> Result<Done, ActionError> {
    let seed = RestoreParams {
        backup: BackupRef::LATEST,
        before: None,
        lineage: None,
        role: RestoreAs::Slave,
        cluster: cluster.to_string(),
        // Never the master: configuring it as a slave is refused before this.
        replace: false,
    };
    restore::restore(ctx, &seed).await
}

/// Copy the master's databases to the action's server, then replicate.
pub async fn from_master(ctx: &Ctx<'_>, cluster: &str) -> Result<Done, ActionError> {
    let (cluster, master) = replication::cluster_master(ctx, cluster).await?;
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
    clusters::add_slave(&ctx.worker.pool, &cluster.name, &ctx.server.name).await?;
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
    replication::replicate(ctx, cluster, master, sdb).await
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
    let dump = format!(
        "mysqldump {} --single-transaction --gtid --master-data=1 --routines --events --triggers --databases {}",
        mopts.args,
        crate::mysql::database_arguments(databases)
    );
    // Not into the slave's own binary log: its GTIDs would conflict with the master's position.
    let load = format!(
        "mysql {} --init-command='SET SESSION sql_log_bin = 0'",
        sopts.args
    );
    let result = stream(ctx, master, &mopts.command(&dump), &sopts.command(&load)).await;
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
        ActionError::Failed(format!("{what}: {}", shared::errors::chain(&e)))
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
