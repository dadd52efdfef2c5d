//! Build the api from its config: store (created and migrated), publisher, router, outbox relay.
//! Tests start it on port 0 and read the bound address.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::DefaultBodyLimit, Router};
use shared::{queue::Publisher, queue::Topology, Config};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{metrics::ApiMetrics, outbox, routes};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct AppState {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub metrics: ApiMetrics,
    /// Ids whose publication RabbitMQ confirmed, to mark in the store.
    pub confirmed: mpsc::Sender<i64>,
}

pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    confirmed: mpsc::Receiver<i64>,
}

impl Application {
    pub async fn build(cfg: &Config, topology: Topology) -> anyhow::Result<Self> {
        let pool = shared::db::connect_and_migrate(
            &cfg.database_url,
            cfg.db_max_connections,
            Duration::from_secs(60),
        )
        .await?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("SA_LISTEN: cannot listen on {}", cfg.listen))?;
        let publisher = Publisher::new(&cfg.amqp_url, "sa-api", topology);
        let (confirmed_tx, confirmed) = mpsc::channel(16 * 1024);
        let state = Arc::new(AppState {
            pool,
            publisher,
            metrics: ApiMetrics::new(),
            confirmed: confirmed_tx,
        });
        Ok(Self {
            listener,
            state,
            confirmed,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub fn router(state: Arc<AppState>) -> Router {
        routes::router()
            .merge(crate::ui::router())
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn(crate::ui::security_headers))
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .with_state(state)
    }

    /// Serve until `shutdown` is cancelled, then drain in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        tracker.spawn(outbox::relay(
            self.state.clone(),
            Duration::from_secs(1),
            shutdown.clone(),
        ));
        tracker.spawn(crate::scheduler::run(
            self.state.clone(),
            Duration::from_millis(100),
            shutdown.clone(),
        ));
        tracker.spawn(outbox::mark(
            self.state.clone(),
            self.confirmed,
            shutdown.clone(),
        ));
        tracker.close();
        let app = Self::router(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("http server")?;
        shutdown.cancel();
        tracker.wait().await;
        Ok(())
    }
}
