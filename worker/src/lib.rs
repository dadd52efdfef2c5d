//! ServerActions worker: consumes action ids from RabbitMQ, takes the server's lease in
//! PostgreSQL, runs the action over SSH and writes its log. Workers share nothing but RabbitMQ
//! and PostgreSQL; run as many as you like.

pub mod actions;
pub mod consumer;
pub mod ctx;
pub mod dns;
pub mod ec2;
pub mod fencer;
pub mod heartbeat;
pub mod launch;
pub mod logwriter;
pub mod mariadb;
pub mod metrics;
pub mod mycnf;
pub mod mysql;
pub mod runner;
pub mod scripts;
pub use shared::s3;
pub mod ssh;
pub use shared::trailer;
pub mod transfer;
pub mod watcher;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use shared::{
    queue::{Publisher, Topology},
    Config,
};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{metrics::WorkerMetrics, ssh::SshPool};

/// Everything an action run needs, shared by all of one worker's tasks.
pub struct Worker {
    pub name: String,
    pub cfg: Config,
    pub topology: Topology,
    pub pool: PgPool,
    pub publisher: Publisher,
    pub ssh: SshPool,
    pub metrics: WorkerMetrics,
    /// Where cluster master records are published.
    pub dns: Arc<dyn shared::dns::DnsProvider>,
    /// Where backups go (`None` without `SA_S3_BUCKET`).
    pub s3: Option<s3::Bucket>,
    /// Where servers are launched (`SA_EC2_*`).
    pub ec2: ec2::Ec2,
    /// Opens secret values (`SA_SECRET_KEY_FILE`; `None`: the file is missing, and an action
    /// with secrets fails saying so).
    pub keys: Option<shared::secrets::Keyring>,
    /// The database passwords this worker uses: masked in every action log.
    pub masks: shared::secrets::Masks,
    /// How long running actions may take to finish after a shutdown request.
    pub shutdown_grace: Duration,
    /// Stop signals of the actions running here, by action id (for cancel requests).
    running: std::sync::Mutex<std::collections::HashMap<i64, Arc<heartbeat::Stop>>>,
    /// Cancelled when the worker is asked to stop: it takes no new action from then on.
    pub draining: CancellationToken,
    /// An injected fault: called as each action starts (tests set it to make one panic).
    pub fault: std::sync::OnceLock<Fault>,
}

pub type Fault = Box<dyn Fn(&shared::Action) + Send + Sync>;

impl Worker {
    pub async fn build(cfg: Config, topology: Topology) -> anyhow::Result<Arc<Self>> {
        let name = cfg.worker_name();
        let cfg_grace = cfg.shutdown_grace_s;
        let pool = shared::db::connect_and_migrate(
            &cfg.database_url,
            cfg.db_max_connections,
            Duration::from_secs(60),
        )
        .await?;
        let control_dir = cfg
            .ssh_control_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/sa-ssh-{}", std::process::id())));
        let dns = shared::dns::provider(&cfg, pool.clone())?;
        let s3 = s3::Bucket::from_config(&cfg).await;
        let ec2 = ec2::Ec2::new(&cfg).await;
        let metrics = WorkerMetrics::new();
        let ssh = SshPool::new(&cfg, control_dir, metrics.ssh_connect.clone())
            .context("preparing the SSH control directory")?;
        let publisher = Publisher::new(
            &cfg.amqp_url,
            &format!("sa-worker {name}"),
            topology.clone(),
        );
        let keys = match shared::secrets::Keyring::load(&cfg.secret_key_path(), false) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no key for secret values: actions with secrets will fail");
                None
            }
        };
        let masks = shared::secrets::Masks::default();
        masks.add(secrecy::ExposeSecret::expose_secret(&cfg.mysql_password));
        Ok(Arc::new(Self {
            name,
            keys,
            masks,
            cfg,
            topology,
            pool,
            publisher,
            ssh,
            metrics,
            dns,
            s3,
            ec2,
            shutdown_grace: Duration::from_secs(cfg_grace),
            running: Default::default(),
            draining: CancellationToken::new(),
            fault: std::sync::OnceLock::new(),
        }))
    }

    pub fn lease_s(&self) -> f64 {
        self.cfg.lease_s as f64
    }

    /// The stop signal of action `id` if it runs here.
    pub fn running(&self, id: i64) -> Option<Arc<heartbeat::Stop>> {
        self.running.lock().expect("poisoned").get(&id).cloned()
    }

    /// Register a running action's stop signal until the guard drops.
    pub fn register(&self, id: i64, stop: Arc<heartbeat::Stop>) -> Registered<'_> {
        self.running.lock().expect("poisoned").insert(id, stop);
        Registered { worker: self, id }
    }

    /// This worker as a lease taker (for starting actions and taking hand-offs).
    pub fn taker(&self) -> shared::db::leases::Taker<'_> {
        shared::db::leases::Taker {
            worker: &self.name,
            lease_s: self.lease_s(),
            pid: std::process::id(),
        }
    }

    /// Publish ids of parked actions whose server became free.
    pub async fn kick(&self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            if let Err(e) = self.publisher.publish(id).await {
                tracing::warn!(action = id, error = %e, "cannot wake parked action; the sweeper will retry");
            }
        }
    }

    /// Consume and run actions until `shutdown`; then let running actions finish within the
    /// grace period, interrupt the rest, and close SSH connections.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let stop_actions = CancellationToken::new();
        {
            let (shutdown, draining) = (shutdown.clone(), self.draining.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                draining.cancel();
            });
        }
        tracker.spawn(heartbeat::sweeper(self.clone(), shutdown.clone()));
        tracker.spawn(heartbeat::archiver(self.clone(), shutdown.clone()));
        tracker.spawn(fencer::run(self.clone(), shutdown.clone()));
        tracker.spawn(watcher::run(self.clone(), shutdown.clone()));
        tracker.spawn(heartbeat::cancel_listener(self.clone(), shutdown.clone()));
        consumer::consume(
            self.clone(),
            &tracker,
            shutdown.clone(),
            stop_actions.clone(),
        )
        .await;
        tracker.close();
        if tokio::time::timeout(self.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: interrupting running actions");
            stop_actions.cancel();
            tracker.wait().await;
        }
        self.ssh.close_all().await;
        Ok(())
    }
}

/// Removes a running action from [`Worker::running`] when dropped.
pub struct Registered<'a> {
    worker: &'a Worker,
    id: i64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.worker
            .running
            .lock()
            .expect("poisoned")
            .remove(&self.id);
    }
}
