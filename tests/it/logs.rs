//! Running scripts: env passed without injection, output streamed while the script runs,
//! exit codes, stderr, large outputs stored whole and in order, leases visible in the API.

use std::time::Duration;

use shared::Status;

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_and_names_cannot_inject_commands() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let nasty = [
        ("QUOTE", "it's \"quoted\"; touch $SA_HOST_DIR/pwned1"),
        (
            "SUBST",
            "$(touch $SA_HOST_DIR/pwned2)`touch $SA_HOST_DIR/pwned3`",
        ),
        ("NEWLINE", "line1\ntouch $SA_HOST_DIR/pwned4\nline3"),
        ("BACKSLASH", "\\' ; exit 9 #"),
    ];
    let script = "printf '%s|' \"$QUOTE\" \"$SUBST\" \"$NEWLINE\" \"$BACKSLASH\"; echo";
    let a = app.client.run_script("web1", script, &nasty).await.unwrap();
    let a = app.wait(a.id).await;
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    let expected = format!(
        "{}|{}|{}|{}|",
        nasty[0].1, nasty[1].1, nasty[2].1, nasty[3].1
    );
    assert!(log.contains(&expected), "values changed on the way:\n{log}");
    for f in ["pwned1", "pwned2", "pwned3", "pwned4"] {
        assert!(!host.dir.join(f).exists(), "{f} was created: injection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_live_and_results_are_recorded() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let worker = app.spawn_worker().await.unwrap();

    // Live: lines show up while the script is still running.
    let slow = app
        .client
        .run_script(
            "web1",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.3; done",
            &[],
        )
        .await
        .unwrap();
    let seen_live = eventually(Duration::from_secs(20), async || {
        let a = app.client.action(slow.id).await.unwrap();
        let log = app.log(slow.id).await;
        a.status == Status::Running && log.contains("tick 2\n")
    })
    .await;
    assert!(
        seen_live,
        "no output while running: {}",
        app.log(slow.id).await
    );
    // The lease is visible while it runs, held by the worker.
    let server = app.client.get("/v1/servers/web1").await.unwrap();
    assert_eq!(server["lock"]["action_id"], slow.id, "{server}");
    assert_eq!(server["lock"]["holder"], worker.name.as_str(), "{server}");
    // A second action waits, with the holder shown, while the first runs.
    let queued = app
        .client
        .run_script("web1", "echo second", &[])
        .await
        .unwrap();
    let parked = eventually(Duration::from_secs(10), async || {
        app.client.action(queued.id).await.unwrap().status == Status::Waiting
    })
    .await;
    assert!(parked, "second action did not wait");
    let v = app
        .client
        .get(&format!("/v1/actions/{}", queued.id))
        .await
        .unwrap();
    assert_eq!(v["waiting_on"], slow.id, "{v}");
    assert_eq!(v["lock"]["holder"], worker.name.as_str(), "{v}");
    let a = app.wait(slow.id).await;
    assert_eq!(a.status, Status::Succeeded);
    let log = app.log(slow.id).await;
    let ticks: Vec<&str> = log.lines().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(ticks.len(), 10, "{log}");
    assert_eq!(app.wait(queued.id).await.status, Status::Succeeded);
    assert!(app
        .log(queued.id)
        .await
        .contains(&format!("held by action {}", slow.id)));

    // ?after=SEQ returns only the rest.
    let all = app.client.log(slow.id, 0).await.unwrap();
    let rest = app.client.log(slow.id, 3).await.unwrap();
    let expected: Vec<&str> = all.text.lines().skip(3).collect();
    assert_eq!(rest.text.lines().collect::<Vec<_>>(), expected);
    assert_eq!(rest.last_seq, all.last_seq);

    // Exit codes and stderr.
    let failing = app
        .client
        .run_script("web1", "echo oops >&2; exit 3", &[])
        .await
        .unwrap();
    let a = app.wait(failing.id).await;
    assert_eq!((a.status, a.exit_code), (Status::Failed, Some(3)));
    let log = app.log(failing.id).await;
    assert!(log.contains("\noops\n"), "{log}");
    assert!(log.contains("Server action failed: exit code 3"), "{log}");
    let missing = app
        .client
        .run_script("web1", "no-such-command-here", &[])
        .await
        .unwrap();
    let a = app.wait(missing.id).await;
    assert_eq!(
        (a.status, a.exit_code),
        (Status::Failed, Some(127)),
        "{}",
        app.log(missing.id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_is_stored_whole_and_in_order() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let n = 200_000;
    // Tabs and backslashes on every line (batches this large are stored with COPY), a NUL
    // byte, a carriage return inside a line.
    let script =
        format!(r"seq {n} | sed 's/$/\tx\\y/'; seq 3 >&2; printf 'n\000ul\n'; printf 'a\rb\n'");
    let a = app.client.run_script("web1", &script, &[]).await.unwrap();
    let a = app
        .client
        .wait(a.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(a.status, Status::Succeeded);
    // Sequence numbers are 1..=total with no gap, and stdout lines are 1..=n in order.
    let (count, max): (i64, i32) =
        sqlx::query_as("SELECT count(*), max(seq) FROM action_log WHERE action_id = $1")
            .bind(a.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(count, max as i64, "gap in sequence numbers");
    let stdout: Vec<String> = sqlx::query_scalar(
        "SELECT line FROM action_log WHERE action_id = $1 AND stream = 1 ORDER BY seq",
    )
    .bind(a.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stdout.len(), n + 2);
    for (i, l) in stdout[..n].iter().enumerate() {
        assert_eq!(*l, format!("{}\tx\\y", i + 1), "line {i}");
    }
    assert_eq!(stdout[n], "n\u{FFFD}ul");
    assert_eq!(stdout[n + 1], "a\rb");
    let text = app.log(a.id).await;
    assert_eq!(text.lines().count() as i64, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_caps_is_cut_marked_and_counted() {
    let mut app = TestApp::spawn_with(|c| {
        c.log_max_bytes = 20_000;
        c.log_line_max = 1024;
    })
    .await
    .unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();

    // More than the action may store: the first 20,000 bytes are kept, the rest counted.
    let (a, log) = app
        .act(
            "web1",
            "run_script",
            serde_json::json!({"script": "seq 100000"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, shared::Status::Succeeded, "{log}");
    let kept: usize = log
        .lines()
        .filter(|l| l.parse::<u32>().is_ok())
        .map(|l| l.len() + 1)
        .sum();
    assert!(kept > 15_000 && kept <= 20_000, "{kept}");
    let total = (1..=100_000u32)
        .map(|n| n.to_string().len() + 1)
        .sum::<usize>();
    let closing = format!(
        "Output cut: {} more bytes ({} lines) were not stored",
        total - kept,
        100_000 - log.lines().filter(|l| l.parse::<u32>().is_ok()).count()
    );
    assert!(
        log.contains(&closing),
        "{closing}\n{}",
        &log[log.len().saturating_sub(400)..]
    );

    // A long line is cut with a mark; bytes that are not UTF-8 are shown, not lost.
    let (a, log) = app
        .act(
            "web1",
            "run_script",
            serde_json::json!({"script": "head -c 2500 /dev/zero | tr '\\0' x; echo; printf 'a\\377b\\n'"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, shared::Status::Succeeded, "{log}");
    let xs: Vec<&str> = log.lines().filter(|l| l.starts_with("xxx")).collect();
    assert_eq!(xs.len(), 3, "{log}");
    assert_eq!(xs[0], format!("{} [line continues]", "x".repeat(1024)));
    assert_eq!(xs[2], "x".repeat(2500 - 2048));
    assert!(log.lines().any(|l| l == "a\\xffb"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_the_log_is_bounded_in_bytes() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    // 100 lines of 64 KiB: 6.4 MiB of text.
    let script = "head -c 6553600 /dev/zero | tr '\\0' x; echo";
    let (a, _) = app
        .act("web1", "run_script", serde_json::json!({"script": script}))
        .await
        .unwrap();
    assert_eq!(a.status, Status::Succeeded);
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = app
            .client
            .get(&format!(
                "/v1/actions/{}/lines?after={after}&limit=1000",
                a.id
            ))
            .await
            .unwrap();
        let lines = page["lines"].as_array().unwrap().clone();
        let Some(last) = lines.last() else { break };
        after = last["seq"].as_i64().unwrap();
        let bytes: usize = lines
            .iter()
            .map(|l| l["text"].as_str().unwrap().len())
            .sum();
        pages.push((lines.len(), bytes));
    }
    let xs: usize = pages.iter().map(|p| p.1).sum();
    assert!(xs >= 6_553_600, "{pages:?}");
    assert!(pages.len() >= 2, "one page held it all: {pages:?}");
    // A page stops once it holds 4 MiB (it may end with the line that crosses it).
    assert!(
        pages.iter().all(|p| p.1 <= 4 * 1024 * 1024 + 70 * 1024),
        "{pages:?}"
    );
}

/// Follow `id` as a server-sent-events client: the sequence numbers it received, and whether
/// it got the `end` event.
async fn sse_follow(url: String, token: String) -> (Vec<i32>, bool) {
    sse_follow_counted(url, token, Default::default()).await
}

/// [`sse_follow`], adding one to `connected` once the api accepted it.
async fn sse_follow_counted(
    url: String,
    token: String,
    connected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Vec<i32>, bool) {
    let mut resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (mut text, mut seqs) = (String::new(), Vec::new());
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: end") {
                return (seqs, true);
            }
            if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
                seqs.push(id.trim().parse().unwrap());
            }
        }
    }
    (seqs, false)
}

/// The api's `sa_log_tail_queries_total`.
async fn tail_queries(client: &client::Client) -> f64 {
    let text = client.metrics().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sa_log_tail_queries_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_live_tails_share_one_poller_and_the_next_is_refused() {
    const CLIENTS: usize = 500;
    let mut app = TestApp::spawn_with(|c| c.sse_max = CLIENTS).await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let (api, client) = app.start_api_process("tails").await.unwrap();
    let a = app
        .client
        .run_script(
            "web1",
            "for i in $(seq 1 120); do echo line $i; sleep 0.1; done",
            &[],
        )
        .await
        .unwrap();
    let url = client.url(&format!("/v1/actions/{}/log", a.id));
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let followers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let follow = sse_follow_counted(url.clone(), app.token.clone(), connected.clone());
            tokio::spawn(follow)
        })
        .collect();
    // Once all are connected, the next one is refused.
    assert!(
        eventually(Duration::from_secs(30), async || connected
            .load(std::sync::atomic::Ordering::SeqCst)
            == CLIENTS)
        .await,
        "the {CLIENTS} followers did not all connect"
    );
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&app.token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "the tail beyond SA_SSE_MAX was not refused"
    );
    assert!(r.text().await.unwrap().contains("SA_SSE_MAX"));
    // While they all follow the running action, the store sees one poller's queries.
    let before = tail_queries(&client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_s = (tail_queries(&client).await - before) / 3.0;
    assert!(
        app.client.action(a.id).await.unwrap().status == Status::Running,
        "the action ended too soon for the measure"
    );
    assert!(
        per_s <= 40.0,
        "{per_s} tail queries/s for {CLIENTS} followers"
    );
    let mut got = Vec::new();
    for f in followers {
        got.push(f.await.unwrap());
    }
    let done = app.wait(a.id).await;
    assert_eq!(done.status, Status::Succeeded);
    let last: i32 = sqlx::query_scalar("SELECT max(seq) FROM action_log WHERE action_id = $1")
        .bind(a.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Every follower got every line once, in order, then `end`.
    for (seqs, ended) in &got {
        assert!(*ended, "a follower got no end event");
        assert_eq!(*seqs, (1..=last).collect::<Vec<_>>());
    }
    let rss_mib = api.peak_rss_kib().unwrap() / 1024;
    assert!(
        rss_mib <= 128,
        "api peak RSS {rss_mib} MiB with {CLIENTS} tails"
    );
    println!("{CLIENTS} tails: {per_s:.1} poller queries/s, api peak RSS {rss_mib} MiB");
}

/// What the api answers for an action's log: the text, a page, the tail, a search, and the
/// live stream (which, for an ended action, is the whole log and `end`).
async fn log_views(app: &TestApp, id: i64) -> Vec<String> {
    let mut views = vec![app.log(id).await];
    for q in [
        "after=0&limit=100",
        "after=2000&limit=10",
        "tail=5",
        "q=line%20299",
    ] {
        let v = app
            .client
            .get(&format!("/v1/actions/{id}/lines?{q}"))
            .await
            .unwrap();
        views.push(v.to_string());
    }
    let url = app.client.url(&format!("/v1/actions/{id}/log"));
    let (seqs, ended) = sse_follow(url, app.token.clone()).await;
    views.push(format!("{} lines, end: {ended}", seqs.len()));
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_logs_move_to_the_bucket_and_read_the_same() {
    let moto = testbed::services::Moto::start().await.unwrap();
    let mut app = TestApp::spawn_with(|c| {
        moto.configure(c);
        c.log_retention_days = 7;
    })
    .await
    .unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let script = "for i in $(seq 1 3000); do echo line $i; done; echo done >&2";
    let old = app.client.run_script("web1", script, &[]).await.unwrap();
    let recent = app.client.run_script("web1", script, &[]).await.unwrap();
    for id in [old.id, recent.id] {
        assert_eq!(app.wait(id).await.status, Status::Succeeded);
    }
    let before = log_views(&app, old.id).await;
    assert!(before[0].contains("line 3000"), "{}", before[0]);
    // The first ended eight days ago; a new worker's archiver finds it at once.
    sqlx::query("UPDATE actions SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(old.id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.spawn_worker().await.unwrap();
    let count = async |id: i64| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM action_log WHERE action_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(30), async || count(old.id).await == 0).await,
        "the old log's lines are still in the store"
    );
    assert!(
        count(recent.id).await > 3000,
        "the recent log was moved too"
    );
    let store = worker::s3::Bucket::from_config(&app.cfg).await.unwrap();
    let objects = store.list("logs/").await.unwrap();
    assert_eq!(
        objects,
        vec![format!("logs/action-{}.jsonl.gz.000001", old.id)]
    );
    // Read back from the bucket, it is the same log.
    let after = log_views(&app, old.id).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
}
