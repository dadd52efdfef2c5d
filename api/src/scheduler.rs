//! The scheduler loop. Every api replica runs it; `schedules::fire_due` (one transaction, due
//! rows taken with SKIP LOCKED, a unique key per slot) makes each slot fire at most once across
//! replicas. Fired actions are published at once (the outbox relay covers a failed publish).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{outbox, startup::AppState};

pub async fn run(state: Arc<AppState>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match shared::db::schedules::fire_due(&state.pool, 100).await {
            Ok(ids) => {
                for id in ids {
                    state.metrics.scheduled.inc();
                    outbox::publish(&state, id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler: cannot fire due schedules"),
        }
    }
}
