//! Backups to S3 (moto on loopback) and restores, against real MariaDB test hosts.

use serde_json::json;
use shared::{db::backups::chunk_key, Status};
use testbed::services::Moto;
use tokio::io::AsyncReadExt;

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

/// A test host whose MariaDB datadir is on a `mib` MiB btrfs volume (snapshot backups).
fn snapshot_host(mib: u32) -> TestHost {
    TestHost::start()
        .unwrap()
        .with_mariadb_on_btrfs(mib)
        .unwrap()
}

/// `mib` MiB of incompressible rows in `shop.noise`: a backup of several chunks.
fn noise(host: &TestHost, mib: u32) {
    host.sql(&format!(
        "CREATE TABLE shop.noise (b BLOB) SELECT RANDOM_BYTES(1024) AS b FROM mysql.seq_1_to_{}",
        mib * 1024
    ))
    .unwrap();
}

/// Whether `slave` gets, within 30 s, the two orders (ids above 10,000) the tests write on
/// the master after seeding it.
async fn catches_up(slave: &TestHost) -> bool {
    crate::eventually(std::time::Duration::from_secs(30), async || {
        slave
            .sql("SELECT count(*) FROM shop.orders WHERE id > 10000")
            .unwrap()
            == "2"
    })
    .await
}

fn checksums(host: &TestHost) -> String {
    host.sql("CHECKSUM TABLE shop.orders, shop.events EXTENDED")
        .unwrap()
}

