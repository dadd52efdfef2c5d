//! Every worker runs this: clusters with `auto_failover` are watched, each by one worker at a
//! time under a watch lease with a fencing generation (`shared::db::watch`); when a watcher
//! dies, another worker takes over once its lease expires. Every `SA_PROBE_S` the watcher
//! probes the master over its usual path (`SELECT @@read_only`, and on a writable master an
//! update of the `serveractions.heartbeat` row, which gives each slave's true lag) and reads
//! every slave's replication state and heartbeat lag. Its analysis and what a failover would
//! do now (the plan) are recorded; a change of analysis goes on the cluster's timeline.
//!
//! The master is dead only when it failed `SA_DEAD_AFTER` consecutive probes *and* at least one
//! slave answered *and* no slave that answered is connected to it. A slow master (its slaves
//! stay connected), a watcher cut off from everything, or the store being unreachable (nothing
//! can be submitted then, and the lease lapses) never make a failover. On a dead master the
//! watcher submits an urgent `db_failover`, under its generation, unless the cluster's block
//! period after the last automatic failover is running (`POST /v1/clusters/{name}/ack` lifts
//! it) or automatic failover is off (for the cluster, or globally).

use std::{collections::HashMap, sync::Arc, time::Duration};

use mysql_async::prelude::Queryable;

use serde_json::{json, Value};
use shared::db::{
    clusters::{self, Cluster, Fence},
    servers::{self, Server},
    watch::{self, Analysis, NotSubmitted, Watch},
};
use tokio_util::sync::CancellationToken;

use crate::{
    mariadb::{
        gtid::{self, Position},
        topology::{self, Candidate, SlaveState},
    },
    mysql::Db,
    Worker,
};

pub async fn run(worker: Arc<Worker>, shutdown: CancellationToken) {
    let every = Duration::from_secs_f64(worker.cfg.probe_s);
    let mut watching: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        watching.retain(|_, t| !t.is_finished());
        let Ok(names) = watch::watched(&worker.pool).await else {
            continue;
        };
        for name in names {
            if watching.contains_key(&name) {
                continue;
            }
            if let Ok(Some(w)) =
                watch::take(&worker.pool, &name, &worker.name, worker.cfg.watch_lease_s).await
            {
                tracing::info!(cluster = %name, generation = w.generation, "watching cluster");
                let task = tokio::spawn(watch_cluster(worker.clone(), w, shutdown.clone()));
                watching.insert(name, task);
            }
        }
    }
    for (_, t) in watching {
        let _ = t.await;
    }
}

/// The connections a watcher keeps open, by server id (a server deleted and registered again
/// under its name is another server), and its count of failed master probes in a row.
#[derive(Default)]
struct Probes {
    dbs: HashMap<i64, Db>,
    /// Servers whose `serveractions.heartbeat` table this watcher has created.
    heartbeat_ready: std::collections::HashSet<i64>,
    failures: u32,
    last_error: String,
    /// Since when the master has been unreachable with slaves answering and none connected.
    dead_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Run `f` on the connection in `slot` (made first if there is none) within `limit`; a
/// failure empties the slot (the connection is closed in the background: a stopped mysqld must
/// not hold the watcher).
async fn on_db<T>(
    worker: &Worker,
    server: &Server,
    slot: &mut Option<Db>,
    limit: Duration,
    f: impl AsyncFnOnce(&mut Db) -> Result<T, String>,
) -> Result<T, String> {
    let r = tokio::time::timeout(limit, async {
        if slot.is_none() {
            let db = Db::connect(worker, server)
                .await
                .map_err(|e| e.to_string())?;
            *slot = Some(db);
        }
        f(slot.as_mut().expect("connected above")).await
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {:.1} s", limit.as_secs_f64())));
    if r.is_err() {
        if let Some(db) = slot.take() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), db.close()).await;
            });
        }
    }
    r
}

