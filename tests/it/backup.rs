//! Backups to S3 (moto on loopback) and restores, against real MariaDB test hosts.

use serde_json::json;
use shared::Status;
use testbed::services::Moto;

use crate::{TestApp, TestHost};

/// An app whose workers back up to a private moto, with one worker.
async fn app_with_s3() -> (TestApp, Moto) {
    let moto = Moto::start().await.unwrap();
    let mut app = TestApp::spawn_with(|c| moto.configure(c)).await.unwrap();
    app.spawn_worker().await.unwrap();
    (app, moto)
}

/// `rows` orders (~200 bytes each) and a table without a primary key.
fn load(host: &TestHost, rows: u32) {
    host.sql(&format!(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(64), amount DECIMAL(10,2), note TEXT, at DATETIME);
         INSERT INTO shop.orders SELECT seq, CONCAT('customer-', seq MOD 997), seq * 1.25,
                REPEAT(MD5(seq), 4), '2007-03-01' + INTERVAL seq SECOND FROM mysql.seq_1_to_{rows};
         CREATE TABLE shop.events (msg VARCHAR(100));
         INSERT INTO shop.events SELECT CONCAT('event ', seq) FROM mysql.seq_1_to_1000"
    ))
    .unwrap();
}

fn checksums(host: &TestHost) -> String {
    host.sql("CHECKSUM TABLE shop.orders, shop.events EXTENDED")
        .unwrap()
}

