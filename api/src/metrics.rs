//! The api's Prometheus metrics.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct ApiMetrics {
    pub registry: Registry,
    pub submitted: IntCounterVec,
    pub published: IntCounter,
    pub publish_failures: IntCounter,
    /// Actions this replica's scheduler fired.
    pub scheduled: IntCounter,
    /// Actions by kind and status, read from the store at scrape time.
    pub actions: IntGaugeVec,
    /// Store queries of the live-tail pollers (one poller per followed action).
    pub tail_queries: IntCounter,
    /// The counts of ended actions by (kind, status), and when they were read.
    pub ended_counts: tokio::sync::Mutex<Option<(std::time::Instant, Counts)>>,
}

/// Actions by (kind, status).
pub type Counts = Vec<(String, String, i64)>;

impl ApiMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let submitted = IntCounterVec::new(
            Opts::new("sa_actions_submitted_total", "Actions accepted by the API"),
            &["kind"],
        )
        .unwrap();
        let published = IntCounter::new(
            "sa_actions_published_total",
            "Action messages confirmed by RabbitMQ",
        )
        .unwrap();
        let publish_failures = IntCounter::new(
            "sa_publish_failures_total",
            "Publications that failed (the outbox relay retries them)",
        )
        .unwrap();
        let scheduled = IntCounter::new(
            "sa_scheduled_actions_total",
            "Actions fired by this replica's scheduler",
        )
        .unwrap();
        let actions = IntGaugeVec::new(
            Opts::new("sa_actions", "Stored actions by kind and status"),
            &["kind", "status"],
        )
        .unwrap();
        registry.register(Box::new(submitted.clone())).unwrap();
        registry.register(Box::new(published.clone())).unwrap();
        registry
            .register(Box::new(publish_failures.clone()))
            .unwrap();
        registry.register(Box::new(scheduled.clone())).unwrap();
        let tail_queries = IntCounter::new(
            "sa_log_tail_queries_total",
            "Store queries made by live-tail pollers",
        )
        .unwrap();
        registry.register(Box::new(actions.clone())).unwrap();
        registry.register(Box::new(tail_queries.clone())).unwrap();
        Self {
            registry,
            submitted,
            published,
            publish_failures,
            scheduled,
            actions,
            tail_queries,
            ended_counts: Default::default(),
        }
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}
