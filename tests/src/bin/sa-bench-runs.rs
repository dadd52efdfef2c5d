//! `sa-bench-runs`: fleet runs (`POST /v1/runs`), in one run on this machine
//! (`scripts/bench-runs.sh`, which builds the binaries and installs Ansible).
//!
//! (A) Fan-out of `uname -a` to `--fanout-hosts` (100) test hosts: one run through the api and
//! two `sa-worker` processes, cold (no SSH connection open yet) and warm (the same again);
//! Ansible's ad-hoc `raw` module with ControlPersist and pipelining, cold (fresh control
//! directory) and warm; and plain `ssh` under `xargs -P`. Wall times and the ratios
//! Ansible/ours. Ansible is the `ansible` at `SA_BENCH_ANSIBLE` (skipped when unset).
//! (B) The control plane at fleet scale: one run whose target names each of `--hosts` (10)
//! servers `--names-per-host` (300) times (3000 no-op actions, each server's in order, as
//! sa-bench's (c) submits them one request each) at concurrency C = `--concurrency` (16),
//! submit → finished_at, against the native-mux floor of sa-bench's (b): as many `true` over
//! one openssh native-mux session per host, C in flight. `--rounds` (2) runs of it.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context};
use clap::Parser;
use serde_json::{json, Value};
use testbed::{
    app::TestApp,
    hosts::{client_key, TestHost, LOGIN_USER},
    procs::Proc,
};

