//! `server_leases`: the per-server lock. A lease row names the holding action and worker, carries
//! a fencing token (`generation`) and expires unless the holder heartbeats. Every change to the
//! lease or to the status of an action on a server happens in a transaction that first locks that
//! server's row (`SELECT ... FOR UPDATE`), which serializes them per server. The statements are
//! few and combined (data-modifying CTEs): they run for every action, on every worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{types::Json, Connection, PgConnection, PgPool};

use super::{actions::COLUMNS, logs, servers::Server};
use crate::action::{Action, ActionKind, Status};

#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct Lease {
    pub server: String,
    pub action_id: i64,
    pub holder: String,
    pub generation: i64,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Kept after its action could not be stopped (why): it never expires; see [`unlock`].
    pub stuck: Option<String>,
}

/// Who takes a lease: the worker's name, the lease length, and the lines that open the log
/// of an action it starts (given its kind and urgency).
pub struct Taker<'a> {
    pub worker: &'a str,
    pub lease_s: f64,
    /// The process id its log headers name ("Process N has the lock.").
    pub pid: u32,
}

/// A started action: this worker holds its server's lease.
#[derive(Debug)]
pub struct Started {
    pub action: Action,
    pub server: Server,
    pub generation: i64,
    /// Sequence number of the last log line already stored (the header included).
    pub last_seq: i32,
}

#[derive(Debug)]
pub enum StartOutcome {
    Started(Box<Started>),
    /// The server is busy (held by action `holder`) or an earlier action goes first; the
    /// action is `waiting`. `kick`: an action to (re)publish so the server makes progress.
    Waiting {
        holder: Option<i64>,
        kick: Option<i64>,
    },
    /// The action is already running or finished (a duplicate message): nothing to do.
    AlreadyHandled(Status),
    /// No such action (or its server is gone).
    Missing,
}

/// The next action in line on a server, and the server's lease.
#[derive(sqlx::FromRow)]
struct ServerState {
    lease: Option<Json<Lease>>,
    head_id: Option<i64>,
    head_status: Option<String>,
    head_kind: Option<ActionKind>,
    head_urgent: Option<bool>,
    head_waited_s: Option<f64>,
    head_waiting_on: Option<i64>,
    /// False while the head waits out a retry backoff.
    head_ready: Option<bool>,
}

impl ServerState {
    /// The log header of the head action, with a note of how long it waited if it was parked.
    fn header(&self, server: &str, taker: &Taker<'_>) -> Vec<String> {
        let mut lines = crate::log::header(
            self.head_kind.map_or("action", ActionKind::title),
            self.head_urgent == Some(true),
            taker.pid,
        );
        if self.head_status.as_deref() == Some("waiting") {
            let held = self
                .head_waiting_on
                .map(|h| format!(" (held by action {h} when it arrived)"))
                .unwrap_or_default();
            let note = format!(
                "Waited {:.1} s for the lock on {server}{held}.",
                self.head_waited_s.unwrap_or_default()
            );
            lines.insert(1.min(lines.len()), note);
        }
        lines
    }
}

/// Lock the server row; returns it.
async fn lock_server(c: &mut PgConnection, server: &str) -> sqlx::Result<Option<Server>> {
    sqlx::query_as("SELECT * FROM servers WHERE name = $1 FOR UPDATE")
        .bind(server)
        .fetch_optional(&mut *c)
        .await
}

/// The head of the line on server `$1` (urgent first, then submission order), as the columns
/// of [`ServerState`]; for a `FROM (SELECT 1) one LEFT JOIN LATERAL` clause.
const HEAD: &str = "(SELECT id, status, kind, urgent, created_at, waiting_on, not_before FROM actions
        WHERE server = $1 AND status IN ('queued','waiting') ORDER BY urgent DESC, id LIMIT 1) h ON true";
const HEAD_COLUMNS: &str = "h.id AS head_id, h.status AS head_status, h.kind AS head_kind,
        h.urgent AS head_urgent, EXTRACT(EPOCH FROM now() - h.created_at)::float8 AS head_waited_s,
        h.waiting_on AS head_waiting_on,
        (h.not_before IS NULL OR h.not_before <= now()) AS head_ready";

