//! `actions`: submission (with the outbox's `published_at`), reads and listing.

use sqlx::{types::Json, PgConnection, PgPool, Postgres, QueryBuilder};

use crate::{
    action::{Action, ActionKind, RetryPolicy, Status},
    spec::ActionSpec,
};

pub const COLUMNS: &str = "id, server, kind, params, status, exit_code, error, timeout_s, urgent, \
    idempotency_key, worker, waiting_on, created_at, started_at, finished_at, attempt, retry, \
    not_before, cancel_requested, result, submitted_by";

#[derive(Clone, Debug)]
pub struct NewAction {
    pub server: String,
    pub spec: ActionSpec,
    pub timeout_s: Option<i32>,
    pub urgent: bool,
    pub idempotency_key: Option<String>,
    pub retry: Option<RetryPolicy>,
    /// `token:<name>`, `schedule:<name>` or `system:<reason>`.
    pub submitted_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no server named {0:?}")]
    UnknownServer(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Store a new action (`queued`, not yet published) in one statement, with its audit row
/// (changes: the action's id and kind) when `audit` is given. With an idempotency key already
/// used, returns the existing action and `false` (and writes no audit row).
pub async fn insert(
    conn: &mut PgConnection,
    a: &NewAction,
    audit: Option<&super::audit::NewEntry>,
) -> Result<(Action, bool), SubmitError> {
    // FOR SHARE: a concurrent DELETE of the server waits for us (and then sees our action).
    let e = audit.cloned().unwrap_or_default();
    let inserted: Option<Action> = sqlx::query_as(&format!(
        "WITH a AS (
             INSERT INTO actions (server, kind, params, timeout_s, urgent, idempotency_key, retry,
                                  submitted_by)
             SELECT s.name, $2, $3, $4, $5, $6, $7, $8 FROM servers s WHERE s.name = $1 FOR SHARE
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}),
         w AS (
             INSERT INTO audit (token_id, token_name, client_addr, method, route, target, status,
                                changes)
             SELECT $10, $11, $12, $13, $14, $15, $16,
                    jsonb_build_object('action', a.id, 'kind', a.kind, 'reused', false)
             FROM a WHERE $9)
         SELECT * FROM a"
    ))
    .bind(&a.server)
    .bind(a.spec.kind().as_str())
    .bind(Json(a.spec.params()))
    .bind(a.timeout_s)
    .bind(a.urgent)
    .bind(&a.idempotency_key)
    .bind(a.retry.as_ref().map(Json))
    .bind(&a.submitted_by)
    .bind(audit.is_some())
    .bind(e.token_id)
    .bind(&e.token_name)
    .bind(&e.client_addr)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.target)
    .bind(i32::from(e.status))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(action) = inserted {
        return Ok((action, true));
    }
    // Nothing inserted: an unknown server, or the idempotency key's first action.
    let existing: Option<Action> = match &a.idempotency_key {
        Some(key) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM actions WHERE idempotency_key = $1"
            ))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
        }
        None => None,
    };
    existing
        .map(|e| (e, false))
        .ok_or_else(|| SubmitError::UnknownServer(a.server.clone()))
}

/// Record that the broker confirmed these actions' messages.
pub async fn mark_published(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE actions SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Outbox: actions stored at least `min_age_s` ago whose publication was never confirmed.
pub async fn unpublished(pool: &PgPool, min_age_s: f64, limit: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM actions WHERE published_at IS NULL AND status = 'queued'
           AND created_at < now() - make_interval(secs => $1)
         ORDER BY id LIMIT $2",
    )
    .bind(min_age_s)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Action>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM actions WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub server: Option<String>,
    pub kind: Option<ActionKind>,
    pub status: Option<Status>,
    /// Cursor: only actions with a smaller id.
    pub before: Option<i64>,
    /// Created at or after / before these times.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only actions on servers this scope covers (a scoped token's listing).
    pub within: Option<crate::auth::Scope>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(pool: &PgPool, f: &Filter) -> sqlx::Result<Vec<Action>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM actions WHERE true"));
    if let Some(server) = &f.server {
        q.push(" AND server = ").push_bind(server.clone());
    }
    if let Some(scope) = f.within.as_ref().filter(|s| !s.is_everything()) {
        q.push(" AND server IN (SELECT name FROM servers WHERE ");
        super::tokens::push_covers(&mut q, scope);
        q.push(")");
    }
    if let Some(kind) = f.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(status) = f.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = f.before {
        q.push(" AND id < ").push_bind(before);
    }
    if let Some(since) = f.since {
        q.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = f.until {
        q.push(" AND created_at < ").push_bind(until);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
    q.build_query_as().fetch_all(pool).await
}

/// Counts by (kind, status), for the api's `/metrics`: of the actions still queued, waiting or
/// running (`live`: an index range, cheap), or of the ended ones (a scan of the whole table,
/// 1.2 s at 10 million actions: the api keeps those a few minutes).
pub async fn counts(pool: &PgPool, live: bool) -> sqlx::Result<Vec<(String, String, i64)>> {
    let which = if live { "IN" } else { "NOT IN" };
    sqlx::query_as(&format!(
        "SELECT kind, status, count(*) FROM actions
         WHERE status {which} ('queued', 'waiting', 'running') GROUP BY kind, status"
    ))
    .fetch_all(pool)
    .await
}

/// Whether `server` has a queued, waiting or running action.
pub async fn unfinished(pool: &sqlx::PgPool, server: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM actions WHERE server = $1 AND status IN ('queued','waiting','running'))",
    )
    .bind(server)
    .fetch_one(pool)
    .await
}
