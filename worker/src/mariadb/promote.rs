//! Promoting a slave (`db_promote`, `db_failover`): make a slave its cluster's master, as in the seed's "DB promote to master" log,
//! under the cluster lock (the runner holds it). On a named slave, or with `cluster` on the most
//! advanced one. Every slave is read first. A master the worker cannot reach is dead only when
//! no slave has been connected to it for `SA_DEAD_MASTER_S`; then it is fenced (its
//! `db_fence_command`) and the new slave drains its relay log. A live master is made read-only
//! (option file first) and the slave catches up with it. Errant transactions, diverging GTID
//! sets, a stale slave or one another slave is ahead of are refused (or overridden by `force`,
//! logged). The master record moves by compare-and-set before the new master takes writes; if a
//! step fails until then, everything is undone. Then the DNS record moves, every other slave is
//! repointed at its own GTID position (in parallel; those that fail are `detached`), and the old
//! master replicates from the new one, or, dead, waits `fenced_pending` for the sweeper.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::{
    db::{
        clusters::{self, Cluster, Fence},
        servers::{self, DbRole, Server},
    },
    spec::{BackupParams, PromoteParams},
    ActionSpec,
};

use super::{
    replication,
    topology::{self, Candidate, Member},
};
use crate::{
    ctx::{ActionError, Ctx, Done},
    mycnf,
    mysql::{column, Db},
};

/// `seen_dead_for`: how long the cluster's watcher has already seen the master unreachable
/// with no slave connected to it (a failover's evidence): the window still to wait is
/// `SA_DEAD_MASTER_S` less that, and at least one fresh read of every slave.
pub async fn run(
    ctx: &Ctx<'_>,
    p: &PromoteParams,
    seen_dead_for: Option<Duration>,
) -> Result<Done, ActionError> {
    let (log, pool) = (&ctx.log, &ctx.worker.pool);
    let started = Instant::now();
    let named = match &p.cluster {
        Some(_) => None,
        None if ctx.server.db_role == Some(DbRole::Slave) => Some(ctx.server.name.clone()),
        None => {
            return Err(ActionError::Failed(format!(
                "{} is not a slave of a cluster: nothing to promote",
                ctx.server.name
            )))
        }
    };
    let lock = ctx.cluster_lock()?;
    let cluster = clusters::get(pool, &lock.cluster)
        .await?
        .ok_or_else(|| ActionError::Failed(format!("cluster {} is gone", lock.cluster)))?;
    if let Some(r) = p
        .replaces
        .as_deref()
        .filter(|r| cluster.master.as_deref() != Some(*r))
    {
        return Err(ActionError::Failed(format!(
            "this promote replaces {r}, but the master of {} is now {}: another change won; nothing was changed",
            cluster.name,
            cluster.master.as_deref().unwrap_or("(none)")
        )));
    }
    let old = match &cluster.master {
        Some(m) => servers::get(pool, m).await?,
        None => None,
    };
    log.system(format!(
        "Using cluster {}: master {}, promoting {}.",
        cluster.name,
        old.as_ref().map_or("(none)", |m| m.name.as_str()),
        named.as_deref().unwrap_or("its most advanced slave")
    ))
    .await;

    // Every slave in service, and the named one whatever its state.
    let mut names = clusters::slaves(pool, &cluster.name).await?;
    if let Some(n) = named.as_ref().filter(|n| !names.contains(n)) {
        names.push(n.clone());
    }
    let mut slaves = Vec::new();
    for n in &names {
        if let Some(s) = servers::get(pool, n).await? {
            slaves.push(s);
        }
    }
    let read_at = Instant::now();
    let mut members: Vec<Member> =
        futures::future::join_all(slaves.into_iter().map(|s| Member::read(ctx, s))).await;
    log.system(format!(
        "Slaves: {}.",
        members
            .iter()
            .map(Member::describe)
            .collect::<Vec<_>>()
            .join("; ")
    ))
    .await;

    log.system("Stopping master (if alive), noting position, making RO, stopping and unconfiguring replication").await;
    let mut mdb = match &old {
        Some(m) => probe(ctx, m).await,
        None => None,
    };
    if let (None, Some(o)) = (&mdb, &old) {
        if let Err(e) = evidence(ctx, o, &mut members, read_at, p.force, seen_dead_for).await {
            close(None, members).await;
            return Err(e);
        }
    }

    let candidates: Vec<Candidate<'_>> = members
        .iter()
        .filter_map(|m| {
            m.state.as_ref().map(|s| Candidate {
                name: &m.server.name,
                rule: m.server.promotion_rule,
                state: s,
                stale: s.stale(old.as_ref()),
            })
        })
        .collect();
    let choice = topology::choose(&candidates, named.as_deref(), mdb.is_none(), p.force);
    drop(candidates);
    let choice = match choice {
        Ok(c) => c,
        Err(problems) => {
            close(mdb, members).await;
            return Err(ActionError::Failed(format!(
                "refusing to promote: {}; nothing was changed (params.force overrides)",
                problems.join("; ")
            )));
        }
    };
    for o in &choice.overridden {
        log.system(format!("Warning: {o}: promoting anyway (force)."))
            .await;
    }
    let at = members
        .iter()
        .position(|m| m.server.name == choice.name)
        .expect("chosen among them");
    let mut new = members.swap_remove(at);
    if named.is_none() {
        log.system(format!(
            "Promoting {}: the most advanced slave.",
            new.describe()
        ))
        .await;
    }

    let result = promote(ctx, &cluster, old.as_ref(), mdb.as_mut(), &mut new, p.force).await;
    let result = match result {
        Ok(()) => Ok(finish(
            ctx,
            &cluster,
            old.as_ref(),
            mdb.as_mut(),
            &new,
            &mut members,
        )
        .await),
        Err(e) => Err(e),
    };
    let writable_s = started.elapsed().as_secs_f64();
    let new_name = new.server.name.clone();
    close(mdb, members).await;
    new.close().await;
    let (demoted, repointed, detached) = result?;
    backup_new_master(ctx, &cluster.name, &new_name).await;
    log.system("Mission accomplished.").await;
    Ok(Done {
        exit_code: 0,
        result: Some(json!({
            "cluster": cluster.name, "master": new_name,
            "old_master": old.map(|m| m.name), "old_master_demoted": demoted,
            "repointed": repointed, "detached": detached,
            "overridden": choice.overridden, "seconds": writable_s,
        })),
    })
}

