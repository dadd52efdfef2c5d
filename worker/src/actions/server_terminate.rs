//! `server_terminate`: terminate a launched server's instance; the server stays, `terminated`.

use super::{ActionError, Ctx, Done};
use crate::launch;

pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    let result = launch::terminate(ctx).await?;
    Ok(Done {
        exit_code: 0,
        result: Some(result),
    })
}
