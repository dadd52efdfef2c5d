//! MySQL/MariaDB through a port forwarded over the server's SSH master connection: the worker
//! listens on a Unix socket in its private control directory, the server's sshd connects to
//! mysqld on `db_host:db_port` (127.0.0.1 by default), so the database port never needs to be
//! reachable from the workers' network. Credentials come from `SA_MYSQL_USER`/`SA_MYSQL_PASSWORD`
//! and never appear in a log line or an error.

use std::{path::PathBuf, sync::Arc, time::Duration};

use mysql_async::{prelude::Queryable, Conn, OptsBuilder};
use openssh::{ForwardType, Session, Socket};
use secrecy::{ExposeSecret, SecretString};
use shared::db::servers::Server;

use crate::{ssh::SshError, Worker};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("cannot forward a port to {target} over SSH: {reason}")]
    Forward { target: String, reason: String },
    #[error("MySQL at {target}: {reason}")]
    Mysql { target: String, reason: String },
    #[error("MySQL at {target} did not answer within {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error("the database credentials of {server}: {reason}")]
    Credentials { server: String, reason: String },
}

/// Who the workers are on a server's mysqld: its own `db_user` and `db_password_ref` (a
/// stored secret), else `SA_MYSQL_USER` / `SA_MYSQL_PASSWORD`. The password is added to the
/// worker's masks: no action log shows it.
pub struct Credentials {
    pub user: String,
    pub password: SecretString,
}

pub async fn credentials(worker: &Worker, server: &Server) -> Result<Credentials, DbError> {
    let bad = |reason: String| DbError::Credentials {
        server: server.name.clone(),
        reason,
    };
    let user = server
        .db_user
        .clone()
        .unwrap_or_else(|| worker.cfg.mysql_user.clone());
    let Some(name) = &server.db_password_ref else {
        return Ok(Credentials {
            user,
            password: worker.cfg.mysql_password.clone(),
        });
    };
    let password = open_secret(worker, name)
        .await
        .map_err(|e| bad(format!("its password: {e}")))?;
    Ok(Credentials { user, password })
}

/// The stored secret `name`, opened with the worker's key and added to its masks (no action
/// log shows it).
pub async fn open_secret(worker: &Worker, name: &str) -> Result<SecretString, String> {
    let keys = worker.keys.as_ref().ok_or_else(|| {
        format!(
            "it is the secret {name:?} and this worker has no key to open it ({} is missing)",
            worker.cfg.secret_key_path().display()
        )
    })?;
    let sealed = shared::db::secrets::get(&worker.pool, name)
        .await
        .map_err(|e| format!("cannot read the secret {name:?}: {e}"))?
        .ok_or_else(|| format!("the secret {name:?} is not in the secret store"))?;
    let value = keys
        .open(&sealed)
        .map_err(|e| format!("cannot open the secret {name:?}: {e:#}"))?;
    worker.masks.add(&value);
    Ok(value.into())
}

/// A connection to a server's mysqld, with the SSH forward it runs through.
pub struct Db {
    pub conn: Conn,
    pub target: String,
    session: Arc<Session>,
    path: PathBuf,
    remote: Remote,
}

/// Where a forward ends on the server.
#[derive(Clone)]
enum Remote {
    Tcp(String, u16),
    Unix(String),
}

impl Remote {
    fn socket(&self) -> Socket<'static> {
        match self {
            Remote::Tcp(host, port) => Socket::TcpSocket {
                host: host.clone().into(),
                port: *port,
            },
            Remote::Unix(path) => Socket::UnixSocket {
                path: PathBuf::from(path).into(),
            },
        }
    }
}

impl Db {
    pub async fn connect(worker: &Worker, server: &Server) -> Result<Db, DbError> {
        let host = server.db_host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = server.db_port as u16;
        let target = format!("{}:{port} on {}", host, server.name);
        Self::connect_to(worker, server, Remote::Tcp(host, port), target).await
    }

    /// A mysqld listening on a Unix socket of `server` (a scratch instance).
    pub async fn connect_socket(
        worker: &Worker,
        server: &Server,
        path: &str,
    ) -> Result<Db, DbError> {
        let target = format!("{path} on {}", server.name);
        Self::connect_to(worker, server, Remote::Unix(path.to_string()), target).await
    }