/// The old master's mysqld, if the worker reaches it (SSH and MySQL) within two tries.
async fn probe(ctx: &Ctx<'_>, old: &Server) -> Option<Db> {
    let mut last = String::new();
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), Db::connect(ctx.worker, old)).await {
            Ok(Ok(db)) => return Some(db),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 5 s".into(),
        }
    }
    ctx.log
        .system(format!(
            "Previously connected master {} not reachable... ({last})",
            old.address
        ))
        .await;
    None
}

/// The master the worker cannot reach is dead only if no slave is connected to it either.
async fn evidence(
    ctx: &Ctx<'_>,
    old: &Server,
    members: &mut [Member],
    read_at: Instant,
    force: bool,
    seen_dead_for: Option<Duration>,
) -> Result<(), ActionError> {
    let cfg = &ctx.worker.cfg;
    let window = Duration::from_secs_f64(cfg.dead_master_s);
    let seen = seen_dead_for.unwrap_or_default().min(window);
    let need = window - seen;
    let grace = Duration::from_secs(u64::from(cfg.slave_net_timeout_s) + 1);
    match topology::dead_master_evidence(old, members, read_at, need, grace).await {
        Ok(_) => {
            ctx.log
                .system(format!(
                    "Evidence that {} is dead: the worker cannot reach it (SSH and MySQL, 2 tries), and no slave has been connected to it for {:.1} s{}: {}.",
                    old.name,
                    window.as_secs_f64(),
                    if seen.is_zero() {
                        String::new()
                    } else {
                        format!(" ({:.1} s of it seen by the cluster's watcher)", seen.as_secs_f64())
                    },
                    members.iter().map(Member::describe).collect::<Vec<_>>().join("; ")
                ))
                .await;
        }
        Err(slave) if force => {
            ctx.log
                .system(format!(
                    "Warning: master unreachable from the worker but alive according to {slave}: promoting anyway (force); it will be fenced."
                ))
                .await;
        }
        Err(slave) => {
            return Err(ActionError::Failed(format!(
                "master unreachable from the worker but alive according to {slave} (its IO thread is connected to {} after {:.0} s): refusing to promote, the old master may still take writes; nothing was changed (params.force overrides)",
                old.name,
                (need + grace).as_secs_f64()
            )))
        }
    }
    ctx.log
        .system("...Warning: assuming old master is dead and that the current contents of the Slave is the latest and best we can get.")
        .await;
    Ok(())
}

