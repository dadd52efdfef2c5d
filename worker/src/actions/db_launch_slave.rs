//! `db_launch_slave` ("we launched a fresh slave with another button press"): launch the
//! instance, make sure mysqld runs there, seed it from the cluster's latest committed backup
//! (from the master when there is none) and replicate: one action, one log, each step timed.

use std::time::Instant;

use serde_json::json;
use shared::{db::backups, spec::LaunchSlaveParams};

use super::{ActionError, Ctx, Done};
use crate::{launch, mariadb::seed};

pub async fn run(ctx: &Ctx<'_>, p: &LaunchSlaveParams) -> Result<Done, ActionError> {
    let (new, t) = launch::launch_db(ctx, &p.profile).await?;
    let ctx = ctx.on(&new);
    let clock = Instant::now();
    let backup = backups::latest(&ctx.worker.pool, &p.cluster, None).await?;
    let done = match &backup {
        Some(b) => {
            ctx.log
                .system(format!(
                    "Seeding from backup {} of cluster {} ({}).",
                    b.id,
                    p.cluster,
                    b.strategy.as_str()
                ))
                .await;
            seed::from_backup(&ctx, &p.cluster).await?
        }
        None => {
            ctx.log
                .system(format!(
                    "Cluster {} has no committed backup: seeding from its master.",
                    p.cluster
                ))
                .await;
            seed::from_master(&ctx, &p.cluster).await?
        }
    };
    let seed_s = clock.elapsed().as_secs_f64();
    super::default_schedules(&ctx, &p.cluster).await;
    ctx.log
        .system(format!(
            "Launched and joined in {:.1} s: instance {:.1} s, SSH {:.1} s, mysqld {:.1} s, seeding and catch-up {seed_s:.1} s.",
            t.total_s() + seed_s,
            t.request_s + t.running_s,
            t.ssh_s,
            t.mysqld_s.unwrap_or(0.0),
        ))
        .await;
    let mut result = launch::result(&new, &t);
    result["timings"]["seed_s"] = json!(launch::round(seed_s));
    result["seeded"] = json!(if backup.is_some() { "backup" } else { "master" });
    result["replication"] = done.result.unwrap_or_default();
    Ok(Done {
        exit_code: done.exit_code,
        result: Some(result),
    })
}
