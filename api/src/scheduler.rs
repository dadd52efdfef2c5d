//! The scheduler loop. Every api replica runs it; `schedules::fire_due` (one transaction, due
//! rows taken with SKIP LOCKED, a unique key per slot) makes each slot fire at most once across
//! replicas. Fired actions are published at once (the outbox relay covers a failed publish).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{outbox, startup::AppState};

const BATCH: i64 = 10;

pub async fn run(state: Arc<AppState>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Small batches: each commits (and publishes) soon, and the other replicas take the
        // rest of a busy second's schedules in parallel (SKIP LOCKED).
        loop {
            match shared::db::schedules::fire_due(&state.pool, BATCH).await {
                Ok((due, ids)) => {
                    state.metrics.scheduled.inc_by(ids.len() as u64);
                    futures::future::join_all(ids.iter().map(|id| outbox::publish(&state, *id)))
                        .await;
                    if (due as i64) < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: cannot fire due schedules");
                    break;
                }
            }
        }
    }
}
