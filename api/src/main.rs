//! `sa-api`: the HTTP API, the outbox relay, the scheduler and the log viewer; `sa-api tokens`
//! makes and revokes tokens against the store directly (the first admin, recovery).

use clap::{Parser, Subcommand};
use shared::auth::TokenArgs;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sa-api",
    about = "ServerActions HTTP API (config from SA_* variables)"
)]
struct Args {
    /// TOML file with the same keys as the SA_* variables (lower-case, without SA_).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Only create/migrate the database, then exit.
    #[arg(long)]
    migrate_only: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// API tokens, in the store directly (no api needs to run).
    #[command(subcommand)]
    Tokens(TokensCmd),
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Make a token and print it (only it) on stdout.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shared::telemetry::init();
    let cfg = shared::Config::load(args.config.as_deref())?;
    if let Some(Cmd::Tokens(cmd)) = args.cmd {
        return tokens(&cfg, cmd).await;
    }
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

async fn tokens(cfg: &shared::Config, cmd: TokensCmd) -> anyhow::Result<()> {
    use shared::db::tokens;
    let pool =
        shared::db::connect_and_migrate(&cfg.database_url, 2, std::time::Duration::from_secs(30))
            .await?;
    let mut conn = pool.acquire().await?;
    match cmd {
        TokensCmd::Create { name, token } => {
            let req = token.request(name);
            let lifetime = req.validate()?;
            let created = tokens::create(
                &mut conn,
                &tokens::NewToken {
                    name: &req.name,
                    role: req.role,
                    scope: &req.scope,
                    expires_at: lifetime.map(|l| chrono::Utc::now() + l),
                    created_by: "sa-api",
                },
            )
            .await?;
            println!("{}", created.token);
        }
        TokensCmd::Revoke { name } => {
            tokens::revoke(&mut conn, &name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no token named {name:?}"))?;
            eprintln!("revoked {name:?} (api replicas stop accepting it within 5 s)");
        }
    }
    Ok(())
}