impl Probes {
    /// Run `f` on `server`'s connection (see [`on_db`]).
    async fn with<T>(
        &mut self,
        worker: &Worker,
        server: &Server,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Db) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut slot = self.dbs.remove(&server.id);
        let r = on_db(worker, server, &mut slot, limit, f).await;
        self.put(server.id, slot);
        r
    }

    /// Keep server `id`'s connection, or forget that it had one.
    fn put(&mut self, id: i64, slot: Option<Db>) {
        match slot {
            Some(db) => {
                self.dbs.insert(id, db);
            }
            None => {
                self.heartbeat_ready.remove(&id);
            }
        }
    }

    fn drop_db(&mut self, id: i64) {
        self.heartbeat_ready.remove(&id);
        if let Some(db) = self.dbs.remove(&id) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), db.close()).await;
            });
        }
    }

    fn close_all(&mut self) {
        let ids: Vec<i64> = self.dbs.keys().copied().collect();
        for id in ids {
            self.drop_db(id);
        }
    }
}

/// One slave as the watcher saw it.
struct SlaveProbe {
    server: Server,
    state: Result<Option<SlaveState>, String>,
    /// Seconds behind the master's heartbeat row, if there is one.
    lag_s: Option<f64>,
}

async fn watch_cluster(worker: Arc<Worker>, mut w: Watch, shutdown: CancellationToken) {
    let cfg = &worker.cfg;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.probe_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes = Probes::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match watch::take(&worker.pool, &w.cluster, &worker.name, cfg.watch_lease_s).await {
            Ok(Some(renewed)) => {
                if renewed.generation != w.generation {
                    // The lease lapsed (the store was unreachable): start counting afresh.
                    probes.failures = 0;
                    probes.dead_since = None;
                    w = renewed;
                }
            }
            Ok(None) => {
                tracing::info!(cluster = %w.cluster, "watch lost to another worker, or auto_failover is off");
                probes.close_all();
                return;
            }
            // Nothing can be submitted without the store; the lease lapses meanwhile.
            Err(_) => continue,
        }
        if let Err(e) = probe(&worker, &w, &mut probes).await {
            tracing::warn!(cluster = %w.cluster, error = %e, "watcher: store error");
        }
    }
    probes.close_all();
    let _ = watch::release(&worker.pool, &w).await;
}

