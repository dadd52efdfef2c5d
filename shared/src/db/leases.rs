//! `server_leases`: the per-server lock. A lease row names the holding action and worker, carries
//! a fencing token (`generation`) and expires unless the holder heartbeats. Every change to the
//! lease or to the status of an action on a server happens in a transaction that first locks that
//! server's row (`SELECT ... FOR UPDATE`), which serializes them per server.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{actions::COLUMNS, logs};
use crate::action::{Action, Status};

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Lease {
    pub server: String,
    pub action_id: i64,
    pub holder: String,
    pub generation: i64,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum StartOutcome {
    /// This worker now holds the server's lease for the action, which is `running`.
    Started { action: Action, generation: i64 },
    /// The server is busy or an earlier action goes first; the action is `waiting`.
    /// `kick`: an action that should be (re)published so the server makes progress.
    Waiting {
        holder: Option<Lease>,
        kick: Option<i64>,
    },
    /// The action is already running or finished (a duplicate message): nothing to do.
    AlreadyHandled(Status),
    /// No such action (or its server is gone).
    Missing,
}

async fn lock_server(c: &mut PgConnection, server: &str) -> sqlx::Result<bool> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM servers WHERE name = $1 FOR UPDATE")
        .bind(server)
        .fetch_optional(&mut *c)
        .await?;
    Ok(row.is_some())
}

async fn action(c: &mut PgConnection, id: i64) -> sqlx::Result<Option<Action>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM actions WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await
}

/// The action that should run next on `server`: urgent ones first, then submission order.
async fn head(c: &mut PgConnection, server: &str) -> sqlx::Result<Option<(i64, String)>> {
    sqlx::query_as(
        "SELECT id, status FROM actions WHERE server = $1 AND status IN ('queued','waiting')
         ORDER BY urgent DESC, id LIMIT 1",
    )
    .bind(server)
    .fetch_optional(&mut *c)
    .await
}

async fn lease(c: &mut PgConnection, server: &str) -> sqlx::Result<Option<Lease>> {
    sqlx::query_as("SELECT * FROM server_leases WHERE server = $1")
        .bind(server)
        .fetch_optional(&mut *c)
        .await
}

pub async fn get(pool: &PgPool, server: &str) -> sqlx::Result<Option<Lease>> {
    sqlx::query_as("SELECT * FROM server_leases WHERE server = $1")
        .bind(server)
        .fetch_optional(pool)
        .await
}

/// Try to take `server`'s lease for action `id` on behalf of `worker`.
pub async fn try_start(
    pool: &PgPool,
    id: i64,
    worker: &str,
    lease_s: f64,
) -> sqlx::Result<StartOutcome> {
    let server: Option<String> = sqlx::query_scalar("SELECT server FROM actions WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(server) = server else {
        return Ok(StartOutcome::Missing);
    };
    let mut tx = pool.begin().await?;
    if !lock_server(&mut tx, &server).await? {
        return Ok(StartOutcome::Missing);
    }
    let Some(act) = action(&mut tx, id).await? else {
        return Ok(StartOutcome::Missing);
    };
    if !matches!(act.status, Status::Queued | Status::Waiting) {
        return Ok(StartOutcome::AlreadyHandled(act.status));
    }
    let held = lease(&mut tx, &server).await?;
    let head = head(&mut tx, &server).await?;
    let is_head = head.as_ref().is_some_and(|(h, _)| *h == id);
    if held.is_some() || !is_head {
        let waiting_on = held.as_ref().map(|l| l.action_id);
        if act.status == Status::Queued || act.waiting_on != waiting_on {
            let msg = match &held {
                Some(l) => format!(
                    "Waiting for the lock on {server}: held by action {} (worker {}).",
                    l.action_id, l.holder
                ),
                None => format!(
                    "Waiting for the lock on {server}: action {} goes first.",
                    head.as_ref().map_or(0, |h| h.0)
                ),
            };
            logs::append_system(&mut tx, id, &msg).await?;
        }
        sqlx::query("UPDATE actions SET status = 'waiting', waiting_on = $2 WHERE id = $1")
            .bind(id)
            .bind(waiting_on)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // A free server whose head is parked as `waiting` has no message in flight: kick it.
        let kick = match (&held, head) {
            (None, Some((h, status))) if status == "waiting" => Some(h),
            _ => None,
        };
        return Ok(StartOutcome::Waiting { holder: held, kick });
    }
    let (action, generation) = start_in_tx(&mut tx, id, &server, worker, lease_s).await?;
    tx.commit().await?;
    Ok(StartOutcome::Started { action, generation })
}

