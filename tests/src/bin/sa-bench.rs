//! `sa-bench`: the walking skeleton's benchmark, all in one run on this machine.
//!
//! (a) `ssh` with ControlMaster executing `true`, (b) the `openssh` crate's native-mux sessions
//! executing `true`, (c) no-op `run_script` actions through the api and two `sa-worker`
//! processes, all at the same total concurrency over the same test hosts; (d) a script printing
//! 1,000,000 lines against PostgreSQL COPY of the same lines, with the worker's peak RSS;
//! (e) recovery after a worker dies; (f) the viewer's reads; (g) what the token check costs
//! (the api with tokens against one without, in the same run); (h) hostile scripts (a 300 MB
//! line, 200 MB of binary, 20 million lines) and the peak RSS of the workers and the api.
//! Build the binaries first: `scripts/bench.sh` does it.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use client::Client;
use shared::{Config, Status};
use testbed::{
    hosts::{client_key, TestHost, LOGIN_USER},
    procs::Proc,
};

#[derive(Parser)]
struct Args {
    /// Test hosts.
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// Total concurrency C (split between the two workers in (c)).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Remote executions in (a) and (b).
    #[arg(long, default_value_t = 3000)]
    execs: usize,
    /// Actions in (c).
    #[arg(long, default_value_t = 3000)]
    actions: usize,
    /// Lines in (d).
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Lease length of the stack's workers, in seconds (part e measures recovery against it).
    #[arg(long, default_value_t = 10)]
    lease_s: u64,
    /// Actions in the store for (f)'s list timings (10000000: the issue-16 figure).
    #[arg(long, default_value_t = 100_000)]
    listed: i64,
    /// Only run these parts (a, b, c, d, e, f, g, h).
    #[arg(long, default_value = "abcdefgh")]
    parts: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = client_key()?;
    let hosts: Vec<TestHost> = (0..args.hosts)
        .map(|_| TestHost::start())
        .collect::<Result<_, _>>()?;
    println!(
        "sa-bench: {} test hosts, concurrency C = {}",
        hosts.len(),
        args.concurrency
    );
    let kh = tempfile::NamedTempFile::new()?;
    let lines: String = hosts
        .iter()
        .map(|h| format!("{} {}\n", h.address, h.host_key()))
        .collect();
    std::fs::write(kh.path(), lines)?;

    let mut a_rate = None;
    let mut b_rate = None;
    if args.parts.contains('a') {
        let r =
            bench_ssh_controlmaster(&hosts, &key, kh.path(), args.concurrency, args.execs).await?;
        println!("(a) ssh ControlMaster `true`:        {r:8.1} execs/s");
        a_rate = Some(r);
    }
    if args.parts.contains('b') {
        let r = testbed::floors::native_mux(&hosts, &key, kh.path(), args.concurrency, args.execs)
            .await?;
        println!("(b) openssh native-mux `true`:       {r:8.1} execs/s");
        b_rate = Some(r);
    }
    if ["c", "d", "e", "f", "g", "h"]
        .iter()
        .any(|p| args.parts.contains(p))
    {
        let mut stack = Stack::start(&hosts, args.concurrency, args.lease_s).await?;
        if args.parts.contains('c') {
            let (rate, p50, p99) = stack
                .throughput(&hosts, args.actions, args.concurrency)
                .await?;
            println!(
                "(c) no-op run_script actions:       {rate:8.1} actions/s  (N = {})",
                args.actions
            );
            println!(
                "    finished_at - created_at:        p50 {:.1} ms, p99 {:.1} ms",
                p50 * 1e3,
                p99 * 1e3
            );
            if let Some(a) = a_rate {
                println!("    (c)/(a) = {:.2}", rate / a);
            }
            if let Some(b) = b_rate {
                println!(
                    "    (c)/(b) = {:.2}; control plane per action ≈ {:.2} ms of wall time over the floor (at C = {})",
                    rate / b,
                    (1.0 / rate - 1.0 / b) * 1e3,
                    args.concurrency
                );
            }
        }
        let mut big = None;
        if args.parts.contains('d') {
            big = Some(stack.big_log(args.lines).await?);
        }
        if args.parts.contains('f') {
            stack.viewer(big, args.listed).await?;
        }
        if args.parts.contains('h') {
            stack.hostile().await?;
        }
        if args.parts.contains('g') {
            stack
                .auth_cost(&hosts, args.actions, args.concurrency)
                .await?;
        }
        if args.parts.contains('e') {
            stack.recovery(args.lease_s).await?;
        }
    }
    Ok(())
}