/// One probe of the cluster: read, analyse, record, and act on a dead master.
async fn probe(worker: &Worker, w: &Watch, probes: &mut Probes) -> sqlx::Result<()> {
    let pool = &worker.pool;
    let Some(cluster) = clusters::get(pool, &w.cluster).await? else {
        return Ok(());
    };
    if let Some(id) = clusters::locked_by(pool, &w.cluster).await? {
        // A topology change is under way: it reads and changes the servers itself.
        probes.failures = 0;
        probes.close_all();
        let a = Analysis {
            code: "changing",
            detail: format!("action {id} holds the cluster lock"),
        };
        watch::record(pool, w, &a, &json!(null)).await?;
        return Ok(());
    }
    let master = match &cluster.master {
        Some(m) => servers::get(pool, m).await?,
        None => None,
    };
    // The record names a server that is this cluster's master, or nothing is probed (nor
    // written to: a server registered again under an old master's name is not it).
    let Some(master) = master.filter(|m| m.cluster.as_deref() == Some(cluster.name.as_str()))
    else {
        probes.close_all();
        let a = Analysis {
            code: "no_master",
            detail: format!(
                "the cluster's master record names {}, which is not its master",
                cluster.master.as_deref().unwrap_or("no server")
            ),
        };
        watch::record(pool, w, &a, &json!(null)).await?;
        return Ok(());
    };
    let mut slaves = Vec::new();
    for n in clusters::slaves(pool, &cluster.name).await? {
        if let Some(s) = servers::get(pool, &n).await? {
            slaves.push(s);
        }
    }
    let keep: Vec<i64> = std::iter::once(master.id)
        .chain(slaves.iter().map(|s| s.id))
        .collect();
    let gone: Vec<i64> = probes
        .dbs
        .keys()
        .filter(|k| !keep.contains(k))
        .copied()
        .collect();
    for g in gone {
        probes.drop_db(g);
    }

    let limit = Duration::from_secs_f64((worker.cfg.probe_s * 1.5).max(0.5));
    let master_probe = probe_master(worker, &cluster, &master, probes, limit).await;
    match &master_probe {
        Ok(_) => probes.failures = 0,
        Err(e) => {
            probes.failures += 1;
            probes.last_error = e.clone();
        }
    }
    // Every slave at once: one that hangs does not delay the others.
    let mut slots: Vec<Option<Db>> = slaves.iter().map(|s| probes.dbs.remove(&s.id)).collect();
    let states = futures::future::join_all(slaves.iter().zip(slots.iter_mut()).map(|(s, slot)| {
        on_db(worker, s, slot, limit, async |db: &mut Db| {
            probe_slave(db, &cluster).await
        })
    }))
    .await;
    for (s, slot) in slaves.iter().zip(slots) {
        probes.put(s.id, slot);
    }
    let mut read = Vec::new();
    for (s, state) in slaves.into_iter().zip(states) {
        let (state, lag_s) = match state {
            Ok((st, lag)) => (Ok(st), lag),
            Err(e) => (Err(e), None),
        };
        if let Ok(Some(st)) = &state {
            let mut j = st.json();
            j["heartbeat_lag_s"] = json!(lag_s);
            let _ = clusters::observed(pool, &s.name, &j).await;
        }
        read.push(SlaveProbe {
            server: s,
            state,
            lag_s,
        });
    }

    let (mut analysis, dead) = analyze(
        &master,
        master_probe
            .as_ref()
            .map(|_| ())
            .map_err(|_| probes.last_error.as_str()),
        probes.failures,
        worker.cfg.dead_after,
        &read,
        worker.cfg.lag_warn_s,
    );
    let plan = plan(
        pool,
        &cluster,
        &master,
        master_probe.as_ref().ok().and_then(|p| p.as_ref()),
        &read,
    )
    .await;
    // Counted from the first probe that saw it so: a failover does not wait it out again.
    match analysis.code {
        "master_unreachable" | "dead_master" => {
            probes.dead_since.get_or_insert_with(chrono::Utc::now);
        }
        _ => probes.dead_since = None,
    }
    if dead {
        let since = probes.dead_since;
        match watch::submit_failover(pool, w, &worker.name, &master.name, &analysis.detail, since)
            .await
        {
            Ok(a) => {
                tracing::warn!(cluster = %cluster.name, action = a.id, "dead master: failover submitted");
                if worker.publisher.publish(a.id).await.is_ok() {
                    let _ = shared::db::actions::mark_published(pool, &[a.id]).await;
                }
                analysis.detail =
                    format!("{}; failover action {} submitted", analysis.detail, a.id);
                probes.failures = 0;
            }
            Err(NotSubmitted::Store(e)) => return Err(e),
            Err(e @ (NotSubmitted::LostWatch | NotSubmitted::MasterChanged(_))) => {
                analysis.detail = format!("{}; not failed over: {e}", analysis.detail);
            }
            Err(NotSubmitted::Pending(id)) => {
                analysis.detail = format!("{}; failover action {id} is under way", analysis.detail);
            }
            Err(e) => {
                analysis = Analysis {
                    code: "dead_master_not_failed_over",
                    detail: format!("{}; not failed over: {e}", analysis.detail),
                };
            }
        }
    }
    watch::record(pool, w, &analysis, &plan).await?;
    Ok(())
}

/// A slave's replication state and heartbeat lag (semi-sync set first as the cluster wants).
async fn probe_slave(
    db: &mut Db,
    cluster: &Cluster,
) -> Result<(Option<SlaveState>, Option<f64>), String> {
    let e = |e: crate::ctx::ActionError| e.to_string();
    if topology::semi_sync(db, cluster, false).await.map_err(e)? {
        // Counts from the IO thread's next start.
        db.exec("STOP SLAVE IO_THREAD")
            .await
            .map_err(|x| x.to_string())?;
        db.exec("START SLAVE IO_THREAD")
            .await
            .map_err(|x| x.to_string())?;
    }
    let state = SlaveState::read(db).await.map_err(e)?;
    let lag: Option<Option<i64>> = db
        .conn
        .query_first(
            "SELECT TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM serveractions.heartbeat WHERE id = 1",
        )
        .await
        .ok()
        .flatten();
    Ok((state, lag.flatten().map(|us| us as f64 / 1e6)))
}

