//! Test hosts: each gets its own loopback address (127.42.x.y), its own `sshd` on port 22 of
//! that address with its own host key, and a working directory exported to sessions as
//! `$SA_HOST_DIR`. All log in as one dedicated user with a plain `/bin/sh`. A host is torn
//! down on drop (also when a test panics) and its sshd dies with the test process.

#![allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG) in pre_exec

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// The login user on every test host.
pub const LOGIN_USER: &str = "satest";
/// Shared by all test processes: the client key and its authorized_keys.
const BED: &str = "/tmp/sa-testbed";

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The login user's home (its `~/.serveractions` holds the actions' pid and option files).
/// A connection to the mariadbd of the test host at `address`, as root over TCP (as a client
/// of the database would connect).
pub async fn mysql_root(address: &str) -> anyhow::Result<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(address.to_string())
        .tcp_port(3306)
        .user(Some("root"))
        .prefer_socket(false);
    Ok(mysql_async::Conn::new(opts).await?)
}

pub fn login_home() -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("getent passwd {LOGIN_USER} | cut -d: -f6"))
        .output()
        .expect("getent");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Create the login user (once per machine) and the client key (once per machine).
/// Returns the client's private key path.
pub fn client_key() -> anyhow::Result<PathBuf> {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    if let Some(k) = KEY.get() {
        return Ok(k.clone());
    }
    if Command::new("id").arg(LOGIN_USER).output()?.status.code() != Some(0) {
        // Parallel test processes may race here: "already exists" is fine.
        let _ = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", LOGIN_USER])
            .output();
        // A locked password ('!') makes sshd without PAM refuse even key logins.
        run(Command::new("usermod").args(["-p", "*", LOGIN_USER]))?;
    }
    // Its home is where the actions' private pid directory goes: it must be the user's (a
    // machine may keep a /home/satest of an older account).
    run(Command::new("sh").arg("-c").arg(format!(
        "h=$(getent passwd {LOGIN_USER} | cut -d: -f6) && mkdir -p \"$h\" && chown {LOGIN_USER}: \"$h\""
    )))?;
    fs::create_dir_all(BED)?;
    fs::set_permissions(BED, fs::Permissions::from_mode(0o755))?;
    let key = Path::new(BED).join("client_ed25519");
    if !key.exists() {
        let tmp = Path::new(BED).join(format!("key-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(tmp.with_extension("pub"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sa-testbed", "-f"])
            .arg(&tmp))?;
        fs::rename(tmp.with_extension("pub"), key.with_extension("pub"))?;
        fs::rename(&tmp, &key)?; // the private key last: its presence means both exist
    }
    let auth = Path::new(BED).join("authorized_keys");
    let pubkey = fs::read_to_string(key.with_extension("pub"))?;
    if fs::read_to_string(&auth).ok().as_deref() != Some(pubkey.as_str()) {
        let tmp = auth.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, &pubkey)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &auth)?;
    }
    let _ = KEY.set(key.clone());
    Ok(key)
}

pub struct TestHost {
    pub address: Ipv4Addr,
    /// `$SA_HOST_DIR` on the host: owned by the login user, for the tests' marks.
    pub dir: PathBuf,
    root: tempfile::TempDir,
    sshd: Option<Child>,
    mariadbd: Option<Child>,
    /// The btrfs file system holding the datadir (mounted here), if any.
    btrfs: Option<PathBuf>,
    /// Its mariadbd's server_id, when not the one from its address.
    server_id: Option<u32>,
}

impl TestHost {
    /// Start a host on a free loopback address.
    pub fn start() -> anyhow::Result<Self> {
        Self::boot(free_address()?, None, None, None)
    }

