//! `db_launch_master` ("launch database instance" + "restore from S3 backup and configure as
//! master"): a cluster rebuilt from its backups alone.

use std::time::Instant;

use serde_json::json;
use shared::spec::{LaunchMasterParams, RestoreAs, RestoreParams};

use super::{ActionError, Ctx, Done};
use crate::{launch, mariadb::restore};

pub async fn run(ctx: &Ctx<'_>, p: &LaunchMasterParams) -> Result<Done, ActionError> {
    let (new, t) = launch::launch_db(ctx, &p.profile).await?;
    let ctx = ctx.on(&new);
    let clock = Instant::now();
    let restore = RestoreParams {
        backup: p.backup.clone(),
        before: None,
        lineage: None,
        role: RestoreAs::Master,
        cluster: p.cluster.clone(),
        replace: false,
    };
    let done = restore::restore(&ctx, &restore).await?;
    let restore_s = clock.elapsed().as_secs_f64();
    ctx.log
        .system(format!(
            "Launched and restored as master in {:.1} s: instance {:.1} s, SSH {:.1} s, mysqld {:.1} s, restore {restore_s:.1} s.",
            t.total_s() + restore_s,
            t.request_s + t.running_s,
            t.ssh_s,
            t.mysqld_s.unwrap_or(0.0),
        ))
        .await;
    let mut result = launch::result(&new, &t);
    result["timings"]["restore_s"] = json!(launch::round(restore_s));
    result["restore"] = done.result.unwrap_or_default();
    Ok(Done {
        exit_code: done.exit_code,
        result: Some(result),
    })
}
