//! A cluster's topology as the workers see it: each slave's replication state (`SlaveState`),
//! the evidence that a master the worker cannot reach is dead (`dead_master_evidence`), the
//! slave to promote (`choose`), moving slaves to a new master (`repoint`) and fencing a dead
//! master (`fence`). Calls only downward (`mysql`, `ssh`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::db::{
    clusters::Cluster,
    servers::{PromotionRule, Server},
};

use super::gtid::{self, Position};
use crate::{
    ctx::{ActionError, Ctx},
    mysql::{column, Db},
};

/// What `SHOW SLAVE STATUS` and the GTID variables say on a slave.
#[derive(Clone, Debug)]
pub struct SlaveState {
    pub io: String,
    pub sql: String,
    pub master_host: String,
    pub lag: Option<i64>,
    pub io_errno: i64,
    pub io_error: String,
    pub sql_error: String,
    /// What its IO thread received (`Gtid_IO_Pos`).
    pub received: Position,
    /// What it applied (`gtid_slave_pos`).
    pub applied: Position,
    /// What its binary log holds (`gtid_binlog_pos`).
    pub binlog: Position,
}

/// Client errors an IO thread reports while its master is gone (can't connect, connection
/// lost, server gone away, lost during the handshake, unknown host).
const LOST_MASTER_ERRNOS: &[i64] = &[0, 2002, 2003, 2005, 2006, 2013];

impl SlaveState {
    /// `None`: the server is not a slave.
    pub async fn read(db: &mut Db) -> Result<Option<Self>, ActionError> {
        let Some(s) = db.query_first_row("SHOW SLAVE STATUS").await? else {
            return Ok(None);
        };
        let text = |k: &str| column(&s, k).as_str().unwrap_or_default().to_string();
        let pos = |v: &str| Position::parse(v).map_err(ActionError::Failed);
        let vars = db
            .query_first_row("SELECT @@gtid_slave_pos AS applied, @@gtid_binlog_pos AS binlog")
            .await?
            .ok_or_else(|| ActionError::Failed("no answer from mysqld".into()))?;
        let var = |k: &str| column(&vars, k).as_str().unwrap_or_default().to_string();
        Ok(Some(Self {
            io: text("Slave_IO_Running"),
            sql: text("Slave_SQL_Running"),
            master_host: text("Master_Host"),
            lag: column(&s, "Seconds_Behind_Master").as_i64(),
            io_errno: column(&s, "Last_IO_Errno").as_i64().unwrap_or_default(),
            io_error: text("Last_IO_Error"),
            sql_error: text("Last_SQL_Error"),
            received: pos(&text("Gtid_IO_Pos"))?,
            applied: pos(&var("applied"))?,
            binlog: pos(&var("binlog"))?,
        }))
    }

    /// Its IO thread is connected to `master`.
    pub fn connected_to(&self, master: &Server) -> bool {
        self.io == "Yes" && self.master_host == master.address
    }

    /// Why its data cannot be trusted to be the latest, if it cannot: replication was stopped
    /// by someone, or failed for another reason than the master going away.
    pub fn stale(&self, master: Option<&Server>) -> Option<String> {
        if let Some(m) = master.filter(|m| self.master_host != m.address) {
            return Some(format!(
                "it replicates from {}, not from the master {} ({})",
                self.master_host, m.name, m.address
            ));
        }
        if self.io == "No" {
            return Some(
                "its IO thread is stopped: it has received nothing since it was stopped".into(),
            );
        }
        if !LOST_MASTER_ERRNOS.contains(&self.io_errno) {
            return Some(format!("its IO thread failed: {}", self.io_error));
        }
        if !self.sql_error.is_empty() {
            return Some(format!("its SQL thread failed: {}", self.sql_error));
        }
        None
    }

    /// Its threads for a log line: `IO Connecting error 2003, SQL Yes`.
    pub fn threads(&self) -> String {
        let error = if self.io_errno != 0 {
            format!(" error {}", self.io_errno)
        } else {
            String::new()
        };
        format!("IO {}{error}, SQL {}", self.io, self.sql)
    }

    /// Transactions written on the slave itself (in its binary log, not from replication).
    pub fn errant(&self) -> Vec<gtid::Gtid> {
        self.binlog.beyond(&self.applied)
    }

