//! Secret values: given inline or named in the store, they reach the script and nothing else:
//! no API answer, log line (plain, base64, URL-encoded, printed in pieces), audit row, store row
//! in clear, command line on the server or file left behind.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use shared::Status;

use crate::{eventually, TestApp, TestHost};

const INLINE: &str = "hunter2-inline/pw";
const STORED: &str = "s3cr3t-stored value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_script_and_nothing_else() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let (status, _) = app
        .client
        .post("/v1/secrets", &json!({"name": "db-pass", "value": STORED}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let marker = std::time::SystemTime::now();
    // The script knows the values only by their hashes.
    let digest = |v: &str| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(v.as_bytes()))
    };
    let script = format!(
        r#"
        [ "$(printf %s "$A" | sha256sum | cut -d' ' -f1)" = {a} ] && echo A-arrived
        [ "$(printf %s "$B" | sha256sum | cut -d' ' -f1)" = {b} ] && echo B-arrived
        echo "plain: $A and $B"
        printf '%s' "$A" | base64
        printf 'split: %s' "$(printf %s "$A" | cut -c1-4)"; sleep 0.3; printf '%s\n' "$(printf %s "$A" | cut -c5-)"
        echo "url: $(printf %s "$A" | sed 's,/,%2F,g')"
        sleep 2
    "#,
        a = digest(INLINE),
        b = digest(STORED)
    );
    let body = json!({"server": "web1", "kind": "run_script", "params": {
        "script": script, "secrets": {"A": INLINE, "B": {"secret_ref": "db-pass"}}}});
    let a = app.client.submit(&body).await.unwrap();
    // While it runs: no command line on the server holds a value.
    assert!(
        eventually(Duration::from_secs(10), async || {
            app.log(a.id).await.contains("A-arrived")
        })
        .await
    );
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let a = app.wait(a.id).await;
    assert_eq!(a.status, Status::Succeeded);
    let log = app.log(a.id).await;
    assert!(
        log.contains("A-arrived") && log.contains("B-arrived"),
        "{log}"
    );
    assert!(log.contains("plain: *** and ***"), "{log}");

    // Nowhere: the API's answers, the log (text and JSON), the audit trail, the store's rows,
    // the metrics, the server's command lines and files.
    let shown = app
        .client
        .get(&format!("/v1/actions/{}", a.id))
        .await
        .unwrap();
    assert_eq!(
        shown["params"]["secrets"],
        json!({"A": "***", "B": {"secret_ref": "db-pass"}})
    );
    let lines = app
        .client
        .get(&format!("/v1/actions/{}/lines?limit=1000", a.id))
        .await
        .unwrap();
    let everything: String = sqlx::query_scalar(
        "SELECT concat((SELECT json_agg(t)::text FROM actions t), (SELECT json_agg(t)::text FROM action_log t),
                       (SELECT json_agg(t)::text FROM audit t), (SELECT json_agg(t)::text FROM secrets t),
                       (SELECT json_agg(t)::text FROM action_secrets t))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let listed = app.client.get("/v1/secrets").await.unwrap();
    let metrics = app.client.metrics().await.unwrap();
    let files = files_since(marker);
    for value in [INLINE, STORED] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        for (what, text) in [
            ("log", &log),
            ("lines", &lines.to_string()),
            ("action", &shown.to_string()),
            ("store", &everything),
            ("secret list", &listed.to_string()),
            ("metrics", &metrics),
            ("ps", &ps.to_string()),
            ("files", &files),
        ] {
            assert!(!text.contains(value), "{value:?} is in the {what}");
            assert!(!text.contains(&b64), "base64 of {value:?} is in the {what}");
        }
    }
    assert!(
        !log.contains("hunter2"),
        "the split value came through: {log}"
    );
    // The action's own copy is wiped once it ended; the named one stays.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM action_secrets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(listed["secrets"][0]["name"], "db-pass");
}

