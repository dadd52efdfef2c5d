//! `run_script`: a pasted script, or a stored script's pinned revision with its resolved inputs
//! (`worker/src/scripts.rs` runs both).

use shared::spec::RunScriptParams;

use super::{ActionError, Ctx};
use crate::scripts::{self, Script};

pub async fn run(ctx: &Ctx<'_>, p: &RunScriptParams) -> Result<i32, ActionError> {
    let secrets = scripts::open_secrets(ctx, &p.secrets).await?;
    let Some(r) = &p.script_ref else {
        let env = p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        return scripts::run(
            ctx,
            &Script {
                body: &p.script,
                env,
                secrets,
            },
        )
        .await;
    };
    let rev =
        shared::db::scripts::revision(&mut *ctx.worker.pool.acquire().await?, &r.name, r.revision)
            .await?
            .ok_or_else(|| {
                ActionError::Failed(format!(
                    "script {:?} revision {:?} is gone",
                    r.name, r.revision
                ))
            })?;
    let inputs = p.resolved.clone().unwrap_or_default();
    scripts::run_stored(ctx, &rev, &inputs, &secrets).await
}
