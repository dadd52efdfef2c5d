//! `schedules` and `schedule_runs`. `fire_due` is the scheduler's one step, run by every api
//! replica: due schedules are taken with `FOR UPDATE SKIP LOCKED`; for each, in one
//! transaction, the slot's run is recorded under the unique key (schedule, slot) — an action
//! fired, or a skip with its reason — and the next slot moved past now. A slot therefore fires
//! at most once however many replicas run, and after downtime the missed slots collapse into one
//! run (`catch_up = once`) or one recorded skip (`skip`), never a burst.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{types::Json, PgConnection, PgPool, Postgres, Transaction};

use super::servers::DbRole;
use crate::{
    schedule::Timing,
    spec::{ActionSpec, BackupParams},
};

#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct Schedule {
    pub id: i64,
    pub name: String,
    pub target_server: Option<String>,
    pub target_cluster: Option<String>,
    pub target_role: Option<DbRole>,
    /// `kind` and `params`.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub spec: ActionSpec,
    pub cron: Option<String>,
    pub every_s: Option<i32>,
    pub jitter_s: i32,
    pub enabled: bool,
    pub catch_up: String,
    pub next_slot: DateTime<Utc>,
    pub next_fire_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Schedule {
    pub fn timing(&self) -> Option<Timing> {
        Timing::parse(self.cron.as_deref(), self.every_s.map(i64::from)).ok()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct Run {
    pub slot: DateTime<Utc>,
    pub outcome: String,
    pub action_id: Option<i64>,
    pub reason: Option<String>,
    pub fired_at: DateTime<Utc>,
    /// The fired action's status (joined).
    pub status: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewSchedule {
    pub name: String,
    pub target_server: Option<String>,
    pub target_cluster: Option<String>,
    pub target_role: Option<DbRole>,
    pub spec: ActionSpec,
    pub cron: Option<String>,
    pub every_s: Option<i32>,
    pub jitter_s: i32,
    pub enabled: bool,
    pub catch_up: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("a schedule named {0:?} already exists")]
    Duplicate(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A random delay in `0..=jitter_s` seconds (not cryptographic: spreading load is enough).
fn jitter(jitter_s: i32, salt: i64) -> chrono::Duration {
    if jitter_s <= 0 {
        return chrono::Duration::zero();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let x = (nanos ^ (salt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let ms = (x >> 11) % (jitter_s as u64 * 1000 + 1);
    chrono::Duration::milliseconds(ms as i64)
}

pub async fn insert(
    conn: &mut PgConnection,
    s: &NewSchedule,
    timing: &Timing,
) -> Result<Schedule, ScheduleError> {
    save(
        conn,
        "INSERT INTO schedules (id, name, target_server, target_cluster, target_role, kind, params,
                                cron, every_s, jitter_s, enabled, catch_up, next_slot, next_fire_at)
         VALUES (COALESCE($1, nextval('schedules_id_seq')), $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 $11, $12, $13, $14)
         RETURNING *",
        None,
        s,
        timing,
    )
    .await
}

/// Replace a schedule's definition (`PATCH` merges before calling this); its next slot is
/// recomputed from now.
pub async fn update(
    conn: &mut PgConnection,
    id: i64,
    s: &NewSchedule,
    timing: &Timing,
) -> Result<Schedule, ScheduleError> {
    save(
        conn,
        "UPDATE schedules SET name = $2, target_server = $3, target_cluster = $4, target_role = $5,
                kind = $6, params = $7, cron = $8, every_s = $9, jitter_s = $10, enabled = $11,
                catch_up = $12, next_slot = $13, next_fire_at = $14
         WHERE id = $1 RETURNING *",
        Some(id),
        s,
        timing,
    )
    .await
}

/// Run `sql` ($1 the id, then the definition and its next slot from now).
async fn save(
    conn: &mut PgConnection,
    sql: &str,
    id: Option<i64>,
    s: &NewSchedule,
    timing: &Timing,
) -> Result<Schedule, ScheduleError> {
    let next = timing.next_after(Utc::now()).unwrap_or_else(Utc::now);
    sqlx::query_as(sql)
        .bind(id)
        .bind(&s.name)
        .bind(&s.target_server)
        .bind(&s.target_cluster)
        .bind(s.target_role)
        .bind(s.spec.kind().as_str())
        .bind(Json(s.spec.params()))
        .bind(&s.cron)
        .bind(s.every_s)
        .bind(s.jitter_s)
        .bind(s.enabled)
        .bind(&s.catch_up)
        .bind(next)
        .bind(next + jitter(s.jitter_s, next.timestamp()))
        .fetch_one(conn)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ScheduleError::Duplicate(s.name.clone())
            }
            e => e.into(),
        })
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<Schedule>> {
    sqlx::query_as("SELECT * FROM schedules WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Schedule>> {
    sqlx::query_as("SELECT * FROM schedules ORDER BY name")
        .fetch_all(pool)
        .await
}

pub async fn delete(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query("DELETE FROM schedules WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// The last `limit` runs of a schedule, newest first, with their actions' statuses.
pub async fn runs(pool: &PgPool, id: i64, limit: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as(
        "SELECT r.slot, r.outcome, r.action_id, r.reason, r.fired_at, a.status
         FROM schedule_runs r LEFT JOIN actions a ON a.id = r.action_id
         WHERE r.schedule_id = $1 ORDER BY r.slot DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Fire up to `limit` due schedules: how many were due, and the ids of the actions created
/// (to publish now).
pub async fn fire_due(pool: &PgPool, limit: i64) -> sqlx::Result<(usize, Vec<i64>)> {
    let mut tx = pool.begin().await?;
    let due: Vec<Schedule> = sqlx::query_as(
        "SELECT * FROM schedules WHERE enabled AND next_fire_at <= now()
         ORDER BY next_fire_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let mut fired = Vec::new();
    for s in &due {
        if let Some(id) = fire_one(&mut tx, s, now).await? {
            fired.push(id);
        }
    }
    tx.commit().await?;
    Ok((due.len(), fired))
}

async fn fire_one(
    tx: &mut Transaction<'_, Postgres>,
    s: &Schedule,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<i64>> {
    let Some(timing) = s.timing() else {
        // Validated on the way in; a row edited by hand is disabled rather than fired wrongly.
        sqlx::query("UPDATE schedules SET enabled = false WHERE id = $1")
            .bind(s.id)
            .execute(&mut **tx)
            .await?;
        return Ok(None);
    };
    // Missed slots (the scheduler was down) collapse into the latest one.
    let slot = timing.last_at_or_before(s.next_slot, now);
    let missed = (slot > s.next_slot).then(|| {
        format!(
            "slots from {} to {} were missed while no scheduler ran (catch_up: {})",
            s.next_slot.format("%Y-%m-%d %H:%M:%S"),
            slot.format("%Y-%m-%d %H:%M:%S"),
            s.catch_up
        )
    });
    let mut outcome = match (&missed, s.catch_up.as_str()) {
        (Some(why), "skip") => Err(why.clone()),
        _ => Ok(()),
    };
    if outcome.is_ok() {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM actions WHERE schedule_id = $1 AND status IN ('queued', 'waiting', 'running') LIMIT 1",
        )
        .bind(s.id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = open {
            outcome = Err(format!("the previous run (action {id}) has not finished"));
        }
    }
    let target = match outcome {
        Ok(()) => target(tx, s).await?,
        Err(e) => Err(e),
    };
    let action = match target {
        Ok(server) => {
            let key = format!(
                "{}schedule-{}-{}",
                crate::action::INTERNAL_KEY_PREFIX,
                s.id,
                slot.timestamp_millis()
            );
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO actions (server, kind, params, schedule_id, idempotency_key, submitted_by)
                 SELECT name, $2, $3, $4, $5, $6 FROM servers WHERE name = $1 FOR SHARE
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            )
            .bind(&server)
            .bind(s.spec.kind().as_str())
            .bind(Json(s.spec.params()))
            .bind(s.id)
            .bind(&key)
            .bind(format!("schedule:{}", s.name))
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| format!("server {server} does not exist"))
        }
        Err(e) => Err(e),
    };
    let (kind, action_id, reason) = match &action {
        // A catch-up run says which slots it stands for.
        Ok(id) => ("fired", Some(*id), missed),
        Err(why) => ("skipped", None, Some(why.clone())),
    };
    sqlx::query(
        "INSERT INTO schedule_runs (schedule_id, slot, outcome, action_id, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(s.id)
    .bind(slot)
    .bind(kind)
    .bind(action_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    let next = timing
        .next_after(now.max(slot))
        .unwrap_or(now + chrono::Duration::days(3650));
    sqlx::query("UPDATE schedules SET next_slot = $2, next_fire_at = $3 WHERE id = $1")
        .bind(s.id)
        .bind(next)
        .bind(next + jitter(s.jitter_s, s.id))
        .execute(&mut **tx)
        .await?;
    Ok(action.ok())
}

/// The server a schedule's slot runs on: its server, or its cluster's master or first slave
/// (resolved now, so a promote moves role-based schedules).
async fn target(
    tx: &mut Transaction<'_, Postgres>,
    s: &Schedule,
) -> sqlx::Result<Result<String, String>> {
    if let Some(server) = &s.target_server {
        return Ok(Ok(server.clone()));
    }
    let cluster = s.target_cluster.clone().unwrap_or_default();
    let role = s.target_role.unwrap_or(DbRole::Slave);
    let found: Option<String> = match role {
        DbRole::Master => sqlx::query_scalar("SELECT master FROM clusters WHERE name = $1")
            .bind(&cluster)
            .fetch_optional(&mut **tx)
            .await?
            .flatten(),
        DbRole::Slave => sqlx::query_scalar(
            "SELECT name FROM servers WHERE cluster = $1 AND db_role = 'slave' AND detached IS NULL
             ORDER BY name LIMIT 1",
        )
        .bind(&cluster)
        .fetch_optional(&mut **tx)
        .await?,
    };
    Ok(found.ok_or_else(|| format!("cluster {cluster} has no {}", role.as_str())))
}

/// The default backup schedules of a cluster with a master and a slave: every 10 minutes from
/// the slave (`tag: 10min`) and daily from the master (`tag: daily`), at a minute chosen at
/// random per cluster so that many clusters do not back up at once. Existing ones are kept.
/// The names of the schedules created.
pub async fn ensure_backup_defaults(pool: &PgPool, cluster: &str) -> sqlx::Result<Vec<String>> {
    let r = jitter(3599, cluster.len() as i64).num_seconds();
    let (minute, hour) = (r % 60, 1 + r / 60 % 5);
    let defaults = [
        (
            format!("{cluster}-backup-10min"),
            DbRole::Slave,
            format!("0 {}/10 * * * *", minute % 10),
            "10min",
        ),
        (
            format!("{cluster}-backup-daily"),
            DbRole::Master,
            format!("0 {minute} {hour} * * *"),
            "daily",
        ),
    ];
    let mut created = Vec::new();
    for (name, role, cron_expr, tag) in defaults {
        let Ok(timing) = Timing::parse(Some(&cron_expr), None) else {
            continue;
        };
        let new = NewSchedule {
            name: name.clone(),
            target_server: None,
            target_cluster: Some(cluster.to_string()),
            target_role: Some(role),
            spec: ActionSpec::DbBackup(BackupParams {
                tag: Some(tag.into()),
                ..Default::default()
            }),
            cron: Some(cron_expr),
            every_s: None,
            jitter_s: 0,
            enabled: true,
            catch_up: "once".into(),
        };
        match insert(&mut *pool.acquire().await?, &new, &timing).await {
            Ok(_) => created.push(name),
            Err(ScheduleError::Duplicate(_)) => {}
            Err(ScheduleError::Db(e)) => return Err(e),
        }
    }
    Ok(created)
}

/// Whether the cluster has an enabled backup schedule (a promote then backs up the new master).
pub async fn cluster_backs_up(pool: &PgPool, cluster: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE target_cluster = $1 AND kind = 'db_backup' AND enabled)",
    )
    .bind(cluster)
    .fetch_one(pool)
    .await
}
