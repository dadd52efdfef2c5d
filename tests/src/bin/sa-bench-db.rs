//! `sa-bench-db`: the MySQL manager's figures, in one run on this machine's test hosts.
//!
//! (g) `db_promote` with a dead master (seed: 3 min 19 s; target ≤ 5 s);
//! (h) planned switchover under a sysbench write load: the write-unavailable window seen by a
//!     client that writes to wherever the cluster's DNS record points (target ≤ 2 s);
//! (i) `db_checksum` against pt-table-checksum on the same 1M-row master/slave pair: the same
//!     verdict on a clean pair and on a slave with one changed row, and the speed ratio.
//! Needs sysbench and percona-toolkit (`scripts/bench-db.sh` installs them and builds first).

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use clap::Parser;
use mysql_async::prelude::Queryable;
use serde_json::json;
use shared::Status;
use testbed::{app::TestApp, hosts::TestHost};

#[derive(Parser)]
struct Args {
    /// Promotes measured in (g).
    #[arg(long, default_value_t = 5)]
    promotes: usize,
    /// Rows of the checksummed table in (i).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Only run these parts (g, h, i).
    #[arg(long, default_value = "ghi")]
    parts: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut app = TestApp::spawn().await?;
    app.spawn_worker().await?;
    let mut n = 0;
    let mut pair = |app: &'static str| {
        n += 1;
        format!("{app}{n}")
    };
    if args.parts.contains('g') {
        let mut took = Vec::new();
        for _ in 0..args.promotes {
            let cluster = pair("g");
            let (mut a, b) = configured_pair(&app, &cluster, 10_000).await?;
            a.sql(&format!(
                "INSERT INTO {cluster}.t (a, b) SELECT seq, 'late' FROM mysql.seq_1_to_1000"
            ))?;
            let pos = a.sql("SELECT @@gtid_binlog_pos")?;
            b.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
            a.kill();
            let started = Instant::now();
            let (p, log) = app
                .act(&format!("{cluster}-b"), "db_promote", json!({}))
                .await?;
            ensure!(p.status == Status::Succeeded, "promote failed:\n{log}");
            took.push(started.elapsed().as_secs_f64());
        }
        took.sort_by(f64::total_cmp);
        println!(
            "(g) db_promote with a dead master, submit to succeeded: median {:.2} s, max {:.2} s over {} runs \
             (seed 199 s: {:.0}x faster; target 5 s: ratio {:.2})",
            took[took.len() / 2],
            took[took.len() - 1],
            took.len(),
            199.0 / took[took.len() - 1],
            took[took.len() - 1] / 5.0
        );
    }
    if args.parts.contains('h') {
        switchover(&app, &pair("h")).await?;
    }
    if args.parts.contains('i') {
        checksum(&app, &pair("i"), args.rows).await?;
    }
    Ok(())
}

/// Master `<cluster>-a` and slave `<cluster>-b` of `cluster`, with `rows` rows in `<cluster>.t`.
async fn configured_pair(
    app: &TestApp,
    cluster: &str,
    rows: u64,
) -> anyhow::Result<(TestHost, TestHost)> {
    let a = TestHost::start()?.with_mariadb(1)?;
    let b = TestHost::start()?.with_mariadb(2)?;
    app.add_db_host(&format!("{cluster}-a"), &a).await?;
    app.add_db_host(&format!("{cluster}-b"), &b).await?;
    a.sql(&format!(
        "CREATE DATABASE {cluster}; CREATE TABLE {cluster}.t (id INT AUTO_INCREMENT PRIMARY KEY, a INT, b VARCHAR(40), c DATETIME);
         INSERT INTO {cluster}.t (a, b, c) SELECT seq, MD5(seq), '2007-03-01 12:00:00' + INTERVAL seq SECOND FROM mysql.seq_1_to_{rows}"
    ))?;
    for (server, kind) in [("a", "db_configure_master"), ("b", "db_configure_slave")] {
        let (x, log) = app
            .act(
                &format!("{cluster}-{server}"),
                kind,
                json!({"cluster": cluster}),
            )
            .await?;
        ensure!(x.status == Status::Succeeded, "{kind} failed:\n{log}");
    }
    Ok((a, b))
}

