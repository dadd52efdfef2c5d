//! Watching clusters with `auto_failover`: the watch lease (one watcher per cluster, with a
//! fencing generation), what the watcher saw (its analysis and the failover plan), the
//! anti-flapping block, the global switch, and the submission of an automatic failover, which
//! happens only under the generation that holds the lease.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{types::Json, PgPool};

use super::actions::{self, NewAction};
use crate::{action::INTERNAL_KEY_PREFIX, spec::FailoverParams, ActionSpec};

/// A cluster's watch lease as held by one worker.
#[derive(Clone, Debug)]
pub struct Watch {
    pub cluster: String,
    pub generation: i64,
}

/// The clusters to watch: `auto_failover` on and a master.
pub async fn watched(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM clusters WHERE auto_failover AND master IS NOT NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

/// Take or renew the watch of `cluster` for `lease_s`: renewed when `worker` holds it, taken
/// (next generation) when it has expired. `None`: another worker holds it.
pub async fn take(
    pool: &PgPool,
    cluster: &str,
    worker: &str,
    lease_s: f64,
) -> sqlx::Result<Option<Watch>> {
    let generation: Option<i64> = sqlx::query_scalar(
        "INSERT INTO cluster_watch (cluster, worker, generation, expires_at)
         SELECT name, $2, 1, now() + make_interval(secs => $3) FROM clusters
         WHERE name = $1 AND auto_failover
         ON CONFLICT (cluster) DO UPDATE SET
             generation = CASE WHEN cluster_watch.worker = EXCLUDED.worker
                               AND cluster_watch.expires_at > now()
                          THEN cluster_watch.generation ELSE cluster_watch.generation + 1 END,
             worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at
         WHERE cluster_watch.worker = EXCLUDED.worker OR cluster_watch.expires_at < now()
         RETURNING generation",
    )
    .bind(cluster)
    .bind(worker)
    .bind(lease_s)
    .fetch_optional(pool)
    .await?;
    Ok(generation.map(|generation| Watch {
        cluster: cluster.to_string(),
        generation,
    }))
}

/// Give the watch up (the worker stops, or the cluster is no longer watched).
pub async fn release(pool: &PgPool, watch: &Watch) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE cluster_watch SET expires_at = now() WHERE cluster = $1 AND generation = $2",
    )
    .bind(&watch.cluster)
    .bind(watch.generation)
    .execute(pool)
    .await?;
    Ok(())
}

/// What the watcher concluded from one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// `ok`, `dead_master`, `master_unreachable`, `unreachable_master_slaves_connected`,
    /// `watcher_cut_off`, `slave_lagging`, `replication_broken`, `slave_unreachable`,
    /// `changing` (a topology action holds the cluster lock).
    pub code: &'static str,
    pub detail: String,
}

/// Record the analysis and the plan under the watch; a new analysis code also goes on the
/// cluster's timeline. `false`: the watch was lost (another worker holds it).
pub async fn record(
    pool: &PgPool,
    watch: &Watch,
    analysis: &Analysis,
    plan: &Value,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let previous: Option<Option<String>> = sqlx::query_scalar(
        "SELECT analysis FROM cluster_watch WHERE cluster = $1 AND generation = $2 FOR UPDATE",
    )
    .bind(&watch.cluster)
    .bind(watch.generation)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(previous) = previous else {
        return Ok(false);
    };
    let changed = previous.as_deref() != Some(analysis.code);
    sqlx::query(
        "UPDATE cluster_watch SET analysis = $3, detail = $4, plan = $5, observed_at = now(),
                analysis_since = CASE WHEN $6 THEN now() ELSE analysis_since END
         WHERE cluster = $1 AND generation = $2",
    )
    .bind(&watch.cluster)
    .bind(watch.generation)
    .bind(analysis.code)
    .bind(&analysis.detail)
    .bind(Json(plan))
    .bind(changed)
    .execute(&mut *tx)
    .await?;
    if changed && (previous.is_some() || analysis.code != "ok") {
        sqlx::query("INSERT INTO cluster_events (cluster, message) VALUES ($1, $2)")
            .bind(&watch.cluster)
            .bind(format!("Analysis: {} ({})", analysis.code, analysis.detail))
            .execute(&mut *tx)
            .await?;
        let data =
            json!({"cluster": watch.cluster, "analysis": analysis.code, "detail": analysis.detail});
        super::webhooks::emit(&mut tx, "cluster.analysis", &data).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The global switch: automatic failovers are off everywhere while `enabled` is false.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GlobalSwitch {
    pub enabled: bool,
    pub reason: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<String>,
}

pub async fn global(pool: &PgPool) -> sqlx::Result<GlobalSwitch> {
    let row: Option<(Json<Value>, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT value, updated_at, updated_by FROM settings WHERE name = 'auto_failover'",
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => GlobalSwitch {
            enabled: true,
            reason: None,
            updated_at: None,
            updated_by: None,
        },
        Some((Json(v), at, by)) => GlobalSwitch {
            enabled: v["enabled"].as_bool().unwrap_or(true),
            reason: v["reason"].as_str().map(str::to_string),
            updated_at: Some(at),
            updated_by: Some(by),
        },
    })
}

pub async fn set_global(
    pool: &PgPool,
    enabled: bool,
    reason: Option<&str>,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO settings (name, value, updated_by) VALUES ('auto_failover', $1, $2)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now(),
             updated_by = EXCLUDED.updated_by",
    )
    .bind(Json(json!({"enabled": enabled, "reason": reason})))
    .bind(by)
    .execute(pool)
    .await?;
    Ok(())
}