/// The lease and the head of the line, in one query.
async fn state(c: &mut PgConnection, server: &str) -> sqlx::Result<ServerState> {
    sqlx::query_as(&format!(
        "SELECT (SELECT to_jsonb(l) FROM server_leases l WHERE l.server = $1) AS lease, {HEAD_COLUMNS}
         FROM (SELECT 1) one LEFT JOIN LATERAL {HEAD}"
    ))
    .bind(server)
    .fetch_one(&mut *c)
    .await
}

pub async fn get(pool: &PgPool, server: &str) -> sqlx::Result<Option<Lease>> {
    sqlx::query_as("SELECT * FROM server_leases WHERE server = $1")
        .bind(server)
        .fetch_optional(pool)
        .await
}

/// Park action `id` as `waiting` if its server is visibly busy or another action goes first:
/// one statement, no lock (the common case under load). `None`: it may start now.
/// Safe without the server lock: parking does not change which action is the head, and a
/// finishing worker hands the lease to the head whether it is `queued` or `waiting`.
async fn park(c: &mut PgConnection, id: i64) -> sqlx::Result<Option<StartOutcome>> {
    // (holder, urgent, head, head status)
    type Parked = (Option<i64>, bool, Option<i64>, Option<String>);
    let row: Option<Parked> = sqlx::query_as(
        "WITH a AS (SELECT server FROM actions WHERE id = $1),
              l AS (SELECT l.action_id FROM server_leases l, a WHERE l.server = a.server),
              h AS (SELECT x.id, x.status, (x.not_before IS NULL OR x.not_before <= now()) AS ready
                    FROM actions x, a
                    WHERE x.server = a.server AND x.status IN ('queued','waiting')
                    ORDER BY x.urgent DESC, x.id LIMIT 1)
         UPDATE actions SET status = 'waiting', waiting_on = (SELECT action_id FROM l)
         WHERE id = $1 AND status IN ('queued','waiting')
           AND (EXISTS (SELECT 1 FROM l) OR (SELECT id FROM h) IS DISTINCT FROM $1
                OR NOT (SELECT ready FROM h))
         RETURNING waiting_on, urgent, (SELECT id FROM h), (SELECT status FROM h)",
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some((holder, urgent, head, head_status)) = row else {
        return Ok(None);
    };
    if let (true, Some(h)) = (urgent, holder) {
        // An urgent action preempts a running ordinary one.
        request_cancel(c, h, &format!("Preempted by urgent action {id}")).await?;
    }
    Ok(Some(StartOutcome::Waiting {
        holder,
        // A free server whose head is parked has no message in flight: kick it.
        kick: match (holder, head, head_status.as_deref()) {
            (None, Some(h), Some("waiting")) if h != id => Some(h),
            _ => None,
        },
    }))
}

/// Ask the worker running action `id` to stop it (unless it is urgent or already asked):
/// recorded on the action and announced with `NOTIFY sa_cancel` (sent at commit).
async fn request_cancel(c: &mut PgConnection, id: i64, reason: &str) -> sqlx::Result<bool> {
    let asked: Option<i64> = sqlx::query_scalar(
        "WITH u AS (UPDATE actions SET cancel_requested = $2
                    WHERE id = $1 AND status = 'running' AND NOT urgent AND cancel_requested IS NULL
                    RETURNING id)
         SELECT u.id FROM u, LATERAL (SELECT pg_notify('sa_cancel', u.id::text)) n",
    )
    .bind(id)
    .bind(reason)
    .fetch_optional(&mut *c)
    .await?;
    Ok(asked.is_some())
}

