//! MySQL/MariaDB through a port forwarded over the server's SSH master connection: the worker
//! listens on a Unix socket in its private control directory, the server's sshd connects to
//! mysqld on `db_host:db_port` (127.0.0.1 by default), so the database port never needs to be
//! reachable from the workers' network. Credentials come from `SA_MYSQL_USER`/`SA_MYSQL_PASSWORD`
//! and never appear in a log line or an error.

use std::{path::PathBuf, sync::Arc, time::Duration};

use mysql_async::{prelude::Queryable, Conn, OptsBuilder};
use openssh::{ForwardType, Session, Socket};
use secrecy::ExposeSecret;
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
            .user(Some(worker.cfg.mysql_user.clone()))
            .pass(Some(worker.cfg.mysql_password.expose_secret()).filter(|p| !p.is_empty()));
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
        self.conn.query_first(sql).await.map_err(|e| self.error(e))
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
        self.conn.query_drop(sql).await.map_err(|e| self.error(e))
    }

    pub async fn strings(&mut self, sql: &str) -> Result<Vec<String>, DbError> {
        self.conn.query(sql).await.map_err(|e| self.error(e))
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
        self.conn
            .query(format!(
                "SELECT table_schema, table_name FROM information_schema.tables
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1, 2"
            ))
            .await
            .map_err(|e| self.error(e))
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
        let v: Option<Option<String>> = self
            .conn
            .query_first(sql)
            .await
            .map_err(|e| self.error(e))?;
        Ok(v.flatten().unwrap_or_default())
    }
}

/// Options for the `mysql`/`mysqldump` clients run on `server` itself: TCP to its mysqld, our
/// user. A password never goes on a command line: it is written to a private temporary file
/// on the server (`--defaults-extra-file`), removed by [`ClientOpts::cleanup`].
pub struct ClientOpts {
    /// For `mysql` and `mysqldump`.
    pub args: String,
    /// For `mariadb-backup` (the defaults file first, long options, no `--protocol`).
    pub backup_args: String,
    file: Option<String>,
}

impl ClientOpts {
    pub async fn new(worker: &Worker, server: &Server) -> Result<Self, DbError> {
        let host = server.db_host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let user = shlex::try_quote(&worker.cfg.mysql_user)
            .map_err(|_| DbError::Forward {
                target: server.name.clone(),
                reason: "bad SA_MYSQL_USER".into(),
            })?
            .into_owned();
        let file = if worker.cfg.mysql_password.expose_secret().is_empty() {
            None
        } else {
            let slot = worker.ssh.session(server).await?;
            let mut child = slot
                .session
                .clone()
                .arc_raw_command("umask 077; f=$(mktemp); cat > \"$f\"; echo \"$f\"")
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::null())
                .spawn()
                .await
                .map_err(|e| DbError::Forward {
                    target: server.name.clone(),
                    reason: shared::errors::chain(&e),
                })?;
            let mut stdin = child.stdin().take().expect("piped");
            let body = format!(
                "[client]\npassword={}\n",
                worker.cfg.mysql_password.expose_secret()
            );
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(body.as_bytes()).await;
            drop(stdin);
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| DbError::Forward {
                    target: server.name.clone(),
                    reason: shared::errors::chain(&e),
                })?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
