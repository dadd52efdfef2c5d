//! `runs`: one action per server, grouped. The actions are created in one statement; those
//! beyond the run's concurrency are `held` until a slot frees ([`advance`], called as each of
//! the run's actions finishes, and periodically by the api for cancels and reaps). Once the run's
//! failures reach its threshold, dispatching stops: the held rest end `cancelled` with the
//! reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{types::Json, PgConnection, PgPool};

use crate::{
    action::{ActionKind, RetryPolicy},
    spec::ActionSpec,
};

/// A run as stored and shown (`GET /v1/runs/{id}` adds its counts and actions).
#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    #[schema(value_type = Object)]
    pub target: Json<Value>,
    pub kind: ActionKind,
    #[schema(value_type = Object)]
    pub params: Json<Value>,
    pub concurrency: i32,
    pub max_failures: Option<i32>,
    pub max_fail_percent: Option<i32>,
    pub total: i32,
    /// Why dispatching stopped before every server had its action.
    pub stopped_reason: Option<String>,
    pub submitted_by: String,
    pub created_at: DateTime<Utc>,
    /// When its last action ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What every action of a new run shares; `specs` is one per server.
pub struct NewRun<'a> {
    pub target: Value,
    pub kind: ActionKind,
    pub params: Value,
    pub concurrency: i32,
    pub max_failures: Option<i32>,
    pub max_fail_percent: Option<i32>,
    pub timeout_s: i32,
    pub urgent: bool,
    pub retry: Option<RetryPolicy>,
    pub submitted_by: String,
    pub specs: &'a [(String, ActionSpec)],
}

/// The run and its actions (`queued` up to the concurrency, `held` beyond) in one transaction:
/// one statement for the actions. Returns the run and its actions' ids in server order, and the
/// ids to publish now.
pub async fn create(
    tx: &mut PgConnection,
    r: &NewRun<'_>,
) -> sqlx::Result<(Run, Vec<i64>, Vec<i64>)> {
    let run: Run = sqlx::query_as(
        "INSERT INTO runs (target, kind, params, concurrency, max_failures, max_fail_percent,
                           total, submitted_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(Json(&r.target))
    .bind(r.kind.as_str())
    .bind(Json(&r.params))
    .bind(r.concurrency)
    .bind(r.max_failures)
    .bind(r.max_fail_percent)
    .bind(r.specs.len() as i32)
    .bind(&r.submitted_by)
    .fetch_one(&mut *tx)
    .await?;
    let servers: Vec<&str> = r.specs.iter().map(|(s, _)| s.as_str()).collect();
    let params: Vec<Json<Value>> = r.specs.iter().map(|(_, p)| Json(p.params())).collect();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO actions (server, kind, params, timeout_s, urgent, retry, submitted_by, run_id,
                              status)
         SELECT u.server, $3, u.params, $4, $5, $6, $7, $8,
                CASE WHEN u.o <= $9 THEN 'queued' ELSE 'held' END
         FROM UNNEST($1::text[], $2::jsonb[]) WITH ORDINALITY AS u(server, params, o)
         ORDER BY u.o
         RETURNING id, status",
    )
    .bind(&servers)
    .bind(&params)
    .bind(r.kind.as_str())
    .bind(r.timeout_s)
    .bind(r.urgent)
    .bind(r.retry.as_ref().map(Json))
    .bind(&r.submitted_by)
    .bind(run.id)
    .bind(i64::from(r.concurrency))
    .fetch_all(&mut *tx)
    .await?;
    let mut rows = rows;
    rows.sort_by_key(|(id, _)| *id);
    let ids = rows.iter().map(|(id, _)| *id).collect();
    let queued = rows
        .iter()
        .filter(|(_, s)| s == "queued")
        .map(|(id, _)| *id)
        .collect();
    Ok((run, ids, queued))
}

/// The failure count that stops a run's dispatching, if it has reached it.
fn stop_reason(run: &Run, failures: i64) -> Option<String> {
    if let Some(m) = run.max_failures {
        if failures >= i64::from(m) {
            return Some(format!(
                "run {}: {failures} failed, max_failures is {m}",
                run.id
            ));
        }
    }
    if let Some(p) = run.max_fail_percent {
        if failures * 100 > i64::from(p) * i64::from(run.total) {
            return Some(format!(
                "run {}: {failures} of {} failed, more than max_fail_percent {p}%",
                run.id, run.total
            ));
        }
    }
    None
}

/// Dispatch what the run's free slots allow, or stop it past its threshold; in the caller's
/// transaction (the run's row locked: concurrent finishes take turns). Returns the ids now
/// `queued`, to publish.
pub async fn advance(tx: &mut PgConnection, run_id: i64) -> sqlx::Result<Vec<i64>> {
    let Some(run): Option<Run> =
        sqlx::query_as("SELECT * FROM runs WHERE id = $1 AND finished_at IS NULL FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(Vec::new());
    };
    let counts = counts(&mut *tx, run_id).await?;
    let n = |s: &str| counts.get(s).copied().unwrap_or(0);
    let failures = n("failed") + n("timed_out") + n("interrupted");
    let active = n("queued") + n("waiting") + n("running");
    let mut dispatched = Vec::new();
    let mut held = n("held");
    match stop_reason(&run, failures) {
        Some(reason) if run.stopped_reason.is_none() => {
            let cancelled: Vec<i64> = sqlx::query_scalar(
                "UPDATE actions SET status = 'cancelled', finished_at = now(), error = $2
                 WHERE run_id = $1 AND status = 'held' RETURNING id",
            )
            .bind(run_id)
            .bind(format!("{reason}: not started"))
            .fetch_all(&mut *tx)
            .await?;
            for id in cancelled {
                super::logs::append_system(
                    &mut *tx,
                    id,
                    &format!("Not started: {reason}.\nServer action cancelled"),
                )
                .await?;
            }
            held = 0;
            sqlx::query("UPDATE runs SET stopped_reason = $2 WHERE id = $1")
                .bind(run_id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
        }
        None if held > 0 && active < i64::from(run.concurrency) => {
            dispatched = sqlx::query_scalar(
                "UPDATE actions SET status = 'queued' WHERE id IN (
                     SELECT id FROM actions WHERE run_id = $1 AND status = 'held'
                     ORDER BY id LIMIT $2)
                 RETURNING id",
            )
            .bind(run_id)
            .bind(i64::from(run.concurrency) - active)
            .fetch_all(&mut *tx)
            .await?;
            held -= dispatched.len() as i64;
        }
        _ => {}
    }
    if active == 0 && dispatched.is_empty() && held == 0 {
        sqlx::query("UPDATE runs SET finished_at = now() WHERE id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(dispatched)
}

/// Advance every unfinished run (cancels and reaps finish actions without [`advance`]).
pub async fn advance_all(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE finished_at IS NULL")
        .fetch_all(pool)
        .await?;
    let mut out = Vec::new();
    for id in ids {
        let mut tx = pool.begin().await?;
        out.extend(advance(&mut tx, id).await?);
        tx.commit().await?;
    }
    Ok(out)
}

/// A run's actions by status.
pub async fn counts(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM actions WHERE run_id = $1 GROUP BY status")
            .bind(run_id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as("SELECT * FROM runs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as("SELECT * FROM runs ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// One action of a run, for its page.
#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunAction {
    pub id: i64,
    pub server: String,
    #[sqlx(try_from = "String")]
    pub status: crate::Status,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn actions(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<RunAction>> {
    sqlx::query_as(
        "SELECT id, server, status, exit_code, error, started_at, finished_at FROM actions
         WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}
