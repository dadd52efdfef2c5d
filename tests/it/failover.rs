//! Automatic failover on real MariaDB test hosts: a watcher per cluster, a dead master failed
//! over on its own (fence, promote, repoint, the DNS record on a loopback Knot, the spare), the
//! anti-flapping block and its acknowledgement, the global switch, the dry-run plan, and the
//! false alarms that must never fail over.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::Status;
use testbed::services::{Knot, PrivatePostgres, PrivateRabbit};

use crate::{eventually, TestApp, TestHost};

async fn failover_state(app: &TestApp) -> Value {
    app.client.get("/v1/clusters/shop").await.unwrap()["failover"].clone()
}

/// Turn automatic failover on and wait until the watcher has seen a healthy cluster.
async fn watch(app: &TestApp) {
    let c = app
        .client
        .patch("/v1/clusters/shop", &json!({"auto_failover": true}))
        .await
        .unwrap();
    assert_eq!(c["failover"]["auto_failover"], true, "{c}");
    let ok = eventually(Duration::from_secs(30), async || {
        failover_state(app).await["analysis"] == "ok"
    })
    .await;
    assert!(
        ok,
        "the watcher never saw the cluster healthy: {}",
        failover_state(app).await
    );
}

/// The automatic failovers so far, oldest first.
async fn failovers(app: &TestApp) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM actions WHERE kind = 'db_failover' ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Wait (60 s) for failover number `n` (counting from 1) and its end.
async fn nth_failover(app: &TestApp, n: usize) -> (shared::Action, String) {
    let mut id = None;
    let seen = eventually(Duration::from_secs(60), async || {
        id = failovers(app).await.get(n - 1).copied();
        id.is_some()
    })
    .await;
    assert!(seen, "no automatic failover: {}", failover_state(app).await);
    let a = app
        .client
        .wait(id.unwrap(), Duration::from_secs(120))
        .await
        .unwrap();
    let log = app.client.log(a.id, 0).await.unwrap().text;
    (a, log)
}

