//! Outbox relay: actions are stored before they are published; any action whose publication
//! was not confirmed (broker down, connection cut, api restarted) is published from here.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::startup::AppState;

/// Publish `id`; once confirmed, it is marked published (in batches, by `mark`). A failure
/// leaves it to the relay.
pub async fn publish(state: &AppState, id: i64) {
    match state.publisher.publish(id).await {
        Ok(()) => {
            state.metrics.published.inc();
            if state.confirmed.try_send(id).is_err() {
                // The marker is behind or gone: mark it here.
                if let Err(e) = shared::db::actions::mark_published(&state.pool, &[id]).await {
                    tracing::warn!(action = id, error = %e, "published but not marked; the relay may publish it again");
                }
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
        // Runs whose actions ended without a worker's finish (cancelled, reaped) move on here.
        match shared::db::runs::advance_all(&state.pool).await {
            Ok(ids) => {
                for id in ids {
                    publish(&state, id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot advance runs"),
        }
    }
}

/// Mark confirmed actions as published, many per statement. An unmarked action is at worst
/// published twice by the relay, which workers ignore.
pub async fn mark(
    state: Arc<AppState>,
    mut confirmed: mpsc::Receiver<i64>,
    shutdown: CancellationToken,
) {
    let mut ids = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            n = confirmed.recv_many(&mut ids, 1024) => if n == 0 { return },
            _ = shutdown.cancelled() => {
                // Whatever was confirmed before the shutdown, then stop.
                while let Ok(id) = confirmed.try_recv() {
                    ids.push(id);
                }
                if !ids.is_empty() {
                    let _ = shared::db::actions::mark_published(&state.pool, &ids).await;
                }
                return;
            }
        }
        if let Err(e) = shared::db::actions::mark_published(&state.pool, &ids).await {
            tracing::warn!(error = %e, n = ids.len(), "cannot mark published; the relay may publish them again");
        }
        ids.clear();
    }
}
