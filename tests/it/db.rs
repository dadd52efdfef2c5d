//! MySQL actions against a real MariaDB on a test host, reached through the SSH tunnel.

use serde_json::json;
use shared::Status;

use crate::{TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_status_reads_mariadb_through_the_ssh_tunnel() {
    let mut app = TestApp::spawn().await.unwrap();
    let db1 = TestHost::start().unwrap().with_mariadb().unwrap();
    let nodb = TestHost::start().unwrap();
    app.add_db_host("db1", &db1).await.unwrap();
    // Its db_host is its own address, where nothing listens (127.0.0.1:3306 is the machine's
    // own MariaDB, which tests never touch).
    app.add_db_host("nodb", &nodb).await.unwrap();
    app.spawn_worker().await.unwrap();

    let a = app
        .client
        .submit(&json!({"server": "db1", "kind": "db_status"}))
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("] : Executing: 'Executing action: DB status'"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "(server_id {}) at db1 through SSH.",
            db1.server_id()
        )),
        "{log}"
    );
    assert!(
        log.contains("Binary log: on (ROW), read_only: OFF"),
        "{log}"
    );
    assert!(log.contains("] : Not a slave."), "{log}");
    let r = a.result.expect("a result");
    assert_eq!(
        (
            r["server_id"].clone(),
            r["log_bin"].clone(),
            r["read_only"].clone()
        ),
        (json!(db1.server_id()), json!(1), json!(0)),
        "{r}"
    );
    assert!(r["version"].as_str().unwrap().contains("MariaDB"), "{r}");
    assert!(r["slave"].is_null(), "{r}");

    // Bad parameters are refused up front.
    let err = app
        .client
        .post(
            "/v1/actions",
            &json!({"server": "db1", "kind": "db_status", "params": {"x": 1}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == "params.x"),
        "{err:?}"
    );

    // No mysqld on the server: a clear failure.
    let b = app
        .client
        .submit(&json!({"server": "nodb", "kind": "db_status"}))
        .await
        .unwrap();
    let b = app.wait(b.id).await;
    let log = app.log(b.id).await;
    assert_eq!(b.status, Status::Failed, "{log}");
    assert!(
        log.contains(&format!("MySQL at {}:3306 on nodb", nodb.address)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_db_credentials_fail_without_showing_the_password() {
    let app = TestApp::spawn_with(|c| c.mysql_password = "s3cret-never-shown".into())
        .await
        .unwrap();
    let db1 = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("db1", &db1).await.unwrap();
    let _w = app.start_worker(|_| {}).await.unwrap();
    let a = app
        .client
        .submit(&json!({"server": "db1", "kind": "db_status"}))
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::Failed, "{log}");
    assert!(log.contains("Access denied for user 'root'"), "{log}");
    let shown = format!(
        "{log}{}",
        serde_json::to_string(
            &app.client
                .get(&format!("/v1/actions/{}", a.id))
                .await
                .unwrap()
        )
        .unwrap()
    );
    assert!(!shown.contains("s3cret-never-shown"), "the password leaked");
}

/// Run SQL on a test host's mariadbd directly (the test's own view of the data).
fn sql(host: &TestHost, q: &str) -> String {
    host.sql(q).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configure_master_then_slave_replicates_everything() {
    let mut app = TestApp::spawn().await.unwrap();
    let a = TestHost::start().unwrap().with_mariadb().unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    app.spawn_worker().await.unwrap();

    let m = app
        .client
        .submit(&json!({"server": "dba", "kind": "db_configure_master",
                        "params": {"cluster": "shop", "dns_name": "db-master.shop.test"}}))
        .await
        .unwrap();
    let m = app.wait(m.id).await;
    let log = app.log(m.id).await;
    assert_eq!(m.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("] : Executing: 'Executing action: DB configure master'"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "OK. Result: db-master.shop.test set to this instance IP: {}",
            a.address
        )),
        "{log}"
    );
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(c["master"], "dba", "{c}");
    assert_eq!(c["dns"]["address"], a.address.to_string(), "{c}");
    assert!(!c.to_string().contains("password"), "{c}");

    // Rows on the master, then the slave is seeded from it.
    sql(&a, "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
             INSERT INTO shop.orders SELECT seq, CONCAT('v', seq) FROM mysql.seq_1_to_1000");
    let s = app
        .client
        .submit(
            &json!({"server": "dbb", "kind": "db_configure_slave", "params": {"cluster": "shop"}}),
        )
        .await
        .unwrap();
    let s = app
        .client
        .wait(s.id, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    let log = app.log(s.id).await;
    assert_eq!(s.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Copying shop from dba (mysqldump --single-transaction --gtid"),
        "{log}"
    );
    assert!(
        log.contains("Slave running: IO thread Yes, SQL thread Yes"),
        "{log}"
    );
    assert_eq!(sql(&b, "SELECT count(*) FROM shop.orders"), "1000");
    assert_eq!(sql(&b, "SELECT @@read_only"), "1");

    // Writes on the master after the copy reach the slave.
    sql(
        &a,
        "INSERT INTO shop.orders SELECT seq, 'later' FROM mysql.seq_1001_to_1500",
    );
    let caught_up = crate::eventually(std::time::Duration::from_secs(30), async || {
        sql(&b, "SELECT count(*) FROM shop.orders") == "1500"
    })
    .await;
    assert!(caught_up, "the slave did not receive the later rows");
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(c["slaves"], json!(["dbb"]), "{c}");

    // db_status on the slave shows its replication.
    let st = app
        .client
        .submit(&json!({"server": "dbb", "kind": "db_status"}))
        .await
        .unwrap();
    let st = app.wait(st.id).await;
    let r = st.result.unwrap();
    assert_eq!(
        (
            r["slave"]["io_running"].clone(),
            r["slave"]["sql_running"].clone()
        ),
        (json!("Yes"), json!("Yes")),
        "{r}"
    );
    assert_eq!(r["slave"]["master_host"], a.address.to_string());

    // Refusals: a member of one cluster configured into another (at once, naming the field);
    // a second master for the cluster.
    let err = app
        .client
        .submit(
            &json!({"server": "dbb", "kind": "db_configure_slave", "params": {"cluster": "nope"}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 409, field: Some(f), message }
            if f == "params.cluster" && message.contains("member of cluster \"shop\"")),
        "{err:?}"
    );
    let two = app
        .client
        .submit(
            &json!({"server": "dbb", "kind": "db_configure_master", "params": {"cluster": "shop"}}),
        )
        .await
        .unwrap();
    let two = app.wait(two.id).await;
    assert_eq!(two.status, Status::Failed);
    assert!(app
        .log(two.id)
        .await
        .contains("already has master dba: promote a slave instead"));
}

async fn promote(app: &TestApp, server: &str) -> (shared::Action, String) {
    let p = app
        .client
        .submit(&json!({"server": server, "kind": "db_promote"}))
        .await
        .unwrap();
    assert!(p.urgent, "db_promote is always urgent");
    let p = app
        .client
        .wait(p.id, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    let log = app.log(p.id).await;
    (p, log)
}

fn in_order(log: &str, steps: &[&str]) {
    let mut at = 0;
    for s in steps {
        match log[at..].find(s) {
            Some(i) => at += i + s.len(),
            None => panic!("step {s:?} missing or out of order in:\n{log}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_after_the_master_died() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, b) = app.mariadb_pair().await.unwrap();
    sql(
        &a,
        "INSERT INTO shop.orders SELECT seq, 'late' FROM mysql.seq_101_to_150",
    );
    let caught = crate::eventually(std::time::Duration::from_secs(20), async || {
        sql(&b, "SELECT count(*) FROM shop.orders") == "150"
    })
    .await;
    assert!(caught);
    a.kill(); // mariadbd and sshd
    let started = std::time::Instant::now();
    let (p, log) = promote(&app, "dbb").await;
    println!("promote with a dead master took {:?}", started.elapsed());
    assert_eq!(p.status, Status::Succeeded, "{log}");
    in_order(&log, &[
        "] : Executing: 'Executing action: DB promote to master'",
        "has the lock. terminating others.",
        "Stopping master (if alive), noting position, making RO, stopping and unconfiguring replication",
        "not reachable...",
        "...Warning: assuming old master is dead and that the current contents of the Slave is the latest and best we can get.",
        "Promoting slave...",
        "granting rep rights...",
        "done with rights...",
        "Changing Master DB DNS...",
        &format!("OK. Result: shop-master set to this instance IP: {}", b.address),
        "Mission accomplished.",
        "Server action successfully completed",
    ]);
    assert_eq!(sql(&b, "SELECT @@read_only"), "0");
    sql(&b, "INSERT INTO shop.orders VALUES (1000, 'after promote')");
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(
        (c["master"].clone(), c["dns"]["address"].clone()),
        (json!("dbb"), json!(b.address.to_string())),
        "{c}"
    );

    // A fresh slave from the new master replicates.
    let c_host = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dbc", &c_host).await.unwrap();
    let s = app
        .client
        .submit(
            &json!({"server": "dbc", "kind": "db_configure_slave", "params": {"cluster": "shop"}}),
        )
        .await
        .unwrap();
    let s = app
        .client
        .wait(s.id, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(s.status, Status::Succeeded, "{}", app.log(s.id).await);
    sql(&b, "INSERT INTO shop.orders VALUES (1001, 'for c')");
    let replicates = crate::eventually(std::time::Duration::from_secs(20), async || {
        sql(&c_host, "SELECT count(*) FROM shop.orders") == "152"
    })
    .await;
    assert!(replicates, "the new slave does not follow the new master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_switchover_demotes_the_old_master_and_refusals_change_nothing() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, b) = app.mariadb_pair().await.unwrap();
    // Refusal: the master is not a slave.
    let (p, log) = promote(&app, "dba").await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(log.contains("dba is not a slave of a cluster"), "{log}");
    assert_eq!(
        sql(&a, "SELECT @@read_only"),
        "0",
        "a refused promote changed the master"
    );

    sql(
        &a,
        "INSERT INTO shop.orders SELECT seq, 'w' FROM mysql.seq_101_to_300",
    );
    // A client writing to wherever the cluster's DNS record points, throughout the switchover.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (((p, log), promoted_at), acked) = tokio::join!(
        async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let r = promote(&app, "dbb").await;
            let done = std::time::Instant::now();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, done)
        },
        write_loop(&app, &stop)
    );
    assert_eq!(p.status, Status::Succeeded, "{log}");
    let window = acked
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();
    println!(
        "switchover: {} acknowledged writes, write-unavailable window {:.0} ms",
        acked.len(),
        window.as_secs_f64() * 1000.0
    );
    let on_b: std::collections::HashSet<i64> =
        sql(&b, "SELECT id FROM shop.orders WHERE id >= 100000")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let lost: Vec<i64> = acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !on_b.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on the new master: {lost:?}"
    );
    assert!(
        acked.iter().any(|(_, at)| *at > promoted_at),
        "no write was acknowledged after the switchover"
    );
    in_order(
        &log,
        &[
            "Old master is read-only at GTID",
            "Promoting slave...",
            "Demoting old master...",
            "Mission accomplished.",
        ],
    );
    // Every acknowledged write is on the new master; the old one is read-only and follows it.
    assert_eq!(
        sql(&b, "SELECT count(*) FROM shop.orders WHERE id <= 300"),
        "300"
    );
    assert_eq!(
        (sql(&a, "SELECT @@read_only"), sql(&b, "SELECT @@read_only")),
        ("1".into(), "0".into())
    );
    sql(
        &b,
        "INSERT INTO shop.orders VALUES (5000, 'on the new master')",
    );
    let follows = crate::eventually(std::time::Duration::from_secs(20), async || {
        sql(&a, "SELECT count(*) FROM shop.orders WHERE id = 5000") == "1"
    })
    .await;
    assert!(
        follows,
        "the old master does not replicate from the new one"
    );
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(
        (c["master"].clone(), c["slaves"].clone()),
        (json!("dbb"), json!(["dba"])),
        "{c}"
    );
}

/// Insert rows (ids from 100000) into `shop.orders` at the address the cluster's DNS record
/// names, until `stop`; the acknowledged ids and when they were acknowledged.
async fn write_loop(
    app: &TestApp,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(i64, std::time::Instant)> {
    let mut acked = Vec::new();
    let mut id = 100_000;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        id += 1;
        let c = app.client.get("/v1/clusters/shop").await.unwrap();
        let address = c["dns"]["address"].as_str().unwrap().to_string();
        let ok = tokio::process::Command::new("mariadb")
            .args(["-h", &address, "-P", "3306", "-u", "root", "-e"])
            .arg(format!("INSERT INTO shop.orders VALUES ({id}, 'loop')"))
            .output()
            .await
            .unwrap()
            .status
            .success();
        if ok {
            acked.push((id, std::time::Instant::now()));
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    acked
}

/// `Gtid_IO_Pos` (received) and `gtid_slave_pos` (applied) of a slave.
fn positions(host: &TestHost) -> (String, String) {
    let out = std::process::Command::new("mariadb")
        .args([
            "-h",
            &host.address.to_string(),
            "-P",
            "3306",
            "-u",
            "root",
            "-e",
            "SHOW SLAVE STATUS\\G",
        ])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    let io = status
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Gtid_IO_Pos:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (io, sql(host, "SELECT @@gtid_slave_pos"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slave_that_has_not_applied_its_relay_log_is_not_promoted_without_force() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, b) = app.mariadb_pair().await.unwrap();
    sql(&b, "STOP SLAVE SQL_THREAD");
    sql(
        &a,
        "INSERT INTO shop.orders SELECT seq, 'unapplied' FROM mysql.seq_101_to_120",
    );
    let behind = crate::eventually(std::time::Duration::from_secs(20), async || {
        let (received, applied) = positions(&b);
        !received.is_empty() && received != applied
    })
    .await;
    assert!(
        behind,
        "the slave did not receive the rows: {:?}",
        positions(&b)
    );
    a.kill();
    let (p, log) = promote(&app, "dbb").await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(
        log.contains("has not applied everything it received"),
        "{log}"
    );
    assert_eq!(
        sql(&b, "SELECT @@read_only"),
        "1",
        "a refused promote made the slave writable"
    );
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(c["master"], "dba", "{c}");
    // With force it goes ahead.
    let p = app
        .client
        .submit(&json!({"server": "dbb", "kind": "db_promote", "params": {"force": true}}))
        .await
        .unwrap();
    let p = app.wait(p.id).await;
    assert_eq!(p.status, Status::Succeeded, "{}", app.log(p.id).await);
    assert_eq!(sql(&b, "SELECT @@read_only"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_page_shows_master_slaves_and_dns_record() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, _b) = app.mariadb_pair().await.unwrap();
    let browser = testbed::browser::Browser::start().await.unwrap();
    browser.sign_in(&app.api_url, &app.token).await.unwrap();
    browser
        .goto(&format!("{}/ui/clusters/shop", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('dns')",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    let text = browser
        .eval("return document.getElementById('cluster').textContent")
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    assert!(text.contains("dba") && text.contains("dbb"), "{text}");
    assert!(
        text.contains(&format!("shop-master → {} (TTL 30 s)", a.address)),
        "{text}"
    );
    browser
        .goto(&format!("{}/ui/servers/dbb", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return (document.getElementById('role') || {}).textContent === 'slave of shop'",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    browser
        .goto(&format!("{}/ui/clusters/shop", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('recent')",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    browser
        .screenshot(&std::path::PathBuf::from(target).join("ui-screenshots/cluster.png"))
        .await
        .unwrap();

    // The cluster's default backup schedules on the schedules page, with their next time.
    browser
        .goto(&format!("{}/ui/schedules", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return document.querySelectorAll('#schedules tr').length === 3",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    let text = browser
        .eval("return document.getElementById('schedules').textContent")
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    for expected in [
        "shop-backup-10min",
        "shop-backup-daily",
        "shop slave",
        "shop master",
        "db_backup",
    ] {
        assert!(text.contains(expected), "{expected} missing from: {text}");
    }
    assert!(!text.contains("disabled"), "{text}");
}

async fn act(
    app: &TestApp,
    server: &str,
    kind: &str,
    params: serde_json::Value,
) -> (shared::Action, String) {
    app.act(server, kind, params).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_logging_is_configured_with_a_restart_and_a_restarted_slave_stays_read_only() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let a = TestHost::start()
        .unwrap()
        .with_mariadb_without_binlog()
        .unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    assert_eq!(sql(&a, "SELECT @@log_bin"), "0");

    let (m, log) = act(
        &app,
        "dba",
        "db_configure_master",
        json!({"cluster": "shop"}),
    )
    .await;
    assert_eq!(m.status, Status::Succeeded, "{log}");
    in_order(
        &log,
        &[
            "Server doesn't appear to be logging binary logs, configuring and restarting server with binary logging",
            "mysqld restarted in",
            "Replication user",
            "OK. Result: shop-master set to this instance IP:",
        ],
    );
    assert_eq!(sql(&a, "SELECT @@log_bin"), "1", "binary logging is not on");
    let expected_id = u32::from(a.address).to_string();
    assert_eq!(sql(&a, "SELECT @@server_id"), expected_id);
    let cnf = std::fs::read_to_string(a.mariadb_dir().join("conf.d/99-serveractions.cnf")).unwrap();
    assert!(
        cnf.contains("log_bin = mysql-bin") && cnf.contains("read_only = 0"),
        "{cnf}"
    );

    sql(
        &a,
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v TEXT);
             INSERT INTO shop.orders SELECT seq, 'v' FROM mysql.seq_1_to_100",
    );
    let (s, log) = act(
        &app,
        "dbb",
        "db_configure_slave",
        json!({"cluster": "shop"}),
    )
    .await;
    assert_eq!(s.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("also in") && log.contains("a restart keeps it read-only"),
        "{log}"
    );

    // A restart (as after a crash or a package upgrade) does not make the slave writable.
    b.restart_mariadb().unwrap();
    assert_eq!(
        sql(&b, "SELECT @@read_only"),
        "1",
        "the restarted slave is writable"
    );
    sql(
        &a,
        "INSERT INTO shop.orders VALUES (101, 'after the restart')",
    );
    let caught = crate::eventually(std::time::Duration::from_secs(30), async || {
        sql(&b, "SELECT count(*) FROM shop.orders") == "101"
    })
    .await;
    assert!(caught, "the restarted slave does not replicate");

    // A restart command that fails is a clear failure of the action.
    let c = TestHost::start()
        .unwrap()
        .with_mariadb_without_binlog()
        .unwrap();
    let mut body = c.db_server_json("dbc");
    body["db_restart_command"] = json!("echo 'no permission to restart mysqld' >&2; exit 3");
    app.client.add_server(&body).await.unwrap();
    let (x, log) = act(
        &app,
        "dbc",
        "db_configure_master",
        json!({"cluster": "other"}),
    )
    .await;
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(
        log.contains("failed (exit 3): no permission to restart mysqld"),
        "{log}"
    );
    let c_view = app.client.get("/v1/clusters/other").await;
    assert!(
        c_view.is_err(),
        "a failed configure recorded a cluster: {c_view:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checksum_finds_a_row_changed_on_the_slave_and_nothing_on_a_clean_pair() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, b) = app.mariadb_pair().await.unwrap();
    // More rows than one chunk, a composite key with NULLs, a table without a primary key.
    sql(&a, "INSERT INTO shop.orders SELECT seq, CONCAT('v', seq) FROM mysql.seq_101_to_60000;
             CREATE TABLE shop.lines (o INT, n INT, note VARCHAR(20) NULL, PRIMARY KEY (o, n));
             INSERT INTO shop.lines SELECT seq DIV 10, seq MOD 10, IF(seq MOD 3 = 0, NULL, 'x') FROM mysql.seq_1_to_5000;
             CREATE TABLE shop.audit (msg TEXT);
             INSERT INTO shop.audit VALUES ('a'), ('b')");
    let (c, log) = act(&app, "dba", "db_checksum", json!({"cluster": "shop"})).await;
    assert_eq!(c.status, Status::Succeeded, "{log}");
    let r = c.result.clone().unwrap();
    assert_eq!(r["rows"], json!(60000 + 5000 + 2), "{r}");
    assert_eq!(r["differences"], json!([]), "{r}");
    assert!(r["chunks"].as_u64().unwrap() > 3, "{r}");
    assert!(log.contains("No differences: 65002 rows"), "{log}");

    // Changed on the slave only (not replicated): found, in its chunk.
    sql(
        &b,
        "SET sql_log_bin = 0; UPDATE shop.orders SET v = 'tampered' WHERE id = 30000;
             UPDATE shop.lines SET note = NULL WHERE o = 7 AND n = 1",
    );
    let (c, log) = act(&app, "dba", "db_checksum", json!({"cluster": "shop"})).await;
    assert_eq!(c.status, Status::Failed, "{log}");
    let r = c.result.clone().unwrap();
    let diffs = r["differences"].as_array().unwrap();
    let tables: Vec<&str> = diffs.iter().map(|d| d["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["lines", "orders"], "{r}");
    let orders = &diffs[1];
    let bound = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<i64>().ok());
    let (lo, hi) = (
        bound(&orders["lower"]).unwrap_or(0),
        bound(&orders["upper"]).unwrap_or(i64::MAX),
    );
    assert!(
        lo < 30000 && 30000 <= hi,
        "the chunk does not hold the changed row: {orders}"
    );
    assert_eq!(
        (orders["server"].clone(), orders["rows"].clone()),
        (json!("dbb"), orders["master_rows"].clone())
    );
    assert!(log.contains("Difference: shop.orders chunk"), "{log}");
    assert!(
        log.contains("2 difference(s) between the master and its slaves."),
        "{log}"
    );

    // Only on the master; bad params are refused at submission.
    let (x, log) = act(&app, "dbb", "db_checksum", json!({"cluster": "shop"})).await;
    assert_eq!(x.status, Status::Failed);
    assert!(
        log.contains("db_checksum runs on the master of shop (dba), not on dbb"),
        "{log}"
    );
    let err = app
        .client
        .submit(&json!({"server": "dba", "kind": "db_checksum", "params": {"cluster": "shop", "tables": "x"}}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("params.tables"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_named_like_an_option_is_copied_with_its_rows() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let a = TestHost::start().unwrap().with_mariadb().unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    // Named to mysqldump as `--no-data`, it would make every dump schema only.
    a.sql(
        "CREATE DATABASE `--no-data`; CREATE TABLE `--no-data`.t (i INT PRIMARY KEY);
         INSERT INTO `--no-data`.t SELECT seq FROM mysql.seq_1_to_10",
    )
    .unwrap();
    for (server, kind) in [
        ("dba", "db_configure_master"),
        ("dbb", "db_configure_slave"),
    ] {
        let (x, log) = app
            .act(server, kind, json!({"cluster": "odd"}))
            .await
            .unwrap();
        assert_eq!(x.status, Status::Succeeded, "{kind}: {log}");
    }
    let rows = b.sql("SELECT count(*) FROM `--no-data`.t").unwrap();
    assert_eq!(rows.trim(), "10");
}