/// (h) Switchover while sysbench writes to the old master and a probe client writes to the
/// cluster's DNS record: the longest gap between the probe's acknowledged writes.
async fn switchover(app: &TestApp, cluster: &str) -> anyhow::Result<()> {
    let (a, b) = configured_pair(app, cluster, 1000).await?;
    let sysbench = |cmd: &str, extra: &[&str]| {
        let mut c = Command::new("sysbench");
        c.args([
            "oltp_write_only",
            &format!("--mysql-host={}", a.address),
            "--mysql-port=3306",
            "--mysql-user=root",
            &format!("--mysql-db={cluster}"),
            "--tables=4",
            "--table-size=10000",
        ])
        .args(extra)
        .arg(cmd);
        c
    };
    let out = sysbench("prepare", &[])
        .output()
        .context("sysbench (apt-get install sysbench)")?;
    ensure!(
        out.status.success(),
        "sysbench prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pos = a.sql("SELECT @@gtid_binlog_pos")?;
    b.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))?;
    let load = sysbench(
        "run",
        &[
            "--threads=4",
            "--time=12",
            "--mysql-ignore-errors=all",
            "--report-interval=2",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?;
    let stop = AtomicBool::new(false);
    let (promoted, acked) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let r = app
                .act(&format!("{cluster}-b"), "db_promote", json!({}))
                .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
            r
        },
        probe(app, cluster, &stop)
    );
    let (p, log) = promoted?;
    let acked = acked?;
    let load = load.wait_with_output()?;
    ensure!(p.status == Status::Succeeded, "switchover failed:\n{log}");
    let gap = acked
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    // sysbench 1.0 stops when the switchover closes its connections to the old master: its
    // last per-2-second report is the load it was applying.
    let stdout = String::from_utf8_lossy(&load.stdout);
    let tps = stdout
        .lines()
        .filter_map(|l| l.split("tps: ").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .next_back()
        .unwrap_or("?");
    println!(
        "(h) planned switchover under sysbench oltp_write_only (4 threads on the old master, {tps} tps before it): \
         write-unavailable window {:.0} ms for a client following the DNS record ({} acknowledged probe writes; \
         target 2 s: ratio {:.2})",
        gap.as_secs_f64() * 1e3,
        acked.len(),
        gap.as_secs_f64() / 2.0
    );
    // Every acknowledged probe write is on the new master.
    let on_b: i64 = b
        .sql(&format!("SELECT count(*) FROM {cluster}.probe"))?
        .parse()?;
    ensure!(
        on_b as usize == acked.len(),
        "{} acknowledged probe writes, {on_b} on the new master",
        acked.len()
    );
    Ok(())
}