    async fn connect_to(
        worker: &Worker,
        server: &Server,
        remote: Remote,
        target: String,
    ) -> Result<Db, DbError> {
        let creds = credentials(worker, server).await?;
        let session = worker.ssh.session(server).await?.session;
        let nonce: u32 = rand_u32();
        let path = worker
            .ssh
            .control_dir()
            .join(format!("db-{}-{nonce:08x}.sock", server.id));
        let forwarded = session
            .request_port_forward(
                ForwardType::Local,
                Socket::UnixSocket {
                    path: path.clone().into(),
                },
                remote.socket(),
            )
            .await;
        if let Err(e) = forwarded {
            // A dead master connection is rebuilt on the next use.
            worker.ssh.check(server, &session).await;
            return Err(DbError::Forward {
                target,
                reason: shared::errors::chain(&e),
            });
        }
        let opts = OptsBuilder::default()
            .socket(Some(path.to_string_lossy().into_owned()))
            .prefer_socket(false)
            .user(Some(creds.user))
            .pass(Some(creds.password.expose_secret()).filter(|p| !p.is_empty()));
        let limit = Duration::from_secs(10);
        let forward = Forward {
            session: session.clone(),
            path: path.clone(),
            remote: remote.clone(),
        };
        let conn = match tokio::time::timeout(limit, Conn::new(opts)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                forward.close().await;
                let hint = if matches!(e, mysql_async::Error::Io(_)) {
                    " (is mysqld listening there?)"
                } else {
                    ""
                };
                return Err(DbError::Mysql {
                    target,
                    reason: format!("{e}{hint}"),
                });
            }
            Err(_) => {
                forward.close().await;
                return Err(DbError::Timeout {
                    target,
                    secs: limit.as_secs(),
                });
            }
        };
        Ok(Db {
            conn,
            target,
            session,
            path,
            remote,
        })
    }

    pub fn error(&self, e: mysql_async::Error) -> DbError {
        DbError::Mysql {
            target: self.target.clone(),
            reason: e.to_string(),
        }
    }

    /// Disconnect and close the forward.
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
        Forward {
            session: self.session,
            path: self.path,
            remote: self.remote,
        }
        .close()
        .await;
    }

    pub async fn query_first_row(
        &mut self,
        sql: &str,
    ) -> Result<Option<mysql_async::Row>, DbError> {
        within(&self.target, self.conn.query_first(sql)).await
    }
}

/// How long one statement through [`Db`]'s helpers may take: a half-dead server must not hang
/// an action that runs to its end (promote, restore). Heavy scans (checksums, verification)
/// use the connection directly and are bounded by their action's timeout.
pub const STATEMENT_DEADLINE: Duration = Duration::from_secs(120);

