//! `db_restore`: a committed backup onto this server, then configured as its cluster's master
//! ("restore from S3 backup and configure as master") or as a slave of the cluster's master
//! from the backup's GTID position (`mariadb::restore`).

use shared::spec::RestoreParams;

use super::{ActionError, Ctx, Done};
use crate::mariadb::restore;

pub async fn run(ctx: &Ctx<'_>, p: &RestoreParams) -> Result<Done, ActionError> {
    restore::restore(ctx, p).await
}
