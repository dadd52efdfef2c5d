//! `launch_profiles`: what new EC2 instances are made from (`crate::launch::LaunchProfile`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{types::Json, PgPool};

use crate::launch::LaunchProfile;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredProfile {
    pub name: String,
    #[schema(value_type = LaunchProfile)]
    pub spec: Json<LaunchProfile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `Ok(None)`: a profile of that name exists.
pub async fn insert(
    pool: &PgPool,
    name: &str,
    spec: &LaunchProfile,
) -> sqlx::Result<Option<StoredProfile>> {
    sqlx::query_as(
        "INSERT INTO launch_profiles (name, spec) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING RETURNING *",
    )
    .bind(name)
    .bind(Json(spec))
    .fetch_optional(pool)
    .await
}

pub async fn replace(
    pool: &PgPool,
    name: &str,
    spec: &LaunchProfile,
) -> sqlx::Result<Option<StoredProfile>> {
    sqlx::query_as(
        "UPDATE launch_profiles SET spec = $2, updated_at = now() WHERE name = $1 RETURNING *",
    )
    .bind(name)
    .bind(Json(spec))
    .fetch_optional(pool)
    .await
}

pub async fn get(pool: &PgPool, name: &str) -> sqlx::Result<Option<StoredProfile>> {
    sqlx::query_as("SELECT * FROM launch_profiles WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<StoredProfile>> {
    sqlx::query_as("SELECT * FROM launch_profiles ORDER BY name")
        .fetch_all(pool)
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("launch profile {profile:?} is the profile of cluster {cluster:?}")]
    InUse { profile: String, cluster: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// `Ok(false)`: no such profile. Refused while a cluster names it.
pub async fn delete(pool: &PgPool, name: &str) -> Result<bool, DeleteError> {
    let mut tx = pool.begin().await?;
    let user: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM clusters WHERE launch_profile = $1 ORDER BY name LIMIT 1 FOR SHARE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((cluster,)) = user {
        return Err(DeleteError::InUse {
            profile: name.into(),
            cluster,
        });
    }
    let gone = sqlx::query("DELETE FROM launch_profiles WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(gone)
}