/// `f`, a statement on the server `target`, within [`STATEMENT_DEADLINE`].
pub async fn within<T>(
    target: &str,
    f: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(STATEMENT_DEADLINE, f).await {
        Ok(r) => r.map_err(|e| DbError::Mysql {
            target: target.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(DbError::Timeout {
            target: target.to_string(),
            secs: STATEMENT_DEADLINE.as_secs(),
        }),
    }
}

struct Forward {
    session: Arc<Session>,
    path: PathBuf,
    remote: Remote,
}

impl Forward {
    async fn close(self) {
        let _ = self
            .session
            .close_port_forward(
                ForwardType::Local,
                Socket::UnixSocket {
                    path: self.path.clone().into(),
                },
                self.remote.socket(),
            )
            .await;
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// `schema`.`table`, quoted for SQL.
pub fn table_ident(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// An identifier quoted for SQL.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// A column of a row as JSON (NULL → null, numbers as numbers, the rest as text).
pub fn column(row: &mysql_async::Row, name: &str) -> serde_json::Value {
    use mysql_async::Value as V;
    let Some(idx) = row.columns_ref().iter().position(|c| c.name_str() == name) else {
        return serde_json::Value::Null;
    };
    match row.as_ref(idx) {
        None | Some(V::NULL) => serde_json::Value::Null,
        Some(V::Int(i)) => (*i).into(),
        Some(V::UInt(u)) => (*u).into(),
        Some(V::Float(f)) => (*f).into(),
        Some(V::Double(d)) => (*d).into(),
        Some(V::Bytes(b)) => {
            let s = String::from_utf8_lossy(b);
            s.parse::<i64>()
                .map(Into::into)
                .unwrap_or_else(|_| s.into_owned().into())
        }
        Some(other) => other.as_sql(true).into(),
    }
}

impl Db {
    /// Run statements whose results do not matter (`SET`, `CHANGE MASTER`...).
    pub async fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        within(&self.target, self.conn.query_drop(sql)).await
    }

    pub async fn strings(&mut self, sql: &str) -> Result<Vec<String>, DbError> {
        within(&self.target, self.conn.query(sql)).await
    }

    /// The databases that are not mysqld's own, by name.
    pub async fn user_databases(&mut self) -> Result<Vec<String>, DbError> {
        self.strings(&format!(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1"
        ))
        .await
    }

    /// The base tables outside mysqld's own schemas: (schema, table), sorted.
    pub async fn user_tables(&mut self) -> Result<Vec<(String, String)>, DbError> {
        let sql = format!(
            "SELECT table_schema, table_name FROM information_schema.tables
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1, 2"
        );
        within(&self.target, self.conn.query(sql)).await
    }

    /// Connect to `server`'s mysqld, retrying every 250 ms for up to `limit` (it is starting).
    pub async fn wait_up(worker: &Worker, server: &Server, limit: Duration) -> Result<Db, DbError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match Db::connect(worker, server).await {
                Ok(db) => return Ok(db),
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// One string value (`SELECT @@gtid_current_pos`...), empty if NULL.
    pub async fn string(&mut self, sql: &str) -> Result<String, DbError> {
        let v: Option<Option<String>> = within(&self.target, self.conn.query_first(sql)).await?;
        Ok(v.flatten().unwrap_or_default())
    }
}

/// Options for the `mysql`/`mysqldump`/`mariadb-backup` clients run on `server` itself: TCP to
/// its mysqld, its credentials. A password never goes on a command line: it is written (over
/// stdin) to a 0600 file in the SSH user's 0700 `~/.serveractions`, which the one command that
/// uses it removes when it exits ([`ClientOpts::command`]), and [`ClientOpts::cleanup`] after it.
pub struct ClientOpts {
    /// For `mysql` and `mysqldump`.
    pub args: String,
    /// For `mariadb-backup` (the defaults file first, long options, no `--protocol`).
    pub backup_args: String,
    file: Option<String>,
}

/// Makes the private directory (refusing one that is a link or not the user's own), sweeps
/// option files a dead worker left there a day ago, and writes stdin to a new one.
const WRITE_OPTION_FILE: &str = "d=\"$HOME/.serveractions\"; (umask 077; mkdir -p \"$d\") \
    && [ -d \"$d\" ] && [ ! -L \"$d\" ] && [ -O \"$d\" ] && chmod 700 \"$d\" || exit 125; \
    find \"$d\" -maxdepth 1 -name 'mysql-*.cnf' -mmin +1440 -delete 2>/dev/null; \
    f=$(umask 077; mktemp \"$d/mysql-XXXXXXXX.cnf\") && cat > \"$f\" && echo \"$f\"";

impl ClientOpts {
    pub async fn new(worker: &Worker, server: &Server) -> Result<Self, DbError> {
        let host = server.db_host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let creds = credentials(worker, server).await?;
        let user = shlex::try_quote(&creds.user)
            .map_err(|_| DbError::Credentials {
                server: server.name.clone(),
                reason: "the user name cannot be quoted".into(),
            })?
            .into_owned();
        let password = creds.password.expose_secret();
        let file = if password.is_empty() {
            None
        } else {
            let body = format!("[client]\npassword={password}\n");
            let out = worker
                .ssh
                .exec_input(server, WRITE_OPTION_FILE, body.as_bytes())
                .await?;
            let (code, path) = (out.code, out.stdout.trim().to_string());
            if code != 0 || !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(DbError::Credentials {
                    server: server.name.clone(),
                    reason: format!(
                        "cannot write a private option file in ~/.serveractions (exit code {code})"
                    ),
                });
            }
            Some(path)
        };
        let defaults = file
            .as_ref()
            .map(|f| format!("--defaults-extra-file={f} "))
            .unwrap_or_default();
        Ok(Self {
            args: format!(
                "{defaults}--protocol=TCP -h {host} -P {} -u {user}",
                server.db_port
            ),
            backup_args: format!(
                "{defaults}--host={host} --port={} --user={user}",
                server.db_port
            ),
            file,
        })
    }

    /// `cmd` (which uses these options) as a remote command that removes the option file
    /// when it exits, also when it is hung up on or terminated.
    pub fn command(&self, cmd: &str) -> String {
        match &self.file {
            None => cmd.to_string(),
            Some(f) => {
                format!("trap 'rm -f {f}' EXIT; trap 'exit 129' HUP; trap 'exit 143' TERM; {cmd}")
            }
        }
    }

    pub async fn cleanup(self, worker: &Worker, server: &Server) {
        if let Some(f) = self.file {
            let _ = worker.ssh.exec(server, &format!("rm -f {f}")).await;
        }
    }
}

/// `names` as the last arguments of `mysqldump --databases`: after `--` (a database named
/// `--no-data` is a database, not an option that would empty the dump), each quoted for the shell.
pub fn database_arguments(names: &[String]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| shlex::try_quote(n).map_or_else(|_| "''".into(), |q| q.into_owned()))
        .collect();
    format!("-- {}", quoted.join(" "))
}

#[cfg(test)]
mod argument_tests {
    #[test]
    fn database_names_cannot_read_as_options() {
        let names = [
            "shop".to_string(),
            "--no-data".to_string(),
            "a b".to_string(),
        ];
        assert_eq!(super::database_arguments(&names), "-- shop --no-data 'a b'");
    }
}
