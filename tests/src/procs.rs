//! The real binaries (`sa-api`, `sa-worker`) as child processes, configured through `SA_*`
//! variables: for the demo, the benchmark and tests that kill a process.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use shared::Config;

/// Where the binaries are: `SA_BIN_DIR`, else beside the running executable (or its parent,
/// for test binaries under `deps/`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SA_BIN_DIR") {
        return d.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir
    }
}

/// The `SA_*` variables that reproduce `cfg`.
pub fn env_of(cfg: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        ("SA_DATABASE_URL", cfg.database_url.clone()),
        ("SA_AMQP_URL", cfg.amqp_url.clone()),
        ("SA_LISTEN", cfg.listen.to_string()),
        ("SA_API_URL", cfg.api_url.clone()),
        ("SA_WORKER_CONCURRENCY", cfg.worker_concurrency.to_string()),
        ("SA_METRICS_LISTEN", cfg.metrics_listen.to_string()),
        ("SA_QUEUE_PREFIX", cfg.queue_prefix.clone()),
        ("SA_LEASE_S", cfg.lease_s.to_string()),
        ("SA_SHUTDOWN_GRACE_S", cfg.shutdown_grace_s.to_string()),
        (
            "SA_SSH_CONNECT_TIMEOUT_S",
            cfg.ssh_connect_timeout_s.to_string(),
        ),
        (
            "SA_SSH_SESSIONS_PER_HOST",
            cfg.ssh_sessions_per_host.to_string(),
        ),
        ("SA_DB_MAX_CONNECTIONS", cfg.db_max_connections.to_string()),
        ("SA_S3_REGION", cfg.s3_region.clone()),
        ("SA_DNS_PROVIDER", cfg.dns_provider.clone()),
        ("SA_METRICS_OPEN", cfg.metrics_open.to_string()),
        ("SA_LOG_LINE_MAX", cfg.log_line_max.to_string()),
        ("SA_LOG_BUFFER_BYTES", cfg.log_buffer_bytes.to_string()),
        ("SA_LOG_MAX_BYTES", cfg.log_max_bytes.to_string()),
        ("SA_SSE_MAX", cfg.sse_max.to_string()),
        ("SA_LOG_RETENTION_DAYS", cfg.log_retention_days.to_string()),
        (
            "SA_SSH_COMMAND_TIMEOUT_S",
            cfg.ssh_command_timeout_s.to_string(),
        ),
        ("SA_INSECURE_NO_AUTH", cfg.insecure_no_auth.to_string()),
        ("SA_DEAD_MASTER_S", cfg.dead_master_s.to_string()),
        (
            "SA_SLAVE_NET_TIMEOUT_S",
            cfg.slave_net_timeout_s.to_string(),
        ),
        ("SA_PROBE_S", cfg.probe_s.to_string()),
        ("SA_DEAD_AFTER", cfg.dead_after.to_string()),
        ("SA_WATCH_LEASE_S", cfg.watch_lease_s.to_string()),
        ("SA_LAG_WARN_S", cfg.lag_warn_s.to_string()),
        ("SA_MYSQL_USER", cfg.mysql_user.clone()),
        (
            "SA_MYSQL_PASSWORD",
            cfg.mysql_password.expose_secret().to_string(),
        ),
    ];
    let opt = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string());
    for (k, v) in [
        ("SA_SSH_KEY", opt(&cfg.ssh_key)),
        ("SA_KNOWN_HOSTS", opt(&cfg.known_hosts)),
        ("SA_SSH_CONTROL_DIR", opt(&cfg.ssh_control_dir)),
        ("SA_WORKER_NAME", cfg.worker_name.clone()),
        ("SA_ADMIN_TOKEN_FILE", opt(&cfg.admin_token_file)),
        ("SA_SECRET_KEY_FILE", opt(&cfg.secret_key_file)),
        ("SA_TLS_CERT", opt(&cfg.tls_cert)),
        ("SA_TLS_KEY", opt(&cfg.tls_key)),
        (
            "SA_ALLOWED_HOSTS",
            cfg.allowed_hosts.as_ref().map(|h| h.join(",")),
        ),
        ("SA_S3_ENDPOINT", cfg.s3_endpoint.clone()),
        ("SA_ROUTE53_ENDPOINT", cfg.route53_endpoint.clone()),
        ("SA_EC2_ENDPOINT", cfg.ec2_endpoint.clone()),
        ("SA_EC2_ACCESS_KEY_ID", cfg.ec2_access_key_id.clone()),
        (
            "SA_EC2_SECRET_ACCESS_KEY",
            cfg.ec2_secret_access_key
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
        ),
        ("SA_S3_BUCKET", cfg.s3_bucket.clone()),
        ("SA_S3_ACCESS_KEY_ID", cfg.s3_access_key_id.clone()),
        (
            "SA_S3_SECRET_ACCESS_KEY",
            cfg.s3_secret_access_key
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
        ),
        (
            "SA_QUEUE_EXPIRES_MS",
            cfg.queue_expires_ms.map(|v| v.to_string()),
        ),
    ] {
        if let Some(v) = v {
            env.push((k, v));
        }
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `sa-api tokens create --name NAME --role ROLE ARGS...` against `cfg`'s store: the secret.
pub fn create_token(cfg: &Config, name: &str, role: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin_dir().join("sa-api"))
        .env_clear()
        .envs(env_of(cfg))
        .args(["tokens", "create", "--name", name, "--role", role])
        .args(args)
        .output()
        .context("running sa-api tokens create")?;
    if !out.status.success() {
        bail!(
            "sa-api tokens create: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(bin: &str, name: &str, cfg: &Config) -> anyhow::Result<Self> {
        Self::spawn_logging(bin, name, cfg, None)
    }

    /// With `RUST_LOG=rust_log` (default: the caller's, else warn); its output goes to
    /// `/tmp/<name>.log` ([`Proc::output`]).
    pub fn spawn_logging(
        bin: &str,
        name: &str,
        cfg: &Config,
        rust_log: Option<&str>,
    ) -> anyhow::Result<Self> {
        let path = bin_dir().join(bin);
        if !path.exists() {
            bail!(
                "{} not found: build it first (cargo build --bins)",
                path.display()
            );
        }
        let log = std::fs::File::create(format!("/tmp/{name}.log"))?;
        let child = Command::new(&path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                rust_log.map_or_else(
                    || std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    str::to_string,
                ),
            )
            .envs(env_of(cfg))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(format!("/tmp/{}.log", self.name)).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
