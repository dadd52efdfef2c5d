//! The scheduler: sa-api replicas (real processes) firing schedules with 1-second slots.

use std::time::Duration;

use chrono::{DateTime, Utc};
use client::Client;
use serde_json::json;
use shared::Status;
use testbed::procs::Proc;

use crate::{TestApp, TestHost};

/// `n` sa-api replicas on the app's database; the in-process api is stopped so that only they
/// schedule.
async fn replicas(app: &mut TestApp, n: usize) -> Vec<(Proc, Client)> {
    app.stop_api().await;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(app.start_api_process(&format!("api{i}")).await.unwrap());
    }
    out
}

/// A schedule's runs, oldest first: (slot, outcome, action id, reason).
async fn runs(
    app: &TestApp,
    name: &str,
) -> Vec<(DateTime<Utc>, String, Option<i64>, Option<String>)> {
    sqlx::query_as(
        "SELECT r.slot, r.outcome, r.action_id, r.reason FROM schedule_runs r
         JOIN schedules s ON s.id = r.schedule_id WHERE s.name = $1 ORDER BY r.slot",
    )
    .bind(name)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn scheduled_total(c: &Client) -> f64 {
    let text = c.metrics().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sa_scheduled_actions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fire_every_slot_exactly_once() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let h = TestHost::start().unwrap();
    app.add_host("s1", &h).await.unwrap();
    let reps = replicas(&mut app, 3).await;
    let (status, s) = reps[0]
        .1
        .post(
            "/v1/schedules",
            &json!({"name": "tick", "target": {"server": "s1"}, "kind": "run_script",
                    "params": {"script": "echo tick >> \"$SA_HOST_DIR/ticks\""}, "every_s": 1}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{s}");
    assert!(s["next_fire_at"].is_string(), "{s}");
    tokio::time::sleep(Duration::from_secs(23)).await;
    reps[1]
        .1
        .patch("/v1/schedules/tick", &json!({"enabled": false}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let runs = runs(&app, "tick").await;
    assert!(runs.len() >= 20, "only {} slots", runs.len());
    for w in runs.windows(2) {
        assert_eq!(
            (w[1].0 - w[0].0).num_seconds(),
            1,
            "a slot is missing: {runs:?}"
        );
    }
    let skipped: Vec<_> = runs.iter().filter(|r| r.1 != "fired").collect();
    assert!(skipped.is_empty(), "skipped: {skipped:?}");
    // One action per slot, each ran once.
    let actions: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, status, submitted_by FROM actions WHERE schedule_id = (SELECT id FROM schedules WHERE name = 'tick')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actions.len(), runs.len());
    assert!(
        actions.iter().all(|(_, s, _)| s == "succeeded"),
        "{actions:?}"
    );
    // They name the schedule as their origin, not a person's token.
    assert!(
        actions.iter().all(|(_, _, by)| by == "schedule:tick"),
        "{actions:?}"
    );
    assert_eq!(h.read("ticks").lines().count(), runs.len());
    // The replicas shared the work and together fired each slot once.
    let mut total = 0.0;
    for (_, c) in &reps {
        total += scheduled_total(c).await;
    }
    assert_eq!(total as usize, runs.len());
    // The API shows the last runs; the schedule is disabled now.
    let shown = reps[2].1.get("/v1/schedules/tick").await.unwrap();
    assert_eq!(shown["enabled"], false);
    assert!(shown["next_fire_at"].is_null());
    assert_eq!(shown["last_runs"].as_array().unwrap().len(), 10, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_still_going_skips_the_next_slots_and_says_so() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let h = TestHost::start().unwrap();
    app.add_host("s1", &h).await.unwrap();
    let reps = replicas(&mut app, 2).await;
    reps[0]
        .1
        .post(
            "/v1/schedules",
            &json!({"name": "slow", "target": {"server": "s1"}, "kind": "run_script",
                    "params": {"script": "sleep 2.5"}, "every_s": 1}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    reps[0]
        .1
        .patch("/v1/schedules/slow", &json!({"enabled": false}))
        .await
        .unwrap();
    let runs = runs(&app, "slow").await;
    let fired = runs.iter().filter(|r| r.1 == "fired").count();
    let skipped: Vec<_> = runs.iter().filter(|r| r.1 == "skipped").collect();
    assert!(fired >= 2 && skipped.len() >= 4, "{runs:?}");
    assert!(
        skipped
            .iter()
            .all(|r| r.3.as_deref().unwrap_or("").contains("has not finished")),
        "{skipped:?}"
    );
    // Never two at once.
    type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let spans: Vec<Span> = sqlx::query_as(
        "SELECT started_at, finished_at FROM actions WHERE schedule_id IS NOT NULL ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for w in spans.windows(2) {
        if let (Some(end), Some(next)) = (w[0].1, w[1].0) {
            assert!(next >= end, "overlapping runs: {spans:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_downtime_missed_slots_fire_once_or_are_skipped() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let h = TestHost::start().unwrap();
    app.add_host("s1", &h).await.unwrap();
    let mut reps = replicas(&mut app, 2).await;
    for (name, catch_up) in [("once", "once"), ("skipper", "skip")] {
        reps[0]
            .1
            .post(
                "/v1/schedules",
                &json!({"name": name, "target": {"server": "s1"}, "kind": "run_script",
                        "params": {"script": "true"}, "every_s": 1, "catch_up": catch_up}),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every api down for 10 slots.
    for (p, _) in &mut reps {
        p.stop(Duration::from_secs(5));
    }
    let down_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let up_at = Utc::now();
    let (_p, _c) = app.start_api_process("api-again").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    for name in ["once", "skipper"] {
        let runs = runs(&app, name).await;
        // The slot standing for the gap is the latest one when a scheduler came back, which
        // may be after `up_at` (the api takes a moment to start): find it by its note.
        let caught: Vec<_> = runs
            .iter()
            .filter(|r| {
                r.3.as_deref()
                    .unwrap_or("")
                    .contains("were missed while no scheduler ran")
            })
            .collect();
        assert_eq!(caught.len(), 1, "{name}: one run for the gap: {runs:?}");
        let gap = caught[0];
        // Nothing fired inside the gap besides it: no burst of the ten missed slots.
        let in_gap = runs
            .iter()
            .filter(|r| r.0 > down_at && r.0 <= gap.0)
            .count();
        assert_eq!(
            in_gap, 1,
            "{name}: missed slots should give one run: {runs:?}"
        );
        assert!(
            gap.0 >= up_at - chrono::Duration::seconds(1),
            "{name}: {runs:?}"
        );
        match name {
            "once" => assert_eq!(gap.1, "fired", "{runs:?}"),
            _ => assert_eq!(gap.1, "skipped", "{runs:?}"),
        }
        // And the schedule runs normally again.
        assert!(
            runs.iter().filter(|r| r.0 > gap.0).count() >= 2,
            "{name}: {runs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn role_based_schedules_follow_a_promote_and_clusters_get_default_backups() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    // The hosts live as long as the test.
    let (_a, _b) = app.mariadb_pair().await.unwrap();
    let (configured, _) = app
        .client
        .actions("server=dbb&kind=db_configure_slave")
        .await
        .unwrap();
    let log = app.log(configured[0].id).await;
    assert!(
        log.contains("Default backup schedules created: shop-backup-10min, shop-backup-daily"),
        "{log}"
    );
    let tenmin = app
        .client
        .get("/v1/schedules/shop-backup-10min")
        .await
        .unwrap();
    let daily = app
        .client
        .get("/v1/schedules/shop-backup-daily")
        .await
        .unwrap();
    assert_eq!(
        tenmin["target"],
        json!({"cluster": "shop", "role": "slave"})
    );
    assert_eq!(
        daily["target"],
        json!({"cluster": "shop", "role": "master"})
    );
    assert_eq!(
        (tenmin["kind"].clone(), daily["params"].clone()),
        (json!("db_backup"), json!({"tag": "daily"}))
    );
    // The random minute: "0 M/10 * * * *" and "0 MM H * * *" with M = MM mod 10.
    let m10: u32 = tenmin["cron"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches("/10")
        .parse()
        .unwrap();
    let mm: u32 = daily["cron"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(m10, mm % 10, "{tenmin} {daily}");

    app.client
        .post(
            "/v1/schedules",
            &json!({"name": "slave-status", "target": {"cluster": "shop", "role": "slave"},
                    "kind": "db_status", "every_s": 1}),
        )
        .await
        .unwrap();
    let on = |server: &'static str| {
        let pool = app.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM actions a JOIN schedules s ON s.id = a.schedule_id
                 WHERE s.name = 'slave-status' AND a.server = $1",
            )
            .bind(server)
            .fetch_one(&pool)
            .await
            .unwrap();
            n > 0
        }
    };
    assert!(crate::eventually(Duration::from_secs(10), async || on("dbb").await).await);
    let (p, log) = app.act("dbb", "db_promote", json!({})).await.unwrap();
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(log.contains("Backup of the new master queued"), "{log}");
    // dba is the slave now: the schedule follows.
    assert!(crate::eventually(Duration::from_secs(10), async || on("dba").await).await);
    let backup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM actions WHERE server = 'dbb' AND kind = 'db_backup' AND params->>'tag' = 'after-promote'
           AND submitted_by = 'system:after-promote'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(backup, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_rejected_with_the_field() {
    let app = TestApp::spawn().await.unwrap();
    let ok = json!({"name": "n", "target": {"server": "s1"}, "kind": "run_script",
                    "params": {"script": "true"}, "every_s": 60});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let mut both = with("cron", json!("* * * * *"));
    both["every_s"] = json!(5);
    for (body, field) in [
        (with("name", json!("no spaces")), "name"),
        (with("kind", json!("reboot")), "kind"),
        (with("params", json!({"script": 5})), "params.script"),
        (with("target", json!({"cluster": "shop"})), "target.role"),
        (with("target", json!({})), "target"),
        (with("every_s", json!(0)), "every_s"),
        (both, "cron"),
        (with("cron", json!("61 * * * *")), "cron"),
        (with("jitter_s", json!(-1)), "jitter_s"),
        (with("catch_up", json!("all")), "catch_up"),
    ] {
        let err = app.client.post("/v1/schedules", &body).await.unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{body}: {err:?}"
        );
    }
    assert_eq!(app.client.get("/v1/schedules").await.unwrap(), json!([]));
    app.client.post("/v1/schedules", &ok).await.unwrap();
    let err = app.client.post("/v1/schedules", &ok).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    let err = app
        .client
        .patch("/v1/schedules/n", &json!({"every_s": -5}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let changed = app
        .client
        .patch("/v1/schedules/n", &json!({"cron": "0 15 3 * * *"}))
        .await
        .unwrap();
    assert_eq!(
        (changed["cron"].clone(), changed["every_s"].clone()),
        (json!("0 15 3 * * *"), json!(null))
    );
    app.client.delete("/v1/schedules/n").await.unwrap();
    assert_eq!(
        app.client
            .get("/v1/schedules/n")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}