/// Start action `id` if its server is free and it is next in line; park it otherwise.
pub async fn try_start(pool: &PgPool, id: i64, taker: &Taker<'_>) -> sqlx::Result<StartOutcome> {
    let mut conn = pool.acquire().await?;
    if let Some(parked) = park(&mut conn, id).await? {
        return Ok(parked);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // Lock the server row first (the order every transaction here follows), reading the action.
    let row: Option<(String, String, Json<Server>)> = sqlx::query_as(
        "SELECT a.status, a.server, to_jsonb(s) FROM actions a
         JOIN servers s ON s.name = a.server WHERE a.id = $1 FOR UPDATE OF s",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, server, Json(server_row))) = row else {
        return Ok(StartOutcome::Missing);
    };
    let status: Status = status
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    if !matches!(status, Status::Queued | Status::Waiting) {
        return Ok(StartOutcome::AlreadyHandled(status));
    }
    let st = state(&mut tx, &server).await?;
    if st.lease.is_none() && st.head_id == Some(id) && st.head_ready != Some(false) {
        let header = st.header(&server, taker);
        let started = start_in_tx(&mut tx, id, server_row, taker, &header).await?;
        tx.commit().await?;
        return Ok(StartOutcome::Started(Box::new(started)));
    }
    // It became busy in between: park it after all.
    let parked = park(&mut tx, id).await?;
    tx.commit().await?;
    Ok(parked.unwrap_or(StartOutcome::Waiting {
        holder: None,
        kick: None,
    }))
}

#[derive(sqlx::FromRow)]
struct StartRow {
    generation: i64,
    last_seq: i32,
    #[sqlx(flatten)]
    action: Action,
}

/// Take the server's lease for action `id`, mark it running and write its log header, in one
/// statement (the caller holds the server lock).
async fn start_in_tx(
    c: &mut PgConnection,
    id: i64,
    server: Server,
    taker: &Taker<'_>,
    header: &[String],
) -> sqlx::Result<Started> {
    let row: StartRow = sqlx::query_as(&format!(
        "WITH l AS (INSERT INTO server_leases (server, action_id, holder, generation, expires_at)
                    VALUES ($1, $2, $3, nextval('lease_generation'), now() + make_interval(secs => $4))
                    RETURNING generation),
              a AS (UPDATE actions SET status = 'running', started_at = now(), worker = $3, waiting_on = NULL
                    WHERE id = $2 RETURNING {COLUMNS}),
              m AS (SELECT COALESCE(max(seq), 0) AS s FROM action_log WHERE action_id = $2),
              g AS (INSERT INTO action_log (action_id, seq, ts, stream, line)
                    SELECT $2, m.s + u.o::int4, now(), 0, u.t
                    FROM m, UNNEST($5::text[]) WITH ORDINALITY AS u(t, o) RETURNING seq)
         SELECT l.generation, COALESCE((SELECT max(seq) FROM g), m.s)::int4 AS last_seq, a.*
         FROM l, a, m"
    ))
    .bind(&server.name)
    .bind(id)
    .bind(taker.worker)
    .bind(taker.lease_s)
    .bind(header)
    .fetch_one(&mut *c)
    .await?;
    Ok(Started {
        action: row.action,
        server,
        generation: row.generation,
        last_seq: row.last_seq,
    })
}

/// What a heartbeat learns.
#[derive(Debug, PartialEq)]
pub enum Heartbeat {
    /// Extended; `cancel`: the action was asked to stop (and why).
    Held { cancel: Option<String> },
    /// The lease is no longer ours (expired and reaped, or taken).
    Lost,
}

/// Extend the lease, and read any cancel request for its action (NOTIFY can be missed).
pub async fn heartbeat(
    pool: &PgPool,
    server: &str,
    generation: i64,
    lease_s: f64,
) -> sqlx::Result<Heartbeat> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "UPDATE server_leases l SET expires_at = now() + make_interval(secs => $3)
         WHERE server = $1 AND generation = $2
         RETURNING (SELECT cancel_requested FROM actions WHERE id = l.action_id)",
    )
    .bind(server)
    .bind(generation)
    .bind(lease_s)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((cancel,)) => Heartbeat::Held { cancel },
        None => Heartbeat::Lost,
    })
}

