//! The mysqld option file the workers own on each server, and restarting mysqld. Settings the DB
//! actions change at runtime (`read_only`, `binlog_format`) are also written here, so that a
//! restart cannot undo them (a slave restarted writable is how split brains start). The file
//! is the server's `db_config_file` (default: the last file of Debian's include directory, so
//! it wins over the others); mysqld is restarted with its `db_restart_command`.

use std::time::{Duration, Instant};

use shared::db::servers::Server;

use crate::{
    ctx::{ActionError, Ctx},
    mysql::{column, Db},
    Worker,
};

pub const DEFAULT_CONFIG_FILE: &str = "/etc/mysql/mariadb.conf.d/99-serveractions.cnf";
pub const DEFAULT_RESTART_COMMAND: &str = "systemctl restart mariadb";

/// Option groups mysqld reads: a setting in any of them is replaced by ours.
const SERVER_GROUPS: &[&str] = &["mysqld", "mariadb", "mariadbd", "server"];
const HEADER: &str = "# Managed by ServerActions: the DB actions rewrite the settings below.";

pub fn config_file(server: &Server) -> &str {
    server
        .db_config_file
        .as_deref()
        .unwrap_or(DEFAULT_CONFIG_FILE)
}

/// Set `[mysqld]` options in the server's managed option file (other lines are kept).
pub async fn set(
    worker: &Worker,
    server: &Server,
    settings: &[(&str, &str)],
) -> Result<(), ActionError> {
    let path = config_file(server);
    // Validated at registration: an absolute path of plain characters, no quoting needed.
    let read = worker
        .ssh
        .exec_input(
            server,
            &format!("if [ -e {path} ]; then cat {path}; fi"),
            b"",
        )
        .await?;
    if read.code != 0 {
        return Err(ActionError::Failed(format!(
            "cannot read {path} on {}: {}",
            server.name, read.stderr
        )));
    }
    let text = update(&read.stdout, settings);
    let write = worker
        .ssh
        .exec_input(
            server,
            &format!(
                "set -e; mkdir -p \"$(dirname {path})\"; umask 022; cat > {path}.sa-new; mv {path}.sa-new {path}"
            ),
            text.as_bytes(),
        )
        .await?;
    if write.code != 0 {
        return Err(ActionError::Failed(format!(
            "cannot write {path} on {} (set db_config_file to a file the SSH user may write): {}",
            server.name, write.stderr
        )));
    }
    Ok(())
}

/// `text` with each of `settings` in its `[mysqld]` group, replacing the same option (`-` and
/// `_` alike) in any group mysqld reads.
pub fn update(text: &str, settings: &[(&str, &str)]) -> String {
    let norm = |k: &str| k.trim().replace('-', "_").to_ascii_lowercase();
    let ours: Vec<String> = settings.iter().map(|(k, _)| norm(k)).collect();
    let mut out: Vec<String> = Vec::new();
    let mut group = String::new();
    let mut insert_at = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            group = t.trim_matches(['[', ']', ' ']).to_ascii_lowercase();
        } else if SERVER_GROUPS.contains(&group.as_str())
            && !t.starts_with(['#', ';'])
            && ours.contains(&norm(t.split('=').next().unwrap_or_default()))
        {
            continue;
        }
        out.push(line.to_string());
        if group == "mysqld" {
            insert_at = Some(out.len());
        }
    }
    let at = match insert_at {
        Some(at) => at,
        None => {
            if out.is_empty() {
                out.push(HEADER.into());
            }
            out.push("[mysqld]".into());
            out.len()
        }
    };
    for (i, (k, v)) in settings.iter().enumerate() {
        out.insert(at + i, format!("{k} = {v}"));
    }
    out.join("\n") + "\n"
}

/// Restart mysqld with the server's restart command, then connect again (up to 60 s).
pub async fn restart(worker: &Worker, server: &Server) -> Result<Db, ActionError> {
    let cmd = server
        .db_restart_command
        .as_deref()
        .unwrap_or(DEFAULT_RESTART_COMMAND);
    let ran = tokio::time::timeout(
        Duration::from_secs(120),
        worker.ssh.exec_input(server, cmd, b""),
    )
    .await
    .map_err(|_| ActionError::Failed(format!("{cmd:?} did not finish within 120 s")))??;
    if ran.code != 0 {
        return Err(ActionError::Failed(format!(
            "restarting mysqld with {cmd:?} failed (exit {}): {}",
            ran.code, ran.stderr
        )));
    }
    Db::wait_up(worker, server, Duration::from_secs(60))
        .await
        .map_err(|e| {
            ActionError::Failed(format!(
                "mysqld did not come back within 60 s after the restart: {e}"
            ))
        })
}

