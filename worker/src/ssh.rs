//! SSH to managed servers with the `openssh` crate (native-mux): one master connection per
//! server, reused by every action on it, rebuilt when it dies. Host keys are checked strictly:
//! against the server's pinned `host_key`, else against `SA_KNOWN_HOSTS`.

use std::{
    collections::HashMap,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use prometheus::Histogram;
use shared::{db::servers::Server, errors::chain, Config};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("ssh to {target} failed: {reason}")]
    Session { target: String, reason: String },
    #[error("connecting to {target} timed out after {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error("a command on {target} did not finish within {secs} s")]
    Deadline { target: String, secs: u64 },
}

/// What identifies a master connection: if any of it changes, a new one is opened.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Target {
    address: String,
    port: u16,
    user: String,
    host_key: Option<String>,
}

impl Target {
    fn of(s: &Server) -> Self {
        Self {
            address: s.address.clone(),
            port: s.ssh_port as u16,
            user: s.ssh_user.clone(),
            host_key: s.host_key.clone(),
        }
    }
    fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

struct Host {
    /// Serializes (re)connection to this host.
    conn: tokio::sync::Mutex<Option<(Target, Arc<Session>)>>,
    /// Concurrent sessions on the master, below sshd's MaxSessions.
    sessions: Arc<Semaphore>,
}

pub struct SshPool {
    key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    control_dir: PathBuf,
    connect_timeout: Duration,
    command_timeout: Duration,
    sessions_per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    connect_time: Histogram,
}

/// What a short remote command printed and how it exited.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A session checked out for one remote command; holds one of the host's session slots.
pub struct Slot {
    pub session: Arc<Session>,
    _permit: OwnedSemaphorePermit,
}

impl SshPool {
    pub fn new(
        cfg: &Config,
        control_dir: PathBuf,
        connect_time: Histogram,
    ) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&control_dir)?;
        std::fs::set_permissions(&control_dir, std::fs::Permissions::from_mode(0o700))?;
        // Our own ssh_config keeps the operator's ~/.ssh/config out of our connections. AES-GCM
        // first: with AES-NI it costs far less CPU than chacha20 when backups stream gigabytes.
        std::fs::write(
            control_dir.join("config"),
            "GlobalKnownHostsFile /dev/null\nServerAliveCountMax 3\n\
             Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com\n",
        )?;
        Ok(Self {
            key: cfg.ssh_key.clone(),
            known_hosts: cfg.known_hosts.clone(),
            control_dir,
            connect_timeout: Duration::from_secs(cfg.ssh_connect_timeout_s),
            command_timeout: Duration::from_secs(cfg.ssh_command_timeout_s),
            sessions_per_host: cfg.ssh_sessions_per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
            connect_time,
        })
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("ssh host map poisoned");
        hosts
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Host {
                    conn: tokio::sync::Mutex::new(None),
                    sessions: Arc::new(Semaphore::new(self.sessions_per_host)),
                })
            })
            .clone()
    }

    /// A live session to `server`, connecting (or reconnecting) as needed.
    pub async fn session(&self, server: &Server) -> Result<Slot, SshError> {
        let host = self.host(&server.name);
        let permit = host
            .sessions
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let target = Target::of(server);
        let mut conn = host.conn.lock().await;
        if let Some((t, s)) = conn.as_ref() {
            // A master that died (the host rebooted, its sshd restarted) is replaced, not
            // handed out: the check asks the local master process, not the server.
            if *t == target && s.check().await.is_ok() {
                return Ok(Slot {
                    session: s.clone(),
                    _permit: permit,
                });
            }
        }
        if let Some((_, old)) = conn.take() {
            close_quietly(old).await;
        }
        let started = Instant::now();
        let session = Arc::new(self.connect(&server.name, &target).await?);
        self.connect_time.observe(started.elapsed().as_secs_f64());
        *conn = Some((target, session.clone()));
        Ok(Slot {
            session,
            _permit: permit,
        })
    }

    /// After a failed command: if the master is dead, forget it so the next call reconnects.
    /// Returns true when the master connection is still healthy.
    pub async fn check(&self, server: &Server, session: &Arc<Session>) -> bool {
        if session.check().await.is_ok() {
            return true;
        }
        let host = self.host(&server.name);
        let mut conn = host.conn.lock().await;
        if conn.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, session)) {
            conn.take();
        }
        false
    }

    async fn connect(&self, name: &str, t: &Target) -> Result<Session, SshError> {
        let mut b = SessionBuilder::default();
        b.user(t.user.clone())
            .port(t.port)
            .connect_timeout(self.connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(&self.control_dir)
            .config_file(self.control_dir.join("config"))
            .known_hosts_check(KnownHosts::Strict);
        if let Some(key) = &self.key {
            b.keyfile(key);
        }
        if let Some(pinned) = &t.host_key {
            let file = self.control_dir.join(format!("kh-{name}"));
            let host = if t.port == 22 {
                t.address.clone()
            } else {
                format!("[{}]:{}", t.address, t.port)
            };
            std::fs::write(&file, format!("{host} {pinned}\n")).map_err(|e| SshError::Connect {
                target: t.display(),
                reason: format!("cannot write known_hosts: {e}"),
            })?;
            b.user_known_hosts_file(file);
        } else if let Some(kh) = &self.known_hosts {
            b.user_known_hosts_file(kh);
        }
        // ConnectTimeout covers TCP; the whole handshake is bounded here too.
        let limit = self.connect_timeout + Duration::from_secs(5);
        match tokio::time::timeout(limit, b.connect_mux(&t.address)).await {
            Err(_) => Err(SshError::Timeout {
                target: t.display(),
                secs: limit.as_secs(),
            }),
            Ok(Err(e)) => Err(SshError::Connect {
                target: t.display(),
                reason: chain(&e),
            }),
            Ok(Ok(s)) => Ok(s),
        }
    }

    /// Run a short command and return (exit code, stdout). For helpers such as kill.
    pub async fn exec(&self, server: &Server, script: &str) -> Result<(i32, String), SshError> {
        self.exec_input(server, script, b"")
            .await
            .map(|o| (o.code, o.stdout))
    }

    /// Run a short command with `input` on its stdin; its exit code, stdout and stderr.
    /// Within `SA_SSH_COMMAND_TIMEOUT_S`.
    pub async fn exec_input(
        &self,
        server: &Server,
        script: &str,
        input: &[u8],
    ) -> Result<Output, SshError> {
        self.exec_within(server, script, input, self.command_timeout)
            .await
    }

    /// Run a command with `input` on its stdin, for at most `limit` (a long step gets its
    /// action's timeout).
    pub async fn exec_within(
        &self,
        server: &Server,
        script: &str,
        input: &[u8],
        limit: Duration,
    ) -> Result<Output, SshError> {
        use tokio::io::AsyncWriteExt;
        let slot = self.session(server).await?;
        let fail = |e: openssh::Error| SshError::Session {
            target: Target::of(server).display(),
            reason: chain(&e),
        };
        let run = async {
            let mut child = slot
                .session
                .command("sh")
                .arg("-c")
                .arg(script)
                .stdin(if input.is_empty() {
                    Stdio::null()
                } else {
                    Stdio::piped()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .await?;
            if let Some(mut stdin) = child.stdin().take() {
                // A command that exits without reading shows in its status, not here.
                let _ = stdin.write_all(input).await;
            }
            child.wait_with_output().await
        };
        let Ok(ran) = tokio::time::timeout(limit, run).await else {
            return Err(SshError::Deadline {
                target: Target::of(server).display(),
                secs: limit.as_secs(),
            });
        };
        match ran {
            Ok(o) => Ok(Output {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            }),
            Err(e) => {
                self.check(server, &slot.session).await;
                Err(fail(e))
            }
        }
    }

    pub async fn close_all(&self) {
        let hosts: Vec<Arc<Host>> = self
            .hosts
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        for h in hosts {
            if let Some((_, s)) = h.conn.lock().await.take() {
                close_quietly(s).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }

    /// Close the connection to a server that is gone (terminated).
    pub async fn forget(&self, name: &str) {
        let host = self.host(name);
        if let Some((_, s)) = host.conn.lock().await.take() {
            close_quietly(s).await;
        }
        self.hosts.lock().expect("poisoned").remove(name);
    }

    pub fn control_dir(&self) -> &Path {
        &self.control_dir
    }
}

async fn close_quietly(s: Arc<Session>) {
    if let Ok(s) = Arc::try_unwrap(s) {
        let _ = s.close().await;
    }
}

/// The private directory of the pid files on a server: the SSH user's, mode 0700, so no other
/// local user can write (or plant a link to) what a cancel trusts.
pub const PID_DIR: &str = "$HOME/.serveractions";

/// One pid file per server record (name and address: hosts that share a file system, like the
/// test bed's, do not mix up their files): actions on a server never overlap. Names and
/// addresses are validated (letters, digits, `.`, `_`, `-`, `:`), so the path needs no quoting
/// beyond the double quotes that expand `$HOME`.
pub fn pidfile(server: &Server) -> String {
    format!("{PID_DIR}/{}-{}.pid", server.name, server.address)
}

/// What a kill found on the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Killed {
    /// The action's process group, stopped.
    Group(String),
    /// Nothing of the action's is running.
    Nothing,
    /// The pid file does not name a process group of the action's: nothing was killed.
    Untrusted(String),
    /// The group outlived TERM and KILL.
    Survived(String),
}

impl Killed {
    /// Nothing of the action's runs any more.
    pub fn stopped(&self) -> bool {
        matches!(self, Killed::Group(_) | Killed::Nothing)
    }

    /// Read the last line `kill_action_command` prints.
    pub fn parse(out: &str) -> Self {
        let line = out.lines().last().unwrap_or("").trim();
        match line.split_once(' ') {
            Some(("killed", pg)) => Killed::Group(pg.into()),
            Some(("alive", pg)) => Killed::Survived(pg.into()),
            Some(("untrusted:", why)) => Killed::Untrusted(why.into()),
            _ if line == "none" || line.is_empty() => Killed::Nothing,
            _ => Killed::Untrusted(format!("unexpected answer {line:?}")),
        }
    }
}

impl std::fmt::Display for Killed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Killed::Group(pg) => write!(f, "process group {pg} killed"),
            Killed::Nothing => f.write_str("no process left on the server"),
            Killed::Untrusted(why) => {
                write!(
                    f,
                    "could not stop the script: the pid file is not to be trusted ({why})"
                )
            }
            Killed::Survived(pg) => {
                write!(
                    f,
                    "could not stop the script: process group {pg} outlived TERM and KILL"
                )
            }
        }
    }
}