#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The closing system lines of the log.
    pub message: Vec<String>,
    /// Retry after this many seconds instead of ending: the action goes back to `waiting`.
    pub retry_in: Option<f64>,
    /// What the action found out (kept on the action).
    pub result: Option<serde_json::Value>,
    /// The action could not be stopped and may still run on the server (why): the lease is
    /// kept, so nothing else starts there until an operator [`unlock`]s it.
    pub keep_locked: Option<String>,
}

#[derive(Debug)]
pub enum Finished {
    /// Status written, lease released. `next`: the server's next action, already started for
    /// the caller (hand-off, when asked for); `kick`: actions to publish (the server's next
    /// otherwise, a run's next).
    Done {
        next: Option<Box<Started>>,
        kick: Vec<i64>,
    },
    /// The lease is not ours any more: nothing was written (fencing).
    LeaseLost,
}

/// Record the final status and release the lease, fenced by `generation`. With `hand_off`, the
/// server's next action starts in the same transaction for that taker: a busy server's line
/// drains without a round trip through RabbitMQ per action.
pub async fn finish(
    pool: &PgPool,
    server: &str,
    action_id: i64,
    generation: i64,
    out: &Outcome,
    hand_off: Option<&Taker<'_>>,
) -> sqlx::Result<Finished> {
    let mut tx = pool.begin().await?;
    let Some(server_row) = lock_server(&mut tx, server).await? else {
        return Ok(Finished::LeaseLost);
    };
    // Release, record, and read the next in line in one statement. The statement's snapshot
    // predates its own changes, which is fine: the finished action was `running`, not a
    // candidate, and the deleted lease was ours.
    #[derive(sqlx::FromRow)]
    struct Row {
        released: i64,
        run_id: Option<i64>,
        #[sqlx(flatten)]
        st: ServerState,
    }
    let Row {
        released,
        run_id,
        st,
    } = sqlx::query_as(&format!(
        "WITH d AS (DELETE FROM server_leases
                    WHERE server = $1 AND generation = $2 AND $10::text IS NULL RETURNING 1),
              k AS (UPDATE server_leases SET holder = 'stuck', stuck = $10, expires_at = '9999-12-31 00:00:00+00'
                    WHERE server = $1 AND generation = $2 AND $10::text IS NOT NULL RETURNING 1),
              r AS (SELECT 1 FROM d UNION ALL SELECT 1 FROM k),
              u AS (UPDATE actions SET exit_code = $5, error = $6, cancel_requested = NULL, result = $9,
                        status = CASE WHEN $8::float8 IS NULL THEN $4 ELSE 'waiting' END,
                        finished_at = CASE WHEN $8::float8 IS NULL THEN now() END,
                        attempt = attempt + CASE WHEN $8::float8 IS NULL THEN 0 ELSE 1 END,
                        not_before = now() + make_interval(secs => $8::float8)
                    WHERE id = $3 AND EXISTS (SELECT 1 FROM r) RETURNING run_id),
              m AS (SELECT COALESCE(max(seq), 0) AS s FROM action_log WHERE action_id = $3),
              g AS (INSERT INTO action_log (action_id, seq, ts, stream, line)
                    SELECT $3, m.s + u.o::int4, now(), 0, u.t
                    FROM m, UNNEST($7::text[]) WITH ORDINALITY AS u(t, o)
                    WHERE EXISTS (SELECT 1 FROM r))
         SELECT (SELECT count(*) FROM r) AS released, (SELECT run_id FROM u) AS run_id,
                NULL::jsonb AS lease, {HEAD_COLUMNS}
         FROM (SELECT 1) one LEFT JOIN LATERAL {HEAD}"
    ))
    .bind(server)
    .bind(generation)
    .bind(action_id)
    .bind(out.status.as_str())
    .bind(out.exit_code)
    .bind(&out.error)
    .bind(&out.message)
    .bind(out.retry_in)
    .bind(out.result.as_ref().map(Json))
    .bind(&out.keep_locked)
    .fetch_one(&mut *tx)
    .await?;
    if released != 1 {
        return Ok(Finished::LeaseLost);
    }
    if out.retry_in.is_none() {
        let data = serde_json::json!({
            "action": action_id, "server": server, "status": out.status.as_str(),
            "exit_code": out.exit_code, "error": out.error,
        });
        super::webhooks::emit(&mut tx, "action.finished", &data).await?;
        if !matches!(out.status, Status::Succeeded | Status::Cancelled) {
            super::webhooks::emit(&mut tx, "action.failed", &data).await?;
        }
    }
    // A run's next action takes the freed slot (or the rest are cancelled past its threshold).
    let mut kick = match run_id {
        Some(run) if out.retry_in.is_none() => super::runs::advance(&mut tx, run).await?,
        _ => Vec::new(),
    };
    let ready = st.head_ready != Some(false) && out.keep_locked.is_none();
    let (next, head) = match (st.head_id, hand_off) {
        (Some(id), Some(taker)) if ready => {
            let header = st.header(server, taker);
            let started = start_in_tx(&mut tx, id, server_row, taker, &header).await?;
            (Some(Box::new(started)), None)
        }
        (Some(id), None) if ready && st.head_status.as_deref() == Some("waiting") => {
            (None, Some(id))
        }
        _ => (None, None),
    };
    tx.commit().await?;
    kick.extend(head);
    Ok(Finished::Done { next, kick })
}

