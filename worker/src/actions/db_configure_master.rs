//! `db_configure_master`: make a server its cluster's master: binary logging checked, the seed's
//! two causes of broken slaves warned about (non-transactional tables, statement-based binlog;
//! `fix` switches to ROW), the replication account created, writes enabled, the cluster's master
//! and its DNS record pointed at it.

use shared::spec::ConfigureMasterParams;

use super::{ActionError, Ctx, Done};
use crate::{mariadb::replication, mysql::Db};

pub async fn run(ctx: &Ctx<'_>, p: &ConfigureMasterParams) -> Result<Done, ActionError> {
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let result = replication::configure_master(ctx, &mut db, p, false).await;
    db.close().await;
    result
}