#[derive(Parser)]
struct Args {
    /// Test hosts of the fan-out (A).
    #[arg(long, default_value_t = 100)]
    fanout_hosts: usize,
    /// Action slots of each of the two workers (2 x 50: as many in flight as Ansible's forks).
    #[arg(long, default_value_t = 50)]
    worker_concurrency: usize,
    /// Test hosts of (B).
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// Times each server is named in (B)'s run: hosts x names-per-host actions.
    #[arg(long, default_value_t = 300)]
    names_per_host: usize,
    /// The run's concurrency C in (B), and the floor's commands in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Runs over the same servers in (B).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Only run these parts (a, b).
    #[arg(long, default_value = "ab")]
    parts: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (part_a, part_b) = (args.parts.contains('a'), args.parts.contains('b'));
    let key = client_key()?;
    let wanted = [
        if part_a { args.fanout_hosts } else { 0 },
        if part_b { args.hosts } else { 0 },
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let started = Instant::now();
    eprintln!("sa-bench-runs: starting {wanted} test hosts");
    let hosts: Vec<TestHost> = (0..wanted)
        .map(|_| TestHost::start())
        .collect::<Result<_, _>>()?;
    eprintln!(
        "sa-bench-runs: {} test hosts up in {:.1} s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );
    let worker_concurrency = args.worker_concurrency.max(1);
    let app = TestApp::spawn_with(|c| {
        c.worker_concurrency = worker_concurrency;
        // The production default (the test bed's 10 is for many tests in parallel).
        c.db_max_connections = 20;
    })
    .await?;
    let workers = Workers::start(&app, 2)?;
    wait_consumers(&app, 2).await?;
    eprintln!(
        "sa-bench-runs: api and 2 sa-worker processes ({worker_concurrency} slots each) ready"
    );
    if part_a {
        fan_out(&app, &hosts[..args.fanout_hosts], &key).await?;
    }
    if part_b {
        fleet(&app, &hosts[..args.hosts], &key, &args, &workers).await?;
    }
    // Drops, in this order: the workers, the app (its database), the hosts (their sshd trees:
    // every SSH connection to them, Ansible's masters too).
    drop(workers);
    drop(app);
    drop(hosts);
    Ok(())
}

/// The benchmark's `sa-worker` processes (the release binaries beside this one), each with its
/// own SSH control directory, stopped and their directories removed on drop.
struct Workers {
    procs: Vec<Proc>,
    dirs: Vec<PathBuf>,
}

impl Workers {
    fn start(app: &TestApp, n: usize) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let mut w = Self {
            procs: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..n {
            let mut cfg = app.cfg.clone();
            let dir = PathBuf::from(format!("/tmp/sa-ssh-runs-{id}-w{i}"));
            cfg.worker_name = Some(format!("runs-w{i}-{id}"));
            cfg.metrics_listen = ([127, 0, 0, 1], 0).into();
            cfg.ssh_control_dir = Some(dir.clone());
            w.dirs.push(dir);
            w.procs.push(Proc::spawn(
                "sa-worker",
                &format!("sa-bench-runs-worker{i}-{id}"),
                &cfg,
            )?);
        }
        Ok(w)
    }

    /// SSH masters open in each worker's control directory.
    fn masters(&self) -> Vec<usize> {
        self.dirs
            .iter()
            .map(|d| {
                std::fs::read_dir(d).map_or(0, |rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .starts_with(".ssh-connection")
                                && e.file_type().is_ok_and(|t| t.is_dir())
                        })
                        .count()
                })
            })
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.procs.clear();
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Wait (60 s at most) until `n` consumers take from the actions queue: the workers are up, so
/// a timed run does not include their start.
async fn wait_consumers(app: &TestApp, n: u32) -> anyhow::Result<()> {
    let conn = shared::queue::connect(&app.cfg.amqp_url, "sa-bench-runs-probe").await?;
    let ch = conn.create_channel().await?;
    app.topology.declare(&ch).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = ch
            .queue_declare(
                app.topology.queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        if q.consumer_count() >= n {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {} of {n} workers consume after 60 s: see /tmp/sa-bench-runs-worker*.log",
            q.consumer_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close(200, "probe done".into()).await;
    Ok(())
}

/// How a run's end is noticed.
#[derive(Clone, Copy)]
enum Poll {
    /// `GET /v1/runs/{id}` every 20 ms.
    Api,
    /// The run's row every 20 ms (for runs of thousands of actions, whose GET, listing them
    /// all, would itself load the api being measured).
    Db,
}

/// Submit the run `body` (expecting `expect` actions) and wait (`limit`) for its finished_at:
/// the seconds from before the POST until the end was seen, and the run (`GET /v1/runs/{id}`).
/// Fails unless every action succeeded.
async fn run_and_wait(
    app: &TestApp,
    body: &Value,
    expect: usize,
    poll: Poll,
    limit: Duration,
) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let (status, v) = app.client.post("/v1/runs", body).await?;
    ensure!(status == 202, "POST /v1/runs answered {status}: {v}");
    let id = v["run"]["id"]
        .as_i64()
        .with_context(|| format!("no run id in the answer: {v}"))?;
    let actions = v["actions"].as_array().map_or(0, Vec::len);
    ensure!(
        actions == expect,
        "run {id} has {actions} actions, not {expect}"
    );
    let path = format!("/v1/runs/{id}");
    let deadline = started + limit;
    let took = loop {
        let done = match poll {
            Poll::Api => !app.client.get(&path).await?["finished_at"].is_null(),
            Poll::Db => {
                sqlx::query_scalar::<_, bool>(
                    "SELECT finished_at IS NOT NULL FROM runs WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&app.pool)
                .await?
            }
        };
        if done {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() >= deadline {
            let v = app.client.get(&path).await?;
            bail!(
                "run {id} not finished after {} s: counts {}",
                limit.as_secs(),
                v["counts"]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run = app.client.get(&path).await?;
    let ok = run["counts"]["succeeded"].as_u64().unwrap_or(0) as usize;
    if ok != expect {
        let failed: Vec<String> = run["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["status"] != "succeeded")
            .take(5)
            .map(|a| format!("{} {} {}", a["server"], a["status"], a["error"]))
            .collect();
        bail!(
            "run {id}: {ok} of {expect} actions succeeded (counts {}); e.g. {}",
            run["counts"],
            failed.join("; ")
        );
    }
    if let (Some(c), Some(f)) = (run["created_at"].as_str(), run["finished_at"].as_str()) {
        if let (Ok(c), Ok(f)) = (
            c.parse::<chrono::DateTime<chrono::Utc>>(),
            f.parse::<chrono::DateTime<chrono::Utc>>(),
        ) {
            eprintln!(
                "    run {id}: {took:.2} s wall (server side created_at → finished_at {:.2} s)",
                (f - c).as_seconds_f64()
            );
        }
    }
    Ok((took, run))
}

/// (A) `uname -a` on every host: ours cold and warm, Ansible cold and warm, xargs ssh.
async fn fan_out(app: &TestApp, hosts: &[TestHost], key: &Path) -> anyhow::Result<()> {
    let n = hosts.len();
    let names: Vec<String> = (0..n).map(|i| format!("h{i:03}")).collect();
    for (name, h) in names.iter().zip(hosts) {
        app.add_host(name, h).await?;
    }
    let body = json!({"target": {"servers": names}, "kind": "run_script",
                      "params": {"script": "uname -a"}});
    let limit = Duration::from_secs(300);
    eprintln!("(A) ServerActions cold: one run over {n} servers, no SSH connection open yet");
    let (cold, _) = run_and_wait(app, &body, n, Poll::Api, limit).await?;
    eprintln!("(A) ServerActions cold: {cold:.2} s");
    let (warm, _) = run_and_wait(app, &body, n, Poll::Api, limit).await?;
    eprintln!("(A) ServerActions warm: {warm:.2} s");
    let ansible_times = match std::env::var_os("SA_BENCH_ANSIBLE").filter(|v| !v.is_empty()) {
        Some(bin) => Some(ansible(Path::new(&bin), hosts, key).await?),
        None => {
            eprintln!(
                "(A) Ansible skipped: SA_BENCH_ANSIBLE (the path of `ansible`) is unset; \
                 scripts/bench-runs.sh installs it and sets it"
            );
            None
        }
    };
    let xargs = xargs_ssh(hosts, key).await?;
    eprintln!("(A) xargs ssh: {xargs:.2} s");
    let ansible_text = ansible_times.map_or_else(
        || "Ansible skipped (SA_BENCH_ANSIBLE unset)".to_string(),
        |(c, w)| format!("Ansible raw cold {c:.2} s, warm {w:.2} s"),
    );
    println!(
        "fan-out uname -a to {n} hosts: ServerActions cold {cold:.2} s, warm {warm:.2} s; \
         {ansible_text}; xargs ssh {xargs:.2} s"
    );
    match ansible_times {
        Some((c, w)) => println!(
            "ratios: cold Ansible/ours {:.1}x (target >= 2x), warm Ansible/ours {:.1}x (target >= 10x); \
             xargs ssh/ours cold {:.1}x",
            c / cold,
            w / warm,
            xargs / cold
        ),
        None => println!("ratios: xargs ssh/ours cold {:.1}x", xargs / cold),
    }
    Ok(())
}

/// Ansible ad-hoc `raw` over `hosts` (forks = all of them, ControlPersist, pipelining): (cold,
/// warm) seconds, cold with a fresh control directory, warm right after with the same one.
async fn ansible(bin: &Path, hosts: &[TestHost], key: &Path) -> anyhow::Result<(f64, f64)> {
    let n = hosts.len();
    let dir = tempfile::Builder::new()
        .prefix("sa-ans-")
        .tempdir_in("/tmp")?;
    let inventory = dir.path().join("inventory");
    let mut text = String::new();
    for (i, h) in hosts.iter().enumerate() {
        text.push_str(&format!(
            "h{i:03} ansible_host={} ansible_user={LOGIN_USER} ansible_ssh_private_key_file={}\n",
            h.address,
            key.display()
        ));
    }
    text.push_str(
        "\n[all:vars]\n\
         ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n",
    );
    std::fs::write(&inventory, text)?;
    let control = dir.path().join("cp");
    std::fs::create_dir(&control)?;
    let local_tmp = dir.path().join("tmp");
    std::fs::create_dir(&local_tmp)?;
    let config = dir.path().join("ansible.cfg");
    std::fs::write(
        &config,
        format!(
            "[defaults]\n\
             host_key_checking = False\n\
             forks = {n}\n\
             timeout = 30\n\
             \n\
             [ssh_connection]\n\
             pipelining = True\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n\
             control_path_dir = {}\n",
            control.display()
        ),
    )?;
    let once = || {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["all", "-i"])
            .arg(&inventory)
            .args(["-m", "raw", "-a", "uname -a", "-f"])
            .arg(n.to_string())
            .env("ANSIBLE_CONFIG", &config)
            .env("ANSIBLE_LOCAL_TEMP", &local_tmp)
            // ansible-core refuses to start without a UTF-8 locale.
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8");
        cmd
    };
    eprintln!("(A) Ansible raw cold: {bin:?}, {n} forks, fresh control directory");
    let cold = timed(&mut once(), "ansible (cold)", Duration::from_secs(300)).await?;
    eprintln!("(A) Ansible raw cold: {cold:.2} s");
    let warm = timed(&mut once(), "ansible (warm)", Duration::from_secs(300)).await?;
    eprintln!("(A) Ansible raw warm: {warm:.2} s");
    Ok((cold, warm))
}

/// `xargs -P n ssh ... uname -a` over the hosts' addresses: one new connection each.
async fn xargs_ssh(hosts: &[TestHost], key: &Path) -> anyhow::Result<f64> {
    let list = tempfile::NamedTempFile::new()?;
    let addresses: String = hosts.iter().map(|h| format!("{}\n", h.address)).collect();
    std::fs::write(list.path(), addresses)?;
    let mut cmd = tokio::process::Command::new("xargs");
    cmd.arg("-a")
        .arg(list.path())
        .arg("-P")
        .arg(hosts.len().to_string())
        .args(["-I", "{}", "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{LOGIN_USER}@{{}}"))
        .args(["uname", "-a"]);
    eprintln!(
        "(A) xargs -P {} ssh: one new connection per host",
        hosts.len()
    );
    timed(&mut cmd, "xargs ssh", Duration::from_secs(300)).await
}

/// Run `cmd` to its end (killed after `limit`): its wall seconds; fails unless it exits 0.
async fn timed(
    cmd: &mut tokio::process::Command,
    what: &str,
    limit: Duration,
) -> anyhow::Result<f64> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("{what}: not done within {} s", limit.as_secs()))?
        .with_context(|| format!("running {what}"))?;
    let took = started.elapsed().as_secs_f64();
    if !out.status.success() {
        let tail = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
    Ok(took)
}

/// (B) One run of hosts x names-per-host no-op actions at concurrency C, `--rounds` times,
/// against the native-mux floor.
async fn fleet(
    app: &TestApp,
    hosts: &[TestHost],
    key: &Path,
    args: &Args,
    workers: &Workers,
) -> anyhow::Result<()> {
    let c = args.concurrency.max(1);
    let total = hosts.len() * args.names_per_host;
    let kh = tempfile::NamedTempFile::new()?;
    let lines: String = hosts
        .iter()
        .map(|h| format!("{} {}\n", h.address, h.host_key()))
        .collect();
    std::fs::write(kh.path(), lines)?;
    eprintln!(
        "(B) native-mux floor: {total} `true` over {} sessions, {c} in flight",
        hosts.len()
    );
    let floor = tokio::time::timeout(
        Duration::from_secs(600),
        testbed::floors::native_mux(hosts, key, kh.path(), c, total),
    )
    .await
    .map_err(|_| anyhow!("the native-mux floor took over 600 s"))??;
    eprintln!("(B) native-mux floor: {floor:.1} execs/s");

    // Ten servers, each named `names_per_host` times in the run's target: one action per entry,
    // as sa-bench's (c) submits them round-robin, but created by one request.
    for (i, h) in hosts.iter().enumerate() {
        app.client
            .add_server(&h.server_json(&format!("b{i}")))
            .await?;
    }
    let mut names = Vec::with_capacity(total);
    for _ in 0..args.names_per_host {
        for i in 0..hosts.len() {
            names.push(format!("b{i}"));
        }
    }
    let body = json!({"target": {"servers": names}, "kind": "run_script",
                      "params": {"script": ":"}, "concurrency": c});
    for r in 1..=args.rounds.max(1) {
        eprintln!("(B) run {r}: {total} no-op actions, concurrency {c}");
        let (took, _) =
            run_and_wait(app, &body, total, Poll::Db, Duration::from_secs(1800)).await?;
        let rate = total as f64 / took;
        let masters = workers
            .masters()
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" + ");
        let note = if r == 1 {
            "run 1: each worker's first action on a server opens its SSH connection".to_string()
        } else {
            format!("run {r}: connections open")
        };
        println!(
            "{total} no-op actions at C={c}: {rate:.1} actions/s = {:.2}x the native-mux floor \
             ({floor:.1}/s) (target >= 0.6x)  [{note}; {took:.2} s; SSH masters open {masters}]",
            rate / floor
        );
    }
    Ok(())
}
