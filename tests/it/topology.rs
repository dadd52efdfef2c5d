//! Topology changes that cannot split the brain, on real MariaDB test hosts. "Partitioned from
//! the worker" is a host whose sshd alone is killed: its mariadbd serves its slaves on.

use std::time::Duration;

use serde_json::{json, Value};
use shared::{Action, Status};

use crate::{TestApp, TestHost};

fn sql(host: &TestHost, q: &str) -> String {
    host.sql(q).unwrap()
}

fn read_only(host: &TestHost) -> String {
    sql(host, "SELECT @@read_only")
}

async fn promote(app: &TestApp, server: &str, params: Value) -> (Action, String) {
    let (a, log) = app.act(server, "db_promote", params).await.unwrap();
    (a, log)
}

async fn cluster(app: &TestApp) -> Value {
    app.client.get("/v1/clusters/shop").await.unwrap()
}

fn member<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name}: {c}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_cut_off_from_the_worker_but_alive_is_not_promoted_over() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, b) = app.mariadb_pair().await.unwrap();
    a.kill_sshd();
    let (p, log) = promote(&app, "dbb", json!({})).await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(
        log.contains("master unreachable from the worker but alive according to dbb"),
        "{log}"
    );
    assert_eq!(
        (read_only(&a), read_only(&b)),
        ("0".into(), "1".into()),
        "a refused promote changed a server"
    );
    assert_eq!(cluster(&app).await["master"], "dba");

    // With force it goes ahead, and fences the old master (its fence command kills mariadbd).
    let (p, log) = promote(&app, "dbb", json!({"force": true})).await;
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("alive according to dbb: promoting anyway (force)"),
        "{log}"
    );
    assert!(
        log.contains("Fenced dba: its db_fence_command succeeded."),
        "{log}"
    );
    assert!(
        a.sql("SELECT 1").is_err(),
        "the fenced master still answers"
    );
    assert_eq!(read_only(&b), "0");
    let c = cluster(&app).await;
    assert_eq!(c["master"], "dbb", "{c}");
    let old = member(&c, "dba");
    assert!(old["fenced_pending"].is_string(), "{c}");
    assert!(old["detached"].is_string(), "{c}");

    // It comes back (both daemons, writable by its option file): the sweeper makes it
    // read-only before anything else, and the cluster's timeline says so.
    a.start_sshd().unwrap();
    a.start_mariadb().unwrap();
    let fenced = crate::eventually(Duration::from_secs(10), async || {
        a.sql("SELECT @@read_only").ok().as_deref() == Some("1")
    })
    .await;
    assert!(fenced, "the old master came back writable");
    // The flag is cleared once the option file is written too.
    let cleared = crate::eventually(Duration::from_secs(10), async || {
        member(&cluster(&app).await, "dba")["fenced_pending"].is_null()
    })
    .await;
    let c = cluster(&app).await;
    assert!(cleared, "{c}");
    let events = c["events"].to_string();
    assert!(
        events.contains("dba answers again: made read-only"),
        "{events}"
    );
    let cnf = std::fs::read_to_string(a.mariadb_dir().join("conf.d/99-serveractions.cnf")).unwrap();
    assert!(
        cnf.contains("read_only = 1") || cnf.contains("read_only=1"),
        "{cnf}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_master_is_fenced_and_the_promote_needs_a_fence() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, b) = app.mariadb_pair().await.unwrap();
    // No fence command and the cluster requires one: refused, nothing changed.
    sqlx::query("UPDATE servers SET db_fence_command = NULL WHERE name = 'dba'")
        .execute(&app.pool)
        .await
        .unwrap();
    a.kill();
    let (p, log) = promote(&app, "dbb", json!({})).await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(log.contains("Evidence that dba is dead"), "{log}");
    assert!(
        log.contains("dba has no db_fence_command: the dead master cannot be fenced"),
        "{log}"
    );
    assert_eq!(read_only(&b), "1");
    // A fence command that fails: refused too.
    sqlx::query("UPDATE servers SET db_fence_command = 'echo cannot reach the cloud >&2; exit 3' WHERE name = 'dba'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (p, log) = promote(&app, "dbb", json!({})).await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(log.contains("fence: cannot reach the cloud"), "{log}");
    assert_eq!(read_only(&b), "1");
    // The cluster says fencing is optional: it goes ahead, the failure logged.
    let c = app
        .client
        .patch("/v1/clusters/shop", &json!({"fence": "optional"}))
        .await
        .unwrap();
    assert_eq!(c["fence"], "optional", "{c}");
    let (p, log) = promote(&app, "dbb", json!({})).await;
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("promoting anyway (the cluster's fence is optional)"),
        "{log}"
    );
    assert_eq!(read_only(&b), "0");
    let bad = app
        .client
        .patch("/v1/clusters/shop", &json!({"fence": "sometimes"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, client::ClientError::Api { status: 400, .. }),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_promotes_of_one_cluster_at_once_make_one_master() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, slaves) = app.mariadb_cluster(2).await.unwrap();
    let hosts: Vec<(&str, &TestHost)> = vec![("dba", &a), ("dbb", &slaves[0]), ("dbc", &slaves[1])];
    for round in 0..5 {
        let c = cluster(&app).await;
        let master = c["master"].as_str().unwrap().to_string();
        let pair: Vec<String> = c["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(pair.len(), 2, "round {round}: {c}");
        let (bx, by) = (
            json!({"server": pair[0], "kind": "db_promote"}),
            json!({"server": pair[1], "kind": "db_promote"}),
        );
        let (x, y) = tokio::join!(app.client.submit(&bx), app.client.submit(&by));
        let (x, y) = (x.unwrap(), y.unwrap());
        let x = app
            .client
            .wait(x.id, Duration::from_secs(120))
            .await
            .unwrap();
        let y = app
            .client
            .wait(y.id, Duration::from_secs(120))
            .await
            .unwrap();
        let won: Vec<&Action> = [&x, &y]
            .into_iter()
            .filter(|a| a.status == Status::Succeeded)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {:?} {:?}", x.status, y.status);
        let lost = if x.status == Status::Succeeded {
            &y
        } else {
            &x
        };
        let lost_log = app.log(lost.id).await;
        assert!(
            lost_log.contains("is locked by action") || lost_log.contains("another change won"),
            "round {round}: {lost_log}"
        );
        assert!(lost_log.contains("nothing was changed"), "{lost_log}");
        println!(
            "round {round}: {} won; {} lost: {}",
            won[0].server,
            lost.server,
            lost.error.as_deref().unwrap_or_default()
        );
        let writable: Vec<&str> = hosts
            .iter()
            .filter(|(_, h)| read_only(h) == "0")
            .map(|(n, _)| *n)
            .collect();
        let c = cluster(&app).await;
        assert_eq!(writable, [won[0].server.as_str()], "round {round}: {c}");
        assert_eq!(c["master"], won[0].server, "round {round}: {c}");
        assert_ne!(c["master"], master.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_promote_picks_the_most_advanced_slave_and_repoints_the_others() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, slaves) = app.mariadb_cluster(3).await.unwrap();
    let (b, c, d) = (&slaves[0], &slaves[1], &slaves[2]);
    // dbd falls behind: it receives but does not apply.
    sql(d, "STOP SLAVE SQL_THREAD");
    sql(
        &a,
        "INSERT INTO shop.orders SELECT seq, 'late' FROM mysql.seq_101_to_150",
    );
    let caught = crate::eventually(Duration::from_secs(20), async || {
        [b, c]
            .iter()
            .all(|h| sql(h, "SELECT count(*) FROM shop.orders") == "150")
    })
    .await;
    assert!(caught);
    assert_eq!(sql(d, "SELECT count(*) FROM shop.orders"), "100");
    a.kill();

    let (p, log) = promote(&app, "dbd", json!({})).await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(
        log.contains("has applied more than dbd") && log.contains("promote dbb instead"),
        "{log}"
    );
    assert_eq!(read_only(d), "1");

    let started = std::time::Instant::now();
    let p = app.client.promote_cluster("shop", false).await.unwrap();
    assert_eq!((p.server.as_str(), p.urgent), ("dba", true));
    let p = app
        .client
        .wait(p.id, Duration::from_secs(120))
        .await
        .unwrap();
    let log = app.log(p.id).await;
    println!(
        "cluster-level promote with a dead master and 3 slaves: {:?}",
        started.elapsed()
    );
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(log.contains("Promoting dbb"), "{log}");
    assert!(log.contains("the most advanced slave"), "{log}");
    assert_eq!(read_only(b), "0");
    let result = p.result.unwrap();
    assert_eq!(result["repointed"], json!(["dbc", "dbd"]), "{result}");
    sql(
        b,
        "INSERT INTO shop.orders VALUES (1000, 'on the new master')",
    );
    let equal = crate::eventually(Duration::from_secs(20), async || {
        [c, d]
            .iter()
            .all(|h| sql(h, "SELECT count(*) FROM shop.orders") == "151")
    })
    .await;
    assert!(equal, "the other slaves do not follow the new master");
    let cl = cluster(&app).await;
    assert_eq!(cl["master"], "dbb", "{cl}");
    assert_eq!(cl["slaves"], json!(["dbc", "dbd"]), "{cl}");
    let d_state = &member(&cl, "dbd")["repl_state"];
    assert_eq!(d_state["io_running"], "Yes", "{cl}");
    assert_eq!(d_state["master_host"], b.address.to_string(), "{cl}");
    assert!(member(&cl, "dba")["fenced_pending"].is_string(), "{cl}");
    assert!(
        cl["events"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("dbb promoted to master (was dba, fenced_pending)"),
        "{cl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_and_errant_slaves_are_not_promoted() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (mut a, slaves) = app.mariadb_cluster(2).await.unwrap();
    let (b, c) = (&slaves[0], &slaves[1]);
    // dbb's IO thread was stopped "long ago"; dbc got a write of its own.
    sql(b, "STOP SLAVE IO_THREAD");
    sql(c, "INSERT INTO shop.orders VALUES (999, 'errant')");
    let errant = sql(c, "SELECT @@gtid_binlog_pos");
    a.kill();

    let (p, log) = promote(&app, "dbb", json!({})).await;
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(log.contains("its IO thread is stopped"), "{log}");
    let (p, log) = app
        .act("dba", "db_promote", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(p.status, Status::Failed, "{log}");
    assert!(
        log.contains(&format!("errant transactions on dbc: {errant}")),
        "{log}"
    );
    assert_eq!((read_only(b), read_only(c)), ("1".into(), "1".into()));
    assert_eq!(cluster(&app).await["master"], "dba");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_demotion_leaves_the_old_master_read_only_in_its_option_file() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, b) = app.mariadb_pair().await.unwrap();
    // The old master cannot become a slave: CHANGE MASTER must create its relay log and
    // replication info files in a data directory it may no longer write to.
    let datadir = a.datadir();
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        format!(
            "{:o}",
            std::fs::metadata(&datadir).unwrap().permissions().mode() & 0o7777
        )
    };
    let chmod = |mode: &str| {
        let out = std::process::Command::new("chmod")
            .arg(mode)
            .arg(&datadir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    chmod("0555");
    let (p, log) = promote(&app, "dbb", json!({})).await;
    chmod(&mode);
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(log.contains("Could not demote the old master"), "{log}");
    assert_eq!((read_only(&a), read_only(&b)), ("1".into(), "0".into()));
    let cnf = std::fs::read_to_string(a.mariadb_dir().join("conf.d/99-serveractions.cnf")).unwrap();
    assert!(cnf.lines().any(|l| l == "read_only = 1"), "{cnf}");
    // A restart keeps it read-only; the cluster lists it detached.
    a.restart_mariadb().unwrap();
    assert_eq!(read_only(&a), "1");
    let c = cluster(&app).await;
    assert_eq!(c["master"], "dbb", "{c}");
    assert!(
        member(&c, "dba")["detached"]
            .as_str()
            .is_some_and(|d| d.starts_with("old master, not demoted")),
        "{c}"
    );
}
