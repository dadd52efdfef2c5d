//! `db_failover`: what a cluster's watcher submits when its master is dead (urgent, attributed
//! `system:monitor`). The cluster-level promote of `mariadb::promote`, never forced: the dead
//! master's evidence is checked again, it is fenced, the most advanced slave takes writes, the
//! others are repointed and the DNS record moves. Then the cluster is brought back to strength:
//! its spare (a server tagged `spare_for: <cluster>`) is configured as a slave, from the latest
//! committed backup if there is one, by a `db_configure_slave` queued at once.

use std::time::Instant;

use serde_json::{json, Value};
use shared::{
    action::INTERNAL_KEY_PREFIX,
    db::{actions::NewAction, backups, clusters},
    spec::{ConfigureSlaveParams, FailoverParams, PromoteParams, SlaveSource},
    ActionSpec,
};

use super::{ActionError, Ctx, Done};
use crate::mariadb::promote;

pub async fn run(ctx: &Ctx<'_>, p: &FailoverParams) -> Result<Done, ActionError> {
    let (log, pool) = (&ctx.log, &ctx.worker.pool);
    let started = Instant::now();
    log.system(format!(
        "Failover of cluster {}: master {} reported dead{}.",
        p.cluster,
        p.replaces,
        p.evidence
            .as_deref()
            .map(|e| format!(" by {}: {e}", ctx.action.submitted_by))
            .unwrap_or_default()
    ))
    .await;
    let promoted = promote::run(
        ctx,
        &PromoteParams {
            force: false,
            cluster: Some(p.cluster.clone()),
            replaces: Some(p.replaces.clone()),
        },
        p.dead_since
            .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default()),
    )
    .await;
    let done = match promoted {
        Ok(d) => d,
        Err(e) => {
            let _ = clusters::add_event(
                pool,
                &p.cluster,
                Some(ctx.action.id),
                &format!("Failover failed: {e}"),
            )
            .await;
            finished(ctx, p, json!({"succeeded": false, "error": e.to_string()})).await;
            return Err(e);
        }
    };
    let mut result = done.result.unwrap_or_else(|| json!({}));
    let spare = spare(ctx, &p.cluster).await;
    result["spare"] = spare.clone();
    let event = format!(
        "Failover finished in {:.1} s: {} is the master (was {}); spare: {}",
        started.elapsed().as_secs_f64(),
        result["master"].as_str().unwrap_or("?"),
        p.replaces,
        match (spare["server"].as_str(), spare["action"].as_i64()) {
            (Some(s), Some(a)) => format!("{s} being configured as a slave (action {a})"),
            _ => spare["note"].as_str().unwrap_or("none").to_string(),
        }
    );
    let _ = clusters::add_event(pool, &p.cluster, Some(ctx.action.id), &event).await;
    log.system(event).await;
    let mut data = result.clone();
    data["succeeded"] = json!(true);
    finished(ctx, p, data).await;
    Ok(Done {
        exit_code: 0,
        result: Some(result),
    })
}

/// Queue the configuration of the cluster's spare as a slave: `{"server", "action", "from"}`,
/// or `{"note"}` saying why none was.
async fn spare(ctx: &Ctx<'_>, cluster: &str) -> Value {
    let (log, pool) = (&ctx.log, &ctx.worker.pool);
    let server = match clusters::spare(pool, cluster).await {
        Ok(s) => s,
        Err(e) => return json!({"note": format!("the spare could not be looked up: {e}")}),
    };
    let Some(server) = server else {
        log.system(format!(
            "No spare for {cluster} (a server tagged spare_for: {cluster}): the cluster has one slave less."
        ))
        .await;
        return json!({"note": "no server tagged spare_for"});
    };
    let from = match backups::latest(pool, cluster, None).await {
        Ok(Some(_)) => SlaveSource::Backup,
        _ => SlaveSource::Master,
    };
    let new = NewAction {
        server: server.clone(),
        spec: ActionSpec::DbConfigureSlave(ConfigureSlaveParams {
            cluster: cluster.to_string(),
            from: Some(from),
            default_schedules: None,
        }),
        timeout_s: None,
        urgent: false,
        idempotency_key: Some(format!(
            "{INTERNAL_KEY_PREFIX}spare-after-{}",
            ctx.action.id
        )),
        retry: None,
        submitted_by: ctx.action.submitted_by.clone(),
    };
    let inserted = match pool.acquire().await {
        Ok(mut conn) => shared::db::actions::insert(&mut conn, &new, None).await,
        Err(e) => Err(e.into()),
    };
    let from = if from == SlaveSource::Backup {
        "the latest backup"
    } else {
        "a copy of the new master (no backup yet)"
    };
    match inserted {
        Ok((a, _)) => {
            if ctx.worker.publisher.publish(a.id).await.is_ok() {
                let _ = shared::db::actions::mark_published(pool, &[a.id]).await;
            }
            log.system(format!(
                "Spare {server} is configured as a slave from {from} (action {}).",
                a.id
            ))
            .await;
            json!({"server": server, "action": a.id, "from": from})
        }
        Err(e) => {
            log.system(format!("Warning: the spare {server} was not queued: {e}"))
                .await;
            json!({"note": format!("spare {server} not queued: {e}")})
        }
    }
}

/// The `failover.finished` webhook event.
async fn finished(ctx: &Ctx<'_>, p: &FailoverParams, mut data: Value) {
    data["cluster"] = json!(p.cluster);
    data["old_master"] = json!(p.replaces);
    data["action"] = json!(ctx.action.id);
    let emitted = match ctx.worker.pool.acquire().await {
        Ok(mut conn) => shared::db::webhooks::emit(&mut conn, "failover.finished", &data).await,
        Err(e) => Err(e),
    };
    if let Err(e) = emitted {
        ctx.log
            .system(format!(
                "Warning: the failover.finished event was not queued: {e}"
            ))
            .await;
    }
}
