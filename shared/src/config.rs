//! Typed configuration: defaults, an optional TOML file (`--config FILE`), then `SA_*` environment
//! variables. Errors name the variable or file that is wrong.

use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: cannot parse {value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Every setting of every binary. Keys in a TOML file are the variable names without `SA_`,
/// lower-cased (`database_url = "..."`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    pub amqp_url: String,
    pub listen: SocketAddr,
    pub api_url: String,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub worker_concurrency: usize,
    pub metrics_listen: SocketAddr,
    /// Prefix of the RabbitMQ exchange and queue names (tests use their own).
    pub queue_prefix: String,
    /// `x-expires` (ms) of the queues: unused queues vanish after it (tests); none in production.
    pub queue_expires_ms: Option<u32>,
    /// Seconds running actions get to finish when a worker is asked to stop.
    pub shutdown_grace_s: u64,
    /// Seconds without a heartbeat after which a server lease expires.
    pub lease_s: u64,
    /// Name this worker records as lease holder; defaults to `<hostname>-<pid>`.
    pub worker_name: Option<String>,
    /// Short private directory for SSH control sockets (paths must stay under ~100 bytes).
    pub ssh_control_dir: Option<PathBuf>,
    pub ssh_connect_timeout_s: u64,
    /// Deadline of a short remote command (helpers, checks, kills); long steps (loads,
    /// prepares) are bounded by their action's timeout instead.
    pub ssh_command_timeout_s: u64,
    /// Concurrent SSH sessions per server (keep it below sshd's MaxSessions, default 10).
    pub ssh_sessions_per_host: usize,
    /// Maximum database connections of one process.
    pub db_max_connections: u32,
    pub s3_endpoint: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_region: String,
    /// Static S3 credentials; without them the AWS default chain (environment, profile...) is used.
    pub s3_access_key_id: Option<String>,
    /// Never printed (`Debug` shows it redacted).
    pub s3_secret_access_key: Option<SecretString>,
    /// A backup's chunk objects, in MiB: a worker holds about four of them per upload.
    pub s3_chunk_mib: usize,
    pub mysql_user: String,
    /// Never printed (`Debug` shows it redacted).
    pub mysql_password: SecretString,
    /// Where the workers publish a cluster's master DNS record (`store`: the API serves it).
    pub dns_provider: String,
    /// Where the api writes an admin token on a first start with no token at all (mode 0600);
    /// default `~/.config/serveractions/token`, where `sactl` looks. Never overwritten.
    pub admin_token_file: Option<PathBuf>,
    /// The AES-256-GCM key that seals secret values (api and workers read the same file; the
    /// api makes it, mode 0600, when it is missing); default `~/.config/serveractions/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    /// Longest stored log line; longer output lines are split, the cut marked.
    pub log_line_max: usize,
    /// Bytes of one action's log lines a worker holds before the script's output waits.
    pub log_buffer_bytes: usize,
    /// Bytes of output one action stores; beyond, output is counted, not stored.
    pub log_max_bytes: u64,
    /// Action logs older than this many days move to the backup bucket (0: never).
    pub log_retention_days: u32,
    /// Live log tails (server-sent events) one api keeps open; the next is refused (503).
    pub sse_max: usize,
    /// Serve `/metrics` without a token.
    pub metrics_open: bool,
    /// `Host` names the api answers to (comma-separated; `*`: any); default the listen
    /// address, `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Option<Vec<String>>,
    /// PEM certificate chain and key: the api speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// No token checks at all (for the benchmark's comparison only; refused unless the api
    /// listens on loopback).
    pub insecure_no_auth: bool,
    /// Seconds every reachable slave must report its IO thread not connected to a master the
    /// worker cannot reach before a promote calls that master dead.
    pub dead_master_s: f64,
    /// `slave_net_timeout` given to slaves (their heartbeat period is a third of it): how soon
    /// a slave notices a master gone silent.
    pub slave_net_timeout_s: u32,
    /// Route 53's endpoint for clusters whose DNS provider is `route53` (an emulator; default
    /// AWS's own). Its region is `SA_S3_REGION`'s.
    pub route53_endpoint: Option<String>,
    /// EC2's endpoint for launched servers (an emulator; default AWS's own).
    pub ec2_endpoint: Option<String>,
    pub ec2_region: String,
    /// EC2 credentials (default: the AWS default chain).
    pub ec2_access_key_id: Option<String>,
    /// Never printed (`Debug` shows it redacted).
    pub ec2_secret_access_key: Option<SecretString>,
    /// Seconds a launch waits for its instance to run and answer SSH with its pinned key.
    pub launch_timeout_s: u64,
    /// How often the watcher of a cluster with `auto_failover` probes its master and slaves.
    pub probe_s: f64,
    /// Consecutive failed probes of the master (with no slave connected to it) that make the
    /// watcher declare it dead.
    pub dead_after: u32,
    /// How long a cluster's watch lease lasts without renewal: another worker takes over
    /// within this when its watcher dies.
    pub watch_lease_s: f64,
    /// A slave whose heartbeat lag exceeds this is reported as lagging.
    pub lag_warn_s: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/serveractions".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            listen: ([127, 0, 0, 1], 8080).into(),
            api_url: "http://127.0.0.1:8080".into(),
            ssh_key: None,
            known_hosts: None,
            worker_concurrency: 16,
            metrics_listen: ([127, 0, 0, 1], 9100).into(),
            queue_prefix: "sa".into(),
            queue_expires_ms: None,
            lease_s: 30,
            shutdown_grace_s: 30,
            worker_name: None,
            ssh_control_dir: None,
            ssh_connect_timeout_s: 10,
            ssh_command_timeout_s: 300,
            ssh_sessions_per_host: 8,
            db_max_connections: 20,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_chunk_mib: 8,
            mysql_user: "root".into(),
            mysql_password: SecretString::default(),
            dns_provider: "store".into(),
            admin_token_file: None,
            secret_key_file: None,
            log_line_max: 64 * 1024,
            log_buffer_bytes: 8 * 1024 * 1024,
            log_max_bytes: 1024 * 1024 * 1024,
            sse_max: 1000,
            log_retention_days: 90,
            metrics_open: false,
            allowed_hosts: None,
            tls_cert: None,
            tls_key: None,
            insecure_no_auth: false,
            dead_master_s: 2.0,
            slave_net_timeout_s: 4,
            route53_endpoint: None,
            ec2_endpoint: None,
            ec2_region: "us-east-1".into(),
            ec2_access_key_id: None,
            ec2_secret_access_key: None,
            launch_timeout_s: 600,
            probe_s: 1.0,
            dead_after: 2,
            watch_lease_s: 5.0,
            lag_warn_s: 30.0,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.into(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.into(),
                    reason: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Overlay variables read through `get` (the environment, or a map in tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env = Env(&get);
        env.set("SA_DATABASE_URL", &mut self.database_url)?;
        env.set("SA_AMQP_URL", &mut self.amqp_url)?;
        env.set("SA_LISTEN", &mut self.listen)?;
        env.set("SA_API_URL", &mut self.api_url)?;
        env.set_opt("SA_SSH_KEY", &mut self.ssh_key)?;
        env.set_opt("SA_KNOWN_HOSTS", &mut self.known_hosts)?;
        env.set("SA_WORKER_CONCURRENCY", &mut self.worker_concurrency)?;
        env.set("SA_METRICS_LISTEN", &mut self.metrics_listen)?;
        env.set("SA_QUEUE_PREFIX", &mut self.queue_prefix)?;
        env.set_opt("SA_QUEUE_EXPIRES_MS", &mut self.queue_expires_ms)?;
        env.set("SA_LEASE_S", &mut self.lease_s)?;
        env.set("SA_SHUTDOWN_GRACE_S", &mut self.shutdown_grace_s)?;
        env.set_opt("SA_WORKER_NAME", &mut self.worker_name)?;
        env.set_opt("SA_SSH_CONTROL_DIR", &mut self.ssh_control_dir)?;
        env.set("SA_SSH_CONNECT_TIMEOUT_S", &mut self.ssh_connect_timeout_s)?;
        env.set("SA_SSH_COMMAND_TIMEOUT_S", &mut self.ssh_command_timeout_s)?;
        env.set("SA_SSH_SESSIONS_PER_HOST", &mut self.ssh_sessions_per_host)?;
        env.set("SA_DB_MAX_CONNECTIONS", &mut self.db_max_connections)?;
        env.set_opt("SA_S3_ENDPOINT", &mut self.s3_endpoint)?;
        env.set_opt("SA_S3_BUCKET", &mut self.s3_bucket)?;
        env.set("SA_S3_REGION", &mut self.s3_region)?;
        env.set_opt("SA_S3_ACCESS_KEY_ID", &mut self.s3_access_key_id)?;
        if let Some(v) = get("SA_S3_SECRET_ACCESS_KEY") {
            self.s3_secret_access_key = (!v.is_empty()).then(|| v.into());
        }
        env.set("SA_S3_CHUNK_MIB", &mut self.s3_chunk_mib)?;
        env.set("SA_MYSQL_USER", &mut self.mysql_user)?;
        if let Some(v) = get("SA_MYSQL_PASSWORD") {
            self.mysql_password = v.into();
        }
        env.set("SA_DNS_PROVIDER", &mut self.dns_provider)?;
        env.set_opt("SA_ADMIN_TOKEN_FILE", &mut self.admin_token_file)?;
        env.set_opt("SA_SECRET_KEY_FILE", &mut self.secret_key_file)?;
        env.set("SA_LOG_LINE_MAX", &mut self.log_line_max)?;
        env.set("SA_LOG_BUFFER_BYTES", &mut self.log_buffer_bytes)?;
        env.set("SA_LOG_MAX_BYTES", &mut self.log_max_bytes)?;
        env.set("SA_SSE_MAX", &mut self.sse_max)?;
        env.set("SA_LOG_RETENTION_DAYS", &mut self.log_retention_days)?;
        if !(1024..=1024 * 1024).contains(&self.log_line_max) {
            return Err(ConfigError::Invalid {
                var: "SA_LOG_LINE_MAX",
                value: self.log_line_max.to_string(),
                reason: "must be 1 KiB to 1 MiB (bytes)".into(),
            });
        }
        if self.log_buffer_bytes < 4 * self.log_line_max
            || self.log_buffer_bytes > u32::MAX as usize
        {
            return Err(ConfigError::Invalid {
                var: "SA_LOG_BUFFER_BYTES",
                value: self.log_buffer_bytes.to_string(),
                reason: "must be at least 4 x SA_LOG_LINE_MAX and below 4 GiB".into(),
            });
        }
        env.set("SA_METRICS_OPEN", &mut self.metrics_open)?;
        if let Some(v) = get("SA_ALLOWED_HOSTS") {
            self.allowed_hosts = (!v.trim().is_empty()).then(|| {
                v.split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            });
        }
        env.set_opt("SA_TLS_CERT", &mut self.tls_cert)?;
        env.set_opt("SA_TLS_KEY", &mut self.tls_key)?;
        env.set("SA_INSECURE_NO_AUTH", &mut self.insecure_no_auth)?;
        env.set("SA_DEAD_MASTER_S", &mut self.dead_master_s)?;
        env.set("SA_SLAVE_NET_TIMEOUT_S", &mut self.slave_net_timeout_s)?;
        env.set_opt("SA_ROUTE53_ENDPOINT", &mut self.route53_endpoint)?;
        env.set_opt("SA_EC2_ENDPOINT", &mut self.ec2_endpoint)?;
        env.set("SA_EC2_REGION", &mut self.ec2_region)?;
        env.set_opt("SA_EC2_ACCESS_KEY_ID", &mut self.ec2_access_key_id)?;
        if let Some(v) = get("SA_EC2_SECRET_ACCESS_KEY") {
            self.ec2_secret_access_key = (!v.is_empty()).then(|| v.into());
        }
        env.set("SA_LAUNCH_TIMEOUT_S", &mut self.launch_timeout_s)?;
        env.set("SA_PROBE_S", &mut self.probe_s)?;
        env.set("SA_DEAD_AFTER", &mut self.dead_after)?;
        env.set("SA_WATCH_LEASE_S", &mut self.watch_lease_s)?;
        env.set("SA_LAG_WARN_S", &mut self.lag_warn_s)?;
        for (var, v, range) in [
            ("SA_PROBE_S", self.probe_s, 0.1..=60.0),
            ("SA_WATCH_LEASE_S", self.watch_lease_s, 1.0..=600.0),
            ("SA_LAG_WARN_S", self.lag_warn_s, 0.0..=86_400.0),
        ] {
            if !range.contains(&v) {
                return Err(ConfigError::Invalid {
                    var,
                    value: v.to_string(),
                    reason: format!("must be {} to {} (seconds)", range.start(), range.end()),
                });
            }
        }
        if !(1..=100).contains(&self.dead_after) {
            return Err(ConfigError::Invalid {
                var: "SA_DEAD_AFTER",
                value: self.dead_after.to_string(),
                reason: "must be 1 to 100 (probes)".into(),
            });
        }
        if self.watch_lease_s <= self.probe_s {
            return Err(ConfigError::Invalid {
                var: "SA_WATCH_LEASE_S",
                value: self.watch_lease_s.to_string(),
                reason: "must be longer than SA_PROBE_S (the lease is renewed every probe)".into(),
            });
        }
        if !(0.0..=600.0).contains(&self.dead_master_s) {
            return Err(ConfigError::Invalid {
                var: "SA_DEAD_MASTER_S",
                value: self.dead_master_s.to_string(),
                reason: "must be 0 to 600 (seconds)".into(),
            });
        }
        if !(2..=3600).contains(&self.slave_net_timeout_s) {
            return Err(ConfigError::Invalid {
                var: "SA_SLAVE_NET_TIMEOUT_S",
                value: self.slave_net_timeout_s.to_string(),
                reason: "must be 2 to 3600 (seconds)".into(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                var: "SA_TLS_CERT",
                value: String::new(),
                reason: "SA_TLS_CERT and SA_TLS_KEY go together".into(),
            });
        }
        if self.worker_concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: "SA_WORKER_CONCURRENCY",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=512).contains(&self.s3_chunk_mib) {
            return Err(ConfigError::Invalid {
                var: "SA_S3_CHUNK_MIB",
                value: self.s3_chunk_mib.to_string(),
                reason: "must be 1 to 512 (MiB)".into(),
            });
        }
        Ok(())
    }

    /// Where the first admin token goes (see `admin_token_file`).
    pub fn admin_token_path(&self) -> Option<PathBuf> {
        self.admin_token_file.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/serveractions/token"))
        })
    }

    /// Where the key of secret values is (see `secret_key_file`).
    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".config/serveractions/secret.key")
        })
    }

    /// The worker's lease holder name.
    pub fn worker_name(&self) -> String {
        self.worker_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

struct Env<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn parse<T: FromStr>(&self, var: &'static str, value: String) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        value.parse().map_err(|e: T::Err| ConfigError::Invalid {
            var,
            reason: e.to_string(),
            // Never echo secrets back in an error message.
            value: if var.contains("PASSWORD") {
                "***".into()
            } else {
                value
            },
        })
    }

    fn set<T: FromStr>(&self, var: &'static str, slot: &mut T) -> Result<(), ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(value) = (self.0)(var) {
            *slot = self.parse(var, value)?;
        }
        Ok(())
    }

    fn set_opt<T: FromStr>(
        &self,
        var: &'static str,
        slot: &mut Option<T>,
    ) -> Result<(), ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match (self.0)(var) {
            Some(v) if v.is_empty() => *slot = None,
            Some(v) => *slot = Some(self.parse(var, v)?),
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults_and_errors_name_the_variable() {
        let mut cfg = Config::default();
        cfg.apply_env(|k| (k == "SA_WORKER_CONCURRENCY").then(|| "4".to_string()))
            .unwrap();
        assert_eq!(cfg.worker_concurrency, 4);
        let err = cfg
            .apply_env(|k| (k == "SA_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SA_LISTEN: cannot parse \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn a_chunk_size_out_of_range_is_refused() {
        let mut cfg = Config::default();
        let err = cfg
            .apply_env(|k| (k == "SA_S3_CHUNK_MIB").then(|| "1024".to_string()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SA_S3_CHUNK_MIB: cannot parse \"1024\": must be 1 to 512 (MiB)"
        );
    }

    #[test]
    fn file_keys_are_lowercase_names() {
        let cfg: Config = toml::from_str("lease_s = 7\nqueue_prefix = \"t\"").unwrap();
        assert_eq!((cfg.lease_s, cfg.queue_prefix.as_str()), (7, "t"));
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }
}
