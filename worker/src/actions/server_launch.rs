//! `server_launch`: make the server's EC2 instance from its launch profile, pin its host key
//! and wait until SSH answers with it (`launch.rs`).

use shared::spec::LaunchParams;

use super::{ActionError, Ctx, Done};
use crate::launch;

pub async fn run(ctx: &Ctx<'_>, p: &LaunchParams) -> Result<Done, ActionError> {
    match launch::launch(ctx, &p.profile).await {
        Ok((server, t)) => Ok(Done {
            exit_code: 0,
            result: Some(launch::result(&server, &t)),
        }),
        Err(e) => {
            launch::failed(ctx.worker, &ctx.server.name).await;
            Err(e)
        }
    }
}