/// The master answers (and its heartbeat row is updated when it is writable): its binary log
/// position, if it could be read.
async fn probe_master(
    worker: &Worker,
    cluster: &Cluster,
    master: &Server,
    probes: &mut Probes,
    limit: Duration,
) -> Result<Option<Position>, String> {
    let ready = probes.heartbeat_ready.contains(&master.id);
    let name = master.name.clone();
    let r = probes
        .with(worker, master, limit, async |db: &mut Db| {
            let e = |e: crate::mysql::DbError| e.to_string();
            let row: Option<(i64, String)> = db
                .conn
                .query_first("SELECT @@read_only, @@gtid_binlog_pos")
                .await
                .map_err(|x| e(db.error(x)))?;
            let (read_only, pos) = row.ok_or("no answer")?;
            // A read-only master takes no heartbeat write: nothing is written behind a fence.
            if read_only == 0 {
                if !ready {
                    db.exec("CREATE DATABASE IF NOT EXISTS serveractions")
                        .await
                        .map_err(e)?;
                    db.exec(
                        "CREATE TABLE IF NOT EXISTS serveractions.heartbeat (
                             id INT PRIMARY KEY, ts DATETIME(6) NOT NULL, server VARCHAR(64) NOT NULL)",
                    )
                    .await
                    .map_err(e)?;
                }
                db.exec(&format!(
                    "INSERT INTO serveractions.heartbeat (id, ts, server) VALUES (1, NOW(6), '{name}')
                     ON DUPLICATE KEY UPDATE ts = VALUES(ts), server = VALUES(server)"
                ))
                .await
                .map_err(e)?;
                topology::semi_sync(db, cluster, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok((read_only == 0, Position::parse(&pos).ok()))
        })
        .await;
    match r {
        Ok((wrote, pos)) => {
            if wrote {
                probes.heartbeat_ready.insert(master.id);
            }
            Ok(pos)
        }
        Err(e) => Err(e),
    }
}

/// The watcher's conclusion, and whether the master is dead (holistically: unreachable for
/// `dead_after` probes in a row, at least one slave read, and none connected to it).
fn analyze(
    master: &Server,
    master_probe: Result<(), &str>,
    failures: u32,
    dead_after: u32,
    slaves: &[SlaveProbe],
    lag_warn_s: f64,
) -> (Analysis, bool) {
    let describe = |p: &SlaveProbe| match &p.state {
        Ok(Some(s)) => format!("{} ({})", p.server.name, s.threads()),
        Ok(None) => format!("{} (not replicating)", p.server.name),
        Err(e) => format!("{} (unreachable: {e})", p.server.name),
    };
    let Err(error) = master_probe else {
        let mut problems = Vec::new();
        for p in slaves {
            match &p.state {
                Err(e) => problems.push(("slave_unreachable", format!("{}: {e}", p.server.name))),
                Ok(None) => problems.push((
                    "replication_broken",
                    format!("{} is not replicating", p.server.name),
                )),
                Ok(Some(s)) => {
                    if let Some(why) = s.stale(Some(master)) {
                        problems.push(("replication_broken", format!("{}: {why}", p.server.name)));
                    } else if let Some(lag) = p.lag_s.filter(|l| *l > lag_warn_s) {
                        problems.push((
                            "slave_lagging",
                            format!("{} is {lag:.1} s behind the master", p.server.name),
                        ));
                    }
                }
            }
        }
        return match problems.first() {
            None => (
                Analysis {
                    code: "ok",
                    detail: format!(
                        "master {} answers; slaves: {}",
                        master.name,
                        list(slaves.iter().map(describe))
                    ),
                },
                false,
            ),
            Some((code, _)) => (
                Analysis {
                    code,
                    detail: problems
                        .iter()
                        .map(|(_, d)| d.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                },
                false,
            ),
        };
    };
    let answered: Vec<&SlaveProbe> = slaves.iter().filter(|p| p.state.is_ok()).collect();
    if answered.is_empty() {
        return (
            Analysis {
                code: "watcher_cut_off",
                detail: format!(
                    "neither the master {} ({error}) nor any slave answers this watcher: it may be cut off itself; nothing is done",
                    master.name
                ),
            },
            false,
        );
    }
    let connected: Vec<&str> = answered
        .iter()
        .filter(|p| matches!(&p.state, Ok(Some(s)) if s.connected_to(master)))
        .map(|p| p.server.name.as_str())
        .collect();
    if !connected.is_empty() {
        return (
            Analysis {
                code: "unreachable_master_slaves_connected",
                detail: format!(
                    "master {} unreachable from the watcher ({error}) but alive according to {}: no failover",
                    master.name,
                    connected.join(", ")
                ),
            },
            false,
        );
    }
    if failures < dead_after {
        return (
            Analysis {
                code: "master_unreachable",
                detail: format!(
                    "master {} failed {failures} of the {dead_after} probes in a row that declare it dead ({error}); slaves: {}",
                    master.name,
                    list(slaves.iter().map(describe))
                ),
            },
            false,
        );
    }
    (
        Analysis {
            code: "dead_master",
            detail: format!(
                "master {} failed {failures} probes in a row ({error}) and no slave is connected to it: {}",
                master.name,
                list(slaves.iter().map(describe))
            ),
        },
        true,
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// What a failover would do now: the slave it would promote (or why none), the fence step, the
/// slaves it would repoint, the spare, and what the master has that the candidate lacks.
async fn plan(
    pool: &sqlx::PgPool,
    cluster: &Cluster,
    master: &Server,
    master_pos: Option<&Position>,
    slaves: &[SlaveProbe],
) -> Value {
    let candidates: Vec<Candidate<'_>> = slaves
        .iter()
        .filter_map(|p| match &p.state {
            Ok(Some(s)) => Some(Candidate {
                name: &p.server.name,
                rule: p.server.promotion_rule,
                state: s,
                stale: s.stale(Some(master)),
            }),
            _ => None,
        })
        .collect();
    let choice = topology::choose(&candidates, None, true, false);
    let fence = match (&master.db_fence_command, cluster.fence) {
        (Some(_), _) => format!("run {}'s db_fence_command (it must succeed)", master.name),
        (None, _) if master.instance_id.is_some() => {
            format!("stop {}'s instance {} (ec2_stop)", master.name, master.instance_id.as_deref().unwrap_or(""))
        }
        (None, Fence::Optional) => format!(
            "{} has no db_fence_command; the cluster's fence is optional: it goes on unfenced",
            master.name
        ),
        (None, Fence::Required) => format!(
            "{} has no db_fence_command and the cluster requires a fence: a failover would be refused",
            master.name
        ),
    };
    let spare = shared::db::clusters::spare(pool, &cluster.name)
        .await
        .ok()
        .flatten();
    match choice {
        Ok(c) => {
            let chosen = candidates.iter().find(|x| x.name == c.name);
            let lost = match (master_pos, chosen) {
                (Some(m), Some(x)) => {
                    let missing = m.beyond(&x.state.received);
                    json!({"transactions": missing.len(), "gtids": gtid::list(&missing)})
                }
                _ => json!(null),
            };
            json!({
                "candidate": c.name,
                "fence": fence,
                "repoint": candidates.iter().filter(|x| x.name != c.name).map(|x| x.name).collect::<Vec<_>>(),
                "spare": spare,
                "would_lose": lost,
                "differences": candidates.iter().map(|x| json!({
                    "slave": x.name, "received": x.state.received.to_string(),
                    "applied": x.state.applied.to_string(),
                })).collect::<Vec<_>>(),
            })
        }
        Err(problems) => {
            json!({"candidate": null, "refused": problems, "fence": fence, "spare": spare})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, address: &str) -> Server {
        let mut s: Server = serde_json::from_value(json!({
            "id": 1, "name": name, "address": address, "ssh_port": 22, "ssh_user": "sa",
            "host_key": "", "tags": {}, "db_port": 3306, "created_at": "2026-12-01T00:00:00Z",
        }))
        .unwrap_or_else(|e| panic!("a test server: {e}"));
        s.address = address.into();
        s
    }

    fn slave(name: &str, io: &str, host: &str) -> SlaveProbe {
        let p = |s: &str| Position::parse(s).unwrap();
        SlaveProbe {
            server: server(name, "127.0.0.9"),
            state: Ok(Some(SlaveState {
                io: io.into(),
                sql: "Yes".into(),
                master_host: host.into(),
                lag: Some(0),
                io_errno: if io == "Yes" { 0 } else { 2003 },
                io_error: String::new(),
                sql_error: String::new(),
                received: p("0-1-10"),
                applied: p("0-1-10"),
                binlog: p(""),
            })),
            lag_s: Some(0.2),
        }
    }

    #[test]
    fn a_master_is_dead_only_unreachable_long_enough_with_no_slave_connected() {
        let m = server("dba", "127.0.0.5");
        let up = [
            slave("dbb", "Yes", "127.0.0.5"),
            slave("dbc", "Yes", "127.0.0.5"),
        ];
        let down = [
            slave("dbb", "Connecting", "127.0.0.5"),
            slave("dbc", "Connecting", "127.0.0.5"),
        ];
        let (a, dead) = analyze(&m, Ok(()), 0, 2, &up, 30.0);
        assert_eq!((a.code, dead), ("ok", false));
        // Slow or cut off from the watcher only: its slaves are still connected.
        let (a, dead) = analyze(&m, Err("timeout"), 5, 2, &up, 30.0);
        assert_eq!(
            (a.code, dead),
            ("unreachable_master_slaves_connected", false)
        );
        let mixed = [
            slave("dbb", "Connecting", "127.0.0.5"),
            slave("dbc", "Yes", "127.0.0.5"),
        ];
        assert!(!analyze(&m, Err("timeout"), 5, 2, &mixed, 30.0).1);
        // Not long enough.
        let (a, dead) = analyze(&m, Err("refused"), 1, 2, &down, 30.0);
        assert_eq!((a.code, dead), ("master_unreachable", false));
        let (a, dead) = analyze(&m, Err("refused"), 2, 2, &down, 30.0);
        assert_eq!((a.code, dead), ("dead_master", true));
        assert!(
            a.detail.contains("dbb (IO Connecting error 2003, SQL Yes)"),
            "{}",
            a.detail
        );
        // Nobody answers: the watcher itself may be cut off.
        let lost = [SlaveProbe {
            server: server("dbb", "127.0.0.9"),
            state: Err("no route".into()),
            lag_s: None,
        }];
        let (a, dead) = analyze(&m, Err("refused"), 9, 2, &lost, 30.0);
        assert_eq!((a.code, dead), ("watcher_cut_off", false));
    }

    #[test]
    fn lagging_and_broken_slaves_are_reported() {
        let m = server("dba", "127.0.0.5");
        let mut lagging = slave("dbb", "Yes", "127.0.0.5");
        lagging.lag_s = Some(45.0);
        let (a, _) = analyze(&m, Ok(()), 0, 2, &[lagging], 30.0);
        assert_eq!(a.code, "slave_lagging");
        assert!(a.detail.contains("dbb is 45.0 s behind"), "{}", a.detail);
        let elsewhere = slave("dbb", "Yes", "127.0.0.77");
        let (a, _) = analyze(&m, Ok(()), 0, 2, &[elsewhere], 30.0);
        assert_eq!(a.code, "replication_broken");
    }
}
