//! Every worker runs this: an old master marked `fenced_pending` (it could not be made
//! read-only when it was replaced, being unreachable) is made read-only as soon as it answers
//! again, before anything else runs on it: its server row stays locked meanwhile, so no action
//! starts there. The cluster's timeline says so; it rejoins only through `db_configure_slave`.

use std::{sync::Arc, time::Duration};

use shared::db::servers::Server;
use tokio_util::sync::CancellationToken;

use crate::{mycnf, mysql::Db, Worker};

/// How often fenced-pending servers are tried.
const EVERY: Duration = Duration::from_secs(1);

pub async fn run(worker: Arc<Worker>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Err(e) = sweep(&worker).await {
            tracing::warn!(error = %e, "fencer: cannot read fenced-pending servers");
        }
    }
}

async fn sweep(worker: &Worker) -> sqlx::Result<()> {
    let mut tx = worker.pool.begin().await?;
    // Skip-locked: one worker takes each server; the others go on.
    let pending: Vec<Server> = sqlx::query_as(
        "SELECT * FROM servers WHERE fenced_pending IS NOT NULL
         ORDER BY name LIMIT 10 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for server in pending {
        let Ok(Ok(mut db)) =
            tokio::time::timeout(Duration::from_secs(5), Db::connect(worker, &server)).await
        else {
            continue; // still unreachable
        };
        let live = db.exec("SET GLOBAL read_only = 1").await;
        // MySQL's offline_mode also closes ordinary clients' sessions; MariaDB has none.
        let offline = live.is_ok() && db.exec("SET GLOBAL offline_mode = ON").await.is_ok();
        db.close().await;
        if let Err(e) = live {
            tracing::warn!(server = %server.name, error = %e, "fencer: read_only=1 failed");
            continue;
        }
        let saved = match mycnf::set(worker, &server, &[("read_only", "1")]).await {
            Ok(()) => "also in its option file".to_string(),
            Err(e) => format!("its option file could not be written: {e}"),
        };
        let message = format!(
            "{} answers again: made read-only by worker {} (read_only=1{}, {saved}); it rejoins the cluster only through db_configure_slave.",
            server.name,
            worker.name,
            if offline { ", offline_mode=ON" } else { "" }
        );
        sqlx::query("UPDATE servers SET fenced_pending = NULL WHERE name = $1")
            .bind(&server.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO cluster_events (cluster, message) VALUES ($1, $2)")
            .bind(server.cluster.as_deref().unwrap_or(&server.name))
            .bind(&message)
            .execute(&mut *tx)
            .await?;
        tracing::info!(server = %server.name, "fenced an old master that answers again");
    }
    tx.commit().await
}
