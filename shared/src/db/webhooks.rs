//! `webhooks` and their outbox, `webhook_deliveries`: an event is written, once per webhook
//! that wants it, in the transaction that makes it ([`emit`]); the api delivers it at least
//! once ([`due`], [`delivered`], [`retry`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{types::Json, PgConnection, PgPool};

/// The events a webhook may ask for.
pub const EVENTS: &[&str] = &[
    "action.finished",
    "action.failed",
    "failover.started",
    "failover.finished",
    "cluster.analysis",
];

/// After this many failed attempts a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: i32 = 8;

/// A webhook as the API shows it (never its secret).
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// One delivery of one event to one webhook, with its attempts so far.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    pub event_id: String,
    pub status: String,
    pub attempts: i32,
    pub next_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub body: Json<Value>,
}

/// Queue `event` with `data` for every webhook that wants it, in the caller's transaction.
/// The body: `{"event", "id" (the idempotency id), "at", "data"}`.
pub async fn emit(conn: &mut PgConnection, event: &str, data: &Value) -> sqlx::Result<()> {
    sqlx::query(
        "WITH e AS (SELECT gen_random_uuid() AS id, now() AS at)
         INSERT INTO webhook_deliveries (webhook_id, event, event_id, body)
         SELECT w.id, $1, e.id,
                jsonb_build_object('event', $1::text, 'id', e.id, 'at', e.at, 'data', $2::jsonb)
         FROM webhooks w, e WHERE $1 = ANY (w.events)",
    )
    .bind(event)
    .bind(Json(data))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn create(
    pool: &PgPool,
    url: &str,
    events: &[String],
    secret: &crate::secrets::Sealed,
    by: &str,
) -> sqlx::Result<Webhook> {
    sqlx::query_as(
        "INSERT INTO webhooks (url, events, secret_nonce, secret_ciphertext, created_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING id, url, events, created_by, created_at",
    )
    .bind(url)
    .bind(events)
    .bind(&secret.nonce)
    .bind(&secret.ciphertext)
    .bind(by)
    .fetch_one(pool)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Webhook>> {
    sqlx::query_as("SELECT id, url, events, created_by, created_at FROM webhooks ORDER BY id")
        .fetch_all(pool)
        .await
}

pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The newest 100 deliveries of webhook `id` (`None`: no such webhook).
pub async fn deliveries(pool: &PgPool, id: i64) -> sqlx::Result<Option<Vec<Delivery>>> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT id, webhook_id, event, event_id::text AS event_id, status, attempts, next_at, last_status,
                last_error, created_at, delivered_at, body
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map(Some)
}

/// A delivery to attempt now, with where to and the sealed secret.
#[derive(sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub event: String,
    pub event_id: String,
    pub body: Json<Value>,
    pub attempts: i32,
    pub url: String,
    pub secret_nonce: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
}

/// Claim up to `limit` due deliveries for `hold_s` (another api instance skips them meanwhile).
pub async fn due(pool: &PgPool, limit: i64, hold_s: f64) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as(
        "WITH c AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_at <= now()
                    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),
              u AS (UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $2)
                    FROM c WHERE d.id = c.id
                    RETURNING d.id, d.event, d.event_id, d.body, d.attempts, d.webhook_id)
         SELECT u.id, u.event, u.event_id::text AS event_id, u.body, u.attempts, w.url, w.secret_nonce,
                w.secret_ciphertext
         FROM u JOIN webhooks w ON w.id = u.webhook_id ORDER BY u.id",
    )
    .bind(limit)
    .bind(hold_s)
    .fetch_all(pool)
    .await
}

pub async fn delivered(pool: &PgPool, id: i64, status: u16) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                last_status = $2, last_error = NULL, delivered_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .execute(pool)
    .await?;
    Ok(())
}

/// A failed attempt: retried after 2^attempts seconds (at most 10 minutes), given up after
/// [`MAX_ATTEMPTS`].
pub async fn retry(pool: &PgPool, id: i64, status: Option<u16>, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, last_error = $3,
                status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                next_at = now() + make_interval(secs => least(power(2, attempts)::float8, 600))
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(i32::from))
    .bind(error)
    .bind(MAX_ATTEMPTS)
    .execute(pool)
    .await?;
    Ok(())
}
