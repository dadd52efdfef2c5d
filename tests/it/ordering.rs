//! Order, urgency, idempotency, retries.

use std::time::Duration;

use serde_json::json;
use shared::Status;

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_action_preempts_the_running_one_and_goes_first() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("db1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let long = app
        .client
        .run_script("db1", "echo backing up; sleep 30", &[])
        .await
        .unwrap();
    let normal = app
        .client
        .run_script("db1", "echo normal", &[])
        .await
        .unwrap();
    let running = eventually(Duration::from_secs(10), async || {
        app.client.action(long.id).await.unwrap().status == Status::Running
    })
    .await;
    assert!(running);
    let urgent = app
        .client
        .submit(
            &json!({"server": "db1", "kind": "run_script", "urgent": true,
                        "params": {"script": "echo promoting"}}),
        )
        .await
        .unwrap();
    let u = app.wait(urgent.id).await;
    assert_eq!(u.status, Status::Succeeded, "{}", app.log(urgent.id).await);
    let l = app.wait(long.id).await;
    assert_eq!(l.status, Status::Cancelled);
    let long_log = app.log(long.id).await;
    assert!(
        long_log.contains(&format!(
            "Preempted by urgent action {}: the remote process group was killed.",
            urgent.id
        )),
        "{long_log}"
    );
    let urgent_log = app.log(urgent.id).await;
    assert!(
        urgent_log.contains(" has the lock. terminating others."),
        "{urgent_log}"
    );
    // The urgent one went before the ordinary one submitted earlier.
    let n = app.wait(normal.id).await;
    assert_eq!(n.status, Status::Succeeded);
    assert!(
        u.started_at.unwrap() < n.started_at.unwrap(),
        "urgent did not go first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_yields_one_action_even_concurrently() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let body = json!({"server": "web1", "kind": "run_script", "idempotency_key": "deploy-42",
                      "params": {"script": "true"}});
    let (s1, first) = app.client.post("/v1/actions", &body).await.unwrap();
    let (s2, again) = app.client.post("/v1/actions", &body).await.unwrap();
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(first["id"], again["id"]);
    // Ten at once with a new key: one action.
    let body = json!({"server": "web1", "kind": "run_script", "idempotency_key": "deploy-43",
                      "params": {"script": "true"}});
    let replies =
        futures::future::join_all((0..10).map(|_| app.client.post("/v1/actions", &body))).await;
    let ids: std::collections::BTreeSet<i64> = replies
        .into_iter()
        .map(|r| r.unwrap().1["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.action_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_again_after_a_backoff_and_stop_at_max() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    // Fails twice, then succeeds.
    let flaky = r#"n=$(cat "$SA_HOST_DIR/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$SA_HOST_DIR/count"; echo "attempt $n"; [ $n -ge 3 ]"#;
    let a = app
        .client
        .submit(
            &json!({"server": "web1", "kind": "run_script", "retry": {"max": 3, "backoff_s": 1},
                        "params": {"script": flaky}}),
        )
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!((a.status, a.attempt), (Status::Succeeded, 3), "{log}");
    assert!(
        log.contains("Retrying: attempt 2 of 4 in 1 s.")
            && log.contains("Retrying: attempt 3 of 4 in 1 s."),
        "{log}"
    );
    assert_eq!(log.matches("Executing action").count(), 3, "{log}");
    assert_eq!(host.read("count").trim(), "3");
    // Always failing, one retry: two runs, then failed.
    let b = app
        .client
        .submit(
            &json!({"server": "web1", "kind": "run_script", "retry": {"max": 1, "backoff_s": 0},
                        "params": {"script": "echo no; exit 7"}}),
        )
        .await
        .unwrap();
    let b = app.wait(b.id).await;
    assert_eq!(
        (b.status, b.exit_code, b.attempt),
        (Status::Failed, Some(7), 2)
    );
    assert_eq!(app.log(b.id).await.matches("Executing action").count(), 2);
}
