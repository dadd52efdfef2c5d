//! Runs across a fleet: one action per server, at most `concurrency` at once, dispatching
//! stopped at the failure threshold (the rest cancelled with the reason), and `sactl run --tag`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{cli::sactl, eventually, TestApp, TestHost};

/// Wait for the run's end; its body.
async fn finished(app: &TestApp, id: i64) -> Value {
    let mut run = Value::Null;
    let done = eventually(Duration::from_secs(120), async || {
        run = app.client.get(&format!("/v1/runs/{id}")).await.unwrap();
        !run["finished_at"].is_null()
    })
    .await;
    assert!(done, "run {id} did not finish: {run}");
    run
}

/// The largest number of (start, end) intervals that overlap at one moment.
fn most_at_once(mut spans: Vec<(u128, u128)>) -> usize {
    let mut edges: Vec<(u128, i32)> = spans
        .drain(..)
        .flat_map(|(s, e)| [(s, 1), (e, -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_run_keeps_its_concurrency_and_stops_at_max_failures() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    app.spawn_worker().await.unwrap();
    let mut hosts = Vec::new();
    // Four hosts fail: two among the first five dispatched, two far behind them.
    let failing = [2, 3, 12, 17];
    for i in 0..20 {
        let host = TestHost::start().unwrap();
        let mut server = host.server_json(&format!("h{i:02}"));
        let fails = failing.contains(&i);
        server["tags"] = json!({"role": "web", "fails": if fails { "yes" } else { "no" }});
        app.client.add_server(&server).await.unwrap();
        if fails {
            std::fs::write(host.dir.join("fail"), "").unwrap();
        }
        hosts.push(host);
    }
    let script =
        "date +%s%N > \"$SA_HOST_DIR/start\"; sleep 1; date +%s%N > \"$SA_HOST_DIR/end\"; \
                  [ ! -e \"$SA_HOST_DIR/fail\" ]";
    let (status, made) = app
        .client
        .post(
            "/v1/runs",
            &json!({"target": {"tags": {"role": "web"}}, "kind": "run_script", "params": {"script": script},
                    "concurrency": 5, "max_failures": 2}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{made}");
    assert_eq!(made["actions"].as_array().unwrap().len(), 20);
    let id = made["run"]["id"].as_i64().unwrap();
    let run = finished(&app, id).await;
    let counts = &run["counts"];
    let n = |s: &str| counts[s].as_u64().unwrap_or(0) as usize;
    assert_eq!(n("failed"), 2, "{run}");
    assert!(n("cancelled") >= 10, "{run}");
    assert_eq!(n("succeeded") + n("failed") + n("cancelled"), 20, "{run}");
    assert!(
        run["stopped_reason"]
            .as_str()
            .unwrap()
            .contains("2 failed, max_failures is 2"),
        "{run}"
    );
    // Marks on the hosts: who ran, and at most five at once.
    let mark = |h: &TestHost, f: &str| -> Option<u128> {
        std::fs::read_to_string(h.dir.join(f))
            .ok()
            .map(|t| t.trim().parse().unwrap())
    };
    let spans: Vec<(u128, u128)> = hosts
        .iter()
        .filter_map(|h| Some((mark(h, "start")?, mark(h, "end")?)))
        .collect();
    assert_eq!(spans.len(), n("succeeded") + n("failed"), "{run}");
    assert!(most_at_once(spans.clone()) <= 5, "{spans:?}");
    assert!(most_at_once(spans) >= 4, "the run did not run in parallel");
    // The two far behind never started: cancelled with the reason.
    for i in [12, 17] {
        assert!(mark(&hosts[i], "start").is_none(), "h{i} ran");
        let a = run["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["server"] == format!("h{i}"))
            .unwrap();
        assert_eq!(a["status"], "cancelled");
        let log = app.log(a["id"].as_i64().unwrap()).await;
        assert!(
            log.contains(&format!(
                "Not started: run {id}: 2 failed, max_failures is 2."
            )),
            "{log}"
        );
    }

    // The CLI: a summary, and the exit code says whether every server succeeded.
    let (code, out, err) = sactl(
        &app,
        &[
            "run",
            "--tag",
            "role=web",
            "--concurrency",
            "10",
            "--",
            "uptime",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("20 succeeded"), "{out}");
    let (code, out, err) = sactl(
        &app,
        &[
            "run",
            "--tag",
            "fails=yes",
            "--",
            "[ ! -e \"$SA_HOST_DIR/fail\" ]",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("4 failed"), "{out}");
    let (code, _, err) = sactl(&app, &["run", "--tag", "role=nobody", "--", "uptime"]);
    assert_ne!(code, 0);
    assert!(err.contains("target"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_by_deployment_or_names_refuses_bad_targets() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let a = TestHost::start().unwrap();
    let b = TestHost::start().unwrap();
    app.add_host("a1", &a).await.unwrap();
    app.add_host("b1", &b).await.unwrap();
    let (s, _) = app
        .client
        .post("/v1/deployments", &json!({"name": "prod", "inputs": {}}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    app.client
        .patch("/v1/servers/b1", &json!({"deployment": "prod"}))
        .await
        .unwrap();
    let (_, made) = app
        .client
        .post("/v1/runs", &json!({"target": {"deployment": "prod"}, "kind": "run_script", "params": {"script": "echo hi"}}))
        .await
        .unwrap();
    let run = finished(&app, made["run"]["id"].as_i64().unwrap()).await;
    assert_eq!(run["counts"], json!({"succeeded": 1}), "{run}");
    assert_eq!(run["actions"][0]["server"], "b1");
    let before = app.action_count().await;
    for (body, field) in [
        (
            json!({"target": {"servers": ["a1", "zz"]}, "kind": "run_script", "params": {"script": "true"}}),
            "target.servers[1]",
        ),
        (
            json!({"target": {}, "kind": "run_script", "params": {"script": "true"}}),
            "target",
        ),
        (
            json!({"target": {"deployment": "nope"}, "kind": "run_script", "params": {"script": "true"}}),
            "target.deployment",
        ),
        (
            json!({"target": {"servers": ["a1"]}, "kind": "run_script", "params": {"script": "true"}, "concurrency": 0}),
            "concurrency",
        ),
        (
            json!({"target": {"servers": ["a1"]}, "kind": "run_script", "params": {}}),
            "params.script",
        ),
        (
            json!({"target": {"servers": ["a1"]}, "kind": "server_launch", "params": {"profile": "p"}}),
            "kind",
        ),
        (
            json!({"target": {"servers": ["a1"]}, "kind": "format_disk"}),
            "kind",
        ),
    ] {
        match app.client.post("/v1/runs", &body).await {
            Err(client::ClientError::Api {
                status: 400,
                field: Some(f),
                ..
            }) => assert_eq!(f, field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert_eq!(app.action_count().await, before);
}