/// A cluster's failover settings and what its watcher last saw.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailoverState {
    pub auto_failover: bool,
    pub semi_sync: bool,
    pub failover_block_s: i32,
    pub last_failover_at: Option<DateTime<Utc>>,
    pub failover_acked_at: Option<DateTime<Utc>>,
    pub failover_acked_by: Option<String>,
    /// Until when a second automatic failover is blocked (none: not blocked).
    pub blocked_until: Option<DateTime<Utc>>,
    /// The worker watching it, its lease's generation and expiry.
    pub watcher: Option<String>,
    pub watch_generation: Option<i64>,
    pub watch_expires_at: Option<DateTime<Utc>>,
    pub analysis: Option<String>,
    pub detail: Option<String>,
    pub analysis_since: Option<DateTime<Utc>>,
    pub observed_at: Option<DateTime<Utc>>,
    /// What a failover would do now, as of `observed_at`.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Json<Value>>,
}

pub async fn state(pool: &PgPool, cluster: &str) -> sqlx::Result<Option<FailoverState>> {
    sqlx::query_as(
        "SELECT c.auto_failover, c.semi_sync, c.failover_block_s, c.last_failover_at, c.failover_acked_at,
                c.failover_acked_by,
                CASE WHEN c.last_failover_at IS NOT NULL
                      AND c.last_failover_at + make_interval(secs => c.failover_block_s) > now()
                      AND (c.failover_acked_at IS NULL OR c.failover_acked_at < c.last_failover_at)
                     THEN c.last_failover_at + make_interval(secs => c.failover_block_s) END
                    AS blocked_until,
                w.worker AS watcher, w.generation AS watch_generation,
                w.expires_at AS watch_expires_at, w.analysis, w.detail, w.analysis_since,
                w.observed_at, w.plan
         FROM clusters c LEFT JOIN cluster_watch w ON w.cluster = c.name WHERE c.name = $1",
    )
    .bind(cluster)
    .fetch_optional(pool)
    .await
}

/// Turn automatic failover or semi-synchronous replication on or off for a cluster, or
/// change its block period.
pub async fn configure(
    pool: &PgPool,
    cluster: &str,
    auto_failover: Option<bool>,
    block_s: Option<i32>,
    semi_sync: Option<bool>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE clusters SET auto_failover = COALESCE($2, auto_failover),
                failover_block_s = COALESCE($3, failover_block_s),
                semi_sync = COALESCE($4, semi_sync)
         WHERE name = $1",
    )
    .bind(cluster)
    .bind(auto_failover)
    .bind(block_s)
    .bind(semi_sync)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Acknowledge the last automatic failover: the block is lifted. `false`: no such cluster.
