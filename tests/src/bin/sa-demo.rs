//! `sa-demo`: the main job on local test hosts. Starts two test hosts (own loopback address and
//! sshd each), `sa-api` and two `sa-worker` processes, registers the hosts, submits a few script
//! actions and prints their logs. Then the story we come from, on three MariaDB test hosts and an
//! S3 emulator: master and slave configured, a backup of the slave to S3, the master dies, the
//! cluster's watcher fails it over on its own (the master record on a loopback Knot moves, shown
//! before and after), and the spare is seeded from the backup (`--no-db` skips it). Prints the URLs to look at; `--keep` leaves it all running until
//! Ctrl-C. Run it through `scripts/demo.sh`, which builds the binaries first.

use std::time::{Duration, Instant};

use clap::Parser;
use client::Client;
use serde_json::json;
use shared::Config;
use testbed::{
    ec2::Ec2Bed,
    hosts::{client_key, TestHost},
    procs::{create_token, Proc},
    services::Knot,
};

const TOKEN_FILE: &str = "/tmp/sa-demo.token";

#[derive(Parser)]
struct Args {
    /// Keep the api, workers and hosts running until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Skip the database scene (MariaDB test hosts and the S3 emulator).
    #[arg(long)]
    no_db: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg = Config::load(None)?;
    cfg.ssh_key = Some(client_key()?);
    // S3 and EC2 on one emulator; the bed boots what is launched there as test hosts.
    let bed = if args.no_db {
        None
    } else {
        let bed = Ec2Bed::start().await?;
        bed.configure(&mut cfg);
        Some(bed)
    };
    let hosts = [TestHost::start()?, TestHost::start()?];
    for (i, h) in hosts.iter().enumerate() {
        println!("test host web{}: sshd on {}:22", i + 1, h.address);
    }
    // The demo's store outlives it: an admin token the api writes on a first start goes to a
    // file of its own, and the demo makes a token of its own each run.
    let first_admin = std::path::PathBuf::from("/tmp/sa-demo-admin.token");
    let _ = std::fs::remove_file(&first_admin);
    cfg.admin_token_file = Some(first_admin);
    let _api = Proc::spawn("sa-api", "sa-demo-api", &cfg)?;
    let client = Client::new(&cfg.api_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.healthy().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "sa-api did not start; see /tmp/sa-demo-api.log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let token = create_token(
        &cfg,
        &format!("demo-{stamp}"),
        "admin",
        &["--expires-in", "7d"],
    )?;
    let _ = std::fs::remove_file(TOKEN_FILE);
    shared::secrets::write_private(std::path::Path::new(TOKEN_FILE), &token)?;
    let client = client.with_token(&token);
    println!("token demo-{stamp} (admin, 7 days) written to {TOKEN_FILE}");
    let mut workers = Vec::new();
    for w in 1..=2u16 {
        let mut wc = cfg.clone();
        wc.worker_name = Some(format!("demo-worker-{w}"));
        wc.metrics_listen = ([127, 0, 0, 1], 9100 + w).into();
        workers.push(Proc::spawn(
            "sa-worker",
            &format!("sa-demo-worker{w}"),
            &wc,
        )?);
    }
    println!(
        "sa-api on {} and 2 workers started (logs in /tmp/sa-demo-*.log)\n",
        cfg.api_url
    );

    for (i, h) in hosts.iter().enumerate() {
        let name = format!("web{}", i + 1);
        // Hosts are new on every run: replace an older registration.
        if client.get(&format!("/v1/servers/{name}")).await.is_ok() {
            client.delete(&format!("/v1/servers/{name}")).await?;
        }
        client.add_server(&h.server_json(&name)).await?;
    }

