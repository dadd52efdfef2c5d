//! `audit`: one row per mutating request. An accepted request's row is written in the
//! transaction of its effect; a refused one's on its own.

use sqlx::{types::Json, PgConnection, PgPool, Postgres, QueryBuilder};

use crate::auth::AuditEntry;

/// Who asked, from where, for what.
#[derive(Clone, Debug, Default)]
pub struct NewEntry {
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub client_addr: String,
    pub method: String,
    pub route: String,
    pub target: Option<String>,
    pub status: u16,
    pub changes: Option<serde_json::Value>,
}

/// Writes `e`; a NUL (which PostgreSQL's text cannot hold) in a refused request's target or
/// changes is written as U+FFFD, so the row is never lost to it.
pub async fn record(conn: &mut PgConnection, e: &NewEntry) -> sqlx::Result<()> {
    let target = e.target.as_deref().map(without_nul);
    let changes = e.changes.clone().map(|mut v| {
        scrub(&mut v);
        v
    });
    sqlx::query(
        "INSERT INTO audit (token_id, token_name, client_addr, method, route, target, status, changes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.token_id)
    .bind(&e.token_name)
    .bind(&e.client_addr)
    .bind(&e.method)
    .bind(&e.route)
    .bind(target)
    .bind(i32::from(e.status))
    .bind(changes.map(Json))
    .execute(conn)
    .await?;
    Ok(())
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn scrub(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => *s = without_nul(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            let nul_keys = map.keys().any(|k| k.contains('\0'));
            if nul_keys {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, x)| (without_nul(&k), x))
                    .collect();
            }
            map.values_mut().for_each(scrub);
        }
        _ => {}
    }
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// A token's name.
    pub token: Option<String>,
    pub target: Option<String>,
    /// Cursor: only rows with a smaller id.
    pub before: Option<i64>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(pool: &PgPool, f: &Filter) -> sqlx::Result<Vec<AuditEntry>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, at, token_id, token_name, client_addr, method, route, target, status, changes
         FROM audit WHERE true",
    );
    if let Some(since) = f.since {
        q.push(" AND at >= ").push_bind(since);
    }
    if let Some(token) = &f.token {
        q.push(" AND token_name = ").push_bind(token.clone());
    }
    if let Some(target) = &f.target {
        q.push(" AND target = ").push_bind(target.clone());
    }
    if let Some(before) = f.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
    q.build_query_as().fetch_all(pool).await
}
