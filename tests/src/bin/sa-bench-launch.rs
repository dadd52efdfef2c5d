//! `sa-bench-launch`: launching servers through the EC2 API, in one run on this machine
//! (`scripts/bench-launch.sh`). The EC2 is moto, and the test bed's hypervisor boots each
//! instance as a test host on its loopback address, so every step the worker takes is real
//! (EC2 calls, SSH with the pinned key, MariaDB); the hypervisor's own boot time is measured and
//! taken out of "launch → SSH ready".
//!
//! (1) `db_launch_slave` on a cluster with a backup, `--rounds` times: wall time, broken into
//! launch → SSH ready (minus the harness's boot), mysqld, seeding and catch-up.
//! (2) `--concurrent` launches at once: all ready, and the time until the last is ready.

use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Parser;
use serde_json::json;
use shared::Status;
use testbed::{app::TestApp, ec2::Ec2Bed};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 10)]
    concurrent: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bed = Ec2Bed::start().await?;
    let mut app = TestApp::spawn_with(|c| bed.configure(c)).await?;
    app.spawn_worker().await?;
    app.spawn_worker().await?;
    for (name, db) in [("plain", false), ("db", true)] {
        let mut p = bed.profile(db);
        p["name"] = json!(name);
        app.client.post("/v1/launch-profiles", &p).await?;
    }

    // (1) db_launch_slave.
    let (master, _slave) = app.mariadb_pair().await?;
    master.sql("INSERT INTO shop.orders SELECT seq, 'bench' FROM mysql.seq_101_to_100000")?;
    let (b, log) = app
        .act("dbb", "db_backup", json!({"strategy": "mariabackup"}))
        .await?;
    ensure!(b.status == Status::Succeeded, "backup: {log}");
    app.client
        .patch("/v1/clusters/shop", &json!({"launch_profile": "db"}))
        .await?;
    println!("(1) db_launch_slave, cluster with a backup of 100,000 rows");
    println!("round  wall_s  launch_to_ssh_s  harness_boot_s  ssh_minus_boot_s  mysqld_s  seed_catchup_s");
    let mut walls = Vec::new();
    let mut minus = Vec::new();
    for r in 0..args.rounds {
        let name = format!("dbl{r}");
        let t0 = Instant::now();
        let (_, v) = app
            .client
            .post(
                "/v1/servers/launch",
                &json!({"name": name, "cluster": "shop"}),
            )
            .await?;
        let id = v["action"]["id"].as_i64().unwrap_or_default();
        let a = app.client.wait(id, Duration::from_secs(300)).await?;
        let wall = t0.elapsed().as_secs_f64();
        ensure!(a.status == Status::Succeeded, "{}", app.log(id).await);
        let t = &a.result.as_ref().unwrap()["timings"];
        let server = app.client.get(&format!("/v1/servers/{name}")).await?;
        let instance = server["instance_id"].as_str().unwrap_or_default();
        let boot = bed.boot_times().get(instance).copied().unwrap_or(0.0);
        let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
        let to_ssh = f("request_s") + f("running_s") + f("ssh_s");
        println!(
            "{r:>5}  {wall:>6.2}  {to_ssh:>15.2}  {boot:>14.2}  {:>16.2}  {:>8.2}  {:>14.2}",
            to_ssh - boot,
            f("mysqld_s"),
            f("seed_s")
        );
        walls.push(wall);
        minus.push(to_ssh - boot);
    }
    println!(
        "median wall {:.2} s; launch → SSH ready minus the harness's boot, median {:.2} s",
        median(walls),
        median(minus)
    );

    // (2) concurrent plain launches.
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..args.concurrent {
        let (_, v) = app
            .client
            .post(
                "/v1/servers/launch",
                &json!({"name": format!("c{i}"), "profile": "plain"}),
            )
            .await?;
        ids.push(v["action"]["id"].as_i64().unwrap_or_default());
    }
    let mut ready = 0;
    let mut last = 0.0f64;
    for id in &ids {
        let a = app.client.wait(*id, Duration::from_secs(300)).await?;
        if a.status == Status::Succeeded {
            ready += 1;
            let end = (a.finished_at.unwrap_or_default() - a.created_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64();
            last = last.max(end);
        }
    }
    let instances = bed
        .instances()
        .await?
        .iter()
        .filter(|(_, _, tags)| tags.get("Name").is_some_and(|n| n.starts_with('c')))
        .count();
    println!(
        "(2) {} concurrent launches (2 workers): {ready} ready, {instances} instances in all; last ready {last:.2} s after its submission, all in {:.2} s",
        args.concurrent,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