/// Binary logging on with a server_id of its own (not 0, not `clash`, the master's): if not,
/// say so, write them to the option file and restart mysqld (`db` is then the new connection).
pub async fn ensure_binlog(
    ctx: &Ctx<'_>,
    db: &mut Db,
    clash: Option<u64>,
) -> Result<(), ActionError> {
    const LOGGING: &str = "SELECT @@log_bin AS log_bin, @@server_id AS server_id, \
                           @@log_slave_updates AS log_slave_updates";
    let row = db
        .query_first_row(LOGGING)
        .await?
        .ok_or_else(|| ActionError::Failed("no answer from mysqld".into()))?;
    let id = column(&row, "server_id").as_u64().unwrap_or(0);
    let logging = column(&row, "log_bin") == 1 && id != 0 && Some(id) != clash;
    if logging && column(&row, "log_slave_updates") == 1 {
        ctx.log
            .system(format!("Binary logging is on (server_id {id})."))
            .await;
        return Ok(());
    }
    let new_id = if logging {
        // Only the slave updates are missing from the binary log: a slave that is promoted
        // must serve what it replicated to the other slaves.
        ctx.log
            .system(format!(
                "Replicated changes are not written to the binary log (log_slave_updates): configuring and restarting server ({}).",
                config_file(ctx.server)
            ))
            .await;
        id.to_string()
    } else {
        let new_id = server_id_for(ctx.server).to_string();
        ctx.log
            .system(format!(
                "Server doesn't appear to be logging binary logs, configuring and restarting server with binary logging (server_id {new_id}, {}).",
                config_file(ctx.server)
            ))
            .await;
        new_id
    };
    set(
        ctx.worker,
        ctx.server,
        &[
            ("log_bin", "mysql-bin"),
            ("server_id", &new_id),
            ("binlog_format", "ROW"),
            ("log_slave_updates", "ON"),
        ],
    )
    .await?;
    let started = Instant::now();
    let old = std::mem::replace(db, restart(ctx.worker, ctx.server).await?);
    old.close().await;
    let row = db
        .query_first_row(LOGGING)
        .await?
        .ok_or_else(|| ActionError::Failed("no answer from mysqld".into()))?;
    if column(&row, "log_bin") != 1
        || column(&row, "log_slave_updates") != 1
        || column(&row, "server_id") != new_id.parse::<u64>().unwrap_or(0)
    {
        return Err(ActionError::Failed(format!(
            "mysqld restarted but binary logging (with log_slave_updates) is still off or server_id is not {new_id}: is {} read by mysqld?",
            config_file(ctx.server)
        )));
    }
    ctx.log
        .system(format!(
            "mysqld restarted in {:.1} s: binary logging on (with replicated changes), server_id {new_id}.",
            started.elapsed().as_secs_f64()
        ))
        .await;
    Ok(())
}

/// A server_id for a server that has none (or shares its master's): from its IPv4 address,
/// else from a hash of its name. Never 0.
pub fn server_id_for(server: &Server) -> u32 {
    let id = match server.address.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => u32::from(ip),
        Err(_) => server.name.bytes().fold(2_166_136_261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16_777_619)
        }),
    };
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::update;

    #[test]
    fn a_new_file_gets_a_mysqld_group() {
        let t = update("", &[("read_only", "1")]);
        assert!(t.ends_with("[mysqld]\nread_only = 1\n"), "{t}");
        assert!(t.starts_with("# Managed by ServerActions"));
    }

    #[test]
    fn settings_are_replaced_wherever_mysqld_reads_them_and_other_lines_kept() {
        let before = "# mine\n[client]\nread_only=5\n[mariadbd]\nread-only = 0\nport=3307\n\
                      [mysqld]\nlog_bin=x\n# read_only=0 (comment)\n[mysqldump]\nquick\n";
        let t = update(before, &[("read_only", "1"), ("log_bin", "mysql-bin")]);
        assert_eq!(
            t,
            "# mine\n[client]\nread_only=5\n[mariadbd]\nport=3307\n[mysqld]\n\
             # read_only=0 (comment)\nread_only = 1\nlog_bin = mysql-bin\n[mysqldump]\nquick\n"
        );
        // Applying the same settings again changes nothing.
        assert_eq!(
            update(&t, &[("read_only", "1"), ("log_bin", "mysql-bin")]),
            t
        );
    }
}
