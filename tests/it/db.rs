//! MySQL actions against a real MariaDB on a test host, reached through the SSH tunnel.

use serde_json::json;
use shared::Status;

use crate::{TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_status_reads_mariadb_through_the_ssh_tunnel() {
    let mut app = TestApp::spawn().await.unwrap();
    let db1 = TestHost::start().unwrap().with_mariadb(11).unwrap();
    let nodb = TestHost::start().unwrap();
    app.client
        .add_server(&db1.db_server_json("db1"))
        .await
        .unwrap();
    // Its db_host is its own address, where nothing listens (127.0.0.1:3306 is the machine's
    // own MariaDB, which tests never touch).
    app.client
        .add_server(&nodb.db_server_json("nodb"))
        .await
        .unwrap();
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
    assert!(log.contains("(server_id 11) at db1 through SSH."), "{log}");
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
        (json!(11), json!(1), json!(0)),
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
        matches!(&err, api::client::ClientError::Api { status: 400, field: Some(f), .. } if f == "params.x"),
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
    let db1 = TestHost::start().unwrap().with_mariadb(21).unwrap();
    app.client
        .add_server(&db1.db_server_json("db1"))
        .await
        .unwrap();
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