pub async fn ack(pool: &PgPool, cluster: &str, by: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(
        "UPDATE clusters SET failover_acked_at = now(), failover_acked_by = $2 WHERE name = $1",
    )
    .bind(cluster)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO cluster_events (cluster, message) VALUES ($1, $2)")
        .bind(cluster)
        .bind(format!(
            "Failover acknowledged by {by}: automatic failover is allowed again"
        ))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Why an automatic failover was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum NotSubmitted {
    #[error("this watcher lost the watch of the cluster (another worker holds it)")]
    LostWatch,
    #[error("the master of the cluster is no longer {0}")]
    MasterChanged(String),
    #[error("automatic failover is off for the cluster")]
    Off,
    #[error("automatic failover is off for every cluster{}", .0.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    OffGlobally(Option<String>),
    #[error("blocked until {until}: an automatic failover ran at {last} and has not been acknowledged (POST /v1/clusters/{{name}}/ack, or sactl clusters ack)")]
    Blocked {
        last: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    #[error("action {0} is already changing the cluster's master")]
    Pending(i64),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Submit the automatic failover of `watch`'s cluster, whose master `master` is dead, if the
/// watch still holds (same generation, unexpired) and nothing forbids it; in one transaction
/// with the block's start and the timeline entry. The action runs on the dead master's server
/// (its line is where topology changes of the cluster go); it still has to be published.
pub async fn submit_failover(
    pool: &PgPool,
    watch: &Watch,
    worker: &str,
    master: &str,
    evidence: &str,
    dead_since: Option<DateTime<Utc>>,
) -> Result<crate::Action, NotSubmitted> {
    let mut tx = pool.begin().await?;
    let cluster: Option<(Option<String>, bool)> =
        sqlx::query_as("SELECT master, auto_failover FROM clusters WHERE name = $1 FOR UPDATE")
            .bind(&watch.cluster)
            .fetch_optional(&mut *tx)
            .await?;
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM cluster_watch
         WHERE cluster = $1 AND generation = $2 AND worker = $3 AND expires_at > now()",
    )
    .bind(&watch.cluster)
    .bind(watch.generation)
    .bind(worker)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((current, on)) = cluster else {
        return Err(NotSubmitted::LostWatch);
    };
    if held.is_none() {
        return Err(NotSubmitted::LostWatch);
    }
    if current.as_deref() != Some(master) {
        return Err(NotSubmitted::MasterChanged(master.into()));
    }
    if !on {
        return Err(NotSubmitted::Off);
    }
    let switch = global(pool).await?;
    if !switch.enabled {
        return Err(NotSubmitted::OffGlobally(switch.reason));
    }
    let blocked: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT last_failover_at, last_failover_at + make_interval(secs => failover_block_s)
         FROM clusters WHERE name = $1 AND last_failover_at IS NOT NULL
           AND last_failover_at + make_interval(secs => failover_block_s) > now()
           AND (failover_acked_at IS NULL OR failover_acked_at < last_failover_at)",
    )
    .bind(&watch.cluster)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((last, until)) = blocked {
        return Err(NotSubmitted::Blocked { last, until });
    }
    let pending: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM actions WHERE kind IN ('db_failover', 'db_promote')
           AND status IN ('queued', 'waiting', 'running')
           AND (params->>'cluster' = $1 OR server IN (SELECT name FROM servers WHERE cluster = $1))
         LIMIT 1",
    )
    .bind(&watch.cluster)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = pending {
        return Err(NotSubmitted::Pending(id));
    }
    let new = NewAction {
        server: master.to_string(),
        spec: ActionSpec::DbFailover(FailoverParams {
            cluster: watch.cluster.clone(),
            replaces: master.to_string(),
            evidence: Some(evidence.chars().take(4000).collect()),
            dead_since,
        }),
        timeout_s: None,
        urgent: true,
        idempotency_key: Some(format!(
            "{INTERNAL_KEY_PREFIX}failover-{}-{master}-{}",
            watch.cluster,
            chrono::Utc::now().timestamp_millis()
        )),
        retry: None,
        submitted_by: "system:monitor".into(),
    };
    let (action, _) = actions::insert(&mut tx, &new, None)
        .await
        .map_err(|e| match e {
            actions::SubmitError::Db(e) => NotSubmitted::Store(e),
            actions::SubmitError::UnknownServer(_) => NotSubmitted::MasterChanged(master.into()),
        })?;
    sqlx::query("UPDATE clusters SET last_failover_at = now() WHERE name = $1")
        .bind(&watch.cluster)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO cluster_events (cluster, action_id, message) VALUES ($1, $2, $3)")
        .bind(&watch.cluster)
        .bind(action.id)
        .bind(format!(
            "Automatic failover started by watcher {worker} (generation {}): {evidence}",
            watch.generation
        ))
        .execute(&mut *tx)
        .await?;
    let data = json!({"cluster": watch.cluster, "master": master, "action": action.id,
                      "evidence": evidence, "watcher": worker});
    super::webhooks::emit(&mut tx, "failover.started", &data).await?;
    tx.commit().await?;
    Ok(action)
}
