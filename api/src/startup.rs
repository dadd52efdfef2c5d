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
    pub auth: crate::auth::Auth,
    /// Seals secret values (`SA_SECRET_KEY_FILE`).
    pub keys: shared::secrets::Keyring,
    pub publisher: Publisher,
    pub metrics: ApiMetrics,
    /// The live log tails.
    pub tails: crate::tails::Tails,
    /// The backup bucket (`SA_S3_BUCKET`), where old action logs are archived.
    pub bucket: Option<shared::s3::Bucket>,
    /// Ids whose publication RabbitMQ confirmed, to mark in the store.
    pub confirmed: mpsc::Sender<i64>,
}

pub struct Application {
    listener: TcpListener,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
        if cfg.insecure_no_auth {
            anyhow::ensure!(
                cfg.listen.ip().is_loopback(),
                "SA_INSECURE_NO_AUTH: refused, the api listens on {} (loopback only)",
                cfg.listen
            );
            tracing::warn!("SA_INSECURE_NO_AUTH: every request is an admin's; benchmark only");
        }
        first_admin_token(&pool, cfg).await?;
        let keys = shared::secrets::Keyring::load(&cfg.secret_key_path(), true)?;
        shared::db::secrets::check_key(&pool, &keys).await?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("SA_LISTEN: cannot listen on {}", cfg.listen))?;
        let publisher = Publisher::new(&cfg.amqp_url, "sa-api", topology);
        let (confirmed_tx, confirmed) = mpsc::channel(16 * 1024);
        let metrics = ApiMetrics::new();
        let state = Arc::new(AppState {
            tails: crate::tails::Tails::new(
                pool.clone(),
                cfg.sse_max,
                metrics.tail_queries.clone(),
            ),
            bucket: shared::s3::Bucket::from_config(cfg).await,
            pool,
            auth: crate::auth::Auth::new(cfg),
            keys,
            publisher,
            metrics,
            confirmed: confirmed_tx,
        });
        Ok(Self {
            listener,
            tls: cfg.tls_cert.clone().zip(cfg.tls_key.clone()),
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
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::auth::guard,
            ))
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
        tracker.spawn(crate::webhooks::deliver(
            self.state.clone(),
            Duration::from_millis(500),
            shutdown.clone(),
        ));
        tracker.spawn(outbox::mark(
            self.state.clone(),
            self.confirmed,
            shutdown.clone(),
        ));
        tracker.close();
        let app = Self::router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        match self.tls {
            None => axum::serve(self.listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
                .context("http server")?,
            Some((cert, key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                    .await
                    .with_context(|| {
                        format!(
                            "SA_TLS_CERT/SA_TLS_KEY: cannot load {} and {}",
                            cert.display(),
                            key.display()
                        )
                    })?;
                let handle = axum_server::Handle::new();
                let stop = handle.clone();
                let cancelled = shutdown.clone();
                tokio::spawn(async move {
                    cancelled.cancelled().await;
                    stop.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                axum_server::from_tcp_rustls(self.listener.into_std()?, tls)?
                    .handle(handle)
                    .serve(app)
                    .await
                    .context("https server")?
            }
        }
        shutdown.cancel();
        tracker.wait().await;
        Ok(())
    }
}

/// On a first start (no token in the store), an admin token in `SA_ADMIN_TOKEN_FILE`, mode
/// 0600; only the file's path is logged. An existing file is never overwritten.
async fn first_admin_token(pool: &PgPool, cfg: &Config) -> anyhow::Result<()> {
    let Some(path) = cfg.admin_token_path() else {
        tracing::warn!(
            "no SA_ADMIN_TOKEN_FILE and no HOME: make a token with `sa-api tokens create`"
        );
        return Ok(());
    };
    let made = shared::db::tokens::create_first_admin(pool, |token| {
        shared::secrets::write_private(&path, token).with_context(|| {
            format!(
                "SA_ADMIN_TOKEN_FILE: cannot create {} for the first admin token (an existing \
                 file is never overwritten: remove it, or point SA_ADMIN_TOKEN_FILE elsewhere)",
                path.display()
            )
        })
    })
    .await?;
    if made {
        tracing::info!(file = %path.display(), "no token existed: wrote an admin token to the file");
    }
    Ok(())
}