/// The text of the small files under /tmp changed since `since` (the test hosts live there).
fn files_since(since: std::time::SystemTime) -> String {
    let mut text = String::new();
    let mut dirs = vec![std::path::PathBuf::from("/tmp")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && dirs.len() < 10_000 && !e.path().ends_with("mysql") {
                dirs.push(e.path());
            } else if meta.is_file()
                && meta.len() < 1 << 20
                && meta.modified().is_ok_and(|m| m >= since)
            {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_are_refused_with_the_field() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let run = |secrets: serde_json::Value| json!({"server": "web1", "kind": "run_script", "params": {"script": "true", "secrets": secrets}});
    for (secrets, field) in [
        (
            json!({"A": {"secret_ref": "nope"}}),
            "params.secrets.A.secret_ref",
        ),
        (json!({"A": "***"}), "params.secrets.A"),
        (json!({"1A": "x"}), "params.secrets.1A"),
        (
            json!({"A": {"secret_ref": "x", "more": 1}}),
            "params.secrets.A",
        ),
    ] {
        let e = app.client.submit(&run(secrets.clone())).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{secrets}: {e}");
        let client::ClientError::Api { field: f, .. } = &e else {
            panic!("{e}")
        };
        assert!(
            f.as_deref().is_some_and(|f| f.starts_with(field)),
            "{secrets}: {e} ({f:?})"
        );
    }
    let e = app
        .client
        .post(
            "/v1/schedules",
            &json!({"name": "s", "target": {"server": "web1"}, "kind": "run_script",
                    "params": {"script": "true", "secrets": {"A": "inline"}}, "every_s": 60}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("secret_ref"), "{e}");
    assert_eq!(app.action_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_open_the_stored_secrets_stops_the_api() {
    let app = TestApp::spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = app.cfg.clone();
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.secret_key_file = Some(dir.path().join("other.key"));
    let err = api::Application::build(&cfg, app.topology.clone())
        .await
        .err()
        .expect("an api with another key");
    assert!(format!("{err:#}").contains("does not open"), "{err:#}");
}

/// What a watcher saw on the server while an action ran: every command line, and the modes
/// of the private files that held `value`.
#[derive(Default)]
struct Seen {
    ps: String,
    private_files: Vec<u32>,
}

/// Watch the server's processes and `~/.serveractions` every 20 ms until `done` is cancelled.
fn watch(
    value: &'static str,
    done: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Seen> {
    use std::os::unix::fs::PermissionsExt;
    tokio::task::spawn_blocking(move || {
        let dir = testbed::hosts::login_home().join(".serveractions");
        let mut seen = Seen::default();
        while !done.is_cancelled() {
            let ps = std::process::Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .unwrap();
            seen.ps.push_str(&String::from_utf8_lossy(&ps.stdout));
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(value)) {
                    let mode = e.metadata().map_or(0, |m| m.permissions().mode() & 0o777);
                    seen.private_files.push(mode);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// The files under `~/.serveractions` that hold `value`.
fn private_files_holding(value: &str) -> Vec<std::path::PathBuf> {
    let dir = testbed::hosts::login_home().join(".serveractions");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(value)))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_own_db_password_is_used_and_never_shown() {
    const DB_PASSWORD: &str = "per-server-Db-pw-7731";
    let moto = testbed::services::Moto::start().await.unwrap();
    // The fleet-wide default does not open this server's MariaDB: only its own credentials do.
    let mut app = TestApp::spawn_with(|c| {
        moto.configure(c);
        c.mysql_password = "fleet-default-wrong".into();
    })
    .await
    .unwrap();
    let db1 = TestHost::start().unwrap().with_mariadb().unwrap();
    db1.sql(&format!(
        "CREATE USER 'sa_ops'@'%' IDENTIFIED BY '{DB_PASSWORD}'; GRANT ALL ON *.* TO 'sa_ops'@'%';
         CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1), (2)"
    ))
    .unwrap();
    let (status, _) = app
        .client
        .post(
            "/v1/secrets",
            &json!({"name": "db1-password", "value": DB_PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let mut server = db1.db_server_json("db1");
    server["db_user"] = json!("sa_ops");
    for (field, value) in [
        ("db_password_ref", json!("nope")),
        ("db_user", json!("a b")),
    ] {
        let mut bad = server.clone();
        bad["db_password_ref"] = json!("db1-password");
        bad[field] = value;
        let err = app.client.add_server(&bad).await.unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{err:?}"
        );
    }
    server["db_password_ref"] = json!("db1-password");
    app.client.add_server(&server).await.unwrap();
    let err = app
        .client
        .delete("/v1/secrets/db1-password")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    app.process_log = Some("debug".into());
    let worker = app.start_worker_process("dbpw").unwrap();

    let marker = std::time::SystemTime::now();
    let done = tokio_util::sync::CancellationToken::new();
    let watcher = watch(DB_PASSWORD, done.clone());
    let status = app
        .client
        .submit(&json!({"server": "db1", "kind": "db_status"}))
        .await
        .unwrap();
    let backup = app
        .client
        .submit(&json!({"server": "db1", "kind": "db_backup", "params": {"strategy": "logical"}}))
        .await
        .unwrap();
    let mut logs = String::new();
    for id in [status.id, backup.id] {
        let a = app.wait(id).await;
        let log = app.log(id).await;
        assert_eq!(a.status, Status::Succeeded, "{log}");
        logs.push_str(&log);
    }
    done.cancel();
    let seen = watcher.await.unwrap();
    // The backup's client tools read it from a private file, 0600, gone when they exit.
    assert!(
        seen.private_files.iter().all(|m| *m == 0o600),
        "modes {:?}",
        seen.private_files
    );
    assert_eq!(
        private_files_holding(DB_PASSWORD),
        Vec::<std::path::PathBuf>::new()
    );
    let rows = app.client.get("/v1/backups?limit=10").await.unwrap();
    let shown = format!(
        "{rows}{}{}",
        app.client.get("/v1/servers/db1").await.unwrap(),
        app.client.get("/v1/actions?limit=10").await.unwrap()
    );
    let everything: String = sqlx::query_scalar(
        "SELECT concat((SELECT json_agg(t)::text FROM actions t), (SELECT json_agg(t)::text FROM action_log t),
                       (SELECT json_agg(t)::text FROM audit t), (SELECT json_agg(t)::text FROM servers t))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let dump = std::process::Command::new("pg_dump")
        .arg(&app.cfg.database_url)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    let worker_log = worker.output();
    assert!(
        worker_log.contains("DEBUG"),
        "the worker did not log at debug"
    );
    for (what, text) in [
        ("logs", &logs),
        ("api", &shown),
        ("store", &everything),
        ("pg_dump of the store", &dump),
        ("worker's stderr at debug", &worker_log),
        ("ps", &seen.ps),
        ("files under /tmp", &files_since(marker)),
    ] {
        for form in forms(DB_PASSWORD) {
            assert!(!text.contains(&form), "the password is in the {what}");
        }
    }
    // A server without its own credentials gets the default, which fails here, saying so.
    app.add_db_host("db2", &db1).await.unwrap();
    let a = app
        .client
        .submit(&json!({"server": "db2", "kind": "db_status"}))
        .await
        .unwrap();
    let log = app.log(app.wait(a.id).await.id).await;
    assert!(log.contains("Access denied for user 'root'"), "{log}");
}

/// The forms of `value` no output may hold: itself and its base64.
fn forms(value: &str) -> [String; 2] {
    [
        value.to_string(),
        base64::engine::general_purpose::STANDARD.encode(value),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_debug_logs_a_dump_and_what_cancels_and_kills_leave() {
    let mut app = TestApp::spawn().await.unwrap();
    app.process_log = Some("debug".into());
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let (api, client) = app.start_api_process("secrets-api").await.unwrap();
    let first = app.start_worker_process("secrets-w1").unwrap();
    let (status, _) = client
        .post("/v1/secrets", &json!({"name": "db-pass", "value": STORED}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let marker = std::time::SystemTime::now();
    let run = |script: &str| {
        json!({"server": "web1", "kind": "run_script", "params": {
            "script": script, "secrets": {"A": INLINE, "B": {"secret_ref": "db-pass"}}}})
    };
    // To its end, then cancelled half-way, then with its worker SIGKILLed half-way.
    let done = client
        .submit(&run(r#"echo "A=$A B=$B"; printf %s "$A" | base64"#))
        .await
        .unwrap();
    let done = client.wait(done.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, Status::Succeeded);
    let started = async |id: i64| {
        assert!(
            eventually(Duration::from_secs(15), async || client
                .log(id, 0)
                .await
                .unwrap()
                .text
                .contains("started"))
            .await
        )
    };
    let cancelled = client
        .submit(&run(r#"echo "started $A"; sleep 30"#))
        .await
        .unwrap();
    started(cancelled.id).await;
    client.cancel(cancelled.id).await.unwrap();
    let cancelled = client
        .wait(cancelled.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    let killed = client
        .submit(&run(r#"echo "started $B"; sleep 8"#))
        .await
        .unwrap();
    started(killed.id).await;
    first.signal("KILL");
    let second = app.start_worker_process("secrets-w2").unwrap();
    let killed = client
        .wait(killed.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(killed.status.is_terminal(), "{:?}", killed.status);
    // The scripts got the values; nothing else holds them.
    let log = client.log(done.id, 0).await.unwrap().text;
    assert!(log.contains("A=*** B=***"), "{log}");
    let dump = std::process::Command::new("pg_dump")
        .arg(&app.cfg.database_url)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(dump.contains("A=*** B=***"), "the dump holds no log lines");
    let api_log = api.output();
    assert!(api_log.contains("DEBUG"), "the api did not log at debug");
    let texts = [
        ("pg_dump of the store", dump),
        ("api stderr at debug", api_log),
        ("first worker's stderr", first.output()),
        ("second worker's stderr", second.output()),
        ("files under /tmp", files_since(marker)),
        (
            "ps",
            String::from_utf8_lossy(
                &std::process::Command::new("ps")
                    .args(["-eo", "args"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .to_string(),
        ),
    ];
    for value in [INLINE, STORED] {
        for form in forms(value) {
            for (what, text) in &texts {
                assert!(!text.contains(&form), "{form:?} is in the {what}");
            }
        }
    }
}
