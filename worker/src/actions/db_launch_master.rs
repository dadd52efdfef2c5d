//! `db_launch_master` ("launch database instance" + "restore from S3 backup and configure as
//! master"): a cluster rebuilt from its backups alone.

use std::time::Instant;

use serde_json::json;
use shared::spec::{LaunchMasterParams, RestoreAs, RestoreParams};

use super::{ActionError, Ctx, Done};
use crate::{
    launch,
    mariadb::{restore, server},
};

pub async fn run(ctx: &Ctx<'_>, p: &LaunchMasterParams) -> Result<Done, ActionError> {
    let (new, t) = match launch::launch(ctx, &p.profile).await {
        Ok(l) => l,
        Err(e) => {
            launch::failed(ctx.worker, &ctx.server.name).await;
            return Err(e);
        }
    };
    let ctx = Ctx {
        server: &new,
        log: ctx.log.clone(),
        cluster_lock: ctx.cluster_lock.clone(),
        ..*ctx
    };
    let clock = Instant::now();
    server::ensure_mysqld(&ctx, &p.profile).await?;
    let mysqld_s = clock.elapsed().as_secs_f64();
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
            "Launched and restored as master in {:.1} s: instance {:.1} s, SSH {:.1} s, mysqld {:.1} s, restore {:.1} s.",
            t.request_s + t.running_s + t.ssh_s + mysqld_s + restore_s,
            t.request_s + t.running_s,
            t.ssh_s,
            mysqld_s,
            restore_s
        ))
        .await;
    let mut result = launch::result(&new, &t);
    result["timings"]["mysqld_s"] = json!(launch::round(mysqld_s));
    result["timings"]["restore_s"] = json!(launch::round(restore_s));
    result["restore"] = done.result.unwrap_or_default();
    Ok(Done {
        exit_code: done.exit_code,
        result: Some(result),
    })
}