/// Up to the new master taking writes; undone if a step fails. A live old master is made
/// read-only (option file, `read_only`, a global read lock held by this session) and the slave
/// catches up with it; a dead one is fenced and the slave applies what it received.
async fn promote(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    old: Option<&Server>,
    mdb: Option<&mut Db>,
    new: &mut Member,
    force: bool,
) -> Result<(), ActionError> {
    let log = &ctx.log;
    let name = new.server.name.clone();
    let Some(sdb) = new.db.as_mut() else {
        return Err(ActionError::Failed(format!("{name} is not reachable")));
    };
    match (old, mdb) {
        (Some(o), Some(m)) => {
            // The option file first: a restart of the old master keeps it read-only.
            mycnf::set(ctx.worker, o, &[("read_only", "1")]).await?;
            log.system(format!("read_only=1 saved in {}'s option file.", o.name))
                .await;
            let r = fence_live(ctx, m, sdb).await;
            if r.is_err() {
                undo_live(ctx, o, m).await;
                return r;
            }
            let r = take_writes(ctx, cluster, old, &name, sdb).await;
            if r.is_err() {
                undo_live(ctx, o, m).await;
            }
            r
        }
        (Some(o), None) => {
            drain(ctx, sdb, &name, force).await?;
            match topology::fence(ctx, o).await {
                Ok(how) => {
                    log.system(format!("Fenced {}: {how}.", o.name))
                        .await
                }
                Err(e) if cluster.fence == Fence::Optional || force => {
                    log.system(format!(
                        "Warning: {e}: promoting anyway ({}).",
                        if force { "force" } else { "the cluster's fence is optional" }
                    ))
                    .await
                }
                Err(e) => {
                    return Err(ActionError::Failed(format!(
                        "{e}: the dead master cannot be fenced and could come back writable; refusing to promote, nothing was changed. Give {} a db_fence_command, set the cluster's fence to optional, or use params.force",
                        o.name
                    )))
                }
            }
            take_writes(ctx, cluster, old, &name, sdb).await
        }
        (None, _) => take_writes(ctx, cluster, None, &name, sdb).await,
    }
}

/// A live old master: read-only for ordinary accounts, then a global read lock held by this
/// session (accounts with READ_ONLY ADMIN too, such as root), kept until it is demoted; the
/// slave waits (30 s at most) until it has applied the master's last transaction.
async fn fence_live(ctx: &Ctx<'_>, m: &mut Db, sdb: &mut Db) -> Result<(), ActionError> {
    m.exec("SET GLOBAL read_only = 1").await?;
    // Waits for running writes to finish; a long one makes the promote fail (and undo).
    m.exec("SET SESSION lock_wait_timeout = 10").await?;
    m.exec("FLUSH TABLES WITH READ LOCK").await?;
    let pos = m
        .string("SELECT @@gtid_binlog_pos")
        .await?
        .replace('\'', "");
    ctx.log
        .system(format!("Old master is read-only at GTID {pos}; waiting until the slave catches up (at most 30 s)..."))
        .await;
    let waited = sdb
        .query_first_row(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30) AS w"))
        .await?
        .map(|r| column(&r, "w"));
    if waited != Some(json!(0)) {
        return Err(ActionError::Failed(format!(
            "the slave did not reach the old master's position {pos} within 30 s"
        )));
    }
    Ok(())
}

/// The promote failed: the live old master takes writes again.
async fn undo_live(ctx: &Ctx<'_>, old: &Server, m: &mut Db) {
    let unlocked = m.exec("UNLOCK TABLES").await.is_ok();
    if unlocked && m.exec("SET GLOBAL read_only = 0").await.is_ok() {
        let _ = mycnf::set(ctx.worker, old, &[("read_only", "0")]).await;
        ctx.log
            .system("Promotion failed: the old master was made writable again.")
            .await;
    }
}

