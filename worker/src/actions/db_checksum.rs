//! `db_checksum`: is every slave of the cluster the same as its master? Done the way
//! pt-table-checksum does it: each table is cut into chunks along its primary key; for each
//! chunk the master runs `REPLACE INTO serveractions.checksums ... SELECT COUNT(*),
//! BIT_XOR(CRC32(row))` under statement-based binary logging, so every slave runs the same
//! statement on its own rows when it replicates it, at the same point of the data; the master's
//! own result is then written beside it. Once the slaves have applied everything, the chunks
//! whose slave result differs from the master's are the differences. Non-deterministic
//! statements replicated as statements silently corrupt slaves (the seed's warning): this is how
//! users find out.

use std::time::{Duration, Instant};

use mysql_async::{prelude::Queryable, Row, Value};
use serde_json::json;
use shared::{
    db::{clusters, servers},
    spec::ChecksumParams,
};

use super::{ActionError, Ctx, Done};
use crate::mysql::{column, ident, table_ident, Db};

/// Where the checksums are written (replicated with the data).
const CHECKSUM_SCHEMA: &str = "serveractions";
/// Chunks are sized to take about this long on the master (pt-table-checksum: 0.5 s).
const CHUNK_TIME: f64 = 0.5;
const FIRST_CHUNK_ROWS: u64 = 10_000;

