//! Private RabbitMQ nodes and PostgreSQL clusters for the fault tests: restarting the machine's
//! shared services would break the tests running beside them, so a test that restarts a broker
//! or a database gets its own, on its own loopback ports, removed on drop.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A RabbitMQ node of our own (`rabbitmq-server` with its own name, ports and data directory).
pub struct PrivateRabbit {
    pub port: u16,
    dist_port: u16,
    pub node: String,
    dir: tempfile::TempDir,
}

impl PrivateRabbit {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sa-rmq-")
            .tempdir_in("/tmp")?;
        let (port, dist_port) = (free_port()?, free_port()?);
        let id = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(['-', '.'], "");
        let node = format!("{id}@localhost");
        std::fs::create_dir_all(dir.path().join("mnesia"))?;
        std::fs::create_dir_all(dir.path().join("log"))?;
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )?;
        quiet(
            Command::new("chown")
                .args(["-R", "rabbitmq:"])
                .arg(dir.path()),
        )?;
        let r = Self {
            port,
            dist_port,
            node,
            dir,
        };
        r.start_again()?;
        Ok(r)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Start the node (again) and wait until it accepts connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.path("pid"));
        quiet(
            Command::new("rabbitmq-server")
                .arg("-detached")
                .current_dir(self.dir.path())
                .env("RABBITMQ_NODENAME", &self.node)
                .env("RABBITMQ_NODE_PORT", self.port.to_string())
                .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
                .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
                .env("RABBITMQ_LOG_BASE", self.path("log"))
                .env(
                    "RABBITMQ_ENABLED_PLUGINS_FILE",
                    self.path("enabled_plugins"),
                )
                .env("RABBITMQ_PID_FILE", self.path("pid")),
        )?;
        quiet(
            Command::new("rabbitmqctl")
                .args(["-n", &self.node, "wait", "--timeout", "120"])
                .arg(self.path("pid")),
        )
        .context("private rabbitmq did not start")
    }

    /// Stop the node (connections drop; durable queues and persistent messages stay).
    pub fn stop(&self) -> anyhow::Result<()> {
        quiet(Command::new("rabbitmqctl").args(["-n", &self.node, "stop"]))
    }

    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Evaluate an Erlang expression on the node (e.g. to lower `consumer_timeout`).
    pub fn eval(&self, expr: &str) -> anyhow::Result<()> {
        quiet(Command::new("rabbitmqctl").args(["-n", &self.node, "eval", expr]))
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg_bin(name: &str) -> PathBuf {
    // The machine's major version, whatever it is.
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .unwrap_or_else(|| PathBuf::from(PG_BIN).join(name))
}

/// A PostgreSQL cluster of our own (initdb into a temporary directory, own port, trust auth).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sa-pg-")
            .tempdir_in("/tmp")?;
        quiet(Command::new("chown").args(["postgres:"]).arg(dir.path()))?;
        let pg = Self {
            port: free_port()?,
            dir,
        };
        pg.as_postgres(&format!(
            "{} -A trust -U postgres -D {}/data",
            pg_bin("initdb").display(),
            pg.dir.path().display()
        ))?;
        pg.start_again()?;
        Ok(pg)
    }

    fn as_postgres(&self, cmd: &str) -> anyhow::Result<()> {
        quiet(Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", cmd]))
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        let d = self.dir.path().display();
        self.as_postgres(&format!(
            "{} -D {d}/data -l {d}/log -w -t 60 -o '-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' start",
            pg_bin("pg_ctl").display(),
            self.port
        ))
    }

    /// Fast shutdown: every connection is closed.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.as_postgres(&format!(
            "{} -D {}/data -m fast -w stop",
            pg_bin("pg_ctl").display(),
            self.dir.path().display()
        ))
    }

    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        std::thread::sleep(Duration::from_millis(200));
        self.start_again()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.as_postgres(&format!(
            "{} -D {}/data -m immediate -w stop",
            pg_bin("pg_ctl").display(),
            self.dir.path().display()
        ));
    }
}

/// A private `moto_server` (S3 on loopback) with one bucket, killed on drop.
pub struct Moto {
    pub port: u16,
    pub bucket: String,
    child: Option<std::process::Child>,
}