/// Take `server`'s lease for action `id` and mark it running (caller holds the server lock).
async fn start_in_tx(
    c: &mut PgConnection,
    id: i64,
    server: &str,
    worker: &str,
    lease_s: f64,
) -> sqlx::Result<(Action, i64)> {
    let generation: i64 = sqlx::query_scalar(
        "INSERT INTO server_leases (server, action_id, holder, generation, expires_at)
         VALUES ($1, $2, $3, nextval('lease_generation'), now() + make_interval(secs => $4))
         RETURNING generation",
    )
    .bind(server)
    .bind(id)
    .bind(worker)
    .bind(lease_s)
    .fetch_one(&mut *c)
    .await?;
    let action: Action = sqlx::query_as(&format!(
        "UPDATE actions SET status = 'running', started_at = now(), worker = $2, waiting_on = NULL
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(worker)
    .fetch_one(&mut *c)
    .await?;
    Ok((action, generation))
}

/// Extend the lease. `false`: the lease is no longer ours (expired and taken, or reaped).
pub async fn heartbeat(
    pool: &PgPool,
    server: &str,
    generation: i64,
    lease_s: f64,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE server_leases SET expires_at = now() + make_interval(secs => $3)
         WHERE server = $1 AND generation = $2",
    )
    .bind(server)
    .bind(generation)
    .bind(lease_s)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The closing system line of the log.
    pub message: String,
}

#[derive(Debug)]
pub enum Finished {
    /// Status written, lease released. `next`: the server's next action, already started for
    /// the caller (hand-off, when asked for); `kick`: the next action to publish otherwise.
    Done {
        next: Option<(Action, i64)>,
        kick: Option<i64>,
    },
    /// The lease is not ours any more: nothing was written (fencing).
    LeaseLost,
}

/// Record the final status and release the lease, fenced by `generation`. With `hand_off`
/// (the worker's name), the server's next action starts in the same transaction for that
/// worker: a busy server's queue drains without a round trip through RabbitMQ per action.
pub async fn finish(
    pool: &PgPool,
    server: &str,
    action_id: i64,
    generation: i64,
    out: &Outcome,
    hand_off: Option<(&str, f64)>,
) -> sqlx::Result<Finished> {
    let mut tx = pool.begin().await?;
    lock_server(&mut tx, server).await?;
    let released = sqlx::query("DELETE FROM server_leases WHERE server = $1 AND generation = $2")
        .bind(server)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
    if released.rows_affected() != 1 {
        return Ok(Finished::LeaseLost);
    }
    logs::append_system(&mut tx, action_id, &out.message).await?;
    sqlx::query(
        "UPDATE actions SET status = $2, exit_code = $3, error = $4, finished_at = now() WHERE id = $1",
    )
    .bind(action_id)
    .bind(out.status.as_str())
    .bind(out.exit_code)
    .bind(&out.error)
    .execute(&mut *tx)
    .await?;
    let head = head(&mut tx, server).await?;
    let (next, kick) = match (head, hand_off) {
        (Some((id, _)), Some((worker, lease_s))) => {
            (Some(start_in_tx(&mut tx, id, server, worker, lease_s).await?), None)
        }
        (Some((id, status)), None) if status == "waiting" => (None, Some(id)),
        _ => (None, None),
    };
    tx.commit().await?;
    Ok(Finished::Done { next, kick })
}

/// Expired leases: mark their actions `interrupted` (with a log line), free the servers.
/// Returns the parked actions to publish so that the servers make progress.
pub async fn reap_expired(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    let expired: Vec<(String, i64)> =
        sqlx::query_as("SELECT server, generation FROM server_leases WHERE expires_at < now()")
            .fetch_all(pool)
            .await?;
    let mut kicks = Vec::new();
    for (server, generation) in expired {
        let mut tx = pool.begin().await?;
        lock_server(&mut tx, &server).await?;
        let gone: Option<(i64, String)> = sqlx::query_as(
            "DELETE FROM server_leases WHERE server = $1 AND generation = $2 AND expires_at < now()
             RETURNING action_id, holder",
        )
        .bind(&server)
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((action_id, holder)) = gone else {
            continue;
        };
        let running: Option<(i64,)> = sqlx::query_as(
            "UPDATE actions SET status = 'interrupted', finished_at = now(),
                    error = 'worker stopped renewing its lease'
             WHERE id = $1 AND status = 'running' RETURNING id",
        )
        .bind(action_id)
        .fetch_optional(&mut *tx)
        .await?;
        if running.is_some() {
            let msg = format!(
                "Worker {holder} stopped renewing its lock on {server} (lease expired): action interrupted, lock released."
            );
            logs::append_system(&mut tx, action_id, &msg).await?;
        }
        if let Some((id, status)) = head(&mut tx, &server).await? {
            if status == "waiting" {
                kicks.push(id);
            }
        }
        tx.commit().await?;
    }
    Ok(kicks)
}

/// Parked heads of free servers (a lost wake-up, e.g. a worker died between release and
/// publish): publish them again. Duplicates are harmless: `try_start` ignores handled actions.
pub async fn stalled_heads(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT h.id FROM (
            SELECT DISTINCT ON (server) id, server, status FROM actions
            WHERE status IN ('queued','waiting') ORDER BY server, urgent DESC, id
         ) h
         WHERE h.status = 'waiting'
           AND NOT EXISTS (SELECT 1 FROM server_leases l WHERE l.server = h.server)",
    )
    .fetch_all(pool)
    .await
}
