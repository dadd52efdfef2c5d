//! `tokens`: API tokens, kept as SHA-256 hashes of their secrets.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{types::Json, PgConnection, PgPool, Postgres, QueryBuilder};

use crate::auth::{Role, Scope, TokenCreated, TokenInfo};

const COLUMNS: &str = "id, name, role, servers, tags, clusters, created_by, created_at, \
    expires_at, last_used_at, revoked_at";

/// The prefix of every token, so a leaked one is recognisable (and greppable by scanners).
pub const PREFIX: &str = "sa_";

/// A new secret: `sa_` and 256 random bits, base64url.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the store keeps of a secret.
pub fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape `generate` makes (else it is rejected without a look-up).
pub fn well_formed(token: &str) -> bool {
    token.len() == PREFIX.len() + 43
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} already exists")]
    Duplicate(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub struct NewToken<'a> {
    pub name: &'a str,
    pub role: Role,
    pub scope: &'a Scope,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
}

pub async fn create(conn: &mut PgConnection, t: &NewToken<'_>) -> Result<TokenCreated, TokenError> {
    let token = generate();
    let info: TokenInfo = sqlx::query_as(&format!(
        "INSERT INTO tokens (name, hash, role, servers, tags, clusters, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(t.name)
    .bind(hash(&token))
    .bind(t.role.as_str())
    .bind(&t.scope.servers)
    .bind(Json(&t.scope.tags))
    .bind(&t.scope.clusters)
    .bind(t.expires_at)
    .bind(t.created_by)
    .fetch_one(conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TokenError::Duplicate(t.name.to_string())
        }
        e => e.into(),
    })?;
    Ok(TokenCreated { token, info })
}

/// On a store without any token: make an admin token named `admin`, hand its secret to
/// `save` (which writes it somewhere only the operator reads), and keep it only if `save` did.
/// `Ok(false)`: there were tokens already. Concurrent first starts agree on one.
pub async fn create_first_admin(
    pool: &PgPool,
    save: impl FnOnce(&str) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sa_first_admin'))")
        .execute(&mut *tx)
        .await?;
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)")
        .fetch_one(&mut *tx)
        .await?;
    if any {
        return Ok(false);
    }
    let created = create(
        &mut tx,
        &NewToken {
            name: "admin",
            role: Role::Admin,
            scope: &Scope::default(),
            expires_at: None,
            created_by: "sa-api",
        },
    )
    .await?;
    save(&created.token)?;
    tx.commit().await?;
    Ok(true)
}

/// The token with this hash, revoked and expired ones included (the caller tells them apart).
pub async fn by_hash(pool: &PgPool, hash: &str) -> sqlx::Result<Option<TokenInfo>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = $1"))
        .bind(hash)
        .fetch_optional(pool)
        .await
}

/// Record a use, at most once a minute per token.
pub async fn touch(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tokens SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))
        .fetch_all(pool)
        .await
}

/// Revoke the token named `name` (already revoked: unchanged). `None`: no such token.
pub async fn revoke(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<TokenInfo>> {
    sqlx::query_as(&format!(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE name = $1
         RETURNING {COLUMNS}"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// A condition on the `servers` table: the row is within `scope`.
pub fn push_covers(q: &mut QueryBuilder<'_, Postgres>, scope: &Scope) {
    q.push("(name = ANY(")
        .push_bind(scope.servers.clone())
        .push(") OR cluster = ANY(")
        .push_bind(scope.clusters.clone())
        .push(") OR EXISTS (SELECT 1 FROM jsonb_each_text(")
        .push_bind(Json(scope.tags.clone()))
        .push(") t WHERE servers.tags ->> t.key = t.value))");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(well_formed(&a) && well_formed(&b), "{a}");
        assert!(!well_formed("sa_short") && !well_formed(&a.replace("sa_", "xx_")));
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }
}
