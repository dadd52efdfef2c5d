//! Action kinds, one module each, registered in `run`. Each receives its own typed params and
//! calls only downward (`mariadb/`, `mycnf`, `transfer`, `mysql`, `ssh`, `s3`); no action file
//! calls another.

mod db_backup;
mod db_checksum;
mod db_configure_master;
mod db_configure_slave;
mod db_failover;
mod db_launch_master;
mod db_launch_slave;
mod db_promote;
mod db_restore;
mod db_status;
mod db_verify_backup;
mod run_boot;
mod run_script;
mod server_launch;
mod server_terminate;

use shared::ActionSpec;

use crate::ctx::stoppable;
pub use crate::ctx::{ActionError, Ctx, Done};

/// Run the action. The DB kinds' futures are boxed: they are large (the S3 client's most of
/// all) and would otherwise sit on the worker thread's stack.
pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    match &ctx.action.spec {
        ActionSpec::RunScript(p) => run_script::run(ctx, p).await.map(Done::exit),
        ActionSpec::RunBoot(p) => Box::pin(run_boot::run(ctx, p)).await.map(Done::exit),
        ActionSpec::DbStatus(_) => stoppable(ctx, Box::pin(db_status::run(ctx))).await,
        ActionSpec::DbConfigureMaster(p) => {
            stoppable(ctx, Box::pin(db_configure_master::run(ctx, p))).await
        }
        ActionSpec::DbConfigureSlave(p) => {
            stoppable(ctx, Box::pin(db_configure_slave::run(ctx, p))).await
        }
        ActionSpec::DbChecksum(p) => stoppable(ctx, Box::pin(db_checksum::run(ctx, p))).await,
        ActionSpec::DbBackup(p) => stoppable(ctx, Box::pin(db_backup::run(ctx, p))).await,
        // Runs to its end once started: stopping it half-way could leave mysqld stopped.
        ActionSpec::DbRestore(p) => Box::pin(db_restore::run(ctx, p)).await,
        ActionSpec::DbVerifyBackup(p) => {
            stoppable(ctx, Box::pin(db_verify_backup::run(ctx, p))).await
        }
        // A promote runs to its end once started (it undoes itself on failure): stopping it
        // half-way would leave two writable servers or none.
        ActionSpec::DbPromote(p) => Box::pin(db_promote::run(ctx, p)).await,
        ActionSpec::DbFailover(p) => Box::pin(db_failover::run(ctx, p)).await,
        ActionSpec::ServerLaunch(p) => stoppable(ctx, Box::pin(server_launch::run(ctx, p))).await,
        ActionSpec::ServerTerminate(_) => {
            stoppable(ctx, Box::pin(server_terminate::run(ctx))).await
        }
        // Like a restore: once seeding has begun, stopping half-way leaves mysqld stopped.
        ActionSpec::DbLaunchSlave(p) => Box::pin(db_launch_slave::run(ctx, p)).await,
        ActionSpec::DbLaunchMaster(p) => Box::pin(db_launch_master::run(ctx, p)).await,
    }
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
