//! Tracing set-up and the Prometheus text endpoint shared by the api and the worker.

use prometheus::{Encoder, Registry, TextEncoder};

/// Log to stderr; `RUST_LOG` filters (default `info`). Safe to call twice (tests).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Render a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("prometheus text encoding cannot fail on a Vec");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn shutdown_on_signal(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
