//! The worker's Prometheus metrics, served on `SA_METRICS_LISTEN`.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

pub struct WorkerMetrics {
    pub registry: Registry,
    pub finished: IntCounterVec,
    pub duration: HistogramVec,
    pub lock_wait: Histogram,
    pub ssh_connect: Histogram,
    pub log_lines: IntCounter,
    pub dead_lettered: IntCounter,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let finished = IntCounterVec::new(
            Opts::new("sa_actions_finished_total", "Actions this worker finished"),
            &["kind", "status"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new("sa_action_duration_seconds", "Run time of actions")
                .buckets(exponential_buckets(0.005, 2.5, 14).unwrap()),
            &["kind"],
        )
        .unwrap();
        let lock_wait = Histogram::with_opts(
            HistogramOpts::new(
                "sa_lock_wait_seconds",
                "Time from submission until the action held its server's lock",
            )
            .buckets(exponential_buckets(0.005, 2.5, 14).unwrap()),
        )
        .unwrap();
        let ssh_connect = Histogram::with_opts(
            HistogramOpts::new(
                "sa_ssh_connect_seconds",
                "Time to open an SSH master connection",
            )
            .buckets(exponential_buckets(0.01, 2.0, 12).unwrap()),
        )
        .unwrap();
        let log_lines =
            IntCounter::new("sa_log_lines_written_total", "Action log lines stored").unwrap();
        let dead_lettered = IntCounter::new(
            "sa_messages_dead_lettered_total",
            "Messages sent to the dead-letter queue (unparseable or unknown action)",
        )
        .unwrap();
        registry.register(Box::new(finished.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        registry.register(Box::new(lock_wait.clone())).unwrap();
        registry.register(Box::new(ssh_connect.clone())).unwrap();
        registry.register(Box::new(log_lines.clone())).unwrap();
        registry.register(Box::new(dead_lettered.clone())).unwrap();
        Self {
            registry,
            finished,
            duration,
            lock_wait,
            ssh_connect,
            log_lines,
            dead_lettered,
        }
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve `/metrics` (and `/healthz`) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { shared::telemetry::render(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