async fn bench_ssh_controlmaster(
    hosts: &[TestHost],
    key: &std::path::Path,
    known_hosts: &std::path::Path,
    c: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::Builder::new()
        .prefix("sa-cm-")
        .tempdir_in("/tmp")?;
    let base_args = |i: usize| -> Vec<String> {
        vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            "ControlPersist=60".into(),
            "-o".into(),
            format!("ControlPath={}/cm{i}", dir.path().display()),
            "-i".into(),
            key.display().to_string(),
            "-l".into(),
            LOGIN_USER.into(),
        ]
    };
    // Open the masters first, so that (a) like (b) measures reuse, not handshakes.
    for (i, h) in hosts.iter().enumerate() {
        let ok = tokio::process::Command::new("ssh")
            .args(base_args(i))
            .arg(h.address.to_string())
            .arg("true")
            .status()
            .await?;
        anyhow::ensure!(ok.success(), "ssh to {} failed", h.address);
    }
    let addrs: Vec<String> = hosts.iter().map(|h| h.address.to_string()).collect();
    let args: Vec<Vec<String>> = (0..hosts.len()).map(base_args).collect();
    let rate = testbed::floors::parallel(c, n, move |i| {
        let h = i % addrs.len();
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(&args[h]).arg(&addrs[h]).arg("true");
        async move {
            let s = cmd.status().await?;
            anyhow::ensure!(s.success(), "ssh exec failed");
            Ok(())
        }
    })
    .await?;
    for (i, h) in hosts.iter().enumerate() {
        let _ = tokio::process::Command::new("ssh")
            .args(base_args(i))
            .args(["-O", "exit"])
            .arg(h.address.to_string())
            .output()
            .await;
    }
    Ok(rate)
}

/// The real stack: one `sa-api` and two `sa-worker` processes on a fresh database.
struct Stack {
    client: Client,
    cfg: Config,
    pool: sqlx::PgPool,
    workers: Vec<Proc>,
    api: Proc,
    db_name: String,
}

