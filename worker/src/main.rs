//! `sa-worker`: consume actions from RabbitMQ and run them over SSH.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sa-worker",
    about = "ServerActions worker (config from SA_* variables)"
)]
struct Args {
    /// TOML file with the same keys as the SA_* variables (lower-case, without SA_).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shared::telemetry::init();
    let cfg = shared::Config::load(args.config.as_deref())?;
    let topology = shared::queue::Topology::from_config(&cfg);
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics_listen).await?;
    let worker = worker::Worker::build(cfg, topology).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::telemetry::shutdown_on_signal(shutdown.clone()));
    tokio::spawn(worker::metrics::serve(
        metrics_listener,
        worker.metrics.registry.clone(),
        shutdown.clone(),
    ));
    tracing::info!(name = %worker.name, "sa-worker starting");
    worker.run(shutdown).await
}
