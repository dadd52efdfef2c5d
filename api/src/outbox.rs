//! Outbox relay: actions are stored before they are published; any action whose publication
//! was not confirmed (broker down, connection cut, api restarted) is published from here.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::startup::AppState;

/// Publish `id` and record it; a failure leaves it to the relay.
pub async fn publish(state: &AppState, id: i64) {
    match state.publisher.publish(id).await {
        Ok(()) => {
            state.metrics.published.inc();
            if let Err(e) = shared::db::actions::mark_published(&state.pool, id).await {
                tracing::warn!(action = id, error = %e, "published but not marked; the relay may publish it again");
            }
        }
        Err(e) => {
            state.metrics.publish_failures.inc();
            tracing::warn!(action = id, error = %e, "publish failed; the outbox relay will retry");
        }
    }
}

pub async fn relay(state: Arc<AppState>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let ids = match shared::db::actions::unpublished(&state.pool, 2.0, 500).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay cannot read the store");
                continue;
            }
        };
        for id in ids {
            publish(&state, id).await;
        }
    }
}
