//! A worker killed mid-action: its lease expires, the reaper kills what it left running on the
//! server, the action ends `interrupted` (or runs again when it may be retried), and the next
//! action on the server starts.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::Status;

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_worker_actions_are_interrupted_or_retried_and_servers_freed() {
    let lease_s = 3;
    let mut app = TestApp::spawn_with(|c| c.lease_s = lease_s).await.unwrap();
    let web1 = TestHost::start().unwrap();
    let web2 = TestHost::start().unwrap();
    app.add_host("web1", &web1).await.unwrap();
    app.add_host("web2", &web2).await.unwrap();
    let victim = app.start_worker_process("victim").unwrap();

    let long = r#"echo "start" >> "$SA_HOST_DIR/marks"; echo running; sleep 8; echo "end" >> "$SA_HOST_DIR/marks""#;
    let a = app.client.run_script("web1", long, &[]).await.unwrap();
    let b = app
        .client
        .run_script("web1", r#"echo "next" >> "$SA_HOST_DIR/marks""#, &[])
        .await
        .unwrap();
    let again = r#"if [ -e "$SA_HOST_DIR/first" ]; then echo second run; else touch "$SA_HOST_DIR/first"; echo running; sleep 30; fi"#;
    let c = app
        .client
        .submit(
            &json!({"server": "web2", "kind": "run_script", "retry": {"max": 1, "backoff_s": 0},
                        "params": {"script": again}}),
        )
        .await
        .unwrap();
    let both_running = eventually(Duration::from_secs(30), async || {
        app.log(a.id).await.contains("\nrunning\n") && app.log(c.id).await.contains("\nrunning\n")
    })
    .await;
    assert!(
        both_running,
        "{}\n{}",
        app.log(a.id).await,
        app.log(c.id).await
    );

    app.spawn_worker().await.unwrap(); // the survivor reaps
    victim.signal("KILL");
    let killed_at = Instant::now();

    let a_end = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a_end.status, Status::Interrupted, "{log}");
    assert!(
        log.contains("Worker victim stopped renewing its lock on web1 (lease expired at "),
        "{log}"
    );
    assert!(
        log.contains("process group ") && log.contains(" killed."),
        "{log}"
    );
    assert!(
        log.trim_end().ends_with("] : Server action interrupted"),
        "{log}"
    );
    let b_end = app.wait(b.id).await;
    assert_eq!(b_end.status, Status::Succeeded);
    let took = b_end.started_at.unwrap() - chrono::Utc::now()
        + chrono::Duration::from_std(killed_at.elapsed()).unwrap();
    let took = took.to_std().unwrap_or_default();
    println!(
        "SIGKILL to the next action starting: {:.2} s (lease {lease_s} s)",
        took.as_secs_f64()
    );
    // The benchmark (sa-bench part e) measures this against lease + 2 s on a quiet machine; here
    // the other tests share the two cores (kill, reap and the next start all wait for CPU).
    assert!(took <= Duration::from_secs(lease_s + 6), "took {took:?}");

    // The retried one ran again and succeeded.
    let c_end = app.wait(c.id).await;
    let clog = app.log(c.id).await;
    assert_eq!(
        (c_end.status, c_end.attempt),
        (Status::Succeeded, 2),
        "{clog}"
    );
    assert!(
        clog.contains("Retrying: attempt 2 of 2 in 0 s.") && clog.contains("\nsecond run\n"),
        "{clog}"
    );

    // The killed action's script never finished on the server, and nothing overlapped.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(web1.read("marks"), "start\nnext\n");
    for s in ["web1", "web2"] {
        let v = app.client.get(&format!("/v1/servers/{s}")).await.unwrap();
        assert!(v["lock"].is_null(), "{s} still locked: {v}");
    }
}

/// A worker that stalls past its lease (SIGSTOP) loses the server to the reaper; when it wakes
/// up it stops the action and writes nothing over what the reaper recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_worker_is_fenced_off_when_it_wakes_up() {
    let lease_s = 3;
    let mut app = TestApp::spawn_with(|c| c.lease_s = lease_s).await.unwrap();
    let web1 = TestHost::start().unwrap();
    app.add_host("web1", &web1).await.unwrap();
    let stalled = app.start_worker_process("stalled").unwrap();
    let a = app
        .client
        .run_script(
            "web1",
            r#"echo running; sleep 6; echo "late" >> "$SA_HOST_DIR/marks""#,
            &[],
        )
        .await
        .unwrap();
    let running = eventually(Duration::from_secs(20), async || {
        app.log(a.id).await.contains("\nrunning\n")
    })
    .await;
    assert!(running);
    stalled.signal("STOP");
    app.spawn_worker().await.unwrap();
    let reaped = eventually(Duration::from_secs(20), async || {
        app.client.action(a.id).await.unwrap().status == Status::Interrupted
    })
    .await;
    assert!(reaped, "{}", app.log(a.id).await);
    let next = app
        .client
        .run_script("web1", "echo next", &[])
        .await
        .unwrap();
    assert_eq!(app.wait(next.id).await.status, Status::Succeeded);
    let log_at_reap = app.log(a.id).await;
    // Wake the stalled worker: its lease is gone; it must not write a status or a log line.
    stalled.signal("CONT");
    tokio::time::sleep(Duration::from_secs(lease_s + 5)).await;
    let a_now = app.client.action(a.id).await.unwrap();
    assert_eq!(a_now.status, Status::Interrupted);
    assert_eq!(
        app.log(a.id).await,
        log_at_reap,
        "the stalled worker wrote after losing its lease"
    );
    assert_eq!(
        web1.read("marks"),
        "",
        "the stalled action's script kept running"
    );
}

/// A bug that panics inside an action ends it `failed` with the panic's message; the worker
/// lives on, releases the server at once (well within a lease period) and runs the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_action_fails_and_releases_its_server() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let worker = app.spawn_worker().await.unwrap();
    let _ = worker.fault.set(Box::new(|a: &shared::Action| {
        if let shared::ActionSpec::RunScript(p) = &a.spec {
            if p.script.contains("panic here") {
                panic!("injected fault in action {}", a.id);
            }
        }
    }));
    let bad = app
        .client
        .run_script("web1", "echo panic here", &[])
        .await
        .unwrap();
    let next = app
        .client
        .run_script("web1", "echo after", &[])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let bad = app.wait(bad.id).await;
    let log = app.log(bad.id).await;
    assert_eq!(bad.status, shared::Status::Failed, "{log}");
    assert!(
        log.contains(&format!("panic: injected fault in action {}", bad.id)),
        "{log}"
    );
    let next = app.wait(next.id).await;
    assert_eq!(next.status, shared::Status::Succeeded);
    assert!(
        started.elapsed().as_secs_f64() < app.cfg.lease_s as f64,
        "the server was not released within a lease period"
    );
    assert!(app.log(next.id).await.contains("after"));
}