/// Release a lease kept by [`Outcome::keep_locked`] (an operator checked the server): the
/// action it names is over. In the caller's transaction.
pub async fn unlock(tx: &mut PgConnection, server: &str) -> sqlx::Result<Unlocked> {
    if lock_server(&mut *tx, server).await?.is_none() {
        return Ok(Unlocked::NotStuck(None));
    }
    let released: Option<i64> = sqlx::query_scalar(
        "DELETE FROM server_leases WHERE server = $1 AND stuck IS NOT NULL RETURNING action_id",
    )
    .bind(server)
    .fetch_optional(&mut *tx)
    .await?;
    if released.is_none() {
        let held = sqlx::query_as("SELECT * FROM server_leases WHERE server = $1")
            .bind(server)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(Unlocked::NotStuck(held));
    }
    let next = state(&mut *tx, server).await?.head_id;
    Ok(Unlocked::Released { next })
}

pub enum Unlocked {
    /// The stuck lease is gone; `next`: the server's next action, to publish.
    Released { next: Option<i64> },
    /// Nothing to unlock: the server is free (`None`) or a live action holds it.
    NotStuck(Option<Lease>),
}

/// Leases whose holder stopped renewing them.
pub async fn expired(pool: &PgPool) -> sqlx::Result<Vec<Lease>> {
    sqlx::query_as("SELECT * FROM server_leases WHERE expires_at < now()")
        .fetch_all(pool)
        .await
}

/// Take over an expired lease for the reaper `reaper` (new generation, 60 s to kill what the
/// dead holder left and record it). The old holder is fenced off from then on; the server stays
/// locked until [`reap`]. `None`: the lease was renewed or taken meanwhile.
pub async fn claim_expired(
    pool: &PgPool,
    lease: &Lease,
    reaper: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "UPDATE server_leases SET holder = $3, generation = nextval('lease_generation'),
                expires_at = now() + interval '60 seconds'
         WHERE server = $1 AND generation = $2 AND expires_at < now() RETURNING generation",
    )
    .bind(&lease.server)
    .bind(lease.generation)
    .bind(reaper)
    .fetch_optional(pool)
    .await
}

