//! Action kinds, one module each, registered in `run`.

mod db_backup;
mod db_checksum;
mod db_configure_master;
mod db_configure_slave;
mod db_promote;
mod db_restore;
mod db_status;
mod db_verify_backup;
mod run_script;

use std::sync::Arc;

use shared::{action::Action, action::ActionKind, db::servers::Server, validate::FieldError};

use crate::{lease::Stop, logwriter::LogSink, ssh::SshError, Worker};

/// What a kind's code gets: the action, its server, its log and its stop signal.
pub struct Ctx<'a> {
    pub worker: &'a Arc<Worker>,
    pub action: &'a Action,
    pub server: &'a Server,
    pub log: LogSink,
    pub stop: &'a Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Db(#[from] crate::mysql::DbError),
    #[error("invalid parameters: {0}")]
    Invalid(#[from] FieldError),
    /// Stopped by timeout, lost lease or shutdown; the runner knows which.
    #[error("stopped")]
    Stopped,
    #[error("{0}")]
    Failed(String),
    /// The data itself is bad (a backup object's checksum, a stream that does not unpack).
    #[error("{0}")]
    BadData(String),
}

/// How an action ended when it ran to its end.
pub struct Done {
    pub exit_code: i32,
    /// What it found out, kept on the action.
    pub result: Option<serde_json::Value>,
}

/// Run the action. The DB kinds' futures are boxed: they are large (the S3 client's most of
/// all) and would otherwise sit on the worker thread's stack.
pub async fn run(kind: ActionKind, ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    match kind {
        ActionKind::RunScript => run_script::run(ctx).await.map(|exit_code| Done {
            exit_code,
            result: None,
        }),
        ActionKind::DbStatus => stoppable(ctx, Box::pin(db_status::run(ctx))).await,
        ActionKind::DbConfigureMaster => {
            stoppable(ctx, Box::pin(db_configure_master::run(ctx))).await
        }
        ActionKind::DbConfigureSlave => {
            stoppable(ctx, Box::pin(db_configure_slave::run(ctx))).await
        }
        ActionKind::DbChecksum => stoppable(ctx, Box::pin(db_checksum::run(ctx))).await,
        ActionKind::DbBackup => stoppable(ctx, Box::pin(db_backup::run(ctx))).await,
        // Runs to its end once started: stopping it half-way could leave mysqld stopped.
        ActionKind::DbRestore => Box::pin(db_restore::run(ctx)).await,
        ActionKind::DbVerifyBackup => stoppable(ctx, Box::pin(db_verify_backup::run(ctx))).await,
        // A promote runs to its end once started (it undoes itself on failure): stopping it
        // half-way would leave two writable servers or none.
        ActionKind::DbPromote => Box::pin(db_promote::run(ctx)).await,
    }
}

/// Point the cluster's master record at `server` through the configured DNS provider, with the
/// seed's log lines.
async fn point_dns(
    ctx: &Ctx<'_>,
    cluster: &shared::db::clusters::Cluster,
    server: &Server,
) -> Result<(), ActionError> {
    ctx.log.system("Changing Master DB DNS...").await;
    let record = shared::dns::Record {
        name: cluster.dns_name.clone(),
        address: server.address.clone(),
        ttl: cluster.dns_ttl.max(0) as u32,
    };
    ctx.worker
        .dns
        .publish(&cluster.name, &record)
        .await
        .map_err(|e| ActionError::Failed(e.to_string()))?;
    ctx.log
        .system(format!(
            "OK. Result: {} set to this instance IP: {}",
            record.name, record.address
        ))
        .await;
    ctx.log
        .system(format!(
            "(record TTL {} s, published by the {} DNS provider)",
            record.ttl,
            ctx.worker.dns.name()
        ))
        .await;
    Ok(())
}

/// A cluster with a master and a slave gets its default backup schedules (logged).
async fn default_schedules(ctx: &Ctx<'_>, cluster: &str) {
    match shared::db::schedules::ensure_backup_defaults(&ctx.worker.pool, cluster).await {
        Ok(created) if created.is_empty() => {}
        Ok(created) => {
            ctx.log
                .system(format!(
                    "Default backup schedules created: {} (every 10 minutes from the slave, daily from the master).",
                    created.join(", ")
                ))
                .await
        }
        Err(e) => {
            ctx.log
                .system(format!("Warning: default backup schedules not created: {e}"))
                .await
        }
    }
}

/// The backup store, or why there is none.
fn store(ctx: &Ctx<'_>) -> Result<crate::s3::Store, ActionError> {
    ctx.worker
        .s3
        .clone()
        .ok_or_else(|| ActionError::Failed(crate::s3::S3Error::NoBucket.to_string()))
}

/// mysqld's data directory on `server`.
fn datadir(server: &Server) -> String {
    server
        .db_datadir
        .clone()
        .unwrap_or_else(|| "/var/lib/mysql".into())
}

/// Run `f` until it ends or the action is told to stop (timeout, cancel, lost lease).
async fn stoppable(
    ctx: &Ctx<'_>,
    f: impl std::future::Future<Output = Result<Done, ActionError>>,
) -> Result<Done, ActionError> {
    tokio::select! {
        r = f => r,
        _ = ctx.stop.stopped() => Err(ActionError::Stopped),
    }
}
