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
