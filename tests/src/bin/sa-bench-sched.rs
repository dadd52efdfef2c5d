//! `sa-bench-sched`: the scheduler's firing delay. Three `sa-api` replicas (processes) run 100
//! schedules with 1-second slots over 10 test hosts for `--seconds`; the delay of a run is its
//! action's `started_at` minus its slot. Prints p50/p99 (target p99 ≤ 1 s) and checks that every
//! slot of every schedule fired exactly once. `scripts/bench.sh` builds the binaries first.

use std::time::Duration;

use clap::Parser;
use serde_json::json;
use testbed::{app::TestApp, hosts::TestHost};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    schedules: usize,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut app = TestApp::spawn_with(|c| c.worker_concurrency = 32).await?;
    let hosts: Vec<TestHost> = (0..args.hosts)
        .map(|_| TestHost::start())
        .collect::<Result<_, _>>()?;
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("h{i}"), h).await?;
    }
    let _w1 = app.start_worker_process("sched-w1")?;
    let _w2 = app.start_worker_process("sched-w2")?;
    app.stop_api().await;
    let mut reps = Vec::new();
    for i in 0..args.replicas {
        reps.push(app.start_api_process(&format!("sched-api{i}")).await?);
    }
    for i in 0..args.schedules {
        reps[i % reps.len()]
            .1
            .post(
                "/v1/schedules",
                &json!({"name": format!("s{i}"), "target": {"server": format!("h{}", i % hosts.len())},
                        "kind": "run_script", "params": {"script": "true"}, "every_s": 1}),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    sqlx::query("UPDATE schedules SET enabled = false")
        .execute(&app.pool)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (runs, fired, distinct, p50, p99, max): (i64, i64, i64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE r.outcome = 'fired'),
                count(DISTINCT (r.schedule_id, r.slot)),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM a.started_at - r.slot))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM a.started_at - r.slot))::float8,
                max(EXTRACT(EPOCH FROM a.started_at - r.slot))::float8
         FROM schedule_runs r LEFT JOIN actions a ON a.id = r.action_id",
    )
    .fetch_one(&app.pool)
    .await?;
    let actions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM actions WHERE schedule_id IS NOT NULL")
            .fetch_one(&app.pool)
            .await?;
    println!(
        "(s) {} schedules, 1-second slots, {} api replicas, {} s: {runs} slot runs ({fired} fired, {} skipped), \
         {actions} actions, {distinct} distinct slots; firing delay (action start - slot) p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms (target p99 1000 ms: ratio {:.2})",
        args.schedules,
        args.replicas,
        args.seconds,
        runs - fired,
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3,
        p99
    );
    anyhow::ensure!(runs == distinct && actions == fired, "a slot fired twice");
    Ok(())
}
