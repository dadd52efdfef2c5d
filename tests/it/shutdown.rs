//! Graceful shutdown: SIGTERM stops consuming, lets running actions finish within the grace
//! period, then interrupts the rest (or hands them back when they may be retried); nothing
//! stays locked.

use std::time::Duration;

use serde_json::json;
use shared::Status;

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_short_actions_and_hands_back_long_ones() {
    let mut app = TestApp::spawn_with(|c| c.shutdown_grace_s = 3)
        .await
        .unwrap();
    let hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start().unwrap()).collect();
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("h{i}"), h).await.unwrap();
    }
    let mut worker = app.start_worker_process("leaving").unwrap();
    let short = app
        .client
        .run_script("h0", "echo short; sleep 1.5; echo done", &[])
        .await
        .unwrap();
    let long = app
        .client
        .run_script("h1", "echo long; sleep 30", &[])
        .await
        .unwrap();
    let retried = app
        .client
        .submit(&json!({"server": "h2", "kind": "run_script", "retry": {"max": 1, "backoff_s": 0},
                        "params": {"script": "if [ -e \"$SA_HOST_DIR/once\" ]; then echo again; else touch \"$SA_HOST_DIR/once\"; echo first; sleep 30; fi"}}))
        .await
        .unwrap();
    let all_running = eventually(Duration::from_secs(20), async || {
        let mut n = 0;
        for id in [short.id, long.id, retried.id] {
            n += (app.client.action(id).await.unwrap().status == Status::Running) as usize;
        }
        n == 3
    })
    .await;
    assert!(all_running);
    // Queued after the SIGTERM: this worker must not take it.
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = app
        .client
        .run_script("h0", "echo later", &[])
        .await
        .unwrap();

    let s = app.wait(short.id).await;
    assert_eq!(s.status, Status::Succeeded, "{}", app.log(short.id).await);
    let l = app.wait(long.id).await;
    let log = app.log(long.id).await;
    assert_eq!(l.status, Status::Interrupted, "{log}");
    assert!(
        log.contains("The worker is shutting down: the remote process group was killed."),
        "{log}"
    );
    worker.stop(Duration::from_secs(10));
    assert_eq!(
        app.client.action(later.id).await.unwrap().status,
        Status::Queued
    );
    let r = app.client.action(retried.id).await.unwrap();
    assert_eq!(
        (r.status, r.attempt),
        (Status::Waiting, 2),
        "{}",
        app.log(retried.id).await
    );
    for i in 0..3 {
        let v = app.client.get(&format!("/v1/servers/h{i}")).await.unwrap();
        assert!(v["lock"].is_null(), "h{i} still locked: {v}");
    }
    // Another worker takes what was handed back and what was queued.
    app.spawn_worker().await.unwrap();
    let r = app.wait(retried.id).await;
    assert_eq!(r.status, Status::Succeeded);
    assert!(app.log(retried.id).await.contains("\nagain\n"));
    assert_eq!(app.wait(later.id).await.status, Status::Succeeded);
}
