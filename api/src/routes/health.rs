//! `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode};

use crate::startup::AppState;

#[utoipa::path(get, path = "/healthz", tag = "health", responses(
    (status = 200, description = "the store answers", body = String, content_type = "text/plain"),
    (status = 503, description = "the store does not answer", body = String, content_type = "text/plain")))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n"),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> String {
    let live = shared::db::actions::counts(&state.pool, true).await;
    let ended = {
        let mut cached = state.metrics.ended_counts.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < ENDED_COUNTS_FOR);
        if !fresh {
            if let Ok(c) = shared::db::actions::counts(&state.pool, false).await {
                *cached = Some((std::time::Instant::now(), c));
            }
        }
        cached.as_ref().map(|(_, c)| c.clone())
    };
    if let (Ok(live), Some(ended)) = (live, ended) {
        state.metrics.actions.reset();
        for (kind, status, n) in live.into_iter().chain(ended) {
            state
                .metrics
                .actions
                .with_label_values(&[&kind, &status])
                .set(n);
        }
    }
    shared::telemetry::render(&state.metrics.registry)
}

/// How long the counts of ended actions (a scan of the table) are reused between scrapes.
const ENDED_COUNTS_FOR: std::time::Duration = std::time::Duration::from_secs(300);