/// A dead master: the slave must have applied what it received (10 s at most).
async fn drain(ctx: &Ctx<'_>, sdb: &mut Db, name: &str, force: bool) -> Result<(), ActionError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Some(s) = topology::SlaveState::read(sdb).await? else {
            return Err(ActionError::Failed(format!("{name} stopped being a slave")));
        };
        if s.applied.covers(&s.received) {
            return Ok(());
        }
        if Instant::now() > deadline || s.sql != "Yes" {
            if force {
                ctx.log
                    .system(format!(
                        "Warning: received {} but applied {}: promoting anyway (force).",
                        s.received, s.applied
                    ))
                    .await;
                return Ok(());
            }
            return Err(ActionError::Failed(format!(
                "{name} has not applied everything it received (received {}, applied {}): \
                 refusing to promote it; start its SQL thread or use params.force",
                s.received, s.applied
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The master record moves (compare-and-set under the cluster lock), then the slave stops
/// replicating and takes writes. A failure after the record moved moves it back.
async fn take_writes(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    old: Option<&Server>,
    name: &str,
    sdb: &mut Db,
) -> Result<(), ActionError> {
    let (log, pool) = (&ctx.log, &ctx.worker.pool);
    let lock = ctx.cluster_lock()?;
    let expected = old.map(|o| o.name.as_str());
    clusters::set_master(pool, lock, expected, name).await?;
    log.system(format!("Master record of {}: {name}.", cluster.name))
        .await;
    let steps = async {
        log.system("Promoting slave...").await;
        sdb.exec("STOP SLAVE").await?;
        sdb.exec("RESET SLAVE ALL").await?;
        let pos = sdb.string("SELECT @@gtid_binlog_pos").await?;
        log.system(format!("Retrieved new master info... GTID position: {pos}"))
            .await;
        log.system("granting rep rights...").await;
        replication::replication_account(sdb, cluster).await?;
        log.system("done with rights...").await;
        if topology::semi_sync(sdb, cluster, true).await? {
            log.system("Semi-synchronous replication set as the master.")
                .await;
        }
        sdb.exec("SET GLOBAL read_only = 0").await?;
        Ok::<_, ActionError>(())
    };
    if let Err(e) = steps.await {
        if let Some(o) = expected {
            let _ = clusters::set_master(pool, lock, Some(name), o).await;
        }
        return Err(e);
    }
    log.system("Unlocking tables: read_only=0 on the new master.")
        .await;
    Ok(())
}

/// After the new master takes writes (nothing is undone any more): the DNS record, every other
/// slave, the old master. (demoted, repointed, detached).
async fn finish(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    old: Option<&Server>,
    mdb: Option<&mut Db>,
    new: &Member,
    others: &mut [Member],
) -> (bool, Vec<String>, Vec<String>) {
    let (log, pool) = (&ctx.log, &ctx.worker.pool);
    let master = &new.server;
    let id = Some(ctx.action.id);
    // Clients first: the record, then the option file.
    if let Err(e) = replication::point_dns(ctx, cluster, master).await {
        log.system(format!("Warning: the DNS record was not moved: {e}"))
            .await;
        let _ = clusters::add_event(
            pool,
            &cluster.name,
            id,
            &format!("DNS record not moved to {}: {e}", master.name),
        )
        .await;
    }
    if let Err(e) = mycnf::set(ctx.worker, master, &[("read_only", "0")]).await {
        log.system(format!(
            "Warning: read_only=0 not saved in the option file: {e}"
        ))
        .await;
    }
    // Every other slave, in parallel.
    let results = futures::future::join_all(
        others
            .iter_mut()
            .map(|m| async move { (topology::repoint(ctx, cluster, master, m).await, m) }),
    )
    .await;
    let (mut repointed, mut detached) = (Vec::new(), Vec::new());
    for (r, m) in results {
        let name = m.server.name.clone();
        match r {
            Ok(()) => {
                log.system(format!(
                    "{name} replicates from {} at its own GTID position.",
                    master.name
                ))
                .await;
                repointed.push(name);
            }
            Err(e) => {
                let why = format!(
                    "not repointed to {} by action {}: {e}",
                    master.name, ctx.action.id
                );
                log.system(format!(
                    "Warning: {name} {why}; detached (db_configure_slave brings it back)."
                ))
                .await;
                let _ = clusters::detach(pool, &name, &why, None).await;
                let _ = clusters::add_event(
                    pool,
                    &cluster.name,
                    id,
                    &format!("{name} detached: {why}"),
                )
                .await;
                detached.push(name);
            }
        }
    }
    repointed.sort();
    detached.sort();
    let demoted = match (old, mdb) {
        (Some(o), Some(m)) => demote_old(ctx, cluster, o, m, master).await,
        (Some(o), None) => {
            let why = format!(
                "old master, replaced by {} while unreachable (action {})",
                master.name, ctx.action.id
            );
            let _ = clusters::detach(pool, &o.name, &why, Some(&why)).await;
            log.system(format!(
                "{} is fenced_pending: it is made read-only as soon as it answers again, and rejoins only through db_configure_slave.",
                o.name
            ))
            .await;
            false
        }
        (None, _) => false,
    };
    let event = format!(
        "{} promoted to master{}; repointed: {}; detached: {}",
        master.name,
        old.map_or(String::new(), |o| format!(
            " (was {}, {})",
            o.name,
            if demoted {
                "demoted to a slave"
            } else {
                "fenced_pending"
            }
        )),
        if repointed.is_empty() {
            "none".into()
        } else {
            repointed.join(", ")
        },
        if detached.is_empty() {
            "none".into()
        } else {
            detached.join(", ")
        },
    );
    let _ = clusters::add_event(pool, &cluster.name, id, &event).await;
    (demoted, repointed, detached)
}

/// Demote the live old master: its remaining client connections are closed (writes waiting on
/// the read lock fail instead of landing after it), the lock released, and it replicates from
/// the new master. It stays read-only whatever happens (also in its option file, saved before).
async fn demote_old(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    old: &Server,
    m: &mut Db,
    master: &Server,
) -> bool {
    let log = &ctx.log;
    log.system("Demoting old master...").await;
    match demote(ctx, m, cluster, master).await {
        Ok(closed) => {
            log.system(format!(
                "Old master is read-only and replicates from {} ({closed} client connections closed).",
                master.name
            ))
            .await;
            if let Err(e) = clusters::add_slave(&ctx.worker.pool, &cluster.name, &old.name).await {
                log.system(format!(
                    "Warning: {} not recorded as a slave: {e}",
                    old.name
                ))
                .await;
            }
            true
        }
        Err(e) => {
            let why = format!("old master, not demoted: {e}");
            let _ = clusters::detach(&ctx.worker.pool, &old.name, &why, None).await;
            log.system(format!(
                "Could not demote the old master ({e}): it stays read-only (also in its option file), not replicating; detached."
            ))
            .await;
            false
        }
    }
}

async fn demote(
    ctx: &Ctx<'_>,
    m: &mut Db,
    cluster: &Cluster,
    master: &Server,
) -> Result<usize, ActionError> {
    let clients = m
        .strings(
            "SELECT id FROM information_schema.processlist
             WHERE id <> CONNECTION_ID() AND user NOT IN ('system user', 'event_scheduler')
               AND command NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
        )
        .await?;
    for id in &clients {
        // Already gone is fine.
        let _ = m.exec(&format!("KILL CONNECTION {id}")).await;
    }
    m.exec("UNLOCK TABLES").await?;
    m.exec("STOP SLAVE").await.ok();
    topology::slave_timeouts(ctx, m).await?;
    m.exec(&format!(
        "{}, MASTER_DEMOTE_TO_SLAVE = 1",
        topology::change_master(ctx, cluster, master)
    ))
    .await?;
    topology::semi_sync(m, cluster, false).await?;
    m.exec("START SLAVE").await?;
    Ok(clients.len())
}

async fn close(mdb: Option<Db>, members: Vec<Member>) {
    if let Some(m) = mdb {
        m.close().await;
    }
    for m in members {
        m.close().await;
    }
}

/// A cluster that backs up gets a backup of its new master at once (new slaves are seeded from
/// the current master's backups); its role-based schedules follow by themselves.
async fn backup_new_master(ctx: &Ctx<'_>, cluster: &str, master: &str) {
    let pool = &ctx.worker.pool;
    match shared::db::schedules::cluster_backs_up(pool, cluster).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            ctx.log
                .system(format!(
                    "Warning: could not check the backup schedules: {e}"
                ))
                .await;
            return;
        }
    }
    let backup = shared::db::actions::NewAction {
        server: master.to_string(),
        spec: ActionSpec::DbBackup(BackupParams {
            tag: Some("after-promote".into()),
            ..Default::default()
        }),
        timeout_s: None,
        urgent: false,
        idempotency_key: Some(format!(
            "{}after-promote-{}",
            shared::action::INTERNAL_KEY_PREFIX,
            ctx.action.id
        )),
        retry: None,
        submitted_by: "system:after-promote".into(),
    };
    let inserted = match pool.acquire().await {
        Ok(mut conn) => shared::db::actions::insert(&mut conn, &backup, None).await,
        Err(e) => Err(e.into()),
    };
    match inserted {
        Ok((a, _)) => {
            // Published now (the api's outbox relay would otherwise do it within seconds).
            if ctx.worker.publisher.publish(a.id).await.is_ok() {
                let _ = shared::db::actions::mark_published(pool, &[a.id]).await;
            }
            ctx.log
                .system(format!(
                    "Backup of the new master queued (action {}).",
                    a.id
                ))
                .await
        }
        Err(e) => {
            ctx.log
                .system(format!("Warning: backup of the new master not queued: {e}"))
                .await
        }
    }
}
