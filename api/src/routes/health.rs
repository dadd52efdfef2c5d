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
    if let Ok(counts) = shared::db::actions::counts(&state.pool).await {
        state.metrics.actions.reset();
        for (kind, status, n) in counts {
            state
                .metrics
                .actions
                .with_label_values(&[&kind, &status])
                .set(n);
        }
    }
    shared::telemetry::render(&state.metrics.registry)
}