/// Back up A with `strategy`, restore it onto B as the master of a new cluster: same data.
async fn round_trip(strategy: &str, a: TestHost) {
    let (app, _moto) = app_with_s3().await;
    let b = TestHost::start().unwrap().with_mariadb(112).unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    load(&a, 200_000);
    let before = checksums(&a);

    let (x, log) = app
        .act(
            "dba",
            "db_backup",
            json!({"strategy": strategy, "tag": "daily"}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let m = x.result.clone().unwrap();
    assert_eq!(m["strategy"], strategy, "{m}");
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64, "{m}");
    assert!(m["bytes"].as_u64().unwrap() > 1 << 20, "{m}");
    assert!(
        !m["gtid"].as_str().unwrap().is_empty(),
        "no GTID position: {m}\n{log}"
    );
    assert!(
        log.contains(&format!("Backup {} committed", m["id"])),
        "{log}"
    );

    let listed = app.client.get("/v1/backups?lineage=dba").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["status"], "committed");
    assert_eq!(listed[0]["tag"], "daily");
    let store = worker::s3::Store::from_config(&app.cfg).await.unwrap();
    let keys = store.list("dba/").await.unwrap();
    let id = m["id"].as_i64().unwrap();
    assert_eq!(
        keys,
        [
            listed[0]["object_key"].as_str().unwrap().to_string(),
            format!("dba/{id}/manifest.json")
        ],
        "objects in the bucket"
    );

    let (r, log) = app
        .act(
            "dbb",
            "db_restore",
            json!({"backup": id, "as": "master", "cluster": "restored"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{log}");
    assert_eq!(checksums(&b), before, "restored data differs");
    assert_eq!(b.sql("SELECT @@read_only").unwrap(), "0");
    let c = app.client.get("/v1/clusters/restored").await.unwrap();
    assert_eq!(c["master"], "dbb", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_backup_round_trip() {
    round_trip(
        "logical",
        TestHost::start().unwrap().with_mariadb(111).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariabackup_round_trip() {
    round_trip(
        "mariabackup",
        TestHost::start().unwrap().with_mariadb(121).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_round_trip() {
    round_trip(
        "snapshot",
        TestHost::start()
            .unwrap()
            .with_mariadb_on_btrfs(131, 1024)
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_marks_a_good_backup_good_and_a_tampered_one_bad() {
    let began = std::time::SystemTime::now();
    let (app, _moto) = app_with_s3().await;
    let a = TestHost::start()
        .unwrap()
        .with_mariadb_on_btrfs(141, 1024)
        .unwrap();
    let v = TestHost::start().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_host("verifier", &v).await.unwrap();
    load(&a, 20_000);
    let mut ids = Vec::new();
    for strategy in ["snapshot", "logical"] {
        let (x, log) = app
            .act("dba", "db_backup", json!({"strategy": strategy}))
            .await
            .unwrap();
        assert_eq!(x.status, Status::Succeeded, "{log}");
        ids.push(x.result.unwrap()["id"].as_i64().unwrap());
    }
    for id in &ids {
        let (x, log) = app
            .act(
                "verifier",
                "db_verify_backup",
                json!({"backup": id, "lineage": "dba"}),
            )
            .await
            .unwrap();
        assert_eq!(x.status, Status::Succeeded, "{log}");
        assert!(log.contains(&format!("Backup {id} is good")), "{log}");
        let b = app.client.get(&format!("/v1/backups/{id}")).await.unwrap();
        assert_eq!(b["verified"], "good", "{b}");
    }
    // The snapshot's manifest has exact counts: the verification compared them.
    let (_, log) = app
        .act(
            "verifier",
            "db_verify_backup",
            json!({"backup": ids[0], "lineage": "dba"}),
        )
        .await
        .unwrap();
    assert!(log.contains("row counts equal to the manifest's"), "{log}");

    // Tampered with in the bucket: bad, and the verdict is recorded.
    let store = worker::s3::Store::from_config(&app.cfg).await.unwrap();
    let b = app
        .client
        .get(&format!("/v1/backups/{}", ids[0]))
        .await
        .unwrap();
    store
        .put(b["object_key"].as_str().unwrap(), b"not a backup".to_vec())
        .await
        .unwrap();
    let (x, log) = app
        .act(
            "verifier",
            "db_verify_backup",
            json!({"backup": ids[0], "lineage": "dba"}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(log.contains("is corrupted: sha256"), "{log}");
    let b = app
        .client
        .get(&format!("/v1/backups/{}", ids[0]))
        .await
        .unwrap();
    assert_eq!(b["verified"], "bad", "{b}");
    // Nothing left behind on the verify host.
    let leftovers: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("sa-verify-"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= began)
        })
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slave_seeded_from_a_backup_replicates() {
    let (app, _moto) = app_with_s3().await;
    let a = TestHost::start().unwrap().with_mariadb(151).unwrap();
    let b = TestHost::start().unwrap().with_mariadb(152).unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    load(&a, 10_000);
    let (m, log) = app
        .act("dba", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(m.status, Status::Succeeded, "{log}");
    // No backup yet: a clear refusal, nothing changed on B.
    let (x, log) = app
        .act(
            "dbb",
            "db_configure_slave",
            json!({"cluster": "shop", "from": "backup"}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(log.contains("no committed backup in lineage shop"), "{log}");

    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    assert_eq!(x.result.unwrap()["lineage"], "shop");
    // Written after the backup: replication brings it.
    a.sql("INSERT INTO shop.orders (id, customer) VALUES (10001, 'after the backup')")
        .unwrap();
    let (s, log) = app
        .act(
            "dbb",
            "db_configure_slave",
            json!({"cluster": "shop", "from": "backup"}),
        )
        .await
        .unwrap();
    assert_eq!(s.status, Status::Succeeded, "{log}");
    assert!(log.contains("Catching up from dba from GTID"), "{log}");
    a.sql("INSERT INTO shop.orders (id, customer) VALUES (10002, 'later')")
        .unwrap();
    let caught = crate::eventually(std::time::Duration::from_secs(30), async || {
        b.sql("SELECT count(*) FROM shop.orders WHERE id > 10000")
            .unwrap()
            == "2"
    })
    .await;
    assert!(
        caught,
        "the slave seeded from the backup does not replicate"
    );
    assert_eq!(checksums(&a), checksums(&b));
    assert_eq!(b.sql("SELECT @@read_only").unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_lock_is_not_kept_waiting_behind_a_long_query() {
    let (app, _moto) = app_with_s3().await;
    let a = TestHost::start()
        .unwrap()
        .with_mariadb_on_btrfs(161, 512)
        .unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    load(&a, 1000);
    // A long write is running: FLUSH TABLES WITH READ LOCK would wait for it, and every other
    // writer would queue behind the flush.
    let long = std::process::Command::new("mariadb")
        .args(["-h", &a.address.to_string(), "-u", "root", "-e"])
        .arg("UPDATE shop.orders SET customer = SLEEP(40) WHERE id = 1")
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "snapshot"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(
        log.contains("could not take the global read lock in 5 tries of 2 s"),
        "{log}"
    );
    assert!(log.contains("Read lock not obtained (try 1 of 5)"), "{log}");
    // No lock and no waiting flush left: writes go through at once.
    let flushes = a
        .sql("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'FLUSH TABLES%'")
        .unwrap();
    assert_eq!(flushes, "0");
    let started = std::time::Instant::now();
    a.sql("INSERT INTO shop.events VALUES ('written after the failed backup')")
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let listed = app.client.get("/v1/backups?lineage=dba").await.unwrap();
    assert_eq!(listed[0]["status"], "uncommitted", "{listed}");
    let mut long = long;
    let _ = long.kill();
}
