//! PostgreSQL access layer: one module per table group. Queries are plain `sqlx::query*` calls
//! (no compile-time database needed).

pub mod actions;
pub mod audit;
pub mod backups;
pub mod clusters;
pub mod leases;
pub mod logs;
pub mod profiles;
pub mod runs;
pub mod schedules;
pub mod scripts;
pub mod secrets;
pub mod servers;
pub mod tokens;
pub mod watch;
pub mod webhooks;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Create the database if it is missing, connect a pool and run the migrations.
/// Retries with backoff while PostgreSQL is unreachable (up to `wait`).
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    wait: Duration,
) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let delay = backoff.next_delay();
        match try_connect(url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %format!("{e:#}"), "database not ready, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(url).context("SA_DATABASE_URL is not a valid URL")?;
    if !Postgres::database_exists(url)
        .await
        .context("checking the database")?
    {
        // Another replica may create it at the same time: ignore "already exists".
        if let Err(e) = Postgres::create_database(url).await {
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(e).context("creating the database");
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .context("connecting to PostgreSQL")?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    Ok(pool)
}