impl Stack {
    async fn start(hosts: &[TestHost], c: usize, lease_s: u64) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let db_name = format!("sa_bench_{id}");
        let mut cfg = Config::load(None)?;
        cfg.database_url = testbed::app::database_url(&cfg, &db_name);
        cfg.queue_prefix = format!("sa-bench-{id}");
        cfg.ssh_key = Some(client_key()?);
        cfg.lease_s = lease_s;
        // (h) pushes hundreds of MB through: store 64 MiB of each, count the rest.
        cfg.log_max_bytes = 64 << 20;
        let port = free_port()?;
        cfg.listen = ([127, 0, 0, 1], port).into();
        cfg.api_url = format!("http://127.0.0.1:{port}");
        let token_file = std::env::temp_dir().join(format!("sa-bench-{id}.token"));
        cfg.admin_token_file = Some(token_file.clone());
        let (api, client) = start_api(&cfg, &format!("sa-bench-api-{id}")).await?;
        let token = std::fs::read_to_string(&token_file)?;
        let _ = std::fs::remove_file(&token_file);
        let client = client.with_token(&token);
        let mut workers = Vec::new();
        for w in 0..2 {
            let mut wc = cfg.clone();
            wc.worker_concurrency = (c / 2).max(1);
            wc.worker_name = Some(format!("bench-w{w}"));
            wc.metrics_listen = ([127, 0, 0, 1], free_port()?).into();
            workers.push(Proc::spawn(
                "sa-worker",
                &format!("sa-bench-worker{w}-{id}"),
                &wc,
            )?);
        }
        for (i, h) in hosts.iter().enumerate() {
            client
                .add_server(&h.server_json(&format!("bench{i}")))
                .await?;
        }
        let pool = sqlx::PgPool::connect(&cfg.database_url).await?;
        // Warm up: one action per server opens the SSH masters.
        let mut ids = Vec::new();
        for i in 0..hosts.len() {
            ids.push(
                client
                    .run_script(&format!("bench{i}"), "true", &[])
                    .await?
                    .id,
            );
        }
        for id in ids {
            let a = client.wait(id, Duration::from_secs(60)).await?;
            anyhow::ensure!(
                a.status == Status::Succeeded,
                "warm-up action {id} {}",
                a.status
            );
        }
        Ok(Self {
            client,
            cfg,
            pool,
            workers,
            api,
            db_name,
        })
    }

    async fn throughput(
        &self,
        hosts: &[TestHost],
        n: usize,
        c: usize,
    ) -> anyhow::Result<(f64, f64, f64)> {
        self.throughput_through(&self.client, hosts, n, c).await
    }

    /// (c) through `client`'s api: (actions/s, p50 s, p99 s of finished_at - created_at).
    async fn throughput_through(
        &self,
        client: &Client,
        hosts: &[TestHost],
        n: usize,
        c: usize,
    ) -> anyhow::Result<(f64, f64, f64)> {
        let first: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM actions")
            .fetch_one(&self.pool)
            .await?;
        let client = client.clone();
        let servers = hosts.len();
        let submitted = Instant::now();
        testbed::floors::parallel(c, n, move |i| {
            let client = client.clone();
            async move {
                client
                    .run_script(&format!("bench{}", i % servers), "true", &[])
                    .await?;
                Ok(())
            }
        })
        .await?;
        let submit_rate = n as f64 / submitted.elapsed().as_secs_f64();
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM actions WHERE id > $1 AND status IN ('queued','waiting','running')",
            )
            .bind(first)
            .fetch_one(&self.pool)
            .await?;
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ok, span, p50, p99): (i64, f64, f64, f64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    EXTRACT(EPOCH FROM max(finished_at) - min(created_at))::float8,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at))::float8,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at))::float8
             FROM actions WHERE id > $1",
        )
        .bind(first)
        .fetch_one(&self.pool)
        .await?;
        anyhow::ensure!(ok as usize == n, "only {ok} of {n} actions succeeded");
        println!("    (submission alone: {submit_rate:.0} actions/s over HTTP)");
        Ok((n as f64 / span, p50, p99))
    }

    /// (g) What the token check costs: (c) alternately through this api and a second one on the
    /// same store with `SA_INSECURE_NO_AUTH` (medians of 3 rounds each), then single GETs
    /// alternating between them (p50/p99 of each).
    async fn auth_cost(&self, hosts: &[TestHost], n: usize, c: usize) -> anyhow::Result<()> {
        let mut cfg = self.cfg.clone();
        let port = free_port()?;
        cfg.listen = ([127, 0, 0, 1], port).into();
        cfg.api_url = format!("http://127.0.0.1:{port}");
        cfg.insecure_no_auth = true;
        let (_open_api, open) = start_api(&cfg, "sa-bench-api-noauth").await?;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            on.push(self.throughput_through(&self.client, hosts, n, c).await?.0);
            off.push(self.throughput_through(&open, hosts, n, c).await?.0);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (on_r, off_r) = (median(&mut on), median(&mut off));
        println!(
            "(g) (c) with tokens: {on_r:.1} actions/s, without: {off_r:.1} (medians of 3 alternating rounds): {:.3}x (target >= 0.95x)",
            on_r / off_r
        );
        let id: i64 = sqlx::query_scalar("SELECT max(id) FROM actions")
            .fetch_one(&self.pool)
            .await?;
        let path = format!("/v1/actions/{id}");
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..4000 {
            let (client, into) = if i % 2 == 0 {
                (&self.client, &mut with)
            } else {
                (&open, &mut without)
            };
            let started = Instant::now();
            client.get(&path).await?;
            into.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let pct = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
        };
        let (w50, w99) = (pct(&mut with, 0.5), pct(&mut with, 0.99));
        let (o50, o99) = (pct(&mut without, 0.5), pct(&mut without, 0.99));
        println!(
            "    GET {path} x2000 each: with tokens p50 {w50:.3} ms p99 {w99:.3} ms; without p50 {o50:.3} ms p99 {o99:.3} ms; added p50 {:+.3} ms, p99 {:+.3} ms",
            w50 - o50,
            w99 - o99
        );
        Ok(())
    }

    /// SIGKILL the worker running an action; time until the next action on that server starts.
    async fn recovery(&mut self, lease_s: u64) -> anyhow::Result<()> {
        let long = self.client.run_script("bench1", "sleep 120", &[]).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let holder = loop {
            let a = self.client.action(long.id).await?;
            if let (Status::Running, Some(w)) = (a.status, a.worker) {
                break w;
            }
            anyhow::ensure!(Instant::now() < deadline, "the long action did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let idx: usize = holder.trim_start_matches("bench-w").parse()?;
        let next = self.client.run_script("bench1", "echo next", &[]).await?;
        self.workers[idx].signal("KILL");
        let killed_at = chrono::Utc::now();
        let next = self
            .client
            .wait(next.id, Duration::from_secs(lease_s * 3 + 30))
            .await?;
        anyhow::ensure!(
            next.status == Status::Succeeded,
            "next action {}",
            next.status
        );
        let took = (next.started_at.unwrap_or(killed_at) - killed_at).as_seconds_f64();
        println!(
            "(e) SIGKILL of the worker to the next action starting on its server: {took:.2} s \
             (lease {lease_s} s; target lease + 2 s = {} s; ratio {:.2})",
            lease_s + 2,
            took / (lease_s + 2) as f64
        );
        Ok(())
    }

    /// Server-side times the viewer depends on: the actions list over 100,000 actions, and the
    /// first page, the end and a search of the 1,000,000-line log of part (d).
    async fn viewer(&self, big: Option<i64>, listed: i64) -> anyhow::Result<()> {
        let loaded = Instant::now();
        sqlx::query(
            "INSERT INTO actions (server, kind, params, status, exit_code, created_at, started_at, finished_at, published_at)
             SELECT 'bench' || (g % 10), 'run_script', '{\"script\": \"true\"}',
                    CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'succeeded' END, CASE WHEN g % 7 = 0 THEN 1 ELSE 0 END,
                    now() - g * interval '1 second', now() - g * interval '1 second', now() - g * interval '1 second', now()
             FROM generate_series(1, $1) g",
        )
        .bind(listed)
        .execute(&self.pool)
        .await?;
        // What autovacuum does within a minute of such bulk loads.
        sqlx::query("ANALYZE actions").execute(&self.pool).await?;
        sqlx::query("ANALYZE action_log")
            .execute(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
            .fetch_one(&self.pool)
            .await?;
        println!(
            "(f) {listed} actions loaded and analyzed in {:.1} s",
            loaded.elapsed().as_secs_f64()
        );
        let middle: i64 =
            sqlx::query_scalar("SELECT id FROM actions ORDER BY id LIMIT 1 OFFSET $1")
                .bind(listed / 2)
                .fetch_one(&self.pool)
                .await?;
        let list = [
            "/v1/actions?limit=50".to_string(),
            "/v1/actions?status=failed&limit=50".to_string(),
            "/v1/actions?server=bench3&limit=50".to_string(),
            format!("/v1/actions?limit=50&before={middle}"),
            "/v1/actions?server=bench3&status=failed&limit=50".to_string(),
            "/v1/actions?kind=db_promote&limit=50".to_string(),
            "/v1/actions?status=cancelled&limit=50".to_string(),
        ];
        let (p50, p99) = self.time_gets(&list, 200).await?;
        println!("(f) actions list over {total} actions: p50 {:.1} ms, p99 {:.1} ms (target p99 <= 100 ms)", p50, p99);
        for path in &list {
            let (p50, p99) = self.time_gets(std::slice::from_ref(path), 10).await?;
            println!("    {path}: p50 {p50:.1} ms, p99 {p99:.1} ms");
        }
        let mut ms = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            self.client.metrics().await?;
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "    /metrics (counts by kind and status): median {:.1} ms",
            ms[2]
        );
        if let Some(id) = big {
            let (p50, p99) = self
                .time_gets(&[format!("/v1/actions/{id}/lines?after=0&limit=1000")], 50)
                .await?;
            println!("    first page of the 1M-line log: p50 {p50:.1} ms, p99 {p99:.1} ms (target <= 100 ms)");
            let (p50, p99) = self
                .time_gets(&[format!("/v1/actions/{id}/lines?tail=1000")], 50)
                .await?;
            println!("    its last page: p50 {p50:.1} ms, p99 {p99:.1} ms");
            let (p50, p99) = self
                .time_gets(&[format!("/v1/actions/{id}/lines?q=999990&limit=200")], 20)
                .await?;
            println!("    search in it: p50 {p50:.1} ms, p99 {p99:.1} ms (target <= 500 ms)");
        }
        Ok(())
    }

    /// Time `n` GETs cycling over `paths`; (p50, p99) in ms.
    async fn time_gets(&self, paths: &[String], n: usize) -> anyhow::Result<(f64, f64)> {
        let mut ms = Vec::with_capacity(n);
        for i in 0..n {
            let started = Instant::now();
            self.client.get(&paths[i % paths.len()]).await?;
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Ok((at(0.5), at(0.99)))
    }

    async fn big_log(&self, n: usize) -> anyhow::Result<i64> {
        let started = Instant::now();
        let a = self
            .client
            .run_script("bench0", &format!("seq {n}"), &[])
            .await?;
        let a = self.client.wait(a.id, Duration::from_secs(600)).await?;
        let took = started.elapsed().as_secs_f64();
        anyhow::ensure!(a.status == Status::Succeeded, "seq action {}", a.status);
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM action_log WHERE action_id = $1 AND stream = 1",
        )
        .bind(a.id)
        .fetch_one(&self.pool)
        .await?;
        anyhow::ensure!(stored as usize == n, "{stored} of {n} lines stored");
        let copy = copy_floor(&self.pool, n).await?;
        let rss: Vec<u64> = self
            .workers
            .iter()
            .filter_map(|w| w.peak_rss_kib())
            .collect();
        println!(
            "(d) `seq {n}` to succeeded, all lines stored: {took:.2} s ({:.0} lines/s)",
            n as f64 / took
        );
        println!(
            "    PostgreSQL COPY of the same lines:  {copy:.2} s ({:.0} lines/s)",
            n as f64 / copy
        );
        println!("    ratio (d)/COPY = {:.2}", took / copy);
        println!(
            "    worker peak RSS: {} MiB",
            rss.iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        Ok(a.id)
    }

    /// (h) Scripts that print too much, each beside an ordinary action on another server: the
    /// peak RSS of the workers and the api (VmHWM), the closing line, the other log complete.
    async fn hostile(&self) -> anyhow::Result<()> {
        let scripts = [
            (
                "one 300 MB line",
                "head -c 300000000 /dev/zero | tr '\\0' x",
            ),
            ("200 MB of binary", "head -c 200000000 /dev/urandom"),
            ("seq 20000000", "seq 20000000"),
        ];
        for (what, script) in scripts {
            let started = Instant::now();
            let bad = self.client.run_script("bench2", script, &[]).await?;
            let ok = self.client.run_script("bench3", "seq 1000", &[]).await?;
            let bad = self.client.wait(bad.id, Duration::from_secs(900)).await?;
            let ok = self.client.wait(ok.id, Duration::from_secs(60)).await?;
            let took = started.elapsed().as_secs_f64();
            let log = self.client.log(bad.id, 0).await?.text;
            let closing = log.lines().rev().find(|l| l.contains("Output cut:"));
            let other: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM action_log WHERE action_id = $1 AND stream = 1",
            )
            .bind(ok.id)
            .fetch_one(&self.pool)
            .await?;
            // The api reads the biggest page it serves of that log.
            self.client
                .get(&format!("/v1/actions/{}/lines?after=0&limit=10000", bad.id))
                .await?;
            println!(
                "(h) {what}: {} in {took:.1} s; {}; the other action: {}, {other} of 1000 lines",
                bad.status,
                closing.map_or("no closing line".into(), |l| l
                    .split(" : ")
                    .last()
                    .unwrap_or(l)
                    .to_string()),
                ok.status
            );
        }
        let mib = |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        let workers: Vec<String> = self.workers.iter().map(|w| mib(w.peak_rss_kib())).collect();
        println!(
            "    peak RSS: workers {} MiB, api {} MiB (target <= 128 MiB each; SA_LOG_MAX_BYTES = {} MiB)",
            workers.join(" / "),
            mib(self.api.peak_rss_kib()),
            self.cfg.log_max_bytes >> 20
        );
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.workers.clear();
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .output();
    }
}

/// The floor of the store: COPY `n` lines into a table shaped like `action_log`.
async fn copy_floor(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    // A regular (WAL-logged) table like action_log, as our log is: a temp table would skip WAL.
    sqlx::query("CREATE TABLE copy_floor (LIKE action_log INCLUDING ALL)")
        .execute(&mut *conn)
        .await?;
    let ts = chrono::Utc::now().to_rfc3339();
    let mut data = String::with_capacity(n * 48);
    for i in 1..=n {
        data.push_str(&format!("1\t{i}\t{ts}\t1\t{i}\n"));
    }
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY copy_floor (action_id, seq, ts, stream, line) FROM STDIN")
        .await
        .context("COPY")?;
    copy.send(data.into_bytes()).await?;
    copy.finish().await?;
    let took = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE copy_floor")
        .execute(&mut *conn)
        .await?;
    Ok(took)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An `sa-api` process for `cfg`, and a (token-less) client once it answers.
async fn start_api(cfg: &Config, name: &str) -> anyhow::Result<(Proc, Client)> {
    let api = Proc::spawn("sa-api", name, cfg)?;
    let client = Client::new(&cfg.api_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.healthy().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "sa-api did not start: see /tmp/{name}.log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((api, client))
}