/// Free the server of a lease claimed by [`claim_expired`] (once the dead holder's process
/// group was killed): its action ends `interrupted`, or goes back to `waiting` when it may be
/// retried; a log line says which. Returns the server's next action to publish, if parked.
/// `stuck`: what the dead holder left could not be stopped: the action ends `interrupted` and
/// the lease is kept (see [`unlock`]).
pub async fn reap(
    pool: &PgPool,
    lease: &Lease,
    claimed: i64,
    killed: &str,
    stuck: bool,
) -> sqlx::Result<Option<i64>> {
    let mut tx = pool.begin().await?;
    lock_server(&mut tx, &lease.server).await?;
    let gone: Option<i64> = sqlx::query_scalar(
        "WITH d AS (DELETE FROM server_leases WHERE server = $1 AND generation = $2 AND NOT $4
                    RETURNING action_id),
              k AS (UPDATE server_leases SET holder = 'stuck', stuck = $3, expires_at = '9999-12-31 00:00:00+00'
                    WHERE server = $1 AND generation = $2 AND $4 RETURNING action_id)
         SELECT action_id FROM d UNION ALL SELECT action_id FROM k",
    )
    .bind(&lease.server)
    .bind(claimed)
    .bind(killed)
    .bind(stuck)
    .fetch_optional(&mut *tx)
    .await?;
    if gone.is_none() {
        return Ok(None);
    }
    let action: Option<Action> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM actions WHERE id = $1 AND status = 'running'"
    ))
    .bind(lease.action_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(action) = action {
        let mut msg = format!(
            "Worker {} stopped renewing its lock on {} (lease expired at {}); {killed}.",
            lease.holder,
            lease.server,
            lease.expires_at.format("%H:%M:%S")
        );
        let retry = action.next_retry(Status::Interrupted).filter(|_| !stuck);
        if stuck {
            msg.push_str(&format!(
                "\nThe server stays locked until an operator checks it and runs `sactl servers unlock {}`.",
                lease.server
            ));
        }
        match retry {
            Some(r) => {
                msg.push('\n');
                msg.push_str(&r.line());
                sqlx::query(
                    "UPDATE actions SET status = 'waiting', attempt = attempt + 1, cancel_requested = NULL,
                            not_before = now() + make_interval(secs => $2),
                            error = 'worker stopped renewing its lease'
                     WHERE id = $1",
                )
                .bind(action.id)
                .bind(f64::from(r.backoff_s))
                .execute(&mut *tx)
                .await?;
            }
            None => {
                msg.push_str("\nServer action interrupted");
                sqlx::query(
                    "UPDATE actions SET status = 'interrupted', finished_at = now(),
                            error = 'worker stopped renewing its lease'
                     WHERE id = $1",
                )
                .bind(action.id)
                .execute(&mut *tx)
                .await?;
            }
        }
        logs::append_system(&mut tx, action.id, &msg).await?;
    }
    let st = state(&mut tx, &lease.server).await?;
    tx.commit().await?;
    Ok(
        match (st.head_id, st.head_status.as_deref(), st.head_ready) {
            _ if stuck => None,
            (Some(id), Some("waiting"), Some(true)) => Some(id),
            _ => None,
        },
    )
}

/// What a cancel request did.
#[derive(Debug)]
pub enum Cancel {
    /// It had not started: it never will. `kick`: the server's next action, if parked.
    Cancelled {
        kick: Option<i64>,
    },
    /// It is running: its worker was asked to stop it.
    Requested,
    /// It had already ended with this status.
    Finished(Status),
    Missing,
}