/// TERM, then KILL after this many tenths of a second.
const KILL_GRACE_TENTHS: u32 = 50;

/// Kill the action's remote process group: TERM, wait up to the grace period, then KILL; only
/// if the server's pid file names this action and a live process that leads its own group (a
/// number > 1: never `kill -1`). `wait_start`: wait up to 2 s for the file to name it (a stop
/// right after the spawn). Prints one line, read by [`Killed::parse`].
pub fn kill_action_command(server: &Server, action_id: i64, wait_start: bool) -> String {
    let tries = if wait_start { 20 } else { 0 };
    format!(
        "f=\"{pid}\"; i=0; while :; do read pg id < \"$f\" 2>/dev/null; [ \"$id\" = {action_id} ] && break; \
         [ $i -ge {tries} ] && {{ echo none; exit 0; }}; sleep 0.1; i=$((i+1)); done; \
         case \"$pg\" in ''|*[!0-9]*) echo \"untrusted: it holds $pg, not a process group id\"; exit 0;; esac; \
         [ \"$pg\" -gt 1 ] || {{ echo \"untrusted: it names process group $pg\"; exit 0; }}; \
         kill -0 \"-$pg\" 2>/dev/null || {{ : > \"$f\"; echo none; exit 0; }}; \
         [ \"$(ps -o pgid= -p \"$pg\" 2>/dev/null | tr -d ' ')\" = \"$pg\" ] || \
           {{ echo \"untrusted: process $pg does not lead process group $pg\"; exit 0; }}; \
         kill -TERM \"-$pg\" 2>/dev/null; \
         i=0; while kill -0 \"-$pg\" 2>/dev/null && [ $i -lt {KILL_GRACE_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; \
         kill -KILL \"-$pg\" 2>/dev/null; \
         i=0; while kill -0 \"-$pg\" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -0 \"-$pg\" 2>/dev/null && {{ echo \"alive $pg\"; exit 0; }}; : > \"$f\"; echo \"killed $pg\"",
        pid = pidfile(server)
    )
}
