//! SSH failures end the action `failed` with the reason in its log: never a hang, never a retry.

use std::time::{Duration, Instant};

use shared::Status;

use crate::{TestApp, TestHost};

async fn failed_with(app: &TestApp, server: &str, needle: &str) {
    let started = Instant::now();
    let a = app
        .client
        .run_script(server, "echo should not run", &[])
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::Failed, "{server}: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{server}: took {:?}",
        started.elapsed()
    );
    assert!(
        log.contains(needle),
        "{server}: expected {needle:?} in the log:\n{log}"
    );
    assert!(!log.contains("should not run\n"), "{log}");
    assert!(
        log.trim_end().ends_with("] : Server action failed"),
        "{log}"
    );
    // Not retried: exactly one attempt in the log.
    assert_eq!(log.matches("Executing action").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_down_host_and_refused_login_fail_cleanly() {
    let mut app = TestApp::spawn().await.unwrap();
    let good = TestHost::start().unwrap();
    let other = TestHost::start().unwrap();
    let mut down = TestHost::start().unwrap();

    // Wrong host key: the server record pins another host's key.
    let mut spoofed = good.server_json("spoofed");
    spoofed["host_key"] = other.server_json("x")["host_key"].clone();
    app.client.add_server(&spoofed).await.unwrap();
    // Host down: nothing listens any more.
    app.add_host("down", &down).await.unwrap();
    down.kill();
    // Auth refused: a user the host does not let in.
    let mut refused = good.server_json("refused");
    refused["ssh_user"] = serde_json::json!("nobody");
    app.client.add_server(&refused).await.unwrap();
    app.add_host("good", &good).await.unwrap();

    app.spawn_worker().await.unwrap();
    failed_with(&app, "spoofed", "Host key verification failed").await;
    failed_with(&app, "down", "Connection refused").await;
    failed_with(&app, "refused", "Permission denied").await;

    // The worker is fine afterwards, and the good host works.
    let a = app
        .client
        .run_script("good", "echo fine", &[])
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    assert_eq!(a.status, Status::Succeeded, "{}", app.log(a.id).await);
    // The failed servers' locks were released.
    for s in ["spoofed", "down", "refused", "good"] {
        let v = app.client.get(&format!("/v1/servers/{s}")).await.unwrap();
        assert!(v["lock"].is_null(), "{s} still locked: {v}");
    }
}