/// Insert into `<cluster>.probe` on the DNS record's address until `stop`, one connection per
/// write (as a client that resolves the name each time): when each write was acknowledged.
async fn probe(app: &TestApp, cluster: &str, stop: &AtomicBool) -> anyhow::Result<Vec<Instant>> {
    let first = app.client.get(&format!("/v1/clusters/{cluster}")).await?;
    let master = first["dns"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut c = connect(&master).await?;
    c.query_drop(format!("CREATE TABLE {cluster}.probe (id INT PRIMARY KEY)"))
        .await?;
    drop(c);
    let mut acked = Vec::new();
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = app.client.get(&format!("/v1/clusters/{cluster}")).await?;
        let address = c["dns"]["address"].as_str().unwrap_or_default().to_string();
        let attempt = async {
            let mut c = connect(&address).await?;
            c.query_drop(format!("INSERT INTO {cluster}.probe VALUES ({})", id + 1))
                .await?;
            c.disconnect().await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => {
                id += 1;
                acked.push(Instant::now());
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    Ok(acked)
}

async fn connect(address: &str) -> anyhow::Result<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(address.to_string())
        .tcp_port(3306)
        .user(Some("root"))
        .prefer_socket(false);
    Ok(mysql_async::Conn::new(opts).await?)
}

/// (i) db_checksum and pt-table-checksum on the same pair: clean, then one row changed on the
/// slave.
async fn checksum(app: &TestApp, cluster: &str, rows: u64) -> anyhow::Result<()> {
    let (a, b) = configured_pair(app, cluster, rows).await?;
    // pt-table-checksum finds the slave through a DSN table (its processlist method would see
    // the slave's connection from 127.0.0.1, which is another server here).
    a.sql(&format!(
        "CREATE DATABASE percona; CREATE TABLE percona.dsns (id INT PRIMARY KEY, parent_id INT, dsn VARCHAR(255));
         INSERT INTO percona.dsns VALUES (1, NULL, 'h={},P=3306,u=root')",
        b.address
    ))?;
    let pos = a.sql("SELECT @@gtid_binlog_pos")?;
    b.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))?;
    let pt = || -> anyhow::Result<(f64, bool)> {
        let started = Instant::now();
        let out = Command::new("pt-table-checksum")
            .arg(format!("h={},P=3306,u=root", a.address))
            .args([
                &format!("--databases={cluster}"),
                "--recursion-method=dsn=D=percona,t=dsns",
                "--no-check-binlog-format",
                "--replicate=percona.checksums",
            ])
            .output()
            .context("pt-table-checksum (apt-get install percona-toolkit)")?;
        let took = started.elapsed().as_secs_f64();
        let code = out.status.code().unwrap_or(-1);
        // Exit status bit 16: differences found; anything else set is an error.
        ensure!(
            code & !16 == 0,
            "pt-table-checksum exit {code}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((took, code & 16 != 0))
    };
    let (pt_clean, pt_clean_diff) = pt()?;
    let (our_clean, our_clean_diff) = our_checksum(app, cluster).await?;
    b.sql(&format!(
        "SET sql_log_bin = 0; UPDATE {cluster}.t SET b = 'changed on the slave' WHERE id = {}",
        rows / 2
    ))?;
    let (pt_dirty, pt_dirty_diff) = pt()?;
    let (our_dirty, our_dirty_diff) = our_checksum(app, cluster).await?;
    println!(
        "(i) consistency check of {rows} rows: clean pair: pt-table-checksum {pt_clean:.2} s (differences: {pt_clean_diff}), \
         db_checksum {our_clean:.2} s (differences: {our_clean_diff}), speed {:.2}x",
        pt_clean / our_clean
    );
    println!(
        "    one row changed on the slave: pt-table-checksum {pt_dirty:.2} s (differences: {pt_dirty_diff}), \
         db_checksum {our_dirty:.2} s (differences: {our_dirty_diff}), speed {:.2}x",
        pt_dirty / our_dirty
    );
    ensure!(
        (pt_clean_diff, pt_dirty_diff) == (our_clean_diff, our_dirty_diff)
            && !our_clean_diff
            && our_dirty_diff,
        "the verdicts differ"
    );
    Ok(())
}

/// Run db_checksum on the cluster's master: its run time and whether it found differences.
async fn our_checksum(app: &TestApp, cluster: &str) -> anyhow::Result<(f64, bool)> {
    let (x, log) = app
        .act(
            &format!("{cluster}-a"),
            "db_checksum",
            json!({"cluster": cluster}),
        )
        .await?;
    ensure!(
        matches!(x.status, Status::Succeeded | Status::Failed),
        "db_checksum {}:\n{log}",
        x.status
    );
    let report = x.result.as_ref().context("db_checksum without a report")?;
    let diffs = report["differences"].as_array().map_or(0, Vec::len);
    let took =
        (x.finished_at.unwrap_or_default() - x.started_at.unwrap_or_default()).as_seconds_f64();
    Ok((took, diffs > 0))
}
