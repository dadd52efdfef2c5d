//! `sa-demo`: the main job on local test hosts. Starts two test hosts (own loopback address and
//! sshd each), `sa-api` and two `sa-worker` processes, registers the hosts, submits a few script
//! actions, prints their logs and the URLs to look at. `--keep` leaves it all running until
//! Ctrl-C. Run it through `scripts/demo.sh`, which builds the binaries first.

use std::time::{Duration, Instant};

use api::client::Client;
use clap::Parser;
use shared::Config;
use testbed::{
    hosts::{client_key, TestHost},
    procs::Proc,
};

#[derive(Parser)]
struct Args {
    /// Keep the api, workers and hosts running until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg = Config::load(None)?;
    cfg.ssh_key = Some(client_key()?);
    let hosts = [TestHost::start()?, TestHost::start()?];
    for (i, h) in hosts.iter().enumerate() {
        println!("test host web{}: sshd on {}:22", i + 1, h.address);
    }
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
    let base = &cfg.api_url;
    println!("Look at:");
    println!("  {base}/ui/actions               the log viewer (run with --keep to browse it)");
    println!("  {base}/v1/actions               actions, newest first");
    println!(
        "  {base}/v1/actions/{}/log         one action's log",
        ids[0]
    );
    println!("  {base}/v1/servers/web1          a server and its lock");
    println!("  {base}/metrics                  api metrics");
    println!("  http://127.0.0.1:9101/metrics   worker metrics");
    println!(
        "  sactl actions list; sactl logs {}; sactl run web1 --wait -- 'uptime'",
        ids[0]
    );
    if args.keep {
        println!("\nRunning until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
    }
    drop(workers);
    Ok(())
}