pub async fn cancel(conn: &mut PgConnection, id: i64, reason: &str) -> sqlx::Result<Cancel> {
    let server: Option<String> = sqlx::query_scalar("SELECT server FROM actions WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(server) = server else {
        return Ok(Cancel::Missing);
    };
    let mut tx = conn.begin().await?;
    lock_server(&mut tx, &server).await?;
    let status: String = sqlx::query_scalar("SELECT status FROM actions WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let status: Status = status
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    let out = match status {
        Status::Held | Status::Queued | Status::Waiting => {
            sqlx::query(
                "UPDATE actions SET status = 'cancelled', finished_at = now(), error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(format!("{reason} before it started"))
            .execute(&mut *tx)
            .await?;
            logs::append_system(
                &mut tx,
                id,
                &format!("{reason} before it started.\nServer action cancelled"),
            )
            .await?;
            let st = state(&mut tx, &server).await?;
            Cancel::Cancelled {
                kick: match (st.lease, st.head_id, st.head_status.as_deref()) {
                    (None, Some(h), Some("waiting")) => Some(h),
                    _ => None,
                },
            }
        }
        Status::Running => {
            sqlx::query(
                "WITH u AS (UPDATE actions SET cancel_requested = COALESCE(cancel_requested, $2)
                            WHERE id = $1 RETURNING id)
                 SELECT pg_notify('sa_cancel', u.id::text) FROM u",
            )
            .bind(id)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            Cancel::Requested
        }
        done => Cancel::Finished(done),
    };
    tx.commit().await?;
    Ok(out)
}

/// Heads of free servers that nothing is about to start: parked ones (a lost wake-up, e.g. a
/// worker died between release and publish, or a retry whose backoff is over) and queued ones
/// published more than 5 s ago (their message may sit with a stalled worker). Publish them
/// again: duplicates are harmless, `try_start` ignores handled actions.
pub async fn stalled_heads(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT h.id FROM (
            SELECT DISTINCT ON (server) id, server, status, not_before, published_at FROM actions
            WHERE status IN ('queued','waiting') ORDER BY server, urgent DESC, id
         ) h
         WHERE (h.status = 'waiting' OR h.published_at < now() - interval '5 seconds')
           AND (h.not_before IS NULL OR h.not_before <= now())
           AND NOT EXISTS (SELECT 1 FROM server_leases l WHERE l.server = h.server)",
    )
    .fetch_all(pool)
    .await
}

/// What asking for a cluster's lock gave.
#[derive(Debug)]
pub enum ClusterTake {
    Taken(super::clusters::ClusterLock),
    /// Another live topology action holds it.
    Held {
        action_id: i64,
        kind: ActionKind,
        server: String,
    },
}

/// Take the lock of `cluster` for action `action_id`, which holds `server`'s lease under
/// `server_generation`. The cluster lock lives as long as that server lease: a holder whose
/// server lease ended (finished, reaped, handed on) holds nothing, so no heartbeat is needed and
/// a dead holder's lock is free at once. Each take gets a new fencing generation.
pub async fn take_cluster(
    pool: &PgPool,
    cluster: &str,
    action_id: i64,
    server: &str,
    server_generation: i64,
) -> sqlx::Result<ClusterTake> {
    loop {
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO cluster_leases AS c (cluster, action_id, server, server_generation, generation)
             VALUES ($1, $2, $3, $4, nextval('lease_generation'))
             ON CONFLICT (cluster) DO UPDATE SET action_id = EXCLUDED.action_id, server = EXCLUDED.server,
                 server_generation = EXCLUDED.server_generation, generation = EXCLUDED.generation,
                 acquired_at = now()
             WHERE NOT EXISTS (SELECT 1 FROM server_leases l
                               WHERE l.server = c.server AND l.generation = c.server_generation)
             RETURNING generation",
        )
        .bind(cluster)
        .bind(action_id)
        .bind(server)
        .bind(server_generation)
        .fetch_optional(pool)
        .await?;
        if let Some(generation) = taken {
            return Ok(ClusterTake::Taken(super::clusters::ClusterLock {
                cluster: cluster.into(),
                generation,
            }));
        }
        let holder: Option<(i64, ActionKind, String)> = sqlx::query_as(
            "SELECT c.action_id, a.kind, c.server FROM cluster_leases c
             JOIN actions a ON a.id = c.action_id WHERE c.cluster = $1",
        )
        .bind(cluster)
        .fetch_optional(pool)
        .await?;
        // None: released in between; try again.
        if let Some((action_id, kind, server)) = holder {
            return Ok(ClusterTake::Held {
                action_id,
                kind,
                server,
            });
        }
    }
}

/// Give the cluster lock back (it would also end with its server lease).
pub async fn release_cluster(
    pool: &PgPool,
    lock: &super::clusters::ClusterLock,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM cluster_leases WHERE cluster = $1 AND generation = $2")
        .bind(&lock.cluster)
        .bind(lock.generation)
        .execute(pool)
        .await?;
    Ok(())
}