fn address_of<'a>(
    hosts: impl IntoIterator<Item = &'a TestHost>,
    name: &str,
    names: &[&str],
) -> String {
    let i = names.iter().position(|n| *n == name).unwrap();
    hosts.into_iter().nth(i).unwrap().address.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_master_fails_over_on_its_own_and_a_second_death_waits_for_an_ack() {
    let knot = Knot::start("shop.test").unwrap();
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, slaves) = app.mariadb_cluster(2).await.unwrap();
    app.use_knot("shop", &knot, "db").await.unwrap();
    knot.set("db", &a.address.to_string()).unwrap();
    // A spare, tagged for the cluster.
    let spare = TestHost::start().unwrap().with_mariadb().unwrap();
    let mut s = spare.db_server_json("dbs");
    s["tags"] = json!({"spare_for": "shop"});
    app.client.post("/v1/servers", &s).await.unwrap();
    let (hook, got) = crate::webhooks::receiver(0).await;
    let (_, webhook) = app
        .client
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://{hook}/hook"), "secret": crate::webhooks::SECRET,
                    "events": ["failover.started", "failover.finished"]}),
        )
        .await
        .unwrap();
    watch(&app).await;

    // The plan names a candidate and the fence step.
    let plan = app
        .client
        .get("/v1/clusters/shop/failover-plan")
        .await
        .unwrap();
    assert!(plan["plan"]["candidate"].is_string(), "{plan}");
    assert_eq!(plan["plan"]["spare"], "dbs", "{plan}");
    assert!(
        plan["plan"]["fence"]
            .as_str()
            .unwrap()
            .contains("db_fence_command"),
        "{plan}"
    );

    let before = knot.address("db");
    assert_eq!(before, a.address.to_string());
    // Killed under a write loop (to the master directly; it stops at the first failed write).
    let mut conn = testbed::hosts::mysql_root(&a.address.to_string())
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        use mysql_async::prelude::Queryable;
        let mut n = 0;
        for id in 1000..100_000 {
            let sql = format!("INSERT INTO shop.orders (id, v) VALUES ({id}, 'w')");
            match tokio::time::timeout(Duration::from_secs(2), conn.query_drop(sql)).await {
                Ok(Ok(())) => n += 1,
                _ => break,
            }
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    a.kill();
    assert!(writer.await.unwrap() > 10, "the write loop did not run");
    let (f, log) = nth_failover(&app, 1).await;
    assert_eq!(f.status, Status::Succeeded, "{log}");
    assert_eq!(f.submitted_by, "system:monitor");
    assert!(f.urgent);
    assert!(
        log.contains("Failover of cluster shop: master dba reported dead by system:monitor"),
        "{log}"
    );
    assert!(log.contains("Evidence that dba is dead"), "{log}");
    assert!(
        log.contains("Fenced dba: its db_fence_command succeeded."),
        "{log}"
    );
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    let master = c["master"].as_str().unwrap().to_string();
    assert_ne!(master, "dba", "{c}");
    let names = ["dbb", "dbc"];
    let new_address = address_of(&slaves, &master, &names);
    assert_eq!(
        knot.address("db"),
        new_address,
        "the DNS record did not move"
    );
    eprintln!(
        "failover: {:.1} s from the kill to its end",
        killed.elapsed().as_secs_f64()
    );
    let other = names.iter().find(|n| **n != master).unwrap();
    let repointed = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == *other)
        .unwrap();
    assert_eq!(repointed["repl_state"]["master_host"], new_address, "{c}");
    let events = c["events"].to_string();
    assert!(
        events.contains("Automatic failover started by watcher"),
        "{events}"
    );
    assert!(events.contains("Failover finished"), "{events}");

    // Both failover events arrived, signed (the receiver checks the signature).
    let both = eventually(Duration::from_secs(10), async || {
        got.lock().unwrap().len() >= 2
    })
    .await;
    let events: Vec<String> = got.lock().unwrap().iter().map(|g| g.0.clone()).collect();
    assert!(both, "{events:?}");
    assert_eq!(events, ["failover.started", "failover.finished"]);
    assert_eq!(got.lock().unwrap()[1].3["data"]["master"], json!(master));
    // The receiver answers 401 to a bad signature: both were delivered at the first attempt.
    let d = app
        .client
        .get(&format!("/v1/webhooks/{}/deliveries", webhook["id"]))
        .await
        .unwrap();
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "delivered" && x["attempts"] == 1 && x["last_status"] == 200),
        "{d}"
    );

    // The spare becomes a slave of the new master.
    let spare_action = f.result.as_ref().unwrap()["spare"]["action"]
        .as_i64()
        .unwrap();
    let s = app
        .client
        .wait(spare_action, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        s.status,
        Status::Succeeded,
        "{}",
        app.log(spare_action).await
    );
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert!(
        c["slaves"].as_array().unwrap().contains(&json!("dbs")),
        "{c}"
    );

    // A second death within the block period: no automatic failover, and the analysis says why.
    let mut new_master = slaves
        .into_iter()
        .zip(names)
        .find(|(_, n)| *n == master)
        .unwrap()
        .0;
    new_master.kill();
    let blocked = eventually(Duration::from_secs(30), async || {
        failover_state(&app).await["analysis"] == "dead_master_not_failed_over"
    })
    .await;
    let state = failover_state(&app).await;
    assert!(blocked, "{state}");
    assert!(
        state["detail"].as_str().unwrap().contains("blocked until"),
        "{state}"
    );
    assert!(state["blocked_until"].is_string(), "{state}");
    assert_eq!(failovers(&app).await.len(), 1);
    // Acknowledged: it fails over again.
    let acked = app
        .client
        .post("/v1/clusters/shop/ack", &json!({}))
        .await
        .unwrap()
        .1;
    assert!(acked["blocked_until"].is_null(), "{acked}");
    let (f2, log) = nth_failover(&app, 2).await;
    assert_eq!(f2.status, Status::Succeeded, "{log}");
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert!(c["master"] == json!(other) || c["master"] == "dbs", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_global_switch_holds_failovers_and_the_plan_needs_a_watch() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, _slaves) = app.mariadb_pair().await.unwrap();
    // Not watched: no plan yet, said so.
    let err = app
        .client
        .get("/v1/clusters/shop/failover-plan")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 409, message, .. } if message.contains("not watched")),
        "{err:?}"
    );
    for (body, field) in [
        (json!({"failover_block_s": 10_000_000}), "failover_block_s"),
        (json!({"auto_failover": "yes"}), "auto_failover"),
    ] {
        let err = app
            .client
            .patch("/v1/clusters/shop", &body)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, message, .. } if message.contains(field)),
            "{body}: {err:?}"
        );
    }
    let err = app
        .client
        .put(
            "/v1/auto-failover",
            &json!({"enabled": false, "reason": "a\nb"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 400, .. }),
        "{err:?}"
    );
    watch(&app).await;

    let off = app
        .client
        .put(
            "/v1/auto-failover",
            &json!({"enabled": false, "reason": "maintenance"}),
        )
        .await
        .unwrap();
    assert_eq!(off["enabled"], false, "{off}");
    a.kill();
    let held = eventually(Duration::from_secs(30), async || {
        failover_state(&app).await["analysis"] == "dead_master_not_failed_over"
    })
    .await;
    let state = failover_state(&app).await;
    assert!(held, "{state}");
    assert!(
        state["detail"]
            .as_str()
            .unwrap()
            .contains("off for every cluster (maintenance)"),
        "{state}"
    );
    assert!(failovers(&app).await.is_empty());
    app.client
        .put("/v1/auto-failover", &json!({"enabled": true}))
        .await
        .unwrap();
    let (f, log) = nth_failover(&app, 1).await;
    assert_eq!(f.status, Status::Succeeded, "{log}");
    assert_eq!(
        app.client.get("/v1/clusters/shop").await.unwrap()["master"],
        "dbb"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_that_did_not_die_makes_a_failover() {
    let rabbit = PrivateRabbit::start().unwrap();
    let pg = PrivatePostgres::start().unwrap();
    let app = TestApp::spawn_with(|c| {
        c.amqp_url = rabbit.url();
        c.database_url = pg.url("serveractions_false_alarms");
        c.watch_lease_s = 3.0;
    })
    .await
    .unwrap();
    // Two worker processes: one watches, the other can take over.
    let workers = vec![
        ("fa-1", app.start_worker_process("fa-1").unwrap()),
        ("fa-2", app.start_worker_process("fa-2").unwrap()),
    ];
    let (mut a, _slaves) = app.mariadb_pair().await.unwrap();
    watch(&app).await;
    let quiet = async |what: &str, secs: u64| {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let f = failovers(&app).await;
        assert!(
            f.is_empty(),
            "{what} made a failover: {}",
            failover_state(&app).await
        );
        let c = app.client.get("/v1/clusters/shop").await.unwrap();
        assert_eq!(c["master"], "dba", "{what}: {c}");
    };

    // A master frozen for 2 s: slow, not dead (its slaves stay connected).
    for _ in 0..2 {
        a.pause_mariadb(Duration::from_secs(2));
        quiet("a 2 s SIGSTOP", 3).await;
    }
    // The master's sshd killed while mariadbd serves: cut off from the watcher only.
    a.kill_sshd();
    let seen = eventually(Duration::from_secs(20), async || {
        failover_state(&app).await["analysis"] == "unreachable_master_slaves_connected"
    })
    .await;
    assert!(seen, "{}", failover_state(&app).await);
    quiet("the master's sshd killed", 5).await;
    a.start_sshd().unwrap();

    // The watching worker SIGKILLed: the other takes over, and nothing fails over.
    let state = failover_state(&app).await;
    let (watcher, generation) = (
        state["watcher"].as_str().unwrap().to_string(),
        state["watch_generation"].as_i64().unwrap(),
    );
    let i = workers.iter().position(|(n, _)| *n == watcher).unwrap();
    workers[i].1.signal("KILL");
    let taken = eventually(Duration::from_secs(20), async || {
        let s = failover_state(&app).await;
        s["watcher"] != json!(watcher) && s["watch_generation"].as_i64() > Some(generation)
    })
    .await;
    assert!(
        taken,
        "no worker took the watch over: {}",
        failover_state(&app).await
    );
    quiet("the watcher SIGKILLed", 3).await;

    // PostgreSQL restarted, then RabbitMQ.
    pg.restart().unwrap();
    quiet("a PostgreSQL restart", 6).await;
    rabbit.restart().unwrap();
    quiet("a RabbitMQ restart", 4).await;
    let ok = eventually(Duration::from_secs(20), async || {
        failover_state(&app).await["analysis"] == "ok"
    })
    .await;
    let state = failover_state(&app).await;
    assert!(ok, "{state}");
    let events = app.client.get("/v1/clusters/shop").await.unwrap()["events"].to_string();
    assert!(
        events.contains("unreachable_master_slaves_connected"),
        "{events}"
    );
    for (_, mut w) in workers {
        w.stop(Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_semi_sync_no_acknowledged_write_is_lost_by_a_failover() {
    use mysql_async::prelude::Queryable;
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, slaves) = app.mariadb_cluster(2).await.unwrap();
    app.client
        .patch("/v1/clusters/shop", &json!({"semi_sync": true}))
        .await
        .unwrap();
    watch(&app).await;
    // The watcher sets it on the master and both slaves.
    let on = eventually(Duration::from_secs(20), async || {
        a.sql("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
            .is_ok_and(|s| s.ends_with('2'))
    })
    .await;
    assert!(on, "semi-sync never reached both slaves");
    let mut conn = testbed::hosts::mysql_root(&a.address.to_string())
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for id in 1000..100_000 {
            let sql = format!("INSERT INTO shop.orders (id, v) VALUES ({id}, 'w')");
            match tokio::time::timeout(Duration::from_secs(2), conn.query_drop(sql)).await {
                Ok(Ok(())) => acked.push(id),
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.kill();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "only {} writes before the kill",
        acked.len()
    );
    let (f, log) = nth_failover(&app, 1).await;
    assert_eq!(f.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Semi-synchronous replication set as the master."),
        "{log}"
    );
    let master = app.client.get("/v1/clusters/shop").await.unwrap()["master"]
        .as_str()
        .unwrap()
        .to_string();
    let new = &slaves[if master == "dbb" { 0 } else { 1 }];
    let have: std::collections::BTreeSet<i64> = new
        .sql("SELECT id FROM shop.orders WHERE id >= 1000")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_master_leaves_its_name_untouched_for_the_next_server() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, _b) = app.mariadb_pair().await.unwrap();
    watch(&app).await;
    drop(a);
    app.client.delete("/v1/servers/dba").await.unwrap();
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert!(c["master"].is_null(), "{c}");
    assert!(
        c["events"]
            .to_string()
            .contains("Master server dba deleted"),
        "{c}"
    );
    // Another server registered under the old master's name is not written to by the watcher.
    let fresh = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &fresh).await.unwrap();
    let before = fresh.sql("SELECT @@gtid_binlog_pos").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fresh.sql("SELECT @@gtid_binlog_pos").unwrap(), before);
    assert_eq!(
        fresh
            .sql("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'serveractions'")
            .unwrap(),
        "0"
    );
    assert!(failovers(&app).await.is_empty());
}
