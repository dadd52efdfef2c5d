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

pub async fn record(conn: &mut PgConnection, e: &NewEntry) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit (token_id, token_name, client_addr, method, route, target, status, changes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.token_id)
    .bind(&e.token_name)
    .bind(&e.client_addr)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.target)
    .bind(i32::from(e.status))
    .bind(e.changes.as_ref().map(Json))
    .execute(conn)
    .await?;
    Ok(())
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
