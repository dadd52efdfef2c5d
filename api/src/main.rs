//! `sa-api`: the HTTP API, the outbox relay (and later the log viewer and scheduler).

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sa-api",
    about = "ServerActions HTTP API (config from SA_* variables)"
)]
struct Args {
    /// TOML file with the same keys as the SA_* variables (lower-case, without SA_).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Only create/migrate the database, then exit.
    #[arg(long)]
    migrate_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shared::telemetry::init();
    let cfg = shared::Config::load(args.config.as_deref())?;
    let topology = shared::queue::Topology::from_config(&cfg);
    let app = api::Application::build(&cfg, topology).await?;
    if args.migrate_only {
        return Ok(());
    }
    tracing::info!(addr = %app.local_addr(), "sa-api listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::telemetry::shutdown_on_signal(shutdown.clone()));
    app.run(shutdown).await
}
