//! Replication: make a server its cluster's master (`configure_master`, with its
//! `replication_account`), make one a slave of the master from its `gtid_slave_pos`
//! (`replicate`), find a cluster's master (`cluster_master`) and point the master's DNS record
//! (`point_dns`).

use std::time::{Duration, Instant};

use serde_json::json;
use shared::{
    db::{
        clusters::{self, Cluster},
        servers::{self, Server},
    },
    spec::ConfigureMasterParams,
};

use super::topology;
use secrecy::ExposeSecret;

use crate::{
    ctx::{ActionError, Ctx, Done},
    dns, mycnf,
    mysql::{column, Db},
};

/// `replace`: take over from the cluster's recorded master (a restore onto a new server after
/// the master was lost) instead of refusing.
pub async fn configure_master(
    ctx: &Ctx<'_>,
    db: &mut Db,
    p: &ConfigureMasterParams,
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

    let cluster = clusters::ensure(pool, &p.cluster, p.dns_name.as_deref()).await?;
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
    replication_account(db, &cluster).await?;
    log.system(format!("Replication user {} ready.", cluster.repl_user))
        .await;
    db.exec("SET GLOBAL read_only = 0").await?;
    mycnf::set(ctx.worker, server, &[("read_only", "0")]).await?;
    log.system("read_only=0: writes enabled.").await;
    clusters::set_master(
        pool,
        ctx.cluster_lock()?,
        cluster.master.as_deref(),
        &server.name,
    )
    .await?;
    point_dns(ctx, &cluster, server).await?;
    if cluster.dns_ttl > 30 {
        log.system(format!(
            "Warning: the master record's TTL is {} s: after a failover, clients may keep the old address that long (30 s or less is advised; PATCH /v1/clusters/{}).",
            cluster.dns_ttl, cluster.name
        ))
        .await;
    }
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

/// The cluster's replication account on `db`, with its password and grant (a master, or a
/// slave about to become one).
pub async fn replication_account(db: &mut Db, cluster: &Cluster) -> Result<(), ActionError> {
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
    Ok(())
}

/// Replicate from `master` from the slave's `gtid_slave_pos` on: `CHANGE MASTER`, start, wait
/// until both threads run and lag is small, `read_only=1` (also in the option file). The
/// applied GTID position.
pub async fn replicate(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    master: &Server,
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
    topology::slave_timeouts(ctx, sdb).await?;
    sdb.exec(&topology::change_master(ctx, cluster, master))
        .await?;
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
    let net = ctx.worker.cfg.slave_net_timeout_s.to_string();
    mycnf::set(
        ctx.worker,
        ctx.server,
        &[("read_only", "1"), ("slave_net_timeout", &net)],
    )
    .await?;
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

/// Point the cluster's master record at `server` through the cluster's DNS provider (else the
/// workers' `SA_DNS_PROVIDER`), with the seed's log lines. `rfc2136`: a compare-and-swap from
/// the address the cluster's record holds (a cluster without one takes the name over from
/// whatever it holds), read back from the server; the record kept here follows.
pub async fn point_dns(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    server: &Server,
) -> Result<(), ActionError> {
    ctx.log.system("Changing Master DB DNS...").await;
    let record = shared::dns::Record {
        name: cluster.dns_name.clone(),
        address: server.address.clone(),
        ttl: cluster.dns_ttl.max(0) as u32,
    };
    let provider = match cluster.dns_provider.as_deref() {
        Some("store") => {
            let store = shared::dns::Postgres(ctx.worker.pool.clone());
            shared::dns::DnsProvider::publish(&store, &cluster.name, &record).await?;
            "store"
        }
        Some(other) => {
            let p = own_provider(ctx, cluster, other).await?;
            let swapped = swap(&p, cluster, &record).await?;
            clusters::set_dns(&ctx.worker.pool, &cluster.name, &record.address).await?;
            ctx.log
                .system(format!(
                    "({} change accepted after {} ms, visible after {} ms)",
                    p.name(),
                    swapped.submitted.as_millis(),
                    swapped.visible.as_millis()
                ))
                .await;
            p.name()
        }
        None => {
            ctx.worker.dns.publish(&cluster.name, &record).await?;
            ctx.worker.dns.name()
        }
    };
    ctx.log
        .system(format!(
            "OK. Result: {} set to this instance IP: {}",
            record.name, record.address
        ))
        .await;
    ctx.log
        .system(format!(
            "(record TTL {} s, published by the {provider} DNS provider)",
            record.ttl
        ))
        .await;
    Ok(())
}

fn dns_failure(cluster: &Cluster, provider: &str, why: impl std::fmt::Display) -> ActionError {
    ActionError::Failed(format!(
        "DNS provider {provider} (cluster {}): {why}",
        cluster.name
    ))
}

/// The cluster's own provider from its settings, its key opened from the secret store.
async fn own_provider(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    name: &str,
) -> Result<dns::Provider, ActionError> {
    let fail = |why: String| dns_failure(cluster, name, why);
    let secret = match cluster.dns_key_ref.as_deref() {
        Some(r) => Some(
            crate::mysql::open_secret(ctx.worker, r)
                .await
                .map_err(|e| fail(format!("key: {e}")))?,
        ),
        None => None,
    };
    match name {
        "rfc2136" => {
            let (Some(server), Some(zone), Some(key_name), Some(secret)) = (
                cluster.dns_server.as_deref(),
                cluster.dns_zone.as_deref(),
                cluster.dns_key_name.as_deref(),
                secret,
            ) else {
                return Err(fail(
                    "server, zone, key_name and key_ref must all be set".into(),
                ));
            };
            let server = server
                .parse()
                .map_err(|_| fail(format!("server {server:?} is not IP:port")))?;
            let key = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                secret.expose_secret().trim(),
            )
            .map_err(|_| fail("the key secret is not a base64 TSIG key".into()))?;
            Ok(dns::Provider::Rfc2136(dns::rfc2136::Target {
                server,
                zone: zone.to_string(),
                key_name: key_name.to_string(),
                key,
            }))
        }
        "route53" => {
            let Some(zone_id) = cluster.dns_zone.as_deref() else {
                return Err(fail("zone (the hosted zone id) must be set".into()));
            };
            let credentials = match (cluster.dns_key_name.clone(), secret) {
                (Some(id), Some(s)) => Some((id, s.expose_secret().to_string())),
                _ => None,
            };
            let cfg = &ctx.worker.cfg;
            Ok(dns::Provider::Route53(
                dns::route53::Target::new(
                    cfg.route53_endpoint.as_deref(),
                    &cfg.s3_region,
                    credentials,
                    zone_id,
                )
                .await,
            ))
        }
        other => Err(fail(format!("unknown provider {other:?}"))),
    }
}

/// Change `record` from the address the cluster last published (none: from what the provider
/// holds, taking the name over).
async fn swap(
    p: &dns::Provider,
    cluster: &Cluster,
    record: &shared::dns::Record,
) -> Result<dns::Swapped, ActionError> {
    let fail = |why: String| dns_failure(cluster, p.name(), why);
    let new: std::net::Ipv4Addr = record
        .address
        .parse()
        .map_err(|_| fail(format!("{} is not an IPv4 address", record.address)))?;
    let expected = match cluster.dns_address.as_deref() {
        Some(a) => Some(
            a.parse()
                .map_err(|_| fail(format!("recorded address {a} is not IPv4")))?,
        ),
        None => p
            .current(&record.name)
            .await
            .map_err(|e| fail(e.to_string()))?,
    };
    if expected == Some(new) {
        return Ok(dns::Swapped {
            submitted: std::time::Duration::ZERO,
            visible: std::time::Duration::ZERO,
        });
    }
    p.swap(&record.name, expected, new, record.ttl)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// The cluster named `name` and its master, which must not be this action's server (a slave
/// is being made of it).
pub async fn cluster_master(ctx: &Ctx<'_>, name: &str) -> Result<(Cluster, Server), ActionError> {
    let pool = &ctx.worker.pool;
    let cluster = clusters::get(pool, name).await?.ok_or_else(|| {
        ActionError::Failed(format!(
            "no cluster named {name}: configure its master first"
        ))
    })?;
    let master = cluster
        .master
        .clone()
        .ok_or_else(|| ActionError::Failed(format!("cluster {name} has no master to follow")))?;
    if master == ctx.server.name {
        return Err(ActionError::Failed(format!(
            "{master} is the master of {name}: restore it as master, or promote a slave"
        )));
    }
    let server = servers::get(pool, &master).await?.ok_or_else(|| {
        ActionError::Failed(format!("master {master} is not a registered server"))
    })?;
    Ok((cluster, server))
}