pub async fn run(ctx: &Ctx<'_>, p: &ChecksumParams) -> Result<Done, ActionError> {
    let (log, pool, server) = (&ctx.log, &ctx.worker.pool, ctx.server);
    let cluster = clusters::get(pool, &p.cluster)
        .await?
        .ok_or_else(|| ActionError::Failed(format!("no cluster named {}", p.cluster)))?;
    if cluster.master.as_deref() != Some(server.name.as_str()) {
        return Err(ActionError::Failed(format!(
            "db_checksum runs on the master of {} ({}), not on {}",
            cluster.name,
            cluster.master.as_deref().unwrap_or("none"),
            server.name
        )));
    }
    let mut slaves = Vec::new();
    for name in clusters::slaves(pool, &cluster.name).await? {
        if let Some(s) = servers::get(pool, &name).await? {
            slaves.push(s);
        }
    }
    if slaves.is_empty() {
        return Err(ActionError::Failed(format!(
            "cluster {} has no slaves to compare with",
            cluster.name
        )));
    }
    let mut mdb = Db::connect(ctx.worker, server).await?;
    let mut sdbs = Vec::new();
    for s in &slaves {
        match Db::connect(ctx.worker, s).await {
            Ok(db) => sdbs.push(db),
            Err(e) => {
                for db in sdbs {
                    db.close().await;
                }
                mdb.close().await;
                return Err(e.into());
            }
        }
    }
    let result = checksum(ctx, &slaves, &mut mdb, &mut sdbs).await;
    mdb.close().await;
    for db in sdbs {
        db.close().await;
    }
    let report = result?;
    let differing = report["differences"].as_array().map_or(0, Vec::len);
    if differing > 0 {
        // Failed, with the report kept as the action's result.
        log.system(format!(
            "{differing} difference(s) between the master and its slaves."
        ))
        .await;
        return Ok(Done {
            exit_code: 1,
            result: Some(report),
        });
    }
    log.system(format!(
        "No differences: {} rows in {} chunks of {} tables are the same on {}.",
        report["rows"],
        report["chunks"],
        report["tables"],
        slaves
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;
    Ok(Done {
        exit_code: 0,
        result: Some(report),
    })
}

struct Table {
    schema: String,
    name: String,
    columns: Vec<String>,
    nullable: Vec<String>,
    key: Vec<String>,
}

async fn checksum(
    ctx: &Ctx<'_>,
    slaves: &[servers::Server],
    mdb: &mut Db,
    sdbs: &mut [Db],
) -> Result<serde_json::Value, ActionError> {
    let log = &ctx.log;
    let started = Instant::now();
    let tables = tables(mdb).await?;
    // The slaves first catch up with the master (tables created just now included).
    let pos = gtid_binlog_pos(mdb).await?;
    for (s, sdb) in slaves.iter().zip(sdbs.iter_mut()) {
        wait_for(s, sdb, &pos).await?;
    }
    let mut differences = Vec::new();
    // A table missing on a slave would stop its replication at our first statement.
    let mut checked = Vec::new();
    'table: for t in tables {
        for (s, sdb) in slaves.iter().zip(sdbs.iter_mut()) {
            let exists = sdb
                .conn
                .exec_first::<i64, _, _>(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                    (&t.schema, &t.name),
                )
                .await
                .map_err(|e| sdb.error(e))?;
            if exists != Some(1) {
                log.system(format!(
                    "Difference: {}.{} is missing on {}.",
                    t.schema, t.name, s.name
                ))
                .await;
                differences.push(
                    json!({"server": s.name, "db": t.schema, "table": t.name, "missing": true}),
                );
                continue 'table;
            }
        }
        checked.push(t);
    }
    for stmt in [
        "CREATE DATABASE IF NOT EXISTS serveractions",
        "CREATE TABLE IF NOT EXISTS serveractions.checksums (
           db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, chunk INT NOT NULL,
           lower_boundary TEXT, upper_boundary TEXT,
           this_crc VARCHAR(40) NOT NULL, this_cnt BIGINT NOT NULL,
           master_crc VARCHAR(40), master_cnt BIGINT,
           ts TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
           PRIMARY KEY (db, tbl, chunk)) ENGINE=InnoDB",
        // The statements must replicate as statements: each slave computes its own checksums.
        "SET SESSION binlog_format = 'STATEMENT'",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET SESSION innodb_lock_wait_timeout = 1",
        "DELETE FROM serveractions.checksums",
    ] {
        mdb.exec(stmt).await?;
    }
    let (mut rows, mut chunks) = (0u64, 0u64);
    for t in &checked {
        let t0 = Instant::now();
        let (r, c) = checksum_table(mdb, t).await?;
        log.system(format!(
            "{}.{}: {r} rows in {c} chunks, {:.2} s.",
            t.schema,
            t.name,
            t0.elapsed().as_secs_f64()
        ))
        .await;
        rows += r;
        chunks += c;
    }
    let pos = gtid_binlog_pos(mdb).await?;
    for (s, sdb) in slaves.iter().zip(sdbs.iter_mut()) {
        log.system(format!(
            "Waiting for {} to apply the checksums (GTID {pos})...",
            s.name
        ))
        .await;
        wait_for(s, sdb, &pos).await?;
        let found: Vec<Row> = sdb
            .conn
            .query(
                "SELECT db, tbl, chunk, lower_boundary, upper_boundary, this_cnt, master_cnt, this_crc, master_crc
                 FROM serveractions.checksums
                 WHERE master_cnt <> this_cnt OR master_crc <> this_crc OR master_crc IS NULL
                 ORDER BY db, tbl, chunk",
            )
            .await
            .map_err(|e| sdb.error(e))?;
        for r in found {
            let d = json!({
                "server": s.name, "db": column(&r, "db"), "table": column(&r, "tbl"),
                "chunk": column(&r, "chunk"), "lower": column(&r, "lower_boundary"),
                "upper": column(&r, "upper_boundary"),
                "rows": column(&r, "this_cnt"), "master_rows": column(&r, "master_cnt"),
                "crc": column(&r, "this_crc"), "master_crc": column(&r, "master_crc"),
            });
            log.system(format!(
                "Difference: {}.{} chunk {} ({} .. {}) on {}: {} rows, crc {} vs master {} rows, crc {}.",
                text(&d["db"]), text(&d["table"]), d["chunk"], text(&d["lower"]), text(&d["upper"]),
                s.name, d["rows"], text(&d["crc"]), d["master_rows"], text(&d["master_crc"])
            ))
            .await;
            differences.push(d);
        }
    }
    Ok(json!({
        "tables": checked.len(), "chunks": chunks, "rows": rows,
        "seconds": started.elapsed().as_secs_f64(), "differences": differences,
    }))
}

