//! `db_promote`: make a slave its cluster's master (`mariadb::promote` does it, under the
//! cluster lock the runner holds).

use shared::spec::PromoteParams;

use super::{ActionError, Ctx, Done};
use crate::mariadb::promote;

pub async fn run(ctx: &Ctx<'_>, p: &PromoteParams) -> Result<Done, ActionError> {
    promote::run(ctx, p, None).await
}