    /// Boot a host on `address` (an instance the EC2 harness plays): with this private host
    /// key (else a new one), these authorized keys (else the test bed's client key) and the
    /// mariadbd `server_id` it will get (else one from the address).
    pub fn boot(
        address: Ipv4Addr,
        host_key: Option<&str>,
        authorized_keys: Option<&str>,
        server_id: Option<u32>,
    ) -> anyhow::Result<Self> {
        client_key()?;
        let root = tempfile::Builder::new()
            .prefix("sa-host-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755))?;
        let dir = root.path().join("home");
        fs::create_dir(&dir)?;
        run(Command::new("chown")
            .arg(format!("{LOGIN_USER}:"))
            .arg(&dir))?;
        let key = root.path().join("host_key");
        match host_key {
            Some(private) => {
                fs::write(&key, private)?;
                fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
                let public = run(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key))?;
                fs::write(key.with_extension("pub"), public)?;
            }
            None => {
                run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
                    .arg(&key))?;
            }
        }
        let authorized = match authorized_keys {
            Some(keys) => {
                let file = root.path().join("authorized_keys");
                fs::write(&file, keys)?;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
                file
            }
            None => Path::new(BED).join("authorized_keys"),
        };
        let config = root.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress {address}:22\n\
                 HostKey {key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\n\
                 AllowUsers {LOGIN_USER}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin no\n\
                 MaxSessions 64\n\
                 MaxStartups 200:30:400\n\
                 SetEnv SA_HOST_DIR={dir} PATH={bin}:/usr/local/bin:/usr/bin:/bin:/usr/games\n\
                 LogLevel ERROR\n",
                key = key.display(),
                authorized = authorized.display(),
                pid = root.path().join("sshd.pid").display(),
                dir = dir.display(),
                bin = root.path().join("bin").display(),
            ),
        )?;
        // First in the login user's PATH: where `without_command` shadows a tool.
        fs::create_dir(root.path().join("bin"))?;
        fs::create_dir_all("/run/sshd")?;
        fs::File::create(root.path().join("sshd.log"))?;
        let mut host = Self {
            address,
            dir,
            root,
            sshd: None,
            mariadbd: None,
            btrfs: None,
            server_id,
        };
        host.start_sshd()?;
        Ok(host)
    }

    /// The same address answering with another host key: sshd restarted with a new one.
    pub fn rekey(&mut self) -> anyhow::Result<()> {
        self.kill_sshd();
        let key = self.root.path().join("host_key");
        fs::remove_file(&key)?;
        fs::remove_file(key.with_extension("pub"))?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&key))?;
        self.start_sshd()
    }

    /// The host's root directory (its sshd config, keys, `home/`, `mysql/`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Start the host's sshd (again, after `kill_sshd`), logging to `sshd.log`.
    pub fn start_sshd(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.root.path().join("sshd.log"))?;
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.root.path().join("sshd_config"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill sshd with us.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.sshd = Some(cmd.spawn().context("starting sshd")?);
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((self.address, 22));
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.sshd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = fs::read_to_string(self.root.path().join("sshd.log")).unwrap_or_default();
                bail!("sshd on {} exited ({status}): {log}", self.address);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("sshd on {} did not start listening", self.address)
    }

    /// The host's public key as pinned in the server record ("ssh-ed25519 AAAA...").
    pub fn host_key(&self) -> String {
        let text = fs::read_to_string(self.root.path().join("host_key.pub")).expect("host key");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The server registration body for this host.
    pub fn server_json(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name, "address": self.address.to_string(), "ssh_user": LOGIN_USER,
            "host_key": self.host_key(),
        })
    }

    /// A host whose `command` fails as if it were not installed (exit 127), for the login
    /// user's sessions.
    pub fn without_command(self, command: &str) -> anyhow::Result<Self> {
        let path = self.root.path().join("bin").join(command);
        fs::write(
            &path,
            "#!/bin/sh\necho \"$0: not installed on this test host\" >&2\nexit 127\n",
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(self)
    }

    /// Read a file the scripts wrote in `$SA_HOST_DIR` (empty if missing).
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Also run a MariaDB on this host: its own datadir, `server_id` (`server_id()`), binary
    /// log (ROW, GTID strict mode), listening on port 3306 of the host's address, as the login
    /// user.
    pub fn with_mariadb(self) -> anyhow::Result<Self> {
        let id = self.server_id();
        self.mariadb(Some(id))
    }

    /// The `server_id` its MariaDB gets: from its address, so that no two test hosts running
    /// at once share one (the worker's own choice, for a server without one, is the whole
    /// address as a number: another range).
    pub fn server_id(&self) -> u32 {
        if let Some(id) = self.server_id {
            return id;
        }
        let [_, _, x, y] = self.address.octets();
        1 + u32::from(x) * 256 + u32::from(y)
    }

    /// A MariaDB without binary logging and with server_id 0, as a fresh install.
    pub fn with_mariadb_without_binlog(self) -> anyhow::Result<Self> {
        self.mariadb(None)
    }

    /// A MariaDB whose datadir is a btrfs subvolume (a loop-mounted file system of `mib` MiB),
    /// with snapshot commands in its server record: the `snapshot` backup strategy works here.
    pub fn with_mariadb_on_btrfs(mut self, mib: u32) -> anyhow::Result<Self> {
        let vol = self.mariadb_dir().join("vol");
        fs::create_dir_all(&vol)?;
        let image = self.root.path().join("btrfs.img");
        run(Command::new("truncate")
            .arg(format!("-s{mib}M"))
            .arg(&image))?;
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop,user_subvol_rm_allowed"])
            .arg(&image)
            .arg(&vol))?;
        self.btrfs = Some(vol.clone());
        run(Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(vol.join("data")))?;
        let id = self.server_id();
        self.mariadb(Some(id))
    }

    /// mysqld's data directory.
    pub fn datadir(&self) -> PathBuf {
        match &self.btrfs {
            Some(vol) => vol.join("data"),
            None => self.mariadb_dir().join("data"),
        }
    }

    /// The MariaDB's directory: `my.cnf`, `conf.d/` (the workers' option file goes there),
    /// `ctl start|stop|restart` (the server's commands), `data/` (or `vol/data` on btrfs).
    pub fn mariadb_dir(&self) -> PathBuf {
        self.root.path().join("mysql")
    }

    fn login_ids() -> anyhow::Result<(u32, u32)> {
        let uid = run(Command::new("id").args(["-u", LOGIN_USER]))?
            .trim()
            .parse()?;
        let gid = run(Command::new("id").args(["-g", LOGIN_USER]))?
            .trim()
            .parse()?;
        Ok((uid, gid))
    }

    fn mariadb(mut self, binlog_server_id: Option<u32>) -> anyhow::Result<Self> {
        let (uid, gid) = Self::login_ids()?;
        let db = self.mariadb_dir();
        fs::create_dir_all(&db)?;
        // Its own tmpdir too: parallel bootstraps must not share temporary files.
        fs::create_dir(db.join("tmp"))?;
        fs::create_dir(db.join("conf.d"))?;
        let d = db.display();
        let data = self.datadir();
        let data = data.display();
        let binlog = match binlog_server_id {
            Some(id) => format!("log-bin=bin\nserver-id={id}\nlog-slave-updates=1\n"),
            None => String::new(),
        };
        fs::write(
            db.join("my.cnf"),
            format!(
                "[mysqld]\ndatadir={data}\nbind-address={addr}\nport=3306\nsocket={d}/mysqld.sock\n\
                 pid-file={d}/mysqld.pid\nlog-error={d}/error.log\ntmpdir={d}/tmp\n{binlog}\
                 binlog-format=ROW\ngtid-strict-mode=1\nskip-name-resolve\n!includedir {d}/conf.d\n",
                addr = self.address
            ),
        )?;
        let ctl = db.join("ctl");
        fs::write(
            &ctl,
            format!(
                "#!/bin/sh\n# This test host's mariadbd: ctl start|stop|restart (as the login user).\n\
                 d={d}\n\
                 stop() {{ if [ -s $d/mysqld.pid ]; then kill \"$(cat $d/mysqld.pid)\" 2>/dev/null; fi\n\
                   i=0; while [ -e $d/mysqld.pid ]; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && exit 1; done; return 0; }}\n\
                 start() {{ setsid /usr/sbin/mariadbd --defaults-file=$d/my.cnf </dev/null >/dev/null 2>&1 & }}\n\
                 case \"$1\" in start) start;; stop) stop;; restart) stop; start;; *) echo \"usage: $0 start|stop|restart\" >&2; exit 2;; esac\n"
            ),
        )?;
        fs::set_permissions(&ctl, fs::Permissions::from_mode(0o755))?;
        run(Command::new("chown")
            .args(["-R", &format!("{LOGIN_USER}:")])
            .arg(&db))?;
        run(Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={data}"))
            .arg(format!("--tmpdir={d}/tmp"))
            .uid(uid)
            .gid(gid))?;
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.arg(format!("--defaults-file={d}/my.cnf"))
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: as for sshd above.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.mariadbd = Some(cmd.spawn().context("starting mariadbd")?);
        self.wait_mariadb()?;
        Ok(self)
    }

    /// Wait until mariadbd accepts connections (30 s).
    pub fn wait_mariadb(&self) -> anyhow::Result<()> {
        let addr = SocketAddr::from((self.address, 3306));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.mariadb_dir().join("error.log")).unwrap_or_default();
                bail!("mariadbd on {} did not start: {log}", self.address);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Restart mariadbd the way the workers do (`ctl restart`, as the login user).
    pub fn restart_mariadb(&self) -> anyhow::Result<()> {
        let (uid, gid) = Self::login_ids()?;
        run(Command::new(self.mariadb_dir().join("ctl"))
            .arg("restart")
            .uid(uid)
            .gid(gid))?;
        // The listener is gone once the old one stopped; the new one takes a moment.
        self.wait_mariadb()
    }

    /// The server registration body for a DB host: mysqld is reached on the host's address,
    /// reconfigured through `conf.d/99-serveractions.cnf`, controlled with `ctl`, snapshotted
    /// with btrfs when its datadir is on btrfs.
    pub fn db_server_json(&self, name: &str) -> serde_json::Value {
        let mut v = self.server_json(name);
        let db = self.mariadb_dir();
        v["db_host"] = serde_json::json!(self.address.to_string());
        v["db_config_file"] = serde_json::json!(db.join("conf.d/99-serveractions.cnf"));
        let ctl = db.join("ctl").display().to_string();
        v["db_restart_command"] = serde_json::json!(format!("{ctl} restart"));
        v["db_stop_command"] = serde_json::json!(format!("{ctl} stop"));
        v["db_start_command"] = serde_json::json!(format!("{ctl} start"));
        v["db_datadir"] = serde_json::json!(self.datadir());
        // Run by the worker (root, on this machine) to fence the host as a dead master: its
        // mariadbd is killed, and it succeeds only if none is left (the bracket keeps the
        // pattern from matching this shell itself).
        let cnf = db.join("my.cnf").display().to_string();
        v["db_fence_command"] = serde_json::json!(format!(
            "p='[-]-defaults-file={cnf}'; pkill -KILL -f -- \"$p\"; for i in $(seq 100); do pgrep -f -- \"$p\" >/dev/null || {{ echo \"$SA_SERVER fenced: no mariadbd left\"; exit 0; }}; sleep 0.02; done; exit 1"
        ));
        if let Some(vol) = &self.btrfs {
            let vol = vol.display();
            v["db_snapshot_command"] = serde_json::json!(format!(
                "btrfs subvolume snapshot \"$SA_DATADIR\" {vol}/snap-$SA_BACKUP_ID >/dev/null && echo {vol}/snap-$SA_BACKUP_ID"
            ));
            v["db_snapshot_cleanup_command"] =
                serde_json::json!("btrfs subvolume delete \"$SA_SNAPSHOT\" >/dev/null");
        }
        v
    }

    /// Run SQL on this host's mariadbd directly, as root over TCP: its output (`-N -B`).
    pub fn sql(&self, q: &str) -> anyhow::Result<String> {
        let out = run(Command::new("mariadb")
            .args([
                "-h",
                &self.address.to_string(),
                "-P",
                "3306",
                "-u",
                "root",
                "-N",
                "-B",
                "-e",
            ])
            .arg(q))?;
        Ok(out.trim().to_string())
    }

    /// The mariadbd a restart started (not our child): its pid, if it is ours and alive.
    fn restarted_mariadbd(&self) -> Option<u32> {
        let pid_file = self.mariadb_dir().join("mysqld.pid");
        let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mine = self.mariadb_dir().join("my.cnf");
        String::from_utf8_lossy(&cmdline)
            .contains(&*mine.to_string_lossy())
            .then_some(pid)
    }

    /// Cut the host off from the workers: its sshd and every process under it die (SSH and the
    /// MySQL tunnels through it), its mariadbd keeps serving (its slaves stay connected).
    pub fn kill_sshd(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }

    /// Freeze this host's mariadbd for `d` (SIGSTOP, then SIGCONT): a master that is merely
    /// slow. Its connections stay open.
    pub fn pause_mariadb(&self, d: std::time::Duration) {
        let pid = self
            .mariadbd
            .as_ref()
            .map(|c| c.id())
            .or_else(|| self.restarted_mariadbd())
            .expect("mariadbd runs");
        let signal = |s: &str| {
            let _ = Command::new("kill").args([s, &pid.to_string()]).output();
        };
        signal("-STOP");
        std::thread::sleep(d);
        signal("-CONT");
    }

    /// Start this host's mariadbd again after a kill (`ctl start`, as the login user).
    pub fn start_mariadb(&self) -> anyhow::Result<()> {
        let (uid, gid) = Self::login_ids()?;
        run(Command::new(self.mariadb_dir().join("ctl"))
            .arg("start")
            .uid(uid)
            .gid(gid))?;
        self.wait_mariadb()
    }

    /// "Kill the server": SIGKILL its sshd and every process under it (connections, sessions),
    /// and its mariadbd.
    pub fn kill(&mut self) {
        if let Some(mut m) = self.mariadbd.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        if let Some(pid) = self.restarted_mariadbd() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
        if let Some(mut c) = self.sshd.take() {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill();
        if let Some(vol) = self.btrfs.take() {
            // Lazy: a process the kill missed must not keep the loop device forever.
            let _ = Command::new("umount").arg("-l").arg(&vol).output();
        }
        // The TempDir (config, keys, $SA_HOST_DIR) is removed by its own drop.
    }
}

/// SIGKILL `pid` and all its descendants (children first found, then killed top-down).
fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        if let Ok(out) = Command::new("pgrep")
            .arg("-P")
            .arg(all[i].to_string())
            .output()
        {
            all.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    for p in all {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .output();
    }
}

/// A loopback address in 127.42.0.0/16 with nothing on port 22.
fn free_address() -> anyhow::Result<Ipv4Addr> {
    let seed = std::process::id() as u64
        ^ (Instant::now().elapsed().as_nanos() as u64)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
    let mut x = seed | 1;
    for _ in 0..200 {
        // xorshift: cheap and good enough to spread parallel tests apart.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let addr = Ipv4Addr::new(127, 42, (x % 250 + 1) as u8, ((x >> 8) % 250 + 2) as u8);
        if TcpListener::bind((addr, 22)).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no free loopback address in 127.42.0.0/16")
}
