//! A freshly launched DB server: mysqld must answer before anything is seeded there.

use std::time::{Duration, Instant};

use shared::db::profiles;

use crate::{
    ctx::{ActionError, Ctx},
    mysql::Db,
};

/// Wait until mysqld on the action's server answers; if it does not at first and the launch
/// profile has an `install_command`, run that once (its output logged) and wait again.
pub async fn ensure_mysqld(ctx: &Ctx<'_>, profile: &str) -> Result<(), ActionError> {
    let (worker, server) = (ctx.worker, ctx.server);
    let install = profiles::get(&worker.pool, profile)
        .await?
        .and_then(|p| p.spec.0.db_server)
        .and_then(|d| {
            d.fields(&server.name, &server.address)
                .into_iter()
                .find_map(|(field, v)| (field == "install_command").then_some(v).flatten())
        });
    let deadline = Instant::now() + Duration::from_secs(worker.cfg.launch_timeout_s);
    let mut installed = false;
    loop {
        let error = match Db::connect(worker, server).await {
            Ok(db) => {
                db.close().await;
                ctx.log
                    .system(format!("mysqld answers on {}.", server.name))
                    .await;
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        match &install {
            Some(cmd) if !installed => {
                installed = true;
                ctx.log
                    .system(format!(
                        "mysqld does not answer ({error}): installing it: {cmd}"
                    ))
                    .await;
                let (code, out) = worker.ssh.exec(server, cmd).await?;
                for line in out.lines() {
                    ctx.log.system(line).await;
                }
                if code != 0 {
                    return Err(ActionError::Failed(format!(
                        "the profile's install_command exited with {code}"
                    )));
                }
            }
            _ if Instant::now() >= deadline => {
                return Err(ActionError::Failed(format!(
                    "mysqld on {} does not answer after {} s: {error}",
                    server.name, worker.cfg.launch_timeout_s
                )))
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        if ctx.stop.reason().is_some() {
            return Err(ActionError::Stopped);
        }
    }
}