impl Moto {
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut moto = Self {
            port,
            bucket: "sa-backups".into(),
            child: None,
        };
        moto.start_again().await?;
        let url = format!("{}/{}", moto.endpoint(), moto.bucket);
        // moto does not check signatures: a plain PUT creates the bucket.
        let r = reqwest::Client::new().put(&url).send().await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating bucket {url}: {}",
            r.status()
        );
        Ok(moto)
    }

    /// Start it (again, after `stop`): it comes back empty.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        die_with_us(&mut cmd);
        self.child = Some(
            cmd.spawn()
                .context("starting python3 -m moto.server (scripts/setup.sh installs it)")?,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("moto_server did not start on port {}", self.port);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill it (an S3 outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Point a configuration at this S3.
    pub fn configure(&self, cfg: &mut shared::Config) {
        cfg.s3_endpoint = Some(self.endpoint());
        cfg.s3_bucket = Some(self.bucket.clone());
        cfg.s3_access_key_id = Some("test".into());
        cfg.s3_secret_access_key = Some("test".into());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The child is SIGKILLed when the test process dies, however it dies.
#[allow(unsafe_code)]
fn die_with_us(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A Knot DNS server of our own on 127.0.0.1 and a port of its own, authoritative for one zone
/// (TTL 1 s), accepting RFC 2136 updates signed with a TSIG key made for it (HMAC-SHA256).
pub struct Knot {
    pub addr: std::net::SocketAddr,
    pub zone: String,
    pub key_name: String,
    /// The TSIG key, base64 (as a secret holds it).
    pub key: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Knot {
    pub fn start(zone: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        use std::io::Read;
        let port = free_port()?;
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::Builder::new()
            .prefix("sa-knot-")
            .tempdir_in("/tmp")?;
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        let key = base64::engine::general_purpose::STANDARD.encode(raw);
        let key_name = "sa-ddns".to_string();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("run"))?;
        std::fs::create_dir_all(dir.path().join("db"))?;
        std::fs::write(
            dir.path().join("zone"),
            format!(
                "$ORIGIN {zone}.\n$TTL 1\n@ IN SOA ns1 hostmaster 1 60 60 3600 1\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
            ),
        )?;
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n    rundir: \"{d}/run\"\n    user: root:root\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
                 database:\n    storage: \"{d}/db\"\n\
                 log:\n  - target: stderr\n    any: warning\n\
                 key:\n  - id: {key_name}\n    algorithm: hmac-sha256\n    secret: {key}\n\
                 acl:\n  - id: update\n    key: {key_name}\n    action: update\n\
                 zone:\n  - domain: {zone}.\n    file: \"{d}/zone\"\n    acl: update\n    zonefile-sync: -1\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("knotd.log"))?;
        let mut cmd = Command::new("knotd");
        cmd.arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_us(&mut cmd);
        let child = cmd
            .spawn()
            .context("starting knotd (scripts/setup.sh installs knot)")?;
        let knot = Self {
            addr,
            zone: zone.into(),
            key_name,
            key,
            dir,
            child: Some(child),
        };
        // The zone loads after the port opens: ready once it answers its SOA.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while knot.dig(zone, "SOA").is_empty() {
            if std::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(knot.dir.path().join("knotd.log")).unwrap_or_default();
                bail!("knotd on {addr} did not serve {zone}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(knot)
    }

    /// `kdig +short` of `name` (`type`) at this server: its answers, one per line.
    pub fn dig(&self, name: &str, rtype: &str) -> String {
        Command::new("kdig")
            .arg(format!("@{}", self.addr.ip()))
            .args([
                "-p",
                &self.addr.port().to_string(),
                "+short",
                "+timeout=1",
                "+retry=0",
                name,
                rtype,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The A record `name` (in the zone) answers now.
    pub fn address(&self, name: &str) -> String {
        self.dig(&format!("{name}.{}", self.zone), "A")
    }

    /// Point `name` at `address` behind ServerActions' back (`knsupdate`, with the key).
    pub fn set(&self, name: &str, address: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("knsupdate")
            .arg("-y")
            .arg(format!("hmac-sha256:{}:{}", self.key_name, self.key))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("knsupdate (knot-dnsutils)")?;
        let fqdn = format!("{name}.{}.", self.zone);
        write!(
            child.stdin.take().context("stdin")?,
            "server {} {}\nzone {}.\nupdate delete {fqdn} A\nupdate add {fqdn} 1 A {address}\nsend\n",
            self.addr.ip(),
            self.addr.port(),
            self.zone
        )?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "knsupdate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
