//! `db_configure_master`: make a server its cluster's master: binary logging checked, the seed's
//! two causes of broken slaves warned about (non-transactional tables, statement-based binlog;
//! `fix` switches to ROW), the replication account created, writes enabled, the cluster's master
//! and its DNS record pointed at it.

use serde_json::json;
use shared::{db::clusters, validate};

use super::{ActionError, Ctx, Done};
use crate::{
    mycnf,
    mysql::{column, Db},
};

pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    let p = validate::cluster_params("db_configure_master", &ctx.action.params)?;
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let result = configure(ctx, &mut db, &p, false).await;
    db.close().await;
    result
}

/// `replace`: take over from the cluster's recorded master (a restore onto a new server after
/// the master was lost) instead of refusing.
pub(super) async fn configure(
    ctx: &Ctx<'_>,
    db: &mut Db,
    p: &validate::ClusterParams,
    replace: bool,
) -> Result<Done, ActionError> {
    let (log, pool, server) = (&ctx.log, &ctx.worker.pool, ctx.server);
    mycnf::ensure_binlog(ctx, db, None).await?;
    let row = db
        .query_first_row("SELECT @@binlog_format AS fmt")
        .await?
        .ok_or_else(|| ActionError::Failed("no answer from mysqld".into()))?;

    // The two causes of broken slaves.
    let myisam = db
        .strings(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables
             WHERE engine = 'MyISAM' AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
             ORDER BY 1",
        )
        .await?;
    if !myisam.is_empty() {
        let shown: Vec<&str> = myisam.iter().take(5).map(String::as_str).collect();
        log.system(format!(
            "Warning: {} non-transactional (MyISAM) tables ({}{}): a crash during a write can leave a slave inconsistent.",
            myisam.len(),
            shown.join(", "),
            if myisam.len() > 5 { ", ..." } else { "" }
        ))
        .await;
    }
    let fmt = column(&row, "fmt");
    if fmt != "ROW" {
        if p.fix {
            db.exec("SET GLOBAL binlog_format = 'ROW'").await?;
            mycnf::set(ctx.worker, server, &[("binlog_format", "ROW")]).await?;
            log.system(format!(
                "binlog_format was {fmt}: set to ROW (also in {}).",
                mycnf::config_file(server)
            ))
            .await;
        } else {
            log.system(format!(
                "Warning: binlog_format is {fmt}: non-deterministic statements can silently corrupt slaves (params.fix switches to ROW)."
            ))
            .await;
        }
    }

    let cluster = clusters::ensure(pool, &p.cluster, p.dns_name.as_deref())
        .await
        .map_err(|e| ActionError::Failed(format!("store: {e}")))?;
    if let Some(other) = cluster.master.as_deref().filter(|m| *m != server.name) {
        if replace {
            log.system(format!("Replacing {other} as master of {}.", cluster.name))
                .await;
        } else {
            return Err(ActionError::Failed(format!(
                "cluster {} already has master {other}: promote a slave instead",
                cluster.name
            )));
        }
    }
    let account = format!("'{}'@'%'", cluster.repl_user);
    // The generated password is hex: nothing to escape. Not logged.
    db.exec(&format!(
        "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{}'",
        cluster.repl_password
    ))
    .await?;
    db.exec(&format!(
        "ALTER USER {account} IDENTIFIED BY '{}'",
        cluster.repl_password
    ))
    .await?;
    db.exec(&format!("GRANT REPLICATION SLAVE ON *.* TO {account}"))
        .await?;
    log.system(format!("Replication user {} ready.", cluster.repl_user))
        .await;
    db.exec("SET GLOBAL read_only = 0").await?;
    mycnf::set(ctx.worker, server, &[("read_only", "0")]).await?;
    log.system("read_only=0: writes enabled.").await;
    let store = |e: sqlx::Error| ActionError::Failed(format!("store: {e}"));
    clusters::set_master(pool, &cluster.name, &server.name)
        .await
        .map_err(store)?;
    super::point_dns(ctx, &cluster, server).await?;
    let pos = db
        .query_first_row("SELECT @@gtid_binlog_pos AS pos")
        .await?
        .map(|r| column(&r, "pos"))
        .unwrap_or_default();
    Ok(Done {
        exit_code: 0,
        result: Some(json!({
            "cluster": cluster.name, "master": server.name, "gtid_binlog_pos": pos,
            "dns": {"name": cluster.dns_name, "address": server.address, "ttl": cluster.dns_ttl},
        })),
    })
}
