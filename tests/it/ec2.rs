//! Servers launched on EC2 (moto), booted by the test bed's hypervisor (`testbed::ec2`) on
//! loopback addresses: real EC2 calls, SSH with the pinned key, scripts, MariaDB.

use std::time::Duration;

use serde_json::{json, Value};
use shared::Status;
use testbed::ec2::Ec2Bed;

use crate::{eventually, TestApp};

/// POST, with a refusal as its status and `{"field", "error"}`.
async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    match app.client.post(path, body).await {
        Ok(r) => r,
        Err(client::ClientError::Api {
            status,
            message,
            field,
        }) => (status, json!({"field": field, "error": message})),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// A bed, an app pointed at it with one worker, and the launch profiles `plain` and `db`.
async fn bed_and_app(workers: usize) -> (Ec2Bed, TestApp) {
    let bed = Ec2Bed::start().await.unwrap();
    let mut app = TestApp::spawn_with(|c| {
        bed.configure(c);
        c.lease_s = 3;
    })
    .await
    .unwrap();
    for _ in 0..workers {
        app.spawn_worker().await.unwrap();
    }
    for (name, db) in [("plain", false), ("db", true)] {
        let mut p = bed.profile(db);
        p["name"] = json!(name);
        let (code, body) = post(&app, "/v1/launch-profiles", &p).await;
        assert_eq!(code, 201, "{body}");
    }
    (bed, app)
}

/// `POST /v1/servers/launch` and wait for its action: (action, log, server).
async fn launch(app: &TestApp, body: Value) -> (shared::Action, String, Value) {
    let (code, v) = app.client.post("/v1/servers/launch", &body).await.unwrap();
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["server"]["state"], "launching", "{v}");
    let id = v["action"]["id"].as_i64().unwrap();
    let a = app.client.wait(id, Duration::from_secs(180)).await.unwrap();
    let log = app.log(id).await;
    let name = body["name"].as_str().unwrap();
    let server = app
        .client
        .get(&format!("/v1/servers/{name}"))
        .await
        .unwrap();
    (a, log, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launched_server_runs_scripts_with_its_pinned_host_key() {
    let (bed, app) = bed_and_app(1).await;
    let (a, log, server) = launch(
        &app,
        json!({"name": "web9", "profile": "plain", "tags": {"role": "web"}}),
    )
    .await;
    assert_eq!(a.status, Status::Succeeded, "{log}\n{:?}", bed.errors());
    assert_eq!(server["state"], "running", "{server}");
    let address = server["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("127.88."), "{server}");

    // The EC2 calls: one instance, tagged with the action, its name and the tags; the user data
    // hands over the host key the server pinned and the workers' login key; the client token.
    let instances = bed.instances().await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    let (id, state, tags) = &instances[0];
    assert_eq!(server["instance_id"], json!(id));
    assert_eq!(state, "running");
    assert_eq!(tags["serveractions:launch"], a.id.to_string());
    assert_eq!(tags["Name"], "web9");
    assert_eq!(
        (tags["role"].as_str(), tags["env"].as_str()),
        ("web", "test")
    );
    let data = bed.user_data(id).await.unwrap();
    let cfg: Value = serde_json::from_str(data.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    let pinned = server["host_key"].as_str().unwrap();
    assert_eq!(cfg["ssh_keys"]["ed25519_public"], pinned);
    assert!(cfg["ssh_keys"]["ed25519_private"]
        .as_str()
        .unwrap()
        .contains("BEGIN OPENSSH PRIVATE KEY"));
    let login =
        std::fs::read_to_string(testbed::hosts::client_key().unwrap().with_extension("pub"))
            .unwrap();
    assert!(
        login.starts_with(cfg["ssh_authorized_keys"][0].as_str().unwrap()),
        "{cfg}"
    );
    assert_eq!(
        bed.client_token(id).await.unwrap(),
        format!("serveractions-launch-{}", a.id)
    );
    // What the harness booted answers with exactly that key.
    let booted = bed.with_host(&address, |h| h.host_key()).unwrap();
    assert_eq!(booted, pinned);
    assert!(log.contains("Host key pinned: ssh-ed25519 "), "{log}");
    assert!(
        log.contains("SSH answers with the pinned host key"),
        "{log}"
    );
    let result = a.result.clone().unwrap();
    assert_eq!(result["instance_id"], json!(id), "{result}");

    // A script runs on it.
    let (x, xlog) = app
        .act(
            "web9",
            "run_script",
            json!({"script": "echo hello > \"$SA_HOST_DIR/hello\"; hostname >/dev/null; echo ok"}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{xlog}");
    assert_eq!(
        bed.with_host(&address, |h| h.read("hello")).unwrap(),
        "hello\n"
    );

    // The same address answering with another host key (sshd restarted with a new one, so
    // the open connection is gone too): refused with a clear error, nothing runs.
    bed.with_host(&address, |h| h.rekey()).unwrap().unwrap();
    let (x, xlog) = app
        .act(
            "web9",
            "run_script",
            json!({"script": "echo ran >> \"$SA_HOST_DIR/ran\""}),
        )
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed, "{xlog}");
    assert!(xlog.contains("Host key verification failed"), "{xlog}");
    assert_eq!(bed.with_host(&address, |h| h.read("ran")).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_launch_five_times_makes_one_instance_per_launch() {
    let (bed, app) = bed_and_app(0).await;
    // Where each victim dies: the log line it has written, then a delay.
    let points = [
        ("Launching an instance", 0),
        ("Launching an instance", 30),
        ("Launching an instance", 120),
        ("is running at", 0),
        ("Host key pinned", 0),
    ];
    for (i, (line, after_ms)) in points.into_iter().enumerate() {
        let victim = app.start_worker_process(&format!("victim{i}")).unwrap();
        let name = format!("app{i}");
        let (code, v) = app
            .client
            .post(
                "/v1/servers/launch",
                &json!({"name": name, "profile": "plain"}),
            )
            .await
            .unwrap();
        assert_eq!(code, 202, "{v}");
        let id = v["action"]["id"].as_i64().unwrap();
        let reached = eventually(Duration::from_secs(30), async || {
            app.log(id).await.contains(line)
        })
        .await;
        assert!(reached, "{}", app.log(id).await);
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        victim.signal("KILL");
        let survivor = app.start_worker(|_| {}).await.unwrap();
        let a = app.client.wait(id, Duration::from_secs(90)).await.unwrap();
        let log = app.log(id).await;
        survivor.stop().await;
        assert_eq!(a.status, Status::Succeeded, "{log}");
        let mine: Vec<_> = bed
            .instances()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, _, t)| t.get("serveractions:launch") == Some(&id.to_string()))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "kill {i} ({line} +{after_ms} ms): {mine:?}\n{log}"
        );
        let server = app
            .client
            .get(&format!("/v1/servers/{name}"))
            .await
            .unwrap();
        assert_eq!(server["state"], "running", "{server}");
        assert_eq!(server["instance_id"], json!(mine[0].0));
        if a.attempt > 1 {
            assert!(
                log.contains("made by an earlier attempt of this action is reused")
                    || !log.contains("Launching an instance of"),
                "{log}"
            );
        }
        println!("kill {i} at '{line}' +{after_ms} ms: attempt {}", a.attempt);
    }
}

/// 100 rows in `shop.orders` on master `dba` (a host of its own) and a slave, `shop` launching
/// from profile `db`.
async fn cluster(app: &TestApp) -> (testbed::TestHost, testbed::TestHost) {
    let pair = app.mariadb_pair().await.unwrap();
    app.client
        .patch("/v1/clusters/shop", &json!({"launch_profile": "db"}))
        .await
        .unwrap();
    pair
}

async fn rows(bed: &Ec2Bed, address: &str) -> String {
    let address = address.to_string();
    let mut last = String::new();
    for _ in 0..100 {
        last = bed
            .with_host(&address, |h| {
                h.sql("SELECT count(*), coalesce(sum(id), 0) FROM shop.orders")
            })
            .unwrap()
            .unwrap_or_default();
        if last == "101\t5151" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_launch_slave_seeds_from_the_master_then_from_a_backup() {
    let (bed, app) = bed_and_app(2).await;
    let (a, _b) = cluster(&app).await;

    // No backup yet: seeded from the master.
    let (x, log, server) = launch(&app, json!({"name": "dbc", "cluster": "shop"})).await;
    assert_eq!(x.status, Status::Succeeded, "{log}\n{:?}", bed.errors());
    assert_eq!(x.kind(), shared::ActionKind::DbLaunchSlave);
    assert!(
        log.contains("has no committed backup: seeding from its master"),
        "{log}"
    );
    assert!(log.contains("Launched and joined in "), "{log}");
    assert_eq!(
        (server["cluster"].as_str(), server["db_role"].as_str()),
        (Some("shop"), Some("slave")),
        "{server}"
    );
    a.sql("INSERT INTO shop.orders VALUES (101, 'after')")
        .unwrap();
    assert_eq!(
        rows(&bed, server["address"].as_str().unwrap()).await,
        "101\t5151"
    );

    // With a backup: seeded from it, then caught up.
    let (bk, blog) = app
        .act("dbb", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(bk.status, Status::Succeeded, "{blog}");
    let (x, log, server) = launch(&app, json!({"name": "dbd", "cluster": "shop"})).await;
    assert_eq!(x.status, Status::Succeeded, "{log}\n{:?}", bed.errors());
    assert!(log.contains("Seeding from backup "), "{log}");
    let result = x.result.clone().unwrap();
    assert_eq!(result["seeded"], "backup", "{result}");
    for k in ["request_s", "running_s", "ssh_s", "mysqld_s", "seed_s"] {
        assert!(result["timings"][k].as_f64().is_some(), "{k}: {result}");
    }
    assert_eq!(
        rows(&bed, server["address"].as_str().unwrap()).await,
        "101\t5151"
    );
    let view = app.client.get("/v1/clusters/shop").await.unwrap();
    let members: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        members.contains(&"dbc") && members.contains(&"dbd"),
        "{view}"
    );

    // Terminate: refused for the master; a launched slave's instance goes, and its host.
    let (code, body) = post(&app, "/v1/servers/dba/terminate", &json!({})).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = post(&app, "/v1/servers/dbc/terminate", &json!({})).await;
    assert_eq!(code, 202, "{body}");
    let t = app.wait(body["id"].as_i64().unwrap()).await;
    assert_eq!(t.status, Status::Succeeded, "{}", app.log(t.id).await);
    let dbc = app.client.get("/v1/servers/dbc").await.unwrap();
    assert_eq!(dbc["state"], "terminated", "{dbc}");
    let gone = eventually(Duration::from_secs(10), async || {
        !bed.runs(dbc["address"].as_str().unwrap())
    })
    .await;
    assert!(gone);
    let states: Vec<_> = bed
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|(i, s, _)| (i, s))
        .collect();
    assert!(
        states
            .iter()
            .any(|(i, s)| dbc["instance_id"] == json!(i) && s == "terminated"),
        "{states:?}"
    );
    // Nothing more runs there.
    let (code, body) = post(&app, "/v1/servers/dbc/terminate", &json!({})).await;
    assert_eq!(code, 409, "{body}");
    let (x, xlog) = app
        .act("dbc", "run_script", json!({"script": "true"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Failed);
    assert!(xlog.contains("server \"dbc\" is terminated"), "{xlog}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_launch_master_rebuilds_a_cluster_from_its_backup_alone() {
    let (bed, app) = bed_and_app(1).await;
    let mut a = testbed::TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("dba", &a).await.unwrap();
    a.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO shop.orders SELECT seq, 'v' FROM mysql.seq_1_to_101",
    )
    .unwrap();
    let (x, log) = app
        .act("dba", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let (bk, blog) = app
        .act("dba", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(bk.status, Status::Succeeded, "{blog}");
    app.client
        .patch("/v1/clusters/shop", &json!({"launch_profile": "db"}))
        .await
        .unwrap();

    // While the master is there, a master is not launched.
    let (code, body) = post(
        &app,
        "/v1/servers/launch",
        &json!({"name": "dbn", "cluster": "shop", "role": "master"}),
    )
    .await;
    assert_eq!(
        (code, body["field"].as_str()),
        (409, Some("role")),
        "{body}"
    );

    // The site is lost: only the backup is left.
    a.kill();
    app.client.delete("/v1/servers/dba").await.unwrap();
    let (x, log, server) = launch(&app, json!({"name": "dbn", "cluster": "shop", "role": "master", "backup": bk.result.as_ref().unwrap()["id"]})).await;
    assert_eq!(x.status, Status::Succeeded, "{log}\n{:?}", bed.errors());
    assert!(log.contains("Launched and restored as master in "), "{log}");
    assert_eq!(server["db_role"], "master", "{server}");
    let address = server["address"].as_str().unwrap().to_string();
    assert_eq!(rows(&bed, &address).await, "101\t5151");
    // Writable.
    let written = bed
        .with_host(&address, |h| {
            h.sql("INSERT INTO shop.orders VALUES (102, 'new'); SELECT @@read_only")
        })
        .unwrap()
        .unwrap();
    assert_eq!(written, "0");
    let view = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(view["master"], "dbn", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn launch_requests_and_profiles_name_their_bad_field() {
    let (bed, app) = bed_and_app(1).await;
    let bad = async |body: Value| post(&app, "/v1/servers/launch", &body).await;
    for (body, code, field) in [
        (json!({"name": "x1"}), 400, "profile"),
        (json!({"name": "x1", "profile": "nope"}), 400, "profile"),
        (json!({"name": "bad name", "profile": "plain"}), 400, "name"),
        (json!({"name": "launch", "profile": "plain"}), 400, "name"),
        (
            json!({"name": "x1", "profile": "plain", "role": "master"}),
            400,
            "role",
        ),
        (json!({"name": "x1", "cluster": "nope"}), 400, "cluster"),
        (
            json!({"name": "x1", "profile": "plain", "tags": {"serveractions:launch": "1"}}),
            400,
            "tags.serveractions:launch",
        ),
        (
            json!({"name": "x1", "profile": "plain", "bogus": 1}),
            400,
            "bogus",
        ),
    ] {
        let (c, v) = bad(body.clone()).await;
        assert_eq!((c, v["field"].as_str()), (code, Some(field)), "{body}: {v}");
    }
    // Launch kinds are not submitted through /v1/actions.
    let (c, v) = post(
        &app,
        "/v1/actions",
        &json!({"server": "x", "kind": "server_launch", "params": {"profile": "plain"}}),
    )
    .await;
    assert_eq!((c, v["field"].as_str()), (400, Some("kind")), "{v}");
    // A plain profile makes no DB servers.
    app.mariadb_pair().await.unwrap();
    app.client
        .patch("/v1/clusters/shop", &json!({"launch_profile": "plain"}))
        .await
        .unwrap();
    let (c, v) = bad(json!({"name": "x1", "cluster": "shop"})).await;
    assert_eq!((c, v["field"].as_str()), (400, Some("profile")), "{v}");
    // Nothing was registered or launched.
    assert!(app.client.get("/v1/servers/x1").await.is_err());
    assert!(bed.instances().await.unwrap().is_empty());

    // Profiles: a bad field named, a patch re-checked, one in use not deleted.
    let mut p = bed.profile(false);
    p["name"] = json!("p2");
    p["instance_type"] = json!("t3 micro");
    let (c, v) = post(&app, "/v1/launch-profiles", &p).await;
    assert_eq!(
        (c, v["field"].as_str()),
        (400, Some("instance_type")),
        "{v}"
    );
    let e = app
        .client
        .patch("/v1/launch-profiles/plain", &json!({"ssh_port": 0}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let v = app
        .client
        .patch("/v1/launch-profiles/plain", &json!({"ssh_port": 2222}))
        .await
        .unwrap();
    assert_eq!(v["spec"]["ssh_port"], 2222, "{v}");
    let e = app
        .client
        .delete("/v1/launch-profiles/plain")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    app.client.delete("/v1/launch-profiles/db").await.unwrap();
    let list = app.client.get("/v1/launch-profiles").await.unwrap();
    assert_eq!(list["profiles"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sactl_makes_a_profile_launches_and_terminates() {
    let (bed, app) = bed_and_app(1).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bed.profile(false).to_string()).unwrap();
    let path = file.path().to_str().unwrap();
    let sactl = |args: &[&str]| crate::cli::sactl(&app, args);
    let (code, out, err) = sactl(&["profiles", "add", "web", path]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = sactl(&["profiles", "list"]);
    assert!(code == 0 && out.contains(&bed.subnet_id), "{out}");
    let (code, out, err) = sactl(&[
        "servers",
        "launch",
        "web5",
        "--profile",
        "web",
        "--tag",
        "role=web",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("SSH answers with the pinned host key"),
        "{out}"
    );
    let (code, out, _) = sactl(&["servers", "list"]);
    assert!(
        code == 0
            && out
                .lines()
                .any(|l| l.starts_with("web5") && l.contains("running")),
        "{out}"
    );
    // A bad field is named.
    let (code, _, err) = sactl(&["servers", "launch", "web6", "--profile", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("profile"), "{err}");
    let (code, out, err) = sactl(&["servers", "terminate", "web5", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is terminated"), "{out}");
    let (_, out, _) = sactl(&["servers", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("web5") && l.contains("terminated")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_launched_master_is_fenced_by_stopping_its_instance() {
    let (bed, app) = bed_and_app(1).await;
    // A master launched empty, then a slave launched from it.
    let mut a = testbed::TestHost::start().unwrap().with_mariadb().unwrap();
    app.add_db_host("seed", &a).await.unwrap();
    a.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO shop.orders SELECT seq, 'v' FROM mysql.seq_1_to_101",
    )
    .unwrap();
    let (x, log) = app
        .act("seed", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let (bk, blog) = app
        .act("seed", "db_backup", json!({"strategy": "mariabackup"}))
        .await
        .unwrap();
    assert_eq!(bk.status, Status::Succeeded, "{blog}");
    a.kill();
    app.client.delete("/v1/servers/seed").await.unwrap();
    app.client
        .patch("/v1/clusters/shop", &json!({"launch_profile": "db"}))
        .await
        .unwrap();
    let (x, log, m) = launch(
        &app,
        json!({"name": "m1", "cluster": "shop", "role": "master"}),
    )
    .await;
    assert_eq!(x.status, Status::Succeeded, "{log}");
    let (x, log, s) = launch(&app, json!({"name": "s1", "cluster": "shop"})).await;
    assert_eq!(x.status, Status::Succeeded, "{log}");
    assert_eq!(
        rows(&bed, s["address"].as_str().unwrap()).await,
        "101\t5151"
    );

    // The master dies (its mariadbd and sshd, not its instance): the promote fences it by
    // stopping the instance, with no db_fence_command.
    let master_address = m["address"].as_str().unwrap().to_string();
    bed.with_host(&master_address, |h| h.kill()).unwrap();
    let a = app.client.promote_cluster("shop", false).await.unwrap();
    let a = app
        .client
        .wait(a.id, Duration::from_secs(120))
        .await
        .unwrap();
    let log = app.log(a.id).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Fencing m1: stopping its instance (ec2_stop)"),
        "{log}"
    );
    assert!(log.contains("Fenced m1: its instance is stopped."), "{log}");
    let states: Vec<_> = bed.instances().await.unwrap();
    assert!(
        states
            .iter()
            .any(|(i, st, _)| m["instance_id"] == json!(i) && st == "stopped"),
        "{states:?}"
    );
    let m1 = app.client.get("/v1/servers/m1").await.unwrap();
    assert_eq!(m1["state"], "stopped", "{m1}");
    let view = app.client.get("/v1/clusters/shop").await.unwrap();
    assert_eq!(view["master"], "s1", "{view}");
    let gone = eventually(Duration::from_secs(10), async || !bed.runs(&master_address)).await;
    assert!(gone, "the stopped instance's host still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_without_mysqld_gets_it_from_the_profiles_install_command() {
    let (bed, app) = bed_and_app(1).await;
    let mut p = bed.installing_profile();
    p["name"] = json!("bare");
    let (code, body) = post(&app, "/v1/launch-profiles", &p).await;
    assert_eq!(code, 201, "{body}");
    let pair = cluster(&app).await;
    let (x, log, server) = launch(
        &app,
        json!({"name": "dbi", "cluster": "shop", "profile": "bare"}),
    )
    .await;
    assert_eq!(x.status, Status::Succeeded, "{log}\n{:?}", bed.errors());
    assert!(
        log.contains("mysqld does not answer")
            && log.contains("installing it: /tmp/sa-testbed/install-mariadb"),
        "{log}"
    );
    assert!(log.contains("mariadb installed in "), "{log}");
    let address = server["address"].as_str().unwrap();
    assert!(bed
        .with_host(address, |h| h.read("db/my.cnf"))
        .unwrap()
        .contains("log-bin"));
    pair.0
        .sql("INSERT INTO shop.orders VALUES (101, 'after')")
        .unwrap();
    assert_eq!(rows(&bed, address).await, "101\t5151");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launch_runs_its_templates_boot_and_terminate_its_decommission() {
    let (bed, app) = bed_and_app(1).await;
    for (name, body) in [
        (
            "mark-boot",
            "echo booted > \"$SA_HOST_DIR/booted\"; echo \"boot of $(hostname)\"",
        ),
        ("drain", "echo draining; test -e \"$SA_HOST_DIR/booted\""),
    ] {
        let (code, v) = post(&app, "/v1/scripts", &json!({"name": name, "body": body})).await;
        assert_eq!(code, 201, "{v}");
    }
    let (code, v) = post(
        &app,
        "/v1/templates",
        &json!({"name": "web", "boot": [{"name": "mark-boot"}], "decommission": [{"name": "drain"}]}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let mut p = bed.profile(false);
    p["name"] = json!("booted");
    p["template"] = json!("web");
    let (code, v) = post(&app, "/v1/launch-profiles", &p).await;
    assert_eq!(code, 201, "{v}");

    let (a, log, server) = launch(&app, json!({"name": "web8", "profile": "booted"})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert_eq!(server["template"], "web", "{server}");
    let boot = a.result.as_ref().unwrap()["boot"]["action"]
        .as_i64()
        .unwrap();
    assert!(
        log.contains(&format!(
            "Server template web: its boot scripts run next (action {boot})."
        )),
        "{log}"
    );
    let b = app.wait(boot).await;
    let blog = app.log(boot).await;
    assert_eq!(b.status, Status::Succeeded, "{blog}");
    assert!(
        blog.contains("Step 1/1 of template web revision 1 boot: mark-boot revision 1"),
        "{blog}"
    );
    let address = server["address"].as_str().unwrap().to_string();
    let booted = bed.with_host(&address, |h| h.dir.join("booted").exists());
    assert_eq!(booted, Some(true));

    // Terminating runs the decommission list first.
    let (code, t) = post(&app, "/v1/servers/web8/terminate", &json!({})).await;
    assert_eq!(code, 202, "{t}");
    let t = app.wait(t["id"].as_i64().unwrap()).await;
    let tlog = app.log(t.id).await;
    assert_eq!(t.status, Status::Succeeded, "{tlog}");
    let drained = tlog
        .find("Step 1/1 of template web revision 1 decommission: drain")
        .expect(&tlog);
    assert!(tlog[drained..].contains("draining"), "{tlog}");
    let terminated = tlog.find("Terminating instance").expect(&tlog);
    assert!(drained < terminated, "{tlog}");
}