/// Back up A with `strategy`, restore it onto B as the master of a new cluster: same data.
async fn round_trip(strategy: &str, a: TestHost) {
    let (app, _moto) = app_with_s3().await;
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    // A few hundred MB: 1,200,000 orders.
    load(&a, 1_200_000);
    let du = std::process::Command::new("du")
        .arg("-sm")
        .arg(a.datadir().join("shop"))
        .output()
        .unwrap();
    let mib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(mib >= 200, "only {mib} MiB of data");
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
    // The stream's producer yielded to the database (niceness read on the host).
    assert!(log.contains("produced at nice 10)"), "{log}");
    if strategy == "snapshot" {
        // Exact counts at the snapshot's point, taken while it streamed.
        assert_eq!(m["tables"]["shop.orders"], 1_200_000, "{m}");
        assert_eq!(m["tables"]["shop.events"], 1_000, "{m}");
        assert!(log.contains("Rows counted in 2 tables"), "{log}");
    }

    let listed = app.client.get("/v1/backups?lineage=dba").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (code, out, err) = crate::cli::sactl(&app, &["backups", "list", "--lineage", "dba"]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.contains(&format!(" {strategy} ")) && row.contains(" committed "),
        "{out}"
    );
    assert_eq!(listed[0]["status"], "committed");
    assert_eq!(listed[0]["tag"], "daily");
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    let keys = store.list("dba/").await.unwrap();
    let id = m["id"].as_i64().unwrap();
    // Its chunks (the stream in 8 MiB pieces, the last one ending with the manifest), and the
    // manifest beside them.
    let chunks = m["bytes"].as_u64().unwrap() as usize / (app.cfg.s3_chunk_mib << 20) + 1;
    assert_eq!(m["chunks"], chunks, "{m}");
    let object = listed[0]["object_key"].as_str().unwrap();
    let mut expected: Vec<String> = (1..=chunks).map(|n| chunk_key(object, n)).collect();
    expected.push(format!("dba/{id}/manifest.json"));
    assert_eq!(keys, expected, "objects in the bucket");
    // The backup describes itself: its manifest is inside it too, after the stream.
    let inside = store
        .manifest_inside(&chunk_key(object, chunks))
        .await
        .unwrap()
        .expect("a manifest inside the object");
    for field in [
        "id",
        "server",
        "strategy",
        "compression",
        "bytes",
        "sha256",
        "gtid",
        "tables",
    ] {
        assert_eq!(inside[field], m[field], "{field}: {inside}");
    }

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
        TestHost::start().unwrap().with_mariadb().unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariabackup_round_trip() {
    round_trip(
        "mariabackup",
        TestHost::start().unwrap().with_mariadb().unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_round_trip() {
    round_trip("snapshot", snapshot_host(2048)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_marks_a_good_backup_good_and_a_tampered_one_bad() {
    let began = std::time::SystemTime::now();
    let (app, _moto) = app_with_s3().await;
    let a = snapshot_host(1024);
    let v = TestHost::start().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_host("verifier", &v).await.unwrap();
    load(&a, 20_000);
    noise(&a, 20);
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
    // Stored as one object bigger than a chunk, as backups were before chunks: it is
    // streamed, not read whole, and still good.
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    let b = app
        .client
        .get(&format!("/v1/backups/{}", ids[0]))
        .await
        .unwrap();
    let key = b["object_key"].as_str().unwrap();
    let chunks: Vec<String> = (1..=b["chunks"].as_u64().unwrap() as usize)
        .map(|n| chunk_key(key, n))
        .collect();
    let mut whole = Vec::new();
    store
        .get_all(chunks.clone())
        .read_to_end(&mut whole)
        .await
        .unwrap();
    assert!(whole.len() > 2 * store.chunk, "{} bytes", whole.len());
    store.put(key, whole).await.unwrap();
    store.delete_all(&chunks).await.unwrap();
    sqlx::query("UPDATE backups SET chunks = NULL WHERE id = $1")
        .bind(ids[0])
        .execute(&app.pool)
        .await
        .unwrap();
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
    store.put(key, b"not a backup".to_vec()).await.unwrap();
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
    let a = TestHost::start().unwrap().with_mariadb().unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
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
    assert!(
        catches_up(&b).await,
        "the slave seeded from the backup does not replicate"
    );
    assert_eq!(checksums(&a), checksums(&b));
    assert_eq!(b.sql("SELECT @@read_only").unwrap(), "1");
}

/// Disaster recovery: the control plane lost its backup rows and the manifest objects; the
/// backup's objects alone restore, described by the manifest inside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_object_alone_restores_from_the_manifest_inside_it() {
    let (app, _moto) = app_with_s3().await;
    // Without zstd: gzip, whose manifest frame is an empty member's comment.
    let a = TestHost::start()
        .unwrap()
        .without_command("zstd")
        .unwrap()
        .with_mariadb()
        .unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    load(&a, 20_000);
    noise(&a, 20);
    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let m = x.result.unwrap();
    let key = m["object_key"].as_str().unwrap().to_string();
    assert!(m["chunks"].as_u64().unwrap() >= 2, "{m}");
    assert_eq!(m["compression"], "gzip", "{m}");
    assert!(key.ends_with(".xbstream.gz"), "{key}");
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    store
        .delete(&format!("dba/{}/manifest.json", m["id"]))
        .await
        .unwrap();
    sqlx::query("DELETE FROM backups")
        .execute(&app.pool)
        .await
        .unwrap();
    // Not objects of ours: clear failures, B untouched.
    store
        .put("elsewhere/dump.sql.zst", b"not a backup".to_vec())
        .await
        .unwrap();
    let restore = async |object: &str| {
        app.act(
            "dbb",
            "db_restore",
            json!({"backup": {"object": object}, "as": "master", "cluster": "dr"}),
        )
        .await
        .unwrap()
    };
    for (object, says) in [
        ("elsewhere/dump.sql.zst", "has no manifest inside"),
        ("dba/999/backup.xbstream.zst", "GetObject"),
    ] {
        let (r, log) = restore(object).await;
        assert_eq!(r.status, Status::Failed, "{log}");
        assert!(log.contains(says), "{object}: {log}");
        assert!(
            log.contains("was not touched") || !log.contains("Restoring"),
            "{log}"
        );
    }
    // Its first chunk missing: named as incomplete, B untouched.
    let first = chunk_key(&key, 1);
    let mut saved = Vec::new();
    store
        .get_all(vec![first.clone()])
        .read_to_end(&mut saved)
        .await
        .unwrap();
    store.delete(&first).await.unwrap();
    let (r, log) = restore(&key).await;
    assert_eq!(r.status, Status::Failed, "{log}");
    assert!(
        log.contains(&format!(
            "is incomplete: {} chunks in the bucket, its manifest says {}",
            m["chunks"].as_u64().unwrap() - 1,
            m["chunks"]
        )),
        "{log}"
    );
    store.put(&first, saved).await.unwrap();
    assert_eq!(
        b.sql("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'shop'")
            .unwrap(),
        "0"
    );

    let (r, log) = restore(&key).await;
    assert_eq!(r.status, Status::Succeeded, "{log}");
    assert!(
        log.contains(&format!("Restoring backup {} (mariabackup", m["id"])),
        "{log}"
    );
    assert_eq!(checksums(&b), checksums(&a), "restored data differs");
    // A bad object key is named as such, nothing queued.
    let err = app
        .client
        .post(
            "/v1/actions",
            &json!({"server": "dbb", "kind": "db_restore",
                    "params": {"backup": {"object": "s3://bucket/key"}, "as": "master", "cluster": "dr"}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == "params.backup.object"),
        "{err:?}"
    );
}

/// The story's recovery: the slave's backup, then the master dies, the slave is promoted, and a
/// fresh slave seeded from that backup (taken before the promote) catches up from the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_promote_a_new_slave_seeded_from_the_old_slaves_backup_replicates() {
    let (app, _moto) = app_with_s3().await;
    let mut a = TestHost::start().unwrap().with_mariadb().unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    let c = TestHost::start()
        .unwrap()
        .with_mariadb_without_binlog()
        .unwrap();
    for (name, h) in [("dba", &a), ("dbb", &b), ("dbc", &c)] {
        app.add_db_host(name, h).await.unwrap();
    }
    let cluster = json!({"cluster": "shop", "default_schedules": false});
    let (x, log) = app
        .act("dba", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    load(&a, 10_000);
    let (x, log) = app
        .act("dbb", "db_configure_slave", cluster.clone())
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let (x, log) = app
        .act("dbb", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    // Replicated after the backup, then the master dies.
    a.sql("INSERT INTO shop.orders (id, customer) VALUES (10001, 'after the backup')")
        .unwrap();
    let pos = a.sql("SELECT @@gtid_binlog_pos").unwrap();
    b.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
        .unwrap();
    a.kill();
    let (x, log) = app.act("dbb", "db_promote", json!({})).await.unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    // The new master knows where its binary log starts.
    assert!(
        !log.contains("GTID position: \n")
            && log.contains("Retrieved new master info... GTID position: 0-"),
        "{log}"
    );
    b.sql("INSERT INTO shop.orders (id, customer) VALUES (10002, 'on the new master')")
        .unwrap();

    // C had no binary log: it gets one, with the replicated changes, before it is seeded.
    let (x, log) = app
        .act(
            "dbc",
            "db_configure_slave",
            json!({"cluster": "shop", "from": "backup", "default_schedules": false}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    assert!(log.contains("Catching up from dbb from GTID"), "{log}");
    assert_eq!(c.sql("SELECT @@log_slave_updates").unwrap(), "1");
    assert!(
        catches_up(&c).await,
        "the new slave does not catch up from the new master"
    );
    assert_eq!(checksums(&b), checksums(&c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_lock_is_not_kept_waiting_behind_a_long_query() {
    let (app, _moto) = app_with_s3().await;
    let a = snapshot_host(512);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_what_the_rules_let_go_and_nothing_else() {
    let (app, _moto) = app_with_s3().await;
    let a = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    load(&a, 100);
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    // 70 daily backups from 70 days ago, each with its objects in the bucket; an old
    // uncommitted one (failed upload) and a recent uncommitted one whose backup still runs.
    let running: i64 = sqlx::query_scalar(
        "INSERT INTO actions (server, kind, params, status) VALUES ('dba', 'db_backup', '{}', 'running') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut ids = Vec::new();
    for day in (1..=70).rev() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO backups (lineage, server, strategy, status, object_key, compression, started_at, committed_at)
             VALUES ('dba', 'dba', 'logical', 'committed', '', 'zstd', date_trunc('day', now()) - $1 * interval '1 day' + interval '3 hours', now())
             RETURNING id",
        )
        .bind(day)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        // Two chunks each; the oldest one stored as one object, as backups were before chunks.
        let key = format!("dba/{id}/backup.sql.zst");
        let chunks = (day < 70).then_some(2);
        sqlx::query("UPDATE backups SET object_key = $2, chunks = $3 WHERE id = $1")
            .bind(id)
            .bind(&key)
            .bind(chunks)
            .execute(&app.pool)
            .await
            .unwrap();
        match chunks {
            Some(_) => {
                store
                    .put(&chunk_key(&key, 1), b"old ".to_vec())
                    .await
                    .unwrap();
                store
                    .put(&chunk_key(&key, 2), b"backup".to_vec())
                    .await
                    .unwrap();
            }
            None => store.put(&key, b"old backup".to_vec()).await.unwrap(),
        }
        store
            .put(&format!("dba/{id}/manifest.json"), b"{}".to_vec())
            .await
            .unwrap();
        ids.push(id);
    }
    let uncommitted: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO backups (lineage, server, strategy, status, object_key, compression, started_at, action_id)
         VALUES ('dba', 'dba', 'logical', 'uncommitted', 'dba/x/old', 'zstd', now() - interval '69 days', NULL),
                ('dba', 'dba', 'logical', 'uncommitted', 'dba/x/running', 'zstd', now() - interval '1 minute', $1)
         RETURNING id",
    )
    .bind(running)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // A chunk the failed upload could not delete (the store was unreachable then).
    store
        .put("dba/x/old.000001", b"left over".to_vec())
        .await
        .unwrap();

    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "logical"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let new_id = x.result.unwrap()["id"].as_i64().unwrap();
    // Kept: the new one and the 59 newest old ones (last 60); daily/weekly/monthly/yearly all
    // fall among them here except the newest backup of the oldest month.
    let remaining: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM backups WHERE lineage = 'dba' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let oldest_month_newest: i64 = sqlx::query_scalar(
        "SELECT id FROM backups WHERE id = ANY($1) AND date_trunc('month', started_at) =
           (SELECT date_trunc('month', min(started_at)) FROM backups WHERE id = ANY($1))
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut expected: Vec<i64> = ids[11..].to_vec();
    if !expected.contains(&oldest_month_newest) {
        expected.push(oldest_month_newest);
    }
    expected.push(uncommitted[1]); // its backup still runs
    expected.push(new_id);
    expected.sort_unstable();
    assert_eq!(remaining, expected, "{log}");
    assert!(log.contains("Retention: deleted backups"), "{log}");
    // The deleted backups' objects are gone, the kept ones' are there.
    let keys = store.list("dba/").await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("dba/{id}/backup.sql.zst");
        let objects = match i {
            0 => vec![key],
            _ => vec![chunk_key(&key, 1), chunk_key(&key, 2)],
        };
        for object in objects {
            let present = keys.contains(&object);
            assert_eq!(
                present,
                expected.contains(id),
                "backup {id}: {object} present = {present}"
            );
        }
    }
    assert!(!keys.contains(&"dba/x/old.000001".to_string()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_upload_leaves_no_backup_and_bad_restores_change_nothing() {
    let (app, mut moto) = app_with_s3().await;
    let a = snapshot_host(1024);
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    load(&a, 300_000);
    b.sql("CREATE DATABASE keep; CREATE TABLE keep.t (i INT); INSERT INTO keep.t VALUES (1)")
        .unwrap();

    // S3 goes away while the snapshot streams.
    let x = app
        .client
        .submit(&json!({"server": "dba", "kind": "db_backup", "params": {"strategy": "snapshot"}}))
        .await
        .unwrap();
    let streaming = crate::eventually(std::time::Duration::from_secs(30), async || {
        app.log(x.id).await.contains("Snapshot taken")
    })
    .await;
    assert!(streaming);
    moto.stop();
    let x = app.wait(x.id).await;
    let log = app.log(x.id).await;
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(log.contains("S3 "), "{log}");
    assert!(
        log.contains("Snapshot") && log.contains("removed."),
        "{log}"
    );
    moto.start_again().await.unwrap();
    let listed = app.client.get("/v1/backups?lineage=dba").await.unwrap();
    assert_eq!(listed[0]["status"], "uncommitted", "{listed}");

    // Nothing committed: restoring "latest" is refused; B is untouched.
    for (params, reason) in [
        (
            json!({"backup": "latest", "lineage": "dba", "as": "master", "cluster": "r"}),
            "no committed backup in lineage dba",
        ),
        (
            json!({"backup": 999, "as": "master", "cluster": "r"}),
            "no backup with id 999",
        ),
        (
            json!({"backup": listed[0]["id"], "as": "master", "cluster": "r"}),
            "is not committed",
        ),
    ] {
        let (r, log) = app.act("dbb", "db_restore", params).await.unwrap();
        assert_eq!(r.status, Status::Failed, "{log}");
        assert!(log.contains(reason), "{reason}: {log}");
    }
    assert_eq!(b.sql("SELECT i FROM keep.t").unwrap(), "1");
}

/// Rows are counted while the snapshot streams; a count that fails stops the upload at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_row_count_stops_the_snapshot_upload() {
    let (app, _moto) = app_with_s3().await;
    let a = snapshot_host(1024);
    app.add_db_host("dba", &a).await.unwrap();
    load(&a, 10_000);
    // A table without its tablespace: COUNT(*) fails at once, while tar copies the datadir
    // fine, and 300 MiB of incompressible ballast beside the tables for it to copy.
    a.sql("CREATE TABLE shop.gone (id INT PRIMARY KEY); ALTER TABLE shop.gone DISCARD TABLESPACE")
        .unwrap();
    let ballast = std::process::Command::new("head")
        .args(["-c", "300M", "/dev/urandom"])
        .stdout(std::fs::File::create(a.datadir().join("ballast")).unwrap())
        .status()
        .unwrap();
    assert!(ballast.success());

    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "snapshot"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(
        log.contains("Upload stopped before the stream ended: counting the rows of shop.gone"),
        "{log}"
    );
    assert!(!log.contains("Stream ended"), "{log}");
    assert!(!log.contains("Rows counted"), "{log}");
    assert!(log.contains("removed."), "{log}");
    let listed = app.client.get("/v1/backups?lineage=dba").await.unwrap();
    assert_eq!(listed[0]["status"], "uncommitted", "{listed}");
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    assert_eq!(
        store.list("dba/").await.unwrap(),
        Vec::<String>::new(),
        "no object"
    );
    // Nothing of the counting session or of the stream is left on the server.
    assert_eq!(
        a.sql("SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Sleep'")
            .unwrap(),
        "0"
    );
    let tar = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("tar -C {}/snap-", a.datadir().parent().unwrap().display()),
        ])
        .output()
        .unwrap();
    assert!(
        tar.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&tar.stdout)
    );
}

/// An upload cuts its stream into chunks of the configured size, the trailer in the last one;
/// one whose stream is refused at its end, or stopped while it flows, deletes the chunks it had
/// put.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_cut_chunks_and_a_refused_or_stopped_one_deletes_them() {
    let (app, _moto) = app_with_s3().await;
    let mut cfg = app.cfg.clone();
    cfg.s3_chunk_mib = 5;
    let store = worker::s3::Bucket::from_config(&cfg).await.unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let data: Vec<u8> = (0..3 * (5 << 20) + 100).map(|i| (i % 251) as u8).collect();

    let (up, ()) = store
        .upload(
            "t/ok",
            &data[..],
            &progress,
            std::future::pending(),
            async { (true, ()) },
            |_, _| b"end".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((up.bytes, up.chunks), (data.len() as u64, 4));
    let keys = store.chunks_of("t/ok").await.unwrap();
    assert_eq!(
        keys,
        (1..=4).map(|n| chunk_key("t/ok", n)).collect::<Vec<_>>()
    );
    let mut back = Vec::new();
    store
        .get_all(keys.clone())
        .read_to_end(&mut back)
        .await
        .unwrap();
    assert_eq!(back.len(), data.len() + 3);
    assert!(back.starts_with(&data) && back.ends_with(b"end"));
    store.delete_all(&keys).await.unwrap();

    let refused = store
        .upload(
            "t/refused",
            &data[..],
            &progress,
            std::future::pending(),
            async { (false, ()) },
            |_, _| Vec::new(),
        )
        .await;
    assert!(
        matches!(refused, Err(worker::s3::S3Error::Rejected)),
        "{refused:?}"
    );
    assert_eq!(store.list("t/").await.unwrap(), Vec::<String>::new());

    // Stopped once two chunks are in the bucket, while the source still has more to give.
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let feed = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = tx.write_all(&data).await;
        std::future::pending::<()>().await
    });
    let stop = async {
        let two = crate::eventually(std::time::Duration::from_secs(30), async || {
            store.list("t/stopped.").await.unwrap().len() >= 2
        })
        .await;
        assert!(two, "chunks were not put");
    };
    let stopped = store
        .upload(
            "t/stopped",
            rx,
            &progress,
            stop,
            std::future::pending::<(bool, ())>(),
            |_, _| Vec::new(),
        )
        .await;
    feed.abort();
    assert!(
        matches!(stopped, Err(worker::s3::S3Error::Rejected)),
        "{stopped:?}"
    );
    assert_eq!(store.list("t/").await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_object_a_missing_bucket_and_bad_params_are_clear_failures() {
    let (app, moto) = app_with_s3().await;
    let a = TestHost::start().unwrap().with_mariadb().unwrap();
    let b = TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    app.add_db_host("dbb", &b).await.unwrap();
    load(&a, 5000);
    b.sql("CREATE DATABASE keep; CREATE TABLE keep.t (i INT); INSERT INTO keep.t VALUES (1)")
        .unwrap();
    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let m = x.result.unwrap();
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    store
        .put(
            &chunk_key(m["object_key"].as_str().unwrap(), 1),
            vec![0u8; 4096],
        )
        .await
        .unwrap();
    let (r, log) = app
        .act(
            "dbb",
            "db_restore",
            json!({"backup": m["id"], "as": "master", "cluster": "r"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed, "{log}");
    assert!(log.contains("is corrupted: sha256"), "{log}");
    assert!(log.contains("was not touched"), "{log}");
    assert_eq!(b.sql("SELECT i FROM keep.t").unwrap(), "1");
    let leftovers = b.datadir().with_extension(format!("sa-restore-{}", r.id));
    assert!(!leftovers.exists(), "staging left behind");

    // A bucket that does not exist.
    let mut other = TestApp::spawn_with(|c| {
        moto.configure(c);
        c.s3_bucket = Some("no-such-bucket".into());
    })
    .await
    .unwrap();
    other.spawn_worker().await.unwrap();
    other.add_db_host("dba", &a).await.unwrap();
    let (x, log) = other
        .act("dba", "db_backup", json!({"strategy": "logical"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(
        log.contains("no-such-bucket") && log.contains("NoSuchBucket"),
        "{log}"
    );

    // Bad parameters: 400 naming the field, nothing stored.
    let before = app.action_count().await;
    for (kind, params, field) in [
        ("db_backup", json!({"strategy": "tape"}), "params.strategy"),
        (
            "db_backup",
            json!({"tag": "no spaces please"}),
            "params.tag",
        ),
        ("db_backup", json!({"compress": true}), "params.compress"),
        (
            "db_restore",
            json!({"backup": "latest", "cluster": "r"}),
            "params.as",
        ),
        (
            "db_restore",
            json!({"backup": "newest", "as": "master", "cluster": "r"}),
            "params.backup",
        ),
        (
            "db_restore",
            json!({"backup": 3, "before": "2026-11-28T16:00:00Z", "as": "master", "cluster": "r"}),
            "params.before",
        ),
        (
            "db_restore",
            json!({"backup": "latest", "before": "yesterday", "as": "master", "cluster": "r"}),
            "params.before",
        ),
        ("db_verify_backup", json!({}), "params.backup"),
        (
            "db_verify_backup",
            json!({"backup": {"object": "dba/1/backup.sql.zst"}}),
            "params.backup",
        ),
    ] {
        let err = app
            .client
            .post(
                "/v1/actions",
                &json!({"server": "dba", "kind": kind, "params": params}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{kind} {params}: {err:?}"
        );
    }
    assert_eq!(app.action_count().await, before);
}

/// A snapshot command that hangs holds every write behind the read lock: it gets a deadline,
/// and the lock is released when it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_snapshot_command_is_cut_off_and_the_lock_released() {
    let moto = Moto::start().await.unwrap();
    let mut app = TestApp::spawn_with(|c| {
        moto.configure(c);
        c.ssh_command_timeout_s = 3;
    })
    .await
    .unwrap();
    app.spawn_worker().await.unwrap();
    let a = snapshot_host(512);
    let mut server = a.db_server_json("dba");
    server["db_snapshot_command"] = json!("sleep 600");
    app.client.add_server(&server).await.unwrap();
    load(&a, 100);
    let started = std::time::Instant::now();
    let (x, log) = app
        .act("dba", "db_backup", json!({"strategy": "snapshot"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(log.contains("did not finish within 3 s"), "{log}");
    assert!(started.elapsed().as_secs() < 30, "{log}");
    // No read lock left: a write goes through at once.
    let write = std::time::Instant::now();
    a.sql("INSERT INTO shop.events VALUES ('after the cut')")
        .unwrap();
    assert!(write.elapsed().as_secs() < 2);
}

/// A slave is backed up only while it replicates: its lag goes into the manifest, and one
/// whose replication broke is refused, saying why, with no backup row or object left. The
/// master is not restored over or turned into a slave by mistake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slave_whose_replication_broke_is_not_backed_up() {
    let (app, _moto) = app_with_s3().await;
    let (_a, b) = app.mariadb_pair().await.unwrap();
    let (x, log) = app
        .act("dbb", "db_backup", json!({"strategy": "logical"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("dbb replicates, 0 s behind its master."),
        "{log}"
    );
    // (The cluster's default schedules may add backups of their own meanwhile.)
    let of = async |id: i64| -> Vec<serde_json::Value> {
        let all = app.client.get("/v1/backups?cluster=shop").await.unwrap();
        let all = all.as_array().unwrap().clone();
        all.into_iter().filter(|b| b["action_id"] == id).collect()
    };
    let taken = of(x.id).await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["manifest"]["slave_lag_s"], 0, "{taken:?}");
    let err = app
        .client
        .submit(&json!({"server": "dbb", "kind": "db_backup", "params": {"max_lag_s": 0}}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == "params.max_lag_s"),
        "{err:?}"
    );
    b.sql("STOP SLAVE SQL_THREAD").unwrap();
    let (x, log) = app
        .act("dbb", "db_backup", json!({"strategy": "logical"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{log}");
    assert!(
        log.contains("dbb's replication is broken (IO thread Yes, SQL thread No)"),
        "{log}"
    );
    assert_eq!(of(x.id).await, Vec::<serde_json::Value>::new());
    // The master is neither restored over (without replace) nor configured into a slave.
    for (kind, params, why) in [
        (
            "db_restore",
            json!({"backup": "latest", "as": "slave", "cluster": "shop"}),
            "a restore replaces its data; give params.replace: true",
        ),
        (
            "db_configure_slave",
            json!({"cluster": "shop"}),
            "it cannot become its slave",
        ),
    ] {
        let err = app
            .client
            .submit(&json!({"server": "dba", "kind": kind, "params": params}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 409, message, .. }
                if message.contains("is the master of cluster \"shop\"") && message.contains(why)),
            "{kind}: {err:?}"
        );
    }
}
