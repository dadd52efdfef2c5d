//! Cancel and timeout: a queued action never starts; a running one has its whole remote process
//! tree killed (a child and a grandchild that would write files later never do).

use std::time::Duration;

use shared::Status;

use crate::{eventually, TestApp, TestHost};

/// Starts a child and a grandchild that would each write a file 2-3 s later, then sleeps.
const TREE: &str = r#"(sleep 2; touch "$SA_HOST_DIR/child") &
sh -c '(sleep 3; touch "$SA_HOST_DIR/grandchild") &'
echo started
sleep 30"#;

async fn wait_for_line(app: &TestApp, id: i64, line: &str) {
    let seen = eventually(Duration::from_secs(20), async || {
        app.log(id).await.lines().any(|l| l == line)
    })
    .await;
    assert!(
        seen,
        "no {line:?} in the log of {id}: {}",
        app.log(id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_process_tree_and_queued_actions_never_start() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();

    let running = app.client.run_script("web1", TREE, &[]).await.unwrap();
    let queued = app
        .client
        .run_script("web1", "touch \"$SA_HOST_DIR/queued-ran\"", &[])
        .await
        .unwrap();
    wait_for_line(&app, running.id, "started").await;

    // Queued: cancelled at once (200), never runs.
    let q = app.client.cancel(queued.id).await.unwrap();
    assert_eq!(q.status, Status::Cancelled);
    // Running: cancel requested (202); the worker kills the group.
    let (status, _) = app
        .client
        .post(
            &format!("/v1/actions/{}/cancel", running.id),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let a = app.wait(running.id).await;
    let log = app.log(running.id).await;
    assert_eq!(a.status, Status::Cancelled, "{log}");
    assert!(
        log.contains("Cancelled by request of token:admin: the remote process group was killed."),
        "{log}"
    );
    assert!(
        log.contains("] : Process group ") && log.contains(" terminated."),
        "{log}"
    );
    assert!(
        log.trim_end().ends_with("] : Server action cancelled"),
        "{log}"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    for f in ["child", "grandchild", "queued-ran"] {
        assert!(
            !host.dir.join(f).exists(),
            "{f} exists: something kept running"
        );
    }
    let q = app.client.action(queued.id).await.unwrap();
    assert_eq!((q.status, q.started_at), (Status::Cancelled, None));
    assert!(app
        .log(queued.id)
        .await
        .contains("Cancelled by request of token:admin before it started."));
    // A finished action cannot be cancelled; the server is free again.
    let err = app.client.cancel(running.id).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    let next = app
        .client
        .run_script("web1", "echo free", &[])
        .await
        .unwrap();
    assert_eq!(app.wait(next.id).await.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_process_tree() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let a = app
        .client
        .submit(
            &serde_json::json!({"server": "web1", "kind": "run_script", "timeout_s": 1,
                                    "params": {"script": TREE}}),
        )
        .await
        .unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::TimedOut, "{log}");
    assert!(
        log.contains("Timed out after 1 s: the remote process group was killed."),
        "{log}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    for f in ["child", "grandchild"] {
        assert!(
            !host.dir.join(f).exists(),
            "{f} exists: the timeout left processes running"
        );
    }
    // Without `timeout_s`, every kind gets its default, shown on the action.
    for (kind, params, default) in [
        ("run_script", serde_json::json!({"script": "true"}), 3600),
        ("db_status", serde_json::json!({}), 120),
    ] {
        let b = app
            .client
            .submit(&serde_json::json!({"server": "web1", "kind": kind, "params": params}))
            .await
            .unwrap();
        assert_eq!(b.timeout_s, Some(default), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pid_file_kills_nothing_and_the_action_says_so() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    // The same host and user under another name: what `kill -TERM -1` as that user would hit.
    app.add_host("web2", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let a = app
        .client
        .run_script("web1", "echo started; sleep 20", &[])
        .await
        .unwrap();
    let sentinel = app
        .client
        .run_script("web2", "echo started; sleep 20", &[])
        .await
        .unwrap();
    for id in [a.id, sentinel.id] {
        assert!(
            crate::eventually(Duration::from_secs(15), async || app
                .log(id)
                .await
                .contains("started"))
            .await
        );
    }
    // A local user of the same account writes `1 <id>` into the pid file.
    let file =
        testbed::hosts::login_home().join(format!(".serveractions/web1-{}.pid", host.address));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .ends_with(&format!(" {}\n", a.id)));
    std::fs::write(&file, format!("1 {}\n", a.id)).unwrap();
    app.client.cancel(a.id).await.unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, shared::Status::Failed, "{log}");
    assert!(log.contains("the pid file is not to be trusted"), "{log}");
    assert!(log.contains("sactl servers unlock web1"), "{log}");
    // Nothing else of the user's was killed.
    let s = app.client.action(sentinel.id).await.unwrap();
    assert_eq!(s.status, shared::Status::Running);
    // Its script may still run: the server stays locked, and the next action waits.
    let next = app
        .client
        .run_script("web1", "echo next", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.client.action(next.id).await.unwrap().status,
        shared::Status::Waiting
    );
    let server = app.client.get("/v1/servers/web1").await.unwrap();
    assert_eq!(server["lock"]["action_id"], a.id, "{server}");
    assert!(
        server["lock"]["stuck"]
            .as_str()
            .unwrap()
            .contains("pid file"),
        "{server}"
    );
    // Unlocking needs an admin, refuses a free or live-held server, and lets the next one run.
    let operator = app
        .client_as("op", shared::auth::Role::Operator, Default::default())
        .await
        .unwrap();
    assert_eq!(
        operator.unlock_server("web1").await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        app.client.unlock_server("web2").await.unwrap_err().status(),
        Some(409)
    );
    let unlocked = app.client.unlock_server("web1").await.unwrap();
    assert_eq!(unlocked["next"], next.id);
    assert_eq!(app.wait(next.id).await.status, shared::Status::Succeeded);
    assert_eq!(
        app.client.unlock_server("web1").await.unwrap_err().status(),
        Some(409)
    );
    app.client.cancel(sentinel.id).await.unwrap();
    assert_eq!(
        app.wait(sentinel.id).await.status,
        shared::Status::Cancelled
    );
}