    /// As kept on the server (`repl_state`) and shown by `GET /v1/clusters/{name}`.
    pub fn json(&self) -> Value {
        json!({
            "io_running": self.io, "sql_running": self.sql, "master_host": self.master_host,
            "seconds_behind_master": self.lag, "received": self.received.to_string(),
            "applied": self.applied.to_string(), "last_io_error": self.io_error,
            "last_sql_error": self.sql_error,
        })
    }
}

/// A slave of the cluster, its connection (if it answered) and its state.
pub struct Member {
    pub server: Server,
    pub db: Option<Db>,
    pub state: Option<SlaveState>,
    /// Why it could not be read.
    pub error: Option<String>,
}

impl Member {
    /// Connect to `server` and read its replication state.
    pub async fn read(ctx: &Ctx<'_>, server: Server) -> Member {
        let mut db = match Db::connect(ctx.worker, &server).await {
            Ok(db) => db,
            Err(e) => {
                return Member {
                    server,
                    db: None,
                    state: None,
                    error: Some(e.to_string()),
                }
            }
        };
        let (state, error) = match SlaveState::read(&mut db).await {
            Ok(Some(s)) => (Some(s), None),
            Ok(None) => (None, Some("it is not replicating".into())),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(s) = &state {
            let _ = shared::db::clusters::observed(&ctx.worker.pool, &server.name, &s.json()).await;
        }
        Member {
            server,
            db: Some(db),
            state,
            error,
        }
    }

    /// Read its state again (an unanswered read keeps the last one).
    pub async fn refresh(&mut self) {
        if let Some(db) = self.db.as_mut() {
            if let Ok(Some(s)) = SlaveState::read(db).await {
                self.state = Some(s);
            }
        }
    }

    pub async fn close(self) {
        if let Some(db) = self.db {
            db.close().await;
        }
    }

    /// One line for the log: its threads and positions.
    pub fn describe(&self) -> String {
        match (&self.state, &self.error) {
            (Some(s), _) => format!(
                "{} ({}, received {}, applied {})",
                self.server.name,
                s.threads(),
                s.received,
                s.applied
            ),
            (None, Some(e)) => format!("{} (unreadable: {e})", self.server.name),
            (None, None) => self.server.name.clone(),
        }
    }
}

/// Wait until every readable slave has reported its IO thread not connected to `master` for
/// `need` without a break, counted from the reads that saw it (the first at `read_at`, when the
/// states the slaves hold were read). `Err(slave)`: one was still connected after `need + grace`
/// (the slaves' own timeout for a silent master): the master is alive according to it.
pub async fn dead_master_evidence(
    master: &Server,
    slaves: &mut [Member],
    read_at: Instant,
    need: Duration,
    grace: Duration,
) -> Result<Duration, String> {
    let mut clean_since: Option<Instant> = None;
    let mut last_read = read_at;
    loop {
        let connected = slaves
            .iter()
            .find(|m| m.state.as_ref().is_some_and(|s| s.connected_to(master)))
            .map(|m| m.server.name.clone());
        match connected {
            Some(name) => {
                clean_since = None;
                if read_at.elapsed() >= need + grace {
                    return Err(name);
                }
            }
            None => {
                let since = *clean_since.get_or_insert(last_read);
                if since.elapsed() >= need {
                    return Ok(read_at.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last_read = Instant::now();
        futures::future::join_all(slaves.iter_mut().map(Member::refresh)).await;
    }
}

/// A slave as [`choose`] weighs it.
pub struct Candidate<'a> {
    pub name: &'a str,
    pub rule: PromotionRule,
    pub state: &'a SlaveState,
    /// Why it is not to be trusted (see [`SlaveState::stale`]).
    pub stale: Option<String>,
}

/// The slave to promote and what `force` overrode, or every reason not to.
#[derive(Debug, PartialEq)]
pub struct Choice {
    pub name: String,
    pub overridden: Vec<String>,
}

/// Pick the slave to promote: `named`, or the most advanced one (received, then applied;
/// then `prefer` before `neutral`; never `must_not` or a stale one). Refused, unless `force`:
/// errant transactions anywhere, GTID sets that diverge, a named slave that is stale or that
/// another slave is ahead of (`compare`: the master is gone, so what the slaves hold is all
/// there is), a best slave that another slave is ahead of.
pub fn choose(
    slaves: &[Candidate<'_>],
    named: Option<&str>,
    compare: bool,
    force: bool,
) -> Result<Choice, Vec<String>> {
    let mut problems = Vec::new();
    for c in slaves {
        let errant = c.state.errant();
        if !errant.is_empty() {
            problems.push(format!(
                "errant transactions on {}: {} (written on it, not replicated from the master)",
                c.name,
                gtid::list(&errant)
            ));
        }
    }
    for (i, a) in slaves.iter().enumerate() {
        for b in &slaves[i + 1..] {
            let (ab, ba) = (
                a.state.received.beyond(&b.state.received),
                b.state.received.beyond(&a.state.received),
            );
            if !ab.is_empty() && !ba.is_empty() {
                problems.push(format!(
                    "GTID sets diverge: {} has {} that {} lacks, and {} has {} that {} lacks",
                    a.name,
                    gtid::list(&ab),
                    b.name,
                    b.name,
                    gtid::list(&ba),
                    a.name
                ));
            }
        }
    }
    let chosen = match named {
        Some(n) => match slaves.iter().find(|c| c.name == n) {
            Some(c) => {
                if let Some(why) = &c.stale {
                    problems.push(format!("{n} cannot be trusted to be up to date: {why}"));
                }
                Some(c)
            }
            None => return Err(vec![format!("{n} is not a readable slave of the cluster")]),
        },
        None => {
            let best = slaves
                .iter()
                .filter(|c| c.stale.is_none() && c.rule != PromotionRule::MustNot)
                .max_by(|a, b| {
                    let rank = |c: &Candidate<'_>| {
                        (
                            c.state.received.total(),
                            c.state.applied.total(),
                            c.rule == PromotionRule::Prefer,
                        )
                    };
                    rank(a).cmp(&rank(b)).then_with(|| b.name.cmp(a.name))
                });
            if best.is_none() {
                let why: Vec<String> = slaves
                    .iter()
                    .map(|c| match (&c.stale, c.rule) {
                        (Some(s), _) => format!("{}: {s}", c.name),
                        (None, _) => format!("{}: promotion_rule must_not", c.name),
                    })
                    .collect();
                return Err(vec![format!(
                    "no slave can be promoted ({})",
                    if why.is_empty() {
                        "the cluster has no readable slave".into()
                    } else {
                        why.join("; ")
                    }
                )]);
            }
            best
        }
    };
    let chosen = chosen.expect("chosen above");
    if compare || named.is_none() {
        for o in slaves.iter().filter(|o| o.name != chosen.name) {
            for (what, mine, theirs) in [
                ("received", &chosen.state.received, &o.state.received),
                ("applied", &chosen.state.applied, &o.state.applied),
            ] {
                let more = theirs.beyond(mine);
                if !more.is_empty() && (compare || what == "received") {
                    problems.push(format!(
                        "{} has {what} more than {}: {} (it is at {theirs}, {} at {mine}){}",
                        o.name,
                        chosen.name,
                        gtid::list(&more),
                        chosen.name,
                        if named.is_some() {
                            format!("; promote {} instead", o.name)
                        } else {
                            String::new()
                        }
                    ));
                    break;
                }
            }
        }
    }
    if !problems.is_empty() && !force {
        return Err(problems);
    }
    Ok(Choice {
        name: chosen.name.to_string(),
        overridden: problems,
    })
}

/// `CHANGE MASTER TO` `master` at the slave's own GTID position, with a short heartbeat and
/// timeout so that a dead master is noticed in seconds (MySQL's defaults take a minute).
pub fn change_master(ctx: &Ctx<'_>, cluster: &Cluster, master: &Server) -> String {
    let net = ctx.worker.cfg.slave_net_timeout_s;
    format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {}, MASTER_USER = '{}', MASTER_PASSWORD = '{}', \
         MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = {:.1}",
        master.address,
        master.db_port,
        cluster.repl_user,
        cluster.repl_password,
        f64::from(net) / 3.0
    )
}

/// The slave-side timeout that goes with [`change_master`] (set while the slave is stopped).
pub async fn slave_timeouts(ctx: &Ctx<'_>, db: &mut Db) -> Result<(), ActionError> {
    let net = ctx.worker.cfg.slave_net_timeout_s;
    db.exec(&format!("SET GLOBAL slave_net_timeout = {net}"))
        .await?;
    Ok(())
}

/// Semi-synchronous replication on `db` as its cluster wants it, as the master (`master`)
/// or a slave: the other side off. A slave's change counts from its IO thread's next start;
/// the master acknowledges a commit once a slave has it (wait point AFTER_SYNC), or after
/// [`SEMI_SYNC_TIMEOUT_MS`] without one, asynchronously. `true`: something changed.
pub async fn semi_sync(db: &mut Db, cluster: &Cluster, master: bool) -> Result<bool, ActionError> {
    let want = (cluster.semi_sync && master, cluster.semi_sync && !master);
    let row = db
        .query_first_row(
            "SELECT @@rpl_semi_sync_master_enabled AS m, @@rpl_semi_sync_slave_enabled AS s",
        )
        .await?
        .ok_or_else(|| ActionError::Failed("no answer from mysqld".into()))?;
    let on = |k: &str| column(&row, k).as_i64() == Some(1);
    if (on("m"), on("s")) == want {
        return Ok(false);
    }
    if want.0 {
        db.exec(&format!(
            "SET GLOBAL rpl_semi_sync_master_timeout = {SEMI_SYNC_TIMEOUT_MS}, \
             rpl_semi_sync_master_wait_point = AFTER_SYNC"
        ))
        .await?;
    }
    db.exec(&format!(
        "SET GLOBAL rpl_semi_sync_master_enabled = {}, rpl_semi_sync_slave_enabled = {}",
        u8::from(want.0),
        u8::from(want.1)
    ))
    .await?;
    Ok(true)
}

/// How long a semi-synchronous master waits for a slave's acknowledgement before it goes on
/// asynchronously (no slave answers).
pub const SEMI_SYNC_TIMEOUT_MS: u32 = 10_000;

/// Move a slave to `master` at its own position and check both threads run (10 s).
pub async fn repoint(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    master: &Server,
    m: &mut Member,
) -> Result<(), String> {
    let Some(db) = m.db.as_mut() else {
        return Err(m.error.clone().unwrap_or_else(|| "unreachable".into()));
    };
    let change = change_master(ctx, cluster, master);
    let steps = async {
        db.exec("STOP SLAVE").await?;
        slave_timeouts(ctx, db).await?;
        db.exec(&change).await?;
        semi_sync(db, cluster, false).await?;
        db.exec("START SLAVE").await?;
        Ok::<_, ActionError>(())
    };
    steps.await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = SlaveState::read(db).await.map_err(|e| e.to_string())?;
        if let Some(s) = &s {
            if s.connected_to(master) && s.sql == "Yes" {
                m.state = Some(s.clone());
                let _ = shared::db::clusters::observed(&ctx.worker.pool, &m.server.name, &s.json())
                    .await;
                return Ok(());
            }
            if Instant::now() > deadline {
                let why = [&s.io_error, &s.sql_error]
                    .into_iter()
                    .find(|e| !e.is_empty())
                    .cloned()
                    .unwrap_or_else(|| format!("IO {}, SQL {}", s.io, s.sql));
                return Err(format!(
                    "replication from {} not running after 10 s: {why}",
                    master.name
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fence a dead master: its `db_fence_command`, run from the worker (`$SA_SERVER`,
/// `$SA_ADDRESS` name it), must exit 0 within 60 s; its output goes to the log. A launched
/// server without one is stopped through EC2 (`ec2_stop`: `StopInstances` with `Force`).
pub async fn fence(ctx: &Ctx<'_>, old: &Server) -> Result<&'static str, String> {
    let Some(cmd) = old.db_fence_command.as_deref() else {
        if old.instance_id.is_some() {
            ctx.log
                .system(format!(
                    "Fencing {}: stopping its instance (ec2_stop)...",
                    old.name
                ))
                .await;
            let done = crate::launch::fence(ctx.worker, old).await?;
            ctx.log.system(format!("  fence: {done}")).await;
            return Ok("its instance is stopped");
        }
        return Err(format!("{} has no db_fence_command", old.name));
    };
    ctx.log
        .system(format!(
            "Fencing {}: running its db_fence_command...",
            old.name
        ))
        .await;
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SA_SERVER", &old.name)
        .env("SA_ADDRESS", &old.address)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("db_fence_command could not run: {e}")),
        Err(_) => return Err("db_fence_command did not end within 60 s".into()),
    };
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .take(50)
    {
        ctx.log.system(format!("  fence: {line}")).await;
    }
    if out.status.success() {
        Ok("its db_fence_command succeeded")
    } else {
        Err(format!("db_fence_command failed ({})", out.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(received: &str, applied: &str, binlog: &str) -> SlaveState {
        SlaveState {
            io: "Connecting".into(),
            sql: "Yes".into(),
            master_host: "127.0.0.2".into(),
            lag: None,
            io_errno: 2003,
            io_error: "error connecting to master".into(),
            sql_error: String::new(),
            received: Position::parse(received).unwrap(),
            applied: Position::parse(applied).unwrap(),
            binlog: Position::parse(binlog).unwrap(),
        }
    }

    fn cand<'a>(name: &'a str, s: &'a SlaveState, rule: PromotionRule) -> Candidate<'a> {
        Candidate {
            name,
            rule,
            state: s,
            stale: None,
        }
    }

    #[test]
    fn the_most_advanced_slave_is_chosen_received_then_applied_then_rule() {
        let (b, c, d) = (
            state("0-1-120", "0-1-120", "0-1-120"),
            state("0-1-120", "0-1-100", "0-1-100"),
            state("0-1-110", "0-1-110", "0-1-110"),
        );
        let n = PromotionRule::Neutral;
        let all = [cand("b", &b, n), cand("c", &c, n), cand("d", &d, n)];
        assert_eq!(choose(&all, None, true, false).unwrap().name, "b");
        // Named: the one behind is refused, naming the better one and the difference.
        let err = choose(&all, Some("c"), true, false).unwrap_err();
        assert!(
            err[0].contains("b has applied more than c: 0-1-120")
                && err[0].contains("promote b instead"),
            "{err:?}"
        );
        // With a live master nothing is compared: it catches up from the master.
        assert_eq!(choose(&all, Some("c"), false, false).unwrap().name, "c");
        // Force: promoted, the overridden reason kept.
        let forced = choose(&all, Some("d"), true, true).unwrap();
        assert_eq!(forced.name, "d");
        assert!(forced.overridden[0].contains("b has received more than d"));
        // Ties go to `prefer`; `must_not` is never picked.
        let e = state("0-1-120", "0-1-120", "0-1-120");
        let tied = [cand("b", &b, n), cand("e", &e, PromotionRule::Prefer)];
        assert_eq!(choose(&tied, None, true, false).unwrap().name, "e");
        let never = [cand("b", &b, PromotionRule::MustNot), cand("d", &d, n)];
        let err = choose(&never, None, true, false).unwrap_err();
        assert!(err[0].contains("b has received more than d"), "{err:?}");
    }

    #[test]
    fn errant_transactions_and_diverging_slaves_are_refused_and_listed() {
        let clean = state("0-1-120", "0-1-120", "0-1-120");
        let errant = state("0-1-120", "0-1-120", "0-3-121");
        let n = PromotionRule::Neutral;
        let err = choose(
            &[cand("b", &clean, n), cand("c", &errant, n)],
            None,
            true,
            false,
        )
        .unwrap_err();
        assert!(
            err[0].contains("errant transactions on c: 0-3-121"),
            "{err:?}"
        );
        let other = state("0-4-120", "0-4-120", "0-4-120");
        let err = choose(
            &[cand("b", &clean, n), cand("x", &other, n)],
            None,
            true,
            false,
        )
        .unwrap_err();
        assert!(
            err.iter()
                .any(|e| e.contains("GTID sets diverge: b has 0-1-120 that x lacks")),
            "{err:?}"
        );
    }

    #[test]
    fn a_stale_slave_is_refused_when_named_and_skipped_otherwise() {
        let s = state("0-1-120", "0-1-120", "0-1-120");
        let mut stopped = state("0-1-120", "0-1-120", "0-1-120");
        stopped.io = "No".into();
        stopped.io_errno = 0;
        let old = Server {
            address: "127.0.0.2".into(),
            ..serde_json::from_value(json!({"id": 1, "name": "a", "address": "x", "ssh_port": 22,
                "ssh_user": "u", "host_key": null, "db_port": 3306, "tags": {},
                "created_at": "2026-01-01T00:00:00Z", "db_host": null}))
            .unwrap()
        };
        let why = stopped.stale(Some(&old)).unwrap();
        assert!(why.contains("IO thread is stopped"), "{why}");
        assert_eq!(s.stale(Some(&old)), None, "a lost master is not staleness");
        let mut failed = s.clone();
        failed.io_errno = 1236;
        failed.io_error = "Got fatal error 1236".into();
        assert!(failed
            .stale(Some(&old))
            .unwrap()
            .contains("IO thread failed"));
        let n = PromotionRule::Neutral;
        let all = [
            Candidate {
                stale: Some(why),
                ..cand("b", &stopped, n)
            },
            cand("c", &s, n),
        ];
        assert!(choose(&all, Some("b"), true, false).unwrap_err()[0]
            .contains("b cannot be trusted to be up to date"));
        assert_eq!(choose(&all, None, true, false).unwrap().name, "c");
    }
}
