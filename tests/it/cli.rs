//! The real binaries: `sactl` against the api, actions run by an `sa-worker` process, and the
//! `/metrics` of both.

use std::process::Command;

use shared::Status;
use testbed::procs::{bin_dir, Proc};

use crate::{eventually, TestApp, TestHost};

pub(crate) fn sactl(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("sactl"))
        .env("SA_API_URL", &app.api_url)
        .env("SA_TOKEN", &app.token)
        .args(args)
        .output()
        .expect("sactl runs (cargo build --bins first)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sactl_and_sa_worker_process_end_to_end() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    let mut cfg = app.cfg.clone();
    cfg.worker_name = Some("proc-worker".into());
    cfg.metrics_listen = ([127, 0, 0, 1], free_port()).into();
    cfg.ssh_control_dir = Some(format!("/tmp/sa-ssh-cli{}", std::process::id()).into());
    let _worker = Proc::spawn(
        "sa-worker",
        &format!("sa-test-worker-{}", std::process::id()),
        &cfg,
    )
    .unwrap();

    let keyfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keyfile.path(), host.host_key()).unwrap();
    let addr = host.address.to_string();
    let key = keyfile.path().to_str().unwrap();
    let (code, out, err) = sactl(
        &app,
        &[
            "servers",
            "add",
            "web1",
            "--address",
            &addr,
            "--user",
            "satest",
            "--host-key-file",
            key,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = sactl(&app, &["servers", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("web1") && out.contains(&addr), "{out}");

    // --wait follows the log and exits with the script's exit code.
    let (code, out, err) = sactl(
        &app,
        &[
            "run",
            "web1",
            "--wait",
            "-e",
            "WHO=it's me",
            "--",
            "echo \"hi $WHO\"; exit 4",
        ],
    );
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("] : Executing: 'Executing action: run script'"),
        "{out}"
    );
    assert!(out.contains("\nhi it's me\n"), "{out}");
    assert!(out.contains("Server action failed: exit code 4"), "{out}");
    let (code, out, _) = sactl(&app, &["run", "web1", "--wait", "--", "true"]);
    assert_eq!(code, 0, "{out}");

    // Without --wait: the id; then logs and the list.
    let (code, out, _) = sactl(&app, &["run", "web1", "--", "echo from-sactl"]);
    assert_eq!(code, 0);
    let id: i64 = out.trim().parse().expect("an action id");
    assert_eq!(app.wait(id).await.status, Status::Succeeded);
    let (code, out, _) = sactl(&app, &["logs", &id.to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("\nfrom-sactl\n"), "{out}");
    let (code, out, _) = sactl(&app, &["actions", "list", "--server", "web1"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("run_script")).count(),
        3,
        "{out}"
    );
    assert!(out.contains("succeeded") && out.contains("failed"), "{out}");

    // Bad input: errors name the field, exit code 2, nothing submitted.
    let before = app.action_count().await;
    let (code, _, err) = sactl(&app, &["run", "web1", "-e", "NOEQUALS", "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("-e") && err.contains("NOEQUALS"), "{err}");
    let (code, _, err) = sactl(&app, &["run", "web1", "-e", "BAD-NAME=1", "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("field: params.env.BAD-NAME"), "{err}");
    let (code, _, err) = sactl(&app, &["run", "nosuch", "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("field: server"), "{err}");
    let (code, _, err) = sactl(&app, &["run", "web1"]);
    assert_eq!(code, 2);
    assert!(err.contains("script"), "{err}");
    assert_eq!(app.action_count().await, before);

    // Metrics: the api's and the worker process's.
    let api_metrics = app.client.metrics().await.unwrap();
    assert!(
        api_metrics.contains("sa_actions_submitted_total{kind=\"run_script\"} 3"),
        "{api_metrics}"
    );
    assert!(
        api_metrics.contains("sa_actions{kind=\"run_script\",status=\"succeeded\"} 2"),
        "{api_metrics}"
    );
    let url = format!("http://{}/metrics", cfg.metrics_listen);
    let got = eventually(std::time::Duration::from_secs(5), async || {
        reqwest::get(&url).await.is_ok()
    })
    .await;
    assert!(got, "worker metrics not served");
    let m = reqwest::get(&url).await.unwrap().text().await.unwrap();
    for needle in [
        "sa_actions_finished_total{kind=\"run_script\",status=\"succeeded\"} 2",
        "sa_actions_finished_total{kind=\"run_script\",status=\"failed\"} 1",
        "sa_action_duration_seconds_count{kind=\"run_script\"} 3",
        "sa_lock_wait_seconds_count 3",
        "sa_ssh_connect_seconds_count 1",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    let lines: f64 = m
        .lines()
        .find(|l| l.starts_with("sa_log_lines_written_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // 3 × (Executing, Process has the lock, closing line) + 2 lines of output.
    assert_eq!(lines, 11.0, "log lines written");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sactl_act_submits_any_kind_and_names_bad_params() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();

    // Any kind, params from -p (JSON where it parses) and --params; --wait follows the log.
    let (code, out, err) = sactl(
        &app,
        &[
            "act",
            "web1",
            "run_script",
            "--params",
            r#"{"env": {"N": "1"}}"#,
            "-p",
            "script=echo \"act $N\"; exit 3",
            "--wait",
        ],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("act 1"), "{out}");
    assert!(err.contains("(run_script) queued on web1"), "{err}");

    // Bad input: the API's field, or the CLI's own flag; nothing queued.
    let (code, _, err) = sactl(
        &app,
        &["act", "web1", "db_backup", "-p", "strategy=tarball"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("field: params.strategy"), "{err}");
    let (code, _, err) = sactl(&app, &["act", "web1", "run_script", "--params", "[1]"]);
    assert_eq!(code, 2);
    assert!(err.contains("--params: not a JSON object"), "{err}");
    let (code, _, err) = sactl(&app, &["act", "web1", "run_script", "-p", "script"]);
    assert_eq!(code, 2);
    assert!(err.contains("-p: \"script\" is not NAME=VALUE"), "{err}");
    let (actions, _) = app.client.actions("limit=10").await.unwrap();
    assert_eq!(actions.len(), 1, "only the good one was queued");

    // Backups and clusters are readable from the CLI too.
    let (code, out, err) = sactl(&app, &["backups", "list", "--cluster", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("    ID  LINEAGE"), "{out}");
    let (code, _, err) = sactl(&app, &["clusters", "show", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("nope"), "{err}");
}