async fn gtid_binlog_pos(db: &mut Db) -> Result<String, ActionError> {
    Ok(db
        .query_first_row("SELECT @@gtid_binlog_pos AS p")
        .await?
        .map(|r| column(&r, "p"))
        .and_then(|p| p.as_str().map(str::to_string))
        .unwrap_or_default())
}

/// Wait (at most 120 s) until the slave has applied the master's binary log up to `pos`.
async fn wait_for(slave: &servers::Server, sdb: &mut Db, pos: &str) -> Result<(), ActionError> {
    let waited: Option<i64> = sdb
        .conn
        .exec_first("SELECT MASTER_GTID_WAIT(?, 120)", (pos,))
        .await
        .map_err(|e| sdb.error(e))?;
    if waited == Some(0) {
        Ok(())
    } else {
        Err(ActionError::Failed(format!(
            "{} did not reach the master's position {pos} within 120 s (is it replicating?)",
            slave.name
        )))
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

async fn tables(db: &mut Db) -> Result<Vec<Table>, ActionError> {
    let mut out = Vec::new();
    // Our own checksum table is not checksummed.
    for (schema, name) in db.user_tables().await? {
        if schema == CHECKSUM_SCHEMA {
            continue;
        }
        let cols: Vec<(String, String)> = db
            .conn
            .exec(
                "SELECT column_name, is_nullable FROM information_schema.columns
                 WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                (&schema, &name),
            )
            .await
            .map_err(|e| db.error(e))?;
        let key: Vec<String> = db
            .conn
            .exec(
                "SELECT column_name FROM information_schema.key_column_usage
                 WHERE table_schema = ? AND table_name = ? AND constraint_name = 'PRIMARY'
                 ORDER BY ordinal_position",
                (&schema, &name),
            )
            .await
            .map_err(|e| db.error(e))?;
        out.push(Table {
            schema,
            name,
            nullable: cols
                .iter()
                .filter(|(_, n)| n == "YES")
                .map(|(c, _)| ident(c))
                .collect(),
            columns: cols.iter().map(|(c, _)| ident(c)).collect(),
            key: key.iter().map(|c| ident(c)).collect(),
        });
    }
    Ok(out)
}

/// A value as an SQL literal (the statement is replicated as text).
fn literal(v: &Value) -> String {
    match v {
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
            Err(_) => format!(
                "X'{}'",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        },
        other => other.as_sql(false),
    }
}

/// `(k1, k2) > (v1, v2)` (or `<=`), written out so that the optimizer uses the primary key.
fn compare(key: &[String], vals: &[Value], after: bool) -> String {
    let n = key.len();
    let mut ors = Vec::new();
    for i in 0..n {
        let mut ands: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", key[j], literal(&vals[j])))
            .collect();
        let op = match (after, i + 1 == n) {
            (true, _) => ">",
            (false, false) => "<",
            (false, true) => "<=",
        };
        ands.push(format!("{} {op} {}", key[i], literal(&vals[i])));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// Checksum one table chunk by chunk on the master; (rows, chunks).
async fn checksum_table(db: &mut Db, t: &Table) -> Result<(u64, u64), ActionError> {
    let table = table_ident(&t.schema, &t.name);
    let mut parts = t.columns.clone();
    if !t.nullable.is_empty() {
        let isnull: Vec<String> = t.nullable.iter().map(|c| format!("ISNULL({c})")).collect();
        parts.push(format!("CONCAT({})", isnull.join(", ")));
    }
    let crc = format!(
        "COUNT(*), COALESCE(LOWER(CONV(BIT_XOR(CAST(CRC32(CONCAT_WS('#', {})) AS UNSIGNED)), 10, 16)), 0)",
        parts.join(", ")
    );
    let key = t.key.join(", ");
    let (mut rows, mut chunk) = (0u64, 0u64);
    let mut size = FIRST_CHUNK_ROWS;
    let mut prev: Option<Vec<Value>> = None;
    loop {
        chunk += 1;
        // Tables without a primary key are checksummed in one chunk.
        let upper: Option<Vec<Value>> = if t.key.is_empty() {
            None
        } else {
            let after = prev
                .as_ref()
                .map(|p| format!("WHERE {}", compare(&t.key, p, true)))
                .unwrap_or_default();
            let row: Option<Row> = db
                .conn
                .query_first(format!(
                    "SELECT {key} FROM {table} FORCE INDEX (PRIMARY) {after} ORDER BY {key} LIMIT 1 OFFSET {}",
                    size - 1
                ))
                .await
                .map_err(|e| db.error(e))?;
            row.map(Row::unwrap)
        };
        let mut conds = Vec::new();
        if let Some(p) = &prev {
            conds.push(compare(&t.key, p, true));
        }
        if let Some(u) = &upper {
            conds.push(compare(&t.key, u, false));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let show = |v: &Option<Vec<Value>>| match v {
            Some(v) => {
                let s: Vec<String> = v.iter().map(literal).collect();
                literal(&Value::from(s.join(",")))
            }
            None => "NULL".into(),
        };
        let names = format!(
            "{}, {}, {chunk}",
            literal(&Value::from(t.schema.as_str())),
            literal(&Value::from(t.name.as_str()))
        );
        let t0 = Instant::now();
        db.exec(&format!(
            "REPLACE INTO serveractions.checksums (db, tbl, chunk, lower_boundary, upper_boundary, this_cnt, this_crc)
             SELECT {names}, {}, {}, {crc} FROM {table} {filter}",
            show(&prev),
            show(&upper)
        ))
        .await?;
        let elapsed = t0.elapsed();
        let mine: Option<(i64, String)> = db
            .conn
            .exec_first(
                "SELECT this_cnt, this_crc FROM serveractions.checksums WHERE db = ? AND tbl = ? AND chunk = ?",
                (&t.schema, &t.name, chunk),
            )
            .await
            .map_err(|e| db.error(e))?;
        let (cnt, crc_value) = mine.ok_or_else(|| {
            ActionError::Failed(format!("chunk {chunk} of {table} was not recorded"))
        })?;
        db.exec(&format!(
            "UPDATE serveractions.checksums SET master_cnt = {cnt}, master_crc = {}
             WHERE db = {} AND tbl = {} AND chunk = {chunk}",
            literal(&Value::from(crc_value.as_str())),
            literal(&Value::from(t.schema.as_str())),
            literal(&Value::from(t.name.as_str()))
        ))
        .await?;
        rows += cnt as u64;
        match upper {
            Some(u) => prev = Some(u),
            None => return Ok((rows, chunk)),
        }
        size = next_size(size, elapsed);
    }
}

/// Size the next chunk to take about [`CHUNK_TIME`], growing at most 10× at a time.
fn next_size(size: u64, took: Duration) -> u64 {
    let per_row = took.as_secs_f64().max(1e-6) / size as f64;
    ((CHUNK_TIME / per_row) as u64).clamp(1_000, size.saturating_mul(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_are_compared_column_by_column() {
        let key = vec!["`a`".to_string(), "`b`".to_string()];
        let vals = vec![Value::Int(1), Value::from("x'y")];
        assert_eq!(
            compare(&key, &vals, true),
            "((`a` > 1) OR (`a` = 1 AND `b` > 'x''y'))"
        );
        assert_eq!(
            compare(&key, &vals, false),
            "((`a` < 1) OR (`a` = 1 AND `b` <= 'x''y'))"
        );
    }

    #[test]
    fn binary_values_are_hex_literals() {
        assert_eq!(literal(&Value::Bytes(vec![0xff, 0x00])), "X'ff00'");
    }

    #[test]
    fn chunks_grow_towards_half_a_second() {
        assert_eq!(next_size(10_000, Duration::from_millis(10)), 100_000);
        assert_eq!(next_size(100_000, Duration::from_millis(100)), 500_000);
        assert_eq!(next_size(100_000, Duration::from_secs(5)), 10_000);
    }
}
