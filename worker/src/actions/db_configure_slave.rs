//! `db_configure_slave`: seed a slave of its cluster (from the master's databases, or from the
//! latest backup) and start replication (`mariadb/seed.rs`).

use shared::spec::{ConfigureSlaveParams, SlaveSource};

use super::{ActionError, Ctx, Done};
use crate::mariadb::seed;

pub async fn run(ctx: &Ctx<'_>, p: &ConfigureSlaveParams) -> Result<Done, ActionError> {
    let done = match p.from.unwrap_or_default() {
        SlaveSource::Backup => seed::from_backup(ctx, &p.cluster).await?,
        SlaveSource::Master => seed::from_master(ctx, &p.cluster).await?,
    };
    if p.default_schedules != Some(false) {
        super::default_schedules(ctx, &p.cluster).await;
    }
    Ok(done)
}
