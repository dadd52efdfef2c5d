//! `server_launch`: make the server's EC2 instance from its launch profile, pin its host key
//! and wait until SSH answers with it (`launch.rs`); when the profile names a server template,
//! the server takes it and its boot scripts are queued (`run_boot`).

use serde_json::json;
use shared::{
    action::INTERNAL_KEY_PREFIX,
    db::{actions::NewAction, scripts},
    spec::{LaunchParams, RunBootParams},
    ActionSpec,
};

use super::{ActionError, Ctx, Done};
use crate::launch;

pub async fn run(ctx: &Ctx<'_>, p: &LaunchParams) -> Result<Done, ActionError> {
    match launch::launch(ctx, &p.profile).await {
        Ok((server, t)) => {
            let mut result = launch::result(&server, &t);
            if let Some(boot) = boot(ctx, &p.profile).await? {
                result["boot"] = boot;
            }
            Ok(Done {
                exit_code: 0,
                result: Some(result),
            })
        }
        Err(e) => {
            launch::failed(ctx.worker, &ctx.server.name).await;
            Err(e)
        }
    }
}

/// The profile's template on the new server, and its boot sequence queued behind this action.
async fn boot(ctx: &Ctx<'_>, profile: &str) -> Result<Option<serde_json::Value>, ActionError> {
    let pool = &ctx.worker.pool;
    let Some(stored) = shared::db::profiles::get(pool, profile).await? else {
        return Ok(None);
    };
    let Some(template) = stored.spec.0.template.clone() else {
        return Ok(None);
    };
    let name = &ctx.server.name;
    let mut tx = pool.begin().await?;
    let prepared = async {
        scripts::place_server(&mut tx, name, Some(Some(&template)), None, None).await?;
        let mut params = RunBootParams::default();
        scripts::prepare_run_boot(&mut tx, name, &mut params).await?;
        Ok::<_, scripts::StoreError>(params)
    }
    .await;
    let params = match prepared {
        Ok(p) => p,
        Err(e) => {
            return Err(ActionError::Failed(format!(
                "the instance is up, but template {template:?}'s boot cannot be queued: {e}"
            )))
        }
    };
    let new = NewAction {
        server: name.clone(),
        spec: ActionSpec::RunBoot(params),
        timeout_s: Some(shared::ActionKind::RunBoot.default_timeout_s() as i32),
        urgent: false,
        idempotency_key: Some(format!("{INTERNAL_KEY_PREFIX}boot-after-{}", ctx.action.id)),
        retry: None,
        submitted_by: ctx.action.submitted_by.clone(),
    };
    let (a, _) = shared::db::actions::insert(&mut tx, &new, None)
        .await
        .map_err(|e| ActionError::Failed(format!("queueing the boot: {e}")))?;
    tx.commit().await?;
    if ctx.worker.publisher.publish(a.id).await.is_ok() {
        let _ = shared::db::actions::mark_published(pool, &[a.id]).await;
    }
    ctx.log
        .system(format!(
            "Server template {template}: its boot scripts run next (action {}).",
            a.id
        ))
        .await;
    Ok(Some(json!({"template": template, "action": a.id})))
}
