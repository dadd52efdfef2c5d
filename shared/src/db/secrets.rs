//! `secrets`, `action_secrets`, `secret_key_check`: sealed values only (see `crate::secrets`).

use sqlx::{PgConnection, PgPool};

use crate::{
    http::SecretInfo,
    secrets::{Keyring, Sealed},
};

/// Store `name` (replacing its value if it exists); `true` when it is new.
pub async fn put(
    conn: &mut PgConnection,
    name: &str,
    sealed: &Sealed,
    by: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "INSERT INTO secrets (name, nonce, ciphertext, created_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET nonce = $2, ciphertext = $3, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(name)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(by)
    .fetch_one(conn)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<SecretInfo>> {
    sqlx::query_as("SELECT name, created_by, created_at, updated_at FROM secrets ORDER BY name")
        .fetch_all(pool)
        .await
}

pub async fn delete(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query("DELETE FROM secrets WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// Of `names`, those the store does not have.
pub async fn missing(pool: &PgPool, names: &[String]) -> sqlx::Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new()); // the common submit: no round trip
    }
    sqlx::query_scalar(
        "SELECT n FROM UNNEST($1::text[]) AS n WHERE NOT EXISTS (SELECT 1 FROM secrets WHERE name = n)",
    )
    .bind(names)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<Sealed>> {
    let row: Option<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT nonce, ciphertext FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(nonce, ciphertext)| Sealed { nonce, ciphertext }))
}

pub async fn save_for_action(
    conn: &mut PgConnection,
    action_id: i64,
    name: &str,
    sealed: &Sealed,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO action_secrets (action_id, name, nonce, ciphertext) VALUES ($1, $2, $3, $4)
         ON CONFLICT (action_id, name) DO NOTHING",
    )
    .bind(action_id)
    .bind(name)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

/// The action's own sealed values (none once it ended).
pub async fn for_action(pool: &PgPool, action_id: i64) -> sqlx::Result<Vec<(String, Sealed)>> {
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT name, nonce, ciphertext FROM action_secrets WHERE action_id = $1")
            .bind(action_id)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(n, nonce, ciphertext)| (n, Sealed { nonce, ciphertext }))
        .collect())
}

/// Refuse a key that does not open what the store holds: the first key seals a check value,
/// every later start opens it.
pub async fn check_key(pool: &PgPool, keys: &Keyring) -> anyhow::Result<()> {
    let sealed = keys.seal("serveractions");
    sqlx::query(
        "INSERT INTO secret_key_check (id, nonce, ciphertext) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(pool)
    .await?;
    let (nonce, ciphertext): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT nonce, ciphertext FROM secret_key_check WHERE id = 1")
            .fetch_one(pool)
            .await?;
    keys.open(&Sealed { nonce, ciphertext })?;
    Ok(())
}
