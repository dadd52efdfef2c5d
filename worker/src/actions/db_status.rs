//! `db_status`: what a server's mysqld is doing: version, server id, binary log, read_only,
//! GTID positions and, on a slave, its replication threads and lag. Logged for people and kept
//! as the action's `result` for the API and the viewer.

use serde_json::{json, Value};

use super::{ActionError, Ctx, Done};
use crate::mysql::{column, Db};

pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let result = status(&mut db).await;
    db.close().await;
    let status = result?;
    let log = &ctx.log;
    log.system(format!(
        "Connected to {} (server_id {}) at {} through SSH.",
        status["version"].as_str().unwrap_or("mysqld"),
        status["server_id"],
        ctx.server.name
    ))
    .await;
    log.system(format!(
        "Binary log: {} ({}), read_only: {}, GTID position: {}",
        if status["log_bin"] == 1 { "on" } else { "off" },
        status["binlog_format"].as_str().unwrap_or("?"),
        if status["read_only"] == 1 {
            "ON"
        } else {
            "OFF"
        },
        status["gtid_current_pos"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("(none)")
    ))
    .await;
    match &status["slave"] {
        Value::Null => log.system("Not a slave.").await,
        s => {
            log.system(format!(
                "Slave of {}:{}: IO thread {}, SQL thread {}, Seconds_Behind_Master {}",
                s["master_host"].as_str().unwrap_or("?"),
                s["master_port"],
                s["io_running"].as_str().unwrap_or("?"),
                s["sql_running"].as_str().unwrap_or("?"),
                s["seconds_behind_master"]
            ))
            .await;
            for k in ["last_io_error", "last_sql_error"] {
                if let Some(e) = s[k].as_str().filter(|e| !e.is_empty()) {
                    log.system(format!("{k}: {e}")).await;
                }
            }
        }
    }
    Ok(Done {
        exit_code: 0,
        result: Some(status),
    })
}

async fn status(db: &mut Db) -> Result<Value, ActionError> {
    let row = db
        .query_first_row(
            "SELECT @@server_id AS server_id, @@version AS version, @@log_bin AS log_bin,
                    @@binlog_format AS binlog_format, @@read_only AS read_only,
                    @@gtid_current_pos AS gtid_current_pos, @@gtid_slave_pos AS gtid_slave_pos",
        )
        .await?
        .ok_or_else(|| ActionError::Failed("no answer to SELECT @@server_id".into()))?;
    let mut out = json!({});
    for k in [
        "server_id",
        "version",
        "log_bin",
        "binlog_format",
        "read_only",
        "gtid_current_pos",
        "gtid_slave_pos",
    ] {
        out[k] = column(&row, k);
    }
    out["slave"] = match db.query_first_row("SHOW SLAVE STATUS").await? {
        None => Value::Null,
        Some(s) => json!({
            "master_host": column(&s, "Master_Host"),
            "master_port": column(&s, "Master_Port"),
            "io_running": column(&s, "Slave_IO_Running"),
            "sql_running": column(&s, "Slave_SQL_Running"),
            "seconds_behind_master": column(&s, "Seconds_Behind_Master"),
            "using_gtid": column(&s, "Using_Gtid"),
            "gtid_io_pos": column(&s, "Gtid_IO_Pos"),
            "last_io_error": column(&s, "Last_IO_Error"),
            "last_sql_error": column(&s, "Last_SQL_Error"),
        }),
    };
    Ok(out)
}
