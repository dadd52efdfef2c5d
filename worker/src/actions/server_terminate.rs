//! `server_terminate`: run the server template's decommission scripts (a failure stops here:
//! nothing is terminated), then terminate the launched server's instance; the server stays,
//! `terminated`.

use shared::db::{scripts, servers::DbRole};

use super::{ActionError, Ctx, Done};
use crate::{launch, scripts as run};

pub async fn run(ctx: &Ctx<'_>) -> Result<Done, ActionError> {
    if ctx.server.db_role != Some(DbRole::Master) {
        let code = decommission(ctx).await?;
        if code != 0 {
            return Err(ActionError::Failed(format!(
                "a decommission script failed (exit code {code}): the instance was not terminated"
            )));
        }
    }
    let result = launch::terminate(ctx).await?;
    Ok(Done {
        exit_code: 0,
        result: Some(result),
    })
}

async fn decommission(ctx: &Ctx<'_>) -> Result<i32, ActionError> {
    let Some(name) = &ctx.server.template else {
        return Ok(0);
    };
    let mut conn = ctx.worker.pool.acquire().await?;
    let Some(t) = scripts::template(&mut conn, name, None).await? else {
        return Ok(0);
    };
    if t.spec.decommission.is_empty() {
        return Ok(0);
    }
    let steps = scripts::steps(
        &mut conn,
        ctx.server,
        &t,
        &t.spec.decommission,
        &Default::default(),
    )
    .await
    .map_err(|e| ActionError::Failed(format!("template {name}'s decommission scripts: {e}")))?;
    drop(conn);
    let what = format!(
        "template {} revision {} decommission",
        t.template, t.revision
    );
    run::run_steps(ctx, &what, &steps).await
}
