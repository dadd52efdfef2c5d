//! The api and workers in-process, each test with its own database and its own RabbitMQ queue
//! names (which expire after the test), so tests run in parallel against one broker and one
//! PostgreSQL.

use std::{path::PathBuf, sync::Arc, time::Duration};

use client::Client;
use serde_json::Value;
use shared::{queue::Topology, Config};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hosts::{client_key, TestHost};

/// `cfg`'s database URL with another database name.
pub fn database_url(cfg: &Config, name: &str) -> String {
    let base = cfg.database_url.rsplit_once('/').map_or("", |(b, _)| b);
    format!("{base}/{name}")
}

pub struct TestApp {
    pub cfg: Config,
    pub topology: Topology,
    pub client: Client,
    pub api_url: String,
    /// The admin token the api wrote on its first start; `client` sends it.
    pub token: String,
    pub pool: PgPool,
    db_name: String,
    shutdown: CancellationToken,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    workers: Vec<WorkerHandle>,
    /// `RUST_LOG` of the api and worker processes it starts (default: the test's, else warn).
    pub process_log: Option<String>,
}

pub struct WorkerHandle {
    pub worker: Arc<worker::Worker>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl WorkerHandle {
    /// Graceful stop: stop consuming, let running actions finish, close connections.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

impl TestApp {
    /// Start an api on 127.0.0.1:0 with a fresh database and queue names.
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with config changes (applied before the api starts; workers
    /// started later inherit them).
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        shared::telemetry::init();
        let id = short_id();
        let db_name = format!("sa_test_{id}");
        let mut cfg = Config::default();
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.database_url = database_url(&cfg, &db_name);
        cfg.listen = ([127, 0, 0, 1], 0).into();
        cfg.queue_prefix = format!("sa-test-{id}");
        cfg.ssh_key = Some(client_key()?);
        cfg.lease_s = 10;
        cfg.db_max_connections = 10;
        cfg.shutdown_grace_s = 5;
        let token_file = std::env::temp_dir().join(format!("sa-test-{id}.token"));
        cfg.admin_token_file = Some(token_file.clone());
        cfg.secret_key_file = Some(std::env::temp_dir().join(format!("sa-test-{id}.key")));
        tweak(&mut cfg);
        cfg.queue_expires_ms = Some(120_000);
        let topology = Topology::from_config(&cfg);
        let app = api::Application::build(&cfg, topology.clone()).await?;
        let scheme = if cfg.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let api_url = format!("{scheme}://{}", app.local_addr());
        cfg.api_url = api_url.clone();
        let shutdown = CancellationToken::new();
        let api = tokio::spawn(app.run(shutdown.clone()));
        let written = cfg.admin_token_file.clone().unwrap_or_default();
        let token = std::fs::read_to_string(&written)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if written == token_file {
            let _ = std::fs::remove_file(&token_file);
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&cfg.database_url)
            .await?;
        let mut client = Client::new(&api_url).with_token(&token);
        if let Some(cert) = &cfg.tls_cert {
            client = client.with_ca(&std::fs::read(cert)?)?;
        }
        Ok(Self {
            client,
            token,
            api_url,
            cfg,
            topology,
            pool,
            db_name,
            shutdown,
            api: Some(api),
            workers: Vec::new(),
            process_log: None,
        })
    }

    /// Start a worker in-process (own name, own SSH control directory, metrics on port 0).
    pub async fn spawn_worker(&mut self) -> anyhow::Result<Arc<worker::Worker>> {
        let h = self.start_worker(|_| {}).await?;
        let w = h.worker.clone();
        self.workers.push(h);
        Ok(w)
    }

    /// Start a worker with config changes, returning its handle (the caller stops it).
    pub async fn start_worker(
        &self,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<WorkerHandle> {
        let mut cfg = self.cfg.clone();
        let id = short_id();
        cfg.worker_name = Some(format!("w-{id}"));
        cfg.ssh_control_dir = Some(PathBuf::from(format!("/tmp/sa-ssh-{id}")));
        cfg.ssh_connect_timeout_s = 5;
        tweak(&mut cfg);
        let worker = worker::Worker::build(cfg, self.topology.clone()).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.clone().run(shutdown.clone()));
        Ok(WorkerHandle {
            worker,
            shutdown,
            task: Some(task),
        })
    }

    /// Start an `sa-worker` process (the real binary) with this app's config.
    pub fn start_worker_process(&self, name: &str) -> anyhow::Result<crate::procs::Proc> {
        let mut cfg = self.cfg.clone();
        cfg.worker_name = Some(name.to_string());
        cfg.metrics_listen = ([127, 0, 0, 1], 0).into();
        cfg.ssh_control_dir = Some(PathBuf::from(format!("/tmp/sa-ssh-{}", short_id())));
        cfg.ssh_connect_timeout_s = 5;
        let name = format!("sa-test-{name}-{}", short_id());
        crate::procs::Proc::spawn_logging("sa-worker", &name, &cfg, self.process_log.as_deref())
    }

    /// Stop the in-process api (its scheduler too); `client` no longer answers.
    pub async fn stop_api(&mut self) {
        self.shutdown.cancel();
        if let Some(a) = self.api.take() {
            let _ = a.await;
        }
    }

    /// Start an `sa-api` process (a replica: same database and queues, its own port); it and
    /// a client for it once it answers.
    pub async fn start_api_process(
        &self,
        name: &str,
    ) -> anyhow::Result<(crate::procs::Proc, Client)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cfg = self.cfg.clone();
        cfg.listen = ([127, 0, 0, 1], port).into();
        cfg.api_url = format!("http://127.0.0.1:{port}");
        let proc = crate::procs::Proc::spawn_logging(
            "sa-api",
            &format!("sa-test-{name}-{}", short_id()),
            &cfg,
            self.process_log.as_deref(),
        )?;
        let client = Client::new(&cfg.api_url).with_token(&self.token);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !client.healthy().await {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "sa-api {name} did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((proc, client))
    }

    /// A client with a new token `name` of `role` reaching `scope`.
    pub async fn client_as(
        &self,
        name: &str,
        role: shared::auth::Role,
        scope: shared::auth::Scope,
    ) -> anyhow::Result<Client> {
        let created = self
            .client
            .create_token(&shared::auth::TokenRequest {
                name: name.into(),
                role,
                scope,
                expires_in: None,
            })
            .await?;
        Ok(self.client.clone().with_token(&created.token))
    }

    /// Register `host` as server `name` with its pinned host key.
    pub async fn add_host(&self, name: &str, host: &TestHost) -> anyhow::Result<Value> {
        Ok(self.client.add_server(&host.server_json(name)).await?)
    }

    /// Register a DB `host` (see [`TestHost::with_mariadb`]) as server `name`.
    pub async fn add_db_host(&self, name: &str, host: &TestHost) -> anyhow::Result<Value> {
        Ok(self.client.add_server(&host.db_server_json(name)).await?)
    }

    /// Rows in the actions table (to prove a rejected request stored nothing).
    pub async fn action_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM actions")
            .fetch_one(&self.pool)
            .await
            .expect("count actions")
    }

    /// Messages waiting in the actions queue (to prove a rejected request queued nothing).
    pub async fn queued_messages(&self) -> anyhow::Result<u32> {
        let conn = shared::queue::connect(&self.cfg.amqp_url, "sa-test-probe").await?;
        let ch = conn.create_channel().await?;
        self.topology.declare(&ch).await?;
        let q = ch
            .queue_declare(
                self.topology.queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        let _ = conn.close(200, "probe done".into()).await;
        Ok(q.message_count())
    }

    /// The action's rendered log.
    pub async fn log(&self, id: i64) -> String {
        self.client.log(id, 0).await.expect("log").text
    }

    pub async fn wait(&self, id: i64) -> shared::Action {
        self.client
            .wait(id, Duration::from_secs(60))
            .await
            .expect("action")
    }

    /// Master `dba` and slave `dbb` of cluster `shop` on two new MariaDB test hosts, with 100
    /// rows in `shop.orders` copied to the slave.
    pub async fn mariadb_pair(&self) -> anyhow::Result<(TestHost, TestHost)> {
        let a = TestHost::start()?.with_mariadb()?;
        let b = TestHost::start()?.with_mariadb()?;
        self.add_db_host("dba", &a).await?;
        self.add_db_host("dbb", &b).await?;
        a.sql(
            "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(20));
             INSERT INTO shop.orders SELECT seq, 'v' FROM mysql.seq_1_to_100",
        )?;
        for (server, kind) in [
            ("dba", "db_configure_master"),
            ("dbb", "db_configure_slave"),
        ] {
            let (x, log) = self
                .act(server, kind, serde_json::json!({"cluster": "shop"}))
                .await?;
            anyhow::ensure!(
                x.status == shared::Status::Succeeded,
                "{kind} on {server}: {log}"
            );
        }
        Ok((a, b))
    }

    /// Master `dba` and slaves `dbb`, `dbc`, ... (`slaves` of them) of cluster `shop` on new
    /// MariaDB test hosts, with 100 rows in `shop.orders` copied to each slave.
    pub async fn mariadb_cluster(
        &self,
        slaves: usize,
    ) -> anyhow::Result<(TestHost, Vec<TestHost>)> {
        let (a, b) = self.mariadb_pair().await?;
        let mut all = vec![b];
        for i in 1..slaves {
            let name = format!("db{}", (b'b' + i as u8) as char);
            let host = TestHost::start()?.with_mariadb()?;
            self.add_db_host(&name, &host).await?;
            let (x, log) = self
                .act(
                    &name,
                    "db_configure_slave",
                    serde_json::json!({"cluster": "shop"}),
                )
                .await?;
            anyhow::ensure!(
                x.status == shared::Status::Succeeded,
                "db_configure_slave on {name}: {log}"
            );
            all.push(host);
        }
        Ok((a, all))
    }

    /// Publish `cluster`'s master record as `record` in `knot`'s zone (RFC 2136, TTL 1 s), its
    /// TSIG key stored as the secret `<cluster>-tsig`.
    pub async fn use_knot(
        &self,
        cluster: &str,
        knot: &crate::services::Knot,
        record: &str,
    ) -> anyhow::Result<Value> {
        let key_ref = format!("{cluster}-tsig");
        self.client
            .post(
                "/v1/secrets",
                &serde_json::json!({"name": key_ref, "value": knot.key}),
            )
            .await?;
        Ok(self
            .client
            .patch(
                &format!("/v1/clusters/{cluster}"),
                &serde_json::json!({"dns": {"provider": "rfc2136", "zone": knot.zone,
                    "server": knot.addr.to_string(), "key_name": knot.key_name,
                    "key_ref": key_ref, "name": record, "ttl": 1}}),
            )
            .await?)
    }

    /// Submit `kind` on `server` with `params` and wait (3 min) for its end: the action and
    /// its log.
    pub async fn act(
        &self,
        server: &str,
        kind: &str,
        params: Value,
    ) -> anyhow::Result<(shared::Action, String)> {
        let a = self
            .client
            .submit(&serde_json::json!({"server": server, "kind": kind, "params": params}))
            .await?;
        let a = self.client.wait(a.id, Duration::from_secs(180)).await?;
        let log = self.client.log(a.id, 0).await?.text;
        Ok((a, log))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for w in &mut self.workers {
            w.shutdown.cancel();
        }
        if let Some(a) = self.api.take() {
            a.abort();
        }
        // Best effort: the database goes with the test (FORCE closes our pools' connections).
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