    type Job<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let jobs: [Job; 5] = [
        (
            "web1",
            "echo \"running on $(hostname) as $(id -un)\"; uptime",
            &[],
        ),
        (
            "web1",
            "for i in 1 2 3; do echo \"step $i\"; sleep 0.5; done",
            &[],
        ),
        (
            "web2",
            "echo \"Hello, $WHO\"",
            &[("WHO", "world'; $(echo injected)")],
        ),
        (
            "web2",
            "echo 'checking disk' && echo 'disk full' >&2 && exit 3",
            &[],
        ),
        (
            "web1",
            "echo 'runs after the steps: one action at a time per server'",
            &[],
        ),
    ];
    let mut ids = Vec::new();
    for (server, script, env) in jobs {
        let a = client.run_script(server, script, env).await?;
        println!("submitted action {} on {server}: {script}", a.id);
        ids.push(a.id);
    }
    println!();
    for id in &ids {
        let a = client.wait(*id, Duration::from_secs(60)).await?;
        println!(
            "── action {} on {} — {}{} ──",
            a.id,
            a.server,
            a.status,
            a.exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        );
        print!("{}", client.log(*id, 0).await?.text);
        println!();
    }
    let run = fleet_scene(&client).await?;
    // Held to the end: `--keep` leaves the database hosts up too.
    let _db_hosts = match &bed {
        Some(bed) => Some(db_scene(&client, bed).await?),
        None => None,
    };
    let base = &cfg.api_url;
    println!("Look at (every /v1 request and the viewer need the demo's token):");
    println!("  export SA_TOKEN=$(cat {TOKEN_FILE})");
    println!(
        "  {base}/ui/actions               the log viewer: paste the token when it asks (--keep)"
    );
    println!("  curl -H \"Authorization: Bearer $SA_TOKEN\" {base}/v1/audit   who did what");
    println!("  {base}/v1/actions               actions, newest first");
    println!(
        "  {base}/v1/actions/{}/log         one action's log",
        ids[0]
    );
    println!("  {base}/v1/servers/web1          a server and its lock");
    println!("  {base}/ui/runs/{run}                the fleet run's grid");
    println!("  {base}/metrics                  api metrics");
    println!("  http://127.0.0.1:9101/metrics   worker metrics");
    println!(
        "  sactl actions list; sactl logs {}; sactl run web1 --wait -- 'uptime'; sactl audit",
        ids[0]
    );
    if args.keep {
        println!("\nRunning until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
    }
    drop(workers);
    Ok(())
}

/// The incident of the 2007 logs, replayed without a person: a master dies, the watcher fails
/// the cluster over on its own, the master record on a DNS server (Knot on loopback) moves, and
/// the spare becomes a slave from the backup; then a fresh slave is launched through the EC2
/// API with one request.
/// A stored script with an attachment, a deployment's input, and one run over both web hosts.
async fn fleet_scene(client: &Client) -> anyhow::Result<i64> {
    println!("── A stored script run across the fleet ──");
    let (_, rev) = client
        .post(
            "/v1/scripts",
            &serde_json::json!({"name": "motd", "description": "install the message of the day",
                "body": "install -m 0644 \"$ATTACH_DIR/motd.txt\" \"$SA_HOST_DIR/motd\"\necho \"$GREETING from $(hostname): $(cat \"$SA_HOST_DIR/motd\")\"",
                "inputs": [{"name": "GREETING", "type": "text", "default": "hello"}]}),
        )
        .await?;
    println!("POST /v1/scripts motd: revision {}", rev["revision"]);
    let (_, rev) = client
        .put_bytes(
            "/v1/scripts/motd/attachments/motd.txt",
            b"ServerActions was here\n".to_vec(),
        )
        .await?;
    println!(
        "PUT  /v1/scripts/motd/attachments/motd.txt: revision {}, sha256 {}",
        rev["revision"], rev["attachments"][0]["sha256"]
    );
    client
        .post(
            "/v1/deployments",
            &serde_json::json!({"name": "demo", "inputs": {"GREETING": "good morning"}}),
        )
        .await?;
    for s in ["web1", "web2"] {
        client
            .patch(
                &format!("/v1/servers/{s}"),
                &serde_json::json!({"deployment": "demo"}),
            )
            .await?;
    }
    let made = client
        .create_run(
            &serde_json::json!({"target": {"deployment": "demo"}, "kind": "run_script",
            "params": {"script_ref": {"name": "motd"}}, "concurrency": 1}),
        )
        .await?;
    let id = made["run"]["id"].as_i64().unwrap_or_default();
    println!(
        "POST /v1/runs {{\"target\": {{\"deployment\": \"demo\"}}, ...}}: run {id}, actions {}",
        made["actions"]
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = client.run(id).await?;
        if !run["finished_at"].is_null() {
            break run;
        }
        anyhow::ensure!(Instant::now() < deadline, "run {id} did not finish in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("run {id}: {}", run["counts"]);
    if let Some(first) = run["actions"][0]["id"].as_i64() {
        print!("{}", client.log(first, 0).await?.text);
    }
    println!();
    Ok(id)
}

async fn db_scene(client: &Client, bed: &Ec2Bed) -> anyhow::Result<(Vec<TestHost>, Knot)> {
    let cluster = format!("shop{}", chrono::Utc::now().format("%H%M%S"));
    println!("── The incident: cluster {cluster} on MariaDB test hosts db1 (master), db2 (slave), db3 (spare) ──");
    let mut db = Vec::new();
    for i in 1..=3u32 {
        let h = TestHost::start()?.with_mariadb()?;
        let name = format!("db{i}");
        if client.get(&format!("/v1/servers/{name}")).await.is_ok() {
            client.delete(&format!("/v1/servers/{name}")).await?;
        }
        let mut server = h.db_server_json(&name);
        if i == 3 {
            server["tags"] = json!({"spare_for": cluster});
        }
        client.add_server(&server).await?;
        println!("test host {name}: sshd and mariadbd on {}", h.address);
        db.push(h);
    }
    // No default backup schedules: the demo's hosts are gone when it ends.
    let c = json!({"cluster": cluster, "default_schedules": false});
    act(
        client,
        "db1",
        "db_configure_master",
        &json!({"cluster": cluster}),
        false,
    )
    .await?;
    db[0].sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40));
         INSERT INTO shop.orders (item) SELECT CONCAT('item ', seq) FROM mysql.seq_1_to_10000",
    )?;
    act(client, "db2", "db_configure_slave", &c, false).await?;
    act(
        client,
        "db2",
        "db_backup",
        &json!({"strategy": "mariabackup", "tag": "10min"}),
        false,
    )
    .await?;
    // The master record on a real DNS server, changed by signed RFC 2136 updates; automatic
    // failover on.
    let knot = Knot::start("shop.test")?;
    knot.set("db", &db[0].address.to_string())?;
    client
        .post(
            "/v1/secrets",
            &json!({"name": format!("{cluster}-tsig"), "value": knot.key}),
        )
        .await?;
    client
        .patch(
            &format!("/v1/clusters/{cluster}"),
            &json!({"auto_failover": true, "failover_block_s": 600,
                    "dns": {"provider": "rfc2136", "zone": "shop.test", "server": knot.addr.to_string(),
                            "key_name": knot.key_name, "key_ref": format!("{cluster}-tsig"),
                            "name": "db", "ttl": 1}}),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&format!("/v1/clusters/{cluster}")).await?["failover"]["analysis"] != "ok" {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the watcher never saw {cluster} healthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{cluster} is watched (auto_failover on; spare db3). Knot at {} answers db.shop.test A {}",
        knot.addr,
        knot.address("db")
    );
    db[0]
        .sql("INSERT INTO shop.orders (item) SELECT 'after the backup' FROM mysql.seq_1_to_500")?;
    let pos = db[0].sql("SELECT @@gtid_binlog_pos")?;
    db[1].sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
    println!(
        "db1 has {} orders; now it dies (mariadbd and sshd killed).\n",
        db[0].sql("SELECT COUNT(*) FROM shop.orders")?
    );
    let killed = Instant::now();
    db[0].kill();
    let failover = loop {
        // The demo's store is kept between runs: this cluster's failover, not an older one.
        let v = client
            .get("/v1/actions?kind=db_failover&server=db1&limit=5")
            .await?;
        let ours = v["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["params"]["cluster"] == json!(cluster));
        if let Some(id) = ours.and_then(|a| a["id"].as_i64()) {
            break id;
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "no automatic failover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "the watcher declared db1 dead and submitted failover action {failover} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let a = client.wait(failover, Duration::from_secs(180)).await?;
    println!(
        "── action {} db_failover on db1 (by {}) — {} ──",
        a.id, a.submitted_by, a.status
    );
    print!("{}", client.log(a.id, 0).await?.text);
    anyhow::ensure!(
        a.status == shared::Status::Succeeded,
        "the failover did not succeed"
    );
    println!(
        "\nKnot at {} now answers db.shop.test A {} ({:.1} s after the kill)\n",
        knot.addr,
        knot.address("db"),
        killed.elapsed().as_secs_f64()
    );
    let record = client.get(&format!("/v1/clusters/{cluster}")).await?;
    println!(
        "GET /v1/clusters/{cluster}: master {}, slaves {}, timeline:",
        record["master"], record["slaves"]
    );
    for e in record["events"].as_array().into_iter().flatten().rev() {
        println!(
            "  {} {}",
            e["at"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default()
        );
    }
    let spare = a.result.as_ref().map(|r| r["spare"]["action"].clone());
    let spare = spare
        .and_then(|s| s.as_i64())
        .ok_or_else(|| anyhow::anyhow!("no spare action"))?;
    let s = client.wait(spare, Duration::from_secs(180)).await?;
    println!(
        "\n── action {} db_configure_slave on db3 (the spare, by {}) — {} ──",
        s.id, s.submitted_by, s.status
    );
    print!("{}", client.log(s.id, 0).await?.text);
    anyhow::ensure!(
        s.status == shared::Status::Succeeded,
        "the spare was not configured"
    );
    db[1].sql("INSERT INTO shop.orders (item) VALUES ('written on the new master')")?;
    let pos = db[1].sql("SELECT @@gtid_binlog_pos")?;
    db[2].sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
    println!(
        "orders on db2 (new master): {}, on db3 (new slave, seeded from the backup): {}\n",
        db[1].sql("SELECT COUNT(*) FROM shop.orders")?,
        db[2].sql("SELECT COUNT(*) FROM shop.orders")?
    );
    launch_slave(client, bed, &cluster, &db[1]).await?;
    // The demo's hosts are gone when it ends: no schedules for them.
    let schedules = client.get("/v1/schedules").await?;
    for sc in schedules["schedules"].as_array().into_iter().flatten() {
        if sc["target"]["cluster"] == json!(cluster) {
            if let Some(n) = sc["name"].as_str() {
                client.delete(&format!("/v1/schedules/{n}")).await?;
            }
        }
    }
    Ok((db, knot))
}

/// "We launched a fresh slave with another button press": a launch profile for the bed's
/// subnet, the cluster launching from it, and one `POST /v1/servers/launch`.
async fn launch_slave(
    client: &Client,
    bed: &Ec2Bed,
    cluster: &str,
    master: &TestHost,
) -> anyhow::Result<()> {
    let mut profile = bed.profile(true);
    profile["name"] = json!(format!("{cluster}-db"));
    client.post("/v1/launch-profiles", &profile).await?;
    client
        .patch(
            &format!("/v1/clusters/{cluster}"),
            &json!({"launch_profile": format!("{cluster}-db")}),
        )
        .await?;
    if client.get("/v1/servers/db4").await.is_ok() {
        client.delete("/v1/servers/db4").await?;
    }
    let (_, v) = client
        .post(
            "/v1/servers/launch",
            &json!({"name": "db4", "cluster": cluster}),
        )
        .await?;
    let id = v["action"]["id"].as_i64().unwrap_or_default();
    println!("POST /v1/servers/launch {{\"name\": \"db4\", \"cluster\": \"{cluster}\"}}: db4 is {}, action {id}", v["server"]["state"]);
    let a = client.wait(id, Duration::from_secs(300)).await?;
    println!("── action {id} db_launch_slave on db4 — {} ──", a.status);
    print!("{}", client.log(id, 0).await?.text);
    anyhow::ensure!(
        a.status == shared::Status::Succeeded,
        "the fresh slave was not launched"
    );
    let db4 = client.get("/v1/servers/db4").await?;
    let address = db4["address"].as_str().unwrap_or_default().to_string();
    let pos = master.sql("SELECT @@gtid_binlog_pos")?;
    let orders = bed
        .with_host(&address, |h| {
            h.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
            h.sql("SELECT COUNT(*) FROM shop.orders")
        })
        .ok_or_else(|| anyhow::anyhow!("nothing runs at db4's address {address}"))??;
    println!(
        "db4 is instance {} at {address} (state {}, host key pinned at launch); orders there: {orders}\n",
        db4["instance_id"].as_str().unwrap_or_default(),
        db4["state"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// Submit `kind` on `server`, wait, and print its log (whole, or its status line).
async fn act(
    client: &Client,
    server: &str,
    kind: &str,
    params: &serde_json::Value,
    whole: bool,
) -> anyhow::Result<()> {
    let a = client
        .submit(&json!({"server": server, "kind": kind, "params": params}))
        .await?;
    let a = client.wait(a.id, Duration::from_secs(180)).await?;
    let log = client.log(a.id, 0).await?.text;
    println!("── action {} {kind} on {server} — {} ──", a.id, a.status);
    if whole || a.status != shared::Status::Succeeded {
        print!("{log}");
        println!();
    }
    anyhow::ensure!(
        a.status == shared::Status::Succeeded,
        "{kind} on {server} did not succeed"
    );
    Ok(())
}
