//! `sactl`: the ServerActions command line, a thin client of the HTTP API.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::{urlencode, Client, ClientError};
use serde_json::{json, Value};
use shared::{
    action::{Action, Status},
    auth::TokenArgs,
    http::ActionRequest,
    spec::{ActionSpec, RunScriptParams, SecretInput, SecretRef},
};

#[derive(Parser)]
#[command(name = "sactl", about = "Submit server actions and read their logs")]
struct Cli {
    /// Where the api listens.
    #[arg(
        long,
        env = "SA_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// The API token (else SA_TOKEN, else the file ~/.config/serveractions/token).
    #[arg(long, env = "SA_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Trust the PEM certificate(s) in this file (an api with its own CA or a self-signed one).
    #[arg(long, env = "SA_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register and list managed servers.
    #[command(subcommand)]
    Servers(ServersCmd),
    /// Run a script on a server: `sactl run web1 -- 'uptime'`.
    Run {
        server: String,
        /// Read the script from a file instead of the arguments.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Environment for the script, NAME=VALUE (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// A secret for the script: the value of this variable in sactl's own environment
        /// (never on a command line), stored sealed and masked in the log (repeatable).
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// A secret from the store: VAR=NAME (repeatable).
        #[arg(long = "secret-ref")]
        secret_refs: Vec<String>,
        /// Follow the log and exit with the action's exit code.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        timeout: Option<u32>,
        #[arg(long)]
        urgent: bool,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The script (joined with spaces).
        #[arg(last = true)]
        script: Vec<String>,
    },
    /// Submit an action of any kind: `sactl act db2 db_promote --wait`,
    /// `sactl act db3 db_configure_slave -p cluster=shop -p from=backup`.
    Act {
        server: String,
        kind: String,
        /// A parameter, NAME=VALUE (repeatable); VALUE is JSON if it parses as JSON, else a string.
        #[arg(short = 'p', long = "param")]
        param: Vec<String>,
        /// All parameters as one JSON object (the -p ones are added to it).
        #[arg(long)]
        params: Option<String>,
        /// Follow the log and exit with the action's exit code.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        urgent: bool,
    },
    /// Launch profiles (admin): what EC2 instances are made from.
    #[command(subcommand)]
    Profiles(ProfilesCmd),
    /// List and show actions.
    #[command(subcommand)]
    Actions(ActionsCmd),
    /// Backups: `sactl backups list --cluster shop`.
    #[command(subcommand)]
    Backups(BackupsCmd),
    /// A DB cluster: its master, slaves and master DNS record.
    #[command(subcommand)]
    Clusters(ClustersCmd),
    /// Webhooks (admin): `sactl webhooks add URL --event failover.started < secret`, list, rm,
    /// deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Automatic failover of every cluster: `sactl auto-failover off --reason maintenance`,
    /// `on`, `show`.
    AutoFailover {
        #[arg(value_parser = ["on", "off", "show"])]
        switch: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Schedules: `sactl schedules add nightly --cluster shop --role master --kind db_backup --cron '0 30 3 * * *'`.
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// API tokens (an unscoped admin's): `sactl tokens create ci --role operator --tag role=web`.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// The secret store (admin): `sactl secrets set db-pass < file`, list, rm.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// The audit trail, newest first: `sactl audit --token alice`.
    Audit {
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// A token's name.
        #[arg(long)]
        token_name: Option<String>,
        /// e.g. server:web1, action:7, schedule:nightly, token:ci.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel an action: a queued one never starts, a running one is killed.
    Cancel { id: i64 },
    /// Print an action's log; `-f` follows it until the action ends.
    Logs {
        id: i64,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// Post these events to URL, signed with a secret read from stdin (one line, never from
    /// the command line): `sactl webhooks add https://hooks.example/sa --event failover.started
    /// --event failover.finished < secret`.
    Add {
        url: String,
        /// action.finished, action.failed, failover.started, failover.finished, cluster.analysis
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    List,
    Rm {
        id: i64,
    },
    /// A webhook's newest deliveries with their attempts and last outcome.
    Deliveries {
        id: i64,
    },
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Store a secret (or replace its value); the value is read from stdin (one line, or the
    /// whole input with --multiline), never from the command line.
    Set {
        name: String,
        #[arg(long)]
        multiline: bool,
    },
    /// The names of the stored secrets (never a value).
    List,
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Make a token; its secret is printed once, alone on stdout.
    Create {
        name: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Every token (never a secret).
    List,
    /// Revoke a token: it answers 401 from now on.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum BackupsCmd {
    /// Backups, newest first.
    List {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        lineage: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One backup with its manifest.
    Show { id: i64 },
}

#[derive(Subcommand)]
// Parsed once per run: the size of `Set` does not matter.
#[allow(clippy::large_enum_variant)]
enum ClustersCmd {
    /// Master, members with their replication state, DNS record, lock and timeline.
    Show { name: String },
    /// Promote the cluster's most advanced slave (refused, with the reasons, when that cannot
    /// be proven safe; `--force` overrides and the log lists what it overrode).
    Promote {
        name: String,
        #[arg(long)]
        force: bool,
        /// Wait for the end and print the log.
        #[arg(long)]
        wait: bool,
    },
    /// Change a cluster: `--fence optional` lets a promote go on when a dead master cannot be
    /// fenced (default `required`); `--dns-provider rfc2136 --dns-zone shop.example
    /// --dns-server 192.0.2.53:53 --dns-key-name sa --dns-key-ref shop-tsig` publishes its master
    /// record on an authoritative DNS server by TSIG-signed dynamic updates.
    Set {
        name: String,
        #[arg(long, value_parser = ["required", "optional"])]
        fence: Option<String>,
        #[arg(long, value_parser = ["store", "rfc2136", "route53"])]
        dns_provider: Option<String>,
        /// The master record's name.
        #[arg(long)]
        dns_name: Option<String>,
        #[arg(long)]
        dns_ttl: Option<u32>,
        #[arg(long)]
        dns_zone: Option<String>,
        /// The authoritative server, IP:port.
        #[arg(long)]
        dns_server: Option<String>,
        #[arg(long)]
        dns_key_name: Option<String>,
        /// A stored secret (`sactl secrets set`) holding the TSIG key, base64.
        #[arg(long)]
        dns_key_ref: Option<String>,
        /// Watch the cluster and fail it over automatically when its master is dead.
        #[arg(long, value_parser = ["on", "off"])]
        auto_failover: Option<String>,
        /// No second automatic failover for this long after one, unless acknowledged.
        #[arg(long)]
        failover_block_s: Option<u32>,
        /// The launch profile its new members are made from (`""` clears it).
        #[arg(long)]
        launch_profile: Option<String>,
    },
    /// Acknowledge the last automatic failover: lifts the block on a second one.
    Ack { name: String },
    /// What a failover would do now (candidate, fence, spare, what would be lost), and the
    /// watcher's analysis.
    Plan { name: String },
}

#[derive(Subcommand)]
enum SchedulesCmd {
    /// Schedules with their next fire time and last run.
    List,
    /// One schedule with its last runs.
    Show {
        name: String,
    },
    Add {
        name: String,
        /// Run on this server...
        #[arg(long, conflicts_with_all = ["cluster", "role"])]
        server: Option<String>,
        /// ...or on this cluster's master or slave (resolved at each run).
        #[arg(long, requires = "role")]
        cluster: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        kind: String,
        /// The action's params, as JSON.
        #[arg(long)]
        params: Option<String>,
        /// Cron expression (5 fields, or 6-7 with seconds first).
        #[arg(long, conflicts_with = "every")]
        cron: Option<String>,
        /// Or an interval in seconds.
        #[arg(long)]
        every: Option<i64>,
        #[arg(long)]
        jitter: Option<i64>,
        /// After downtime: run once ("once", default) or not at all ("skip").
        #[arg(long)]
        catch_up: Option<String>,
    },
    Enable {
        name: String,
    },
    Disable {
        name: String,
    },
    Rm {
        name: String,
    },
}

#[derive(clap::Args)]
struct AddServer {
    name: String,
    #[arg(long)]
    address: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    port: Option<u16>,
    /// Pinned host key, e.g. "ssh-ed25519 AAAA...".
    #[arg(long, conflicts_with = "host_key_file")]
    host_key: Option<String>,
    /// Read the pinned host key from a .pub file.
    #[arg(long)]
    host_key_file: Option<PathBuf>,
    #[arg(long)]
    db_port: Option<u16>,
    /// Where mysqld listens, seen from the server (default 127.0.0.1).
    #[arg(long)]
    db_host: Option<String>,
    /// The mysqld option file the workers manage on the server.
    #[arg(long)]
    db_config_file: Option<String>,
    /// The command that restarts mysqld on the server.
    #[arg(long)]
    db_restart_command: Option<String>,
    /// The workers' MySQL user there (default SA_MYSQL_USER).
    #[arg(long)]
    db_user: Option<String>,
    /// A stored secret (`sactl secrets set`) holding that user's password.
    #[arg(long)]
    db_password_ref: Option<String>,
    /// Run from the worker to fence the server when it is a dead master (e.g. a cloud CLI
    /// that stops the instance); `$SA_SERVER` and `$SA_ADDRESS` name it.
    #[arg(long)]
    db_fence_command: Option<String>,
    /// How a cluster-level promote ranks it: prefer, neutral (default), must_not.
    #[arg(long, value_parser = ["prefer", "neutral", "must_not"])]
    promotion_rule: Option<String>,
}

#[derive(Subcommand)]
enum ServersCmd {
    Add(Box<AddServer>),
    List,
    Show {
        name: String,
    },
    Rm {
        name: String,
    },
    /// Release the lock an action that could not be stopped kept (check the server first).
    Unlock {
        name: String,
    },
    /// Launch a server on EC2 from a launch profile: `sactl servers launch web7 --profile web`;
    /// with `--cluster shop`, a new slave of the cluster (its profile by default), with
    /// `--master` a new master restored from a backup.
    Launch {
        name: String,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        /// With --cluster: launch its master from a backup (the cluster must have none).
        #[arg(long)]
        master: bool,
        /// With --master: the backup id (default the latest).
        #[arg(long)]
        backup: Option<i64>,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Follow the log and exit with the action's exit code.
        #[arg(long)]
        wait: bool,
    },
    /// Terminate a launched server's instance (refused for a cluster's master).
    Terminate {
        name: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// Create a launch profile from a JSON file (`-`: stdin): `{"image_id", "instance_type",
    /// "subnet_id", "ssh_user", "security_group_ids"?, "db_server"?: {...}, ...}`.
    Add {
        name: String,
        file: PathBuf,
    },
    List,
    Show {
        name: String,
    },
    /// Change fields of a profile from a JSON object file (`null` removes an optional one).
    Set {
        name: String,
        file: PathBuf,
    },
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum ActionsCmd {
    List {
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        before: Option<i64>,
    },
    Show {
        id: i64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api {
                    message,
                    field: Some(f),
                    ..
                }) => {
                    eprintln!("sactl: {message} (field: {f})")
                }
                _ => eprintln!("sactl: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

/// `--token`, else `SA_TOKEN` (both through clap), else the token file.
fn token(flag: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(t) = flag.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t));
    }
    let Some(home) = std::env::var_os("HOME") else {
        return Ok(None);
    };
    let file = PathBuf::from(home).join(".config/serveractions/token");
    match std::fs::read_to_string(&file) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", file.display())),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(&cli.api);
    if let Some(t) = token(cli.token)? {
        client = client.with_token(&t);
    }
    if let Some(f) = &cli.ca_file {
        let pem =
            std::fs::read(f).with_context(|| format!("--ca-file: cannot read {}", f.display()))?;
        client = client
            .with_ca(&pem)
            .with_context(|| format!("--ca-file: {} holds no PEM certificate", f.display()))?;
    }
    match cli.cmd {
        Cmd::Tokens(cmd) => tokens(&client, cmd).await?,
        Cmd::Secrets(cmd) => match cmd {
            SecretsCmd::Set { name, multiline } => {
                use std::io::Read;
                let mut value = String::new();
                if multiline {
                    std::io::stdin().read_to_string(&mut value)?;
                } else {
                    std::io::stdin().read_line(&mut value)?;
                    value.truncate(value.trim_end_matches(['\n', '\r']).len());
                }
                let (status, _) = client
                    .post("/v1/secrets", &json!({"name": name, "value": value}))
                    .await?;
                println!(
                    "{} {name}",
                    if status == 201 { "stored" } else { "replaced" }
                );
            }
            SecretsCmd::List => {
                let v = client.get("/v1/secrets").await?;
                println!("{:<30} {:<20} UPDATED", "NAME", "CREATED BY");
                for s in v["secrets"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<30} {:<20} {}",
                        s["name"].as_str().unwrap_or_default(),
                        s["created_by"].as_str().unwrap_or_default(),
                        s["updated_at"].as_str().unwrap_or_default()
                    );
                }
            }
            SecretsCmd::Rm { name } => {
                client
                    .delete(&format!("/v1/secrets/{}", urlencode(&name)))
                    .await?;
                println!("removed {name}");
            }
        },
        Cmd::Audit {
            since,
            token_name,
            target,
            limit,
        } => {
            let mut q = format!("limit={limit}");
            for (k, v) in [("since", since), ("token", token_name), ("target", target)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", urlencode(&v)));
                }
            }
            let list = client.audit(&q).await?;
            println!(
                "{:<20} {:<16} {:<16} {:<7} {:<30} {:<20} STATUS",
                "AT", "TOKEN", "FROM", "METHOD", "ROUTE", "TARGET"
            );
            for e in list.entries {
                println!(
                    "{:<20} {:<16} {:<16} {:<7} {:<30} {:<20} {}",
                    e.at.format("%Y-%m-%d %H:%M:%S"),
                    e.token_name.as_deref().unwrap_or("-"),
                    e.client_addr,
                    e.method,
                    e.route,
                    e.target.as_deref().unwrap_or("-"),
                    e.status
                );
            }
        }
        Cmd::Profiles(cmd) => profiles(&client, cmd).await?,
        Cmd::Servers(cmd) => return servers(&client, cmd).await,
        Cmd::Schedules(cmd) => schedules(&client, cmd).await?,
        Cmd::Run {
            server,
            file,
            env,
            secrets,
            secret_refs,
            wait,
            timeout,
            urgent,
            idempotency_key,
            script,
        } => {
            let script = match (file, script.is_empty()) {
                (Some(f), true) => std::fs::read_to_string(&f)
                    .with_context(|| format!("--file: cannot read {}", f.display()))?,
                (Some(_), false) => {
                    bail!("give the script either with --file or after --, not both")
                }
                (None, false) => script.join(" "),
                (None, true) => bail!("script: missing (sactl run SERVER -- SCRIPT, or --file F)"),
            };
            let mut vars = std::collections::BTreeMap::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("-e: {kv:?} is not NAME=VALUE");
                };
                vars.insert(k.to_string(), v.to_string());
            }
            let mut hidden = std::collections::BTreeMap::new();
            for var in secrets {
                let value = std::env::var(&var)
                    .with_context(|| format!("--secret {var}: sactl's environment has no {var}"))?;
                hidden.insert(var, SecretInput::Value(value));
            }
            for kv in secret_refs {
                let Some((k, name)) = kv.split_once('=') else {
                    bail!("--secret-ref: {kv:?} is not VAR=NAME");
                };
                let secret_ref = name.to_string();
                hidden.insert(k.to_string(), SecretInput::Ref(SecretRef { secret_ref }));
            }
            let spec = ActionSpec::RunScript(RunScriptParams {
                script,
                env: vars,
                secrets: hidden,
            });
            let body = ActionRequest {
                timeout_s: timeout,
                idempotency_key,
                urgent,
                ..ActionRequest::new(&server, &spec)
            };
            let action = client.submit_action(&body).await?;
            return submitted(&client, &action, wait, "").await;
        }
        Cmd::Act {
            server,
            kind,
            param,
            params,
            wait,
            urgent,
        } => {
            let body = ActionRequest {
                server,
                kind: kind.clone(),
                params: Some(action_params(params.as_deref(), &param)?),
                urgent,
                ..Default::default()
            };
            let action = client.submit_action(&body).await?;
            return submitted(&client, &action, wait, &format!(" ({kind})")).await;
        }
        Cmd::Backups(BackupsCmd::List {
            cluster,
            lineage,
            limit,
        }) => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("cluster", cluster), ("lineage", lineage)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let list = client.get(&format!("/v1/backups?{}", q.join("&"))).await?;
            println!(
                "{:>6}  {:<14} {:<12} {:<11} {:<11} {:>10}  {:<19}  {:<8} GTID",
                "ID", "LINEAGE", "SERVER", "STRATEGY", "STATUS", "MIB", "STARTED", "VERIFIED"
            );
            for b in list.as_array().into_iter().flatten() {
                let text = |k: &str| b[k].as_str().unwrap_or("").to_string();
                let started = text("started_at");
                println!(
                    "{:>6}  {:<14} {:<12} {:<11} {:<11} {:>10}  {:<19}  {:<8} {}",
                    b["id"],
                    text("lineage"),
                    text("server"),
                    text("strategy"),
                    text("status"),
                    b["bytes"]
                        .as_f64()
                        .map(|n| format!("{:.1}", n / 1048576.0))
                        .unwrap_or_default(),
                    started.get(..19).unwrap_or(&started).replace('T', " "),
                    text("verified"),
                    text("gtid")
                );
            }
        }
        Cmd::Backups(BackupsCmd::Show { id }) => {
            let v = client.get(&format!("/v1/backups/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Clusters(ClustersCmd::Show { name }) => {
            let v = client
                .get(&format!("/v1/clusters/{}", urlencode(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Clusters(ClustersCmd::Ack { name }) => {
            let v = client
                .post(
                    &format!("/v1/clusters/{}/ack", urlencode(&name)),
                    &json!({}),
                )
                .await?
                .1;
            println!(
                "{name}: last automatic failover acknowledged; blocked until: {}",
                v["blocked_until"].as_str().unwrap_or("not blocked")
            );
        }
        Cmd::Clusters(ClustersCmd::Plan { name }) => {
            let v = client
                .get(&format!("/v1/clusters/{}/failover-plan", urlencode(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Webhooks(w) => match w {
            WebhooksCmd::Add { url, events } => {
                let mut secret = String::new();
                std::io::stdin().read_line(&mut secret)?;
                secret.truncate(secret.trim_end_matches(['\n', '\r']).len());
                let (_, v) = client
                    .post(
                        "/v1/webhooks",
                        &json!({"url": url, "events": events, "secret": secret}),
                    )
                    .await?;
                println!(
                    "webhook {} → {}",
                    v["id"],
                    v["url"].as_str().unwrap_or_default()
                );
            }
            WebhooksCmd::List => {
                let v = client.get("/v1/webhooks").await?;
                println!("{:<6} {:<50} EVENTS", "ID", "URL");
                for w in v["webhooks"].as_array().cloned().unwrap_or_default() {
                    let events: Vec<&str> = w["events"]
                        .as_array()
                        .map(|e| e.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<6} {:<50} {}",
                        w["id"],
                        w["url"].as_str().unwrap_or_default(),
                        events.join(",")
                    );
                }
            }
            WebhooksCmd::Rm { id } => {
                client.delete(&format!("/v1/webhooks/{id}")).await?;
                println!("deleted webhook {id}");
            }
            WebhooksCmd::Deliveries { id } => {
                let v = client.get(&format!("/v1/webhooks/{id}/deliveries")).await?;
                println!(
                    "{:<8} {:<18} {:<10} {:<8} {:<6} ERROR",
                    "ID", "EVENT", "STATUS", "ATTEMPTS", "HTTP"
                );
                for d in v["deliveries"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<8} {:<18} {:<10} {:<8} {:<6} {}",
                        d["id"],
                        d["event"].as_str().unwrap_or_default(),
                        d["status"].as_str().unwrap_or_default(),
                        d["attempts"],
                        d["last_status"],
                        d["last_error"].as_str().unwrap_or_default()
                    );
                }
            }
        },
        Cmd::AutoFailover { switch, reason } => {
            let v = if switch == "show" {
                client.get("/v1/auto-failover").await?
            } else {
                client
                    .put(
                        "/v1/auto-failover",
                        &json!({"enabled": switch == "on", "reason": reason}),
                    )
                    .await?
            };
            println!(
                "automatic failover: {}{}",
                if v["enabled"] == true { "on" } else { "off" },
                v["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        Cmd::Clusters(ClustersCmd::Promote { name, force, wait }) => {
            let a = client.promote_cluster(&urlencode(&name), force).await?;
            return submitted(&client, &a, wait, " (db_promote)").await;
        }
        Cmd::Clusters(ClustersCmd::Set {
            name,
            fence,
            dns_provider,
            dns_name,
            dns_ttl,
            dns_zone,
            dns_server,
            dns_key_name,
            dns_key_ref,
            auto_failover,
            failover_block_s,
            launch_profile,
        }) => {
            let mut body = json!({});
            if let Some(p) = launch_profile {
                body["launch_profile"] = json!(p);
            }
            if let Some(a) = auto_failover {
                body["auto_failover"] = json!(a == "on");
            }
            if let Some(b) = failover_block_s {
                body["failover_block_s"] = json!(b);
            }
            if let Some(f) = fence {
                body["fence"] = json!(f);
            }
            let mut dns = serde_json::Map::new();
            for (k, v) in [
                ("provider", dns_provider),
                ("name", dns_name),
                ("zone", dns_zone),
                ("server", dns_server),
                ("key_name", dns_key_name),
                ("key_ref", dns_key_ref),
            ] {
                if let Some(v) = v {
                    dns.insert(k.into(), json!(v));
                }
            }
            if let Some(t) = dns_ttl {
                dns.insert("ttl".into(), json!(t));
            }
            if !dns.is_empty() {
                body["dns"] = Value::Object(dns);
            }
            if body.as_object().is_some_and(|b| b.is_empty()) {
                bail!("nothing to change: give --fence, --auto-failover, --failover-block-s or a --dns-* option");
            }
            let v = client
                .patch(&format!("/v1/clusters/{}", urlencode(&name)), &body)
                .await?;
            println!(
                "{name}: fence {}, auto_failover {}, DNS {} {} (TTL {} s)",
                v["fence"].as_str().unwrap_or_default(),
                v["failover"]["auto_failover"],
                v["dns"]["provider"].as_str().unwrap_or_default(),
                v["dns"]["name"].as_str().unwrap_or_default(),
                v["dns"]["ttl"]
            );
        }
        Cmd::Actions(ActionsCmd::List {
            server,
            status,
            kind,
            limit,
            before,
        }) => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("server", server), ("status", status), ("kind", kind)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            if let Some(b) = before {
                q.push(format!("before={b}"));
            }
            let (actions, next) = client.actions(&q.join("&")).await?;
            println!(
                "{:>8}  {:<16} {:<12} {:<11} {:>4}  CREATED",
                "ID", "SERVER", "KIND", "STATUS", "EXIT"
            );
            for a in actions {
                println!(
                    "{:>8}  {:<16} {:<12} {:<11} {:>4}  {}",
                    a.id,
                    a.server,
                    a.kind().as_str(),
                    a.status.as_str(),
                    a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    a.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            if let Some(n) = next {
                println!("(more: --before {n})");
            }
        }
        Cmd::Actions(ActionsCmd::Show { id }) => {
            let v = client.get(&format!("/v1/actions/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Cancel { id } => {
            let a = client.cancel(id).await?;
            match a.status {
                Status::Cancelled => println!("action {id} cancelled"),
                _ => println!("action {id}: cancel requested, its worker is stopping it"),
            }
        }
        Cmd::Logs { id, follow: true } => {
            let done = follow(&client, id).await?;
            return Ok(exit_code(&done));
        }
        Cmd::Logs { id, follow: false } => {
            print!("{}", client.log(id, 0).await?.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tokens(client: &Client, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create { name, token } => {
            let req = token.request(name);
            let created = client.create_token(&req).await?;
            eprintln!(
                "token {:?} ({}, {}): shown only now",
                created.info.name, created.info.role, created.info.scope
            );
            println!("{}", created.token);
        }
        TokensCmd::List => {
            println!(
                "{:<20} {:<9} {:<30} {:<20} {:<20} STATE",
                "NAME", "ROLE", "SCOPE", "CREATED BY", "LAST USED"
            );
            for t in client.tokens().await? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    (None, Some(at)) if at <= chrono::Utc::now() => {
                        format!("expired {}", at.format("%Y-%m-%d %H:%M"))
                    }
                    (None, Some(at)) => format!("expires {}", at.format("%Y-%m-%d %H:%M")),
                    (None, None) => "active".into(),
                };
                println!(
                    "{:<20} {:<9} {:<30} {:<20} {:<20} {state}",
                    t.name,
                    t.role,
                    t.scope.to_string(),
                    t.created_by,
                    t.last_used_at
                        .map_or("never".into(), |at| at.format("%Y-%m-%d %H:%M").to_string()),
                );
            }
        }
        TokensCmd::Revoke { name } => {
            client.revoke_token(&name).await?;
            println!("revoked {name}");
        }
    }
    Ok(())
}

async fn servers(client: &Client, cmd: ServersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ServersCmd::Launch {
            name,
            profile,
            cluster,
            master,
            backup,
            tags,
            wait,
        } => {
            let mut body = json!({"name": name});
            if let Some(p) = profile {
                body["profile"] = json!(p);
            }
            match (cluster, master, backup) {
                (Some(c), master, backup) => {
                    body["cluster"] = json!(c);
                    if master {
                        body["role"] = json!("master");
                    }
                    if let Some(b) = backup {
                        body["backup"] = json!(b);
                    }
                }
                (None, true, _) | (None, _, Some(_)) => {
                    bail!("--master and --backup: only with --cluster")
                }
                (None, false, None) => {}
            }
            let mut t = serde_json::Map::new();
            for pair in tags {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--tag: {pair:?} is not KEY=VALUE"))?;
                t.insert(k.into(), json!(v));
            }
            if !t.is_empty() {
                body["tags"] = Value::Object(t);
            }
            let (_, v) = client.post("/v1/servers/launch", &body).await?;
            let a: Action = serde_json::from_value(v["action"].clone())?;
            return submitted(client, &a, wait, &format!(" ({})", a.kind())).await;
        }
        ServersCmd::Terminate { name, wait } => {
            let (_, v) = client
                .post(
                    &format!("/v1/servers/{}/terminate", urlencode(&name)),
                    &json!({}),
                )
                .await?;
            let a: Action = serde_json::from_value(v)?;
            return submitted(client, &a, wait, " (server_terminate)").await;
        }
        ServersCmd::Add(add) => {
            let AddServer {
                name,
                address,
                user,
                port,
                host_key,
                host_key_file,
                db_port,
                db_host,
                db_config_file,
                db_restart_command,
                db_user,
                db_password_ref,
                db_fence_command,
                promotion_rule,
            } = *add;
            let host_key = match host_key_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("--host-key-file: cannot read {}", f.display()))?
                        .trim()
                        .to_string(),
                ),
                None => host_key,
            };
            let mut body = json!({"name": name, "address": address, "ssh_user": user});
            for (k, v) in [("ssh_port", port), ("db_port", db_port)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(k) = host_key {
                body["host_key"] = json!(k);
            }
            for (k, v) in [
                ("db_host", db_host),
                ("db_config_file", db_config_file),
                ("db_restart_command", db_restart_command),
                ("db_user", db_user),
                ("db_password_ref", db_password_ref),
                ("db_fence_command", db_fence_command),
                ("promotion_rule", promotion_rule),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let s = client.add_server(&body).await?;
            println!("added {}", s["name"].as_str().unwrap_or_default());
        }
        ServersCmd::List => {
            println!(
                "{:<20} {:<24} {:<12} {:<13} HOST KEY",
                "NAME", "ADDRESS", "USER", "STATE"
            );
            for s in client.servers().await? {
                let key = s["host_key"]
                    .as_str()
                    .map_or("(known_hosts)", |k| k.split(' ').next().unwrap_or(""));
                println!(
                    "{:<20} {:<24} {:<12} {:<13} {key}",
                    s["name"].as_str().unwrap_or_default(),
                    format!(
                        "{}:{}",
                        s["address"].as_str().unwrap_or_default(),
                        s["ssh_port"]
                    ),
                    s["ssh_user"].as_str().unwrap_or_default(),
                    s["state"].as_str().unwrap_or_default(),
                );
            }
        }
        ServersCmd::Show { name } => {
            let v: Value = client
                .get(&format!("/v1/servers/{}", urlencode(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ServersCmd::Rm { name } => {
            client
                .delete(&format!("/v1/servers/{}", urlencode(&name)))
                .await?;
            println!("removed {name}");
        }
        ServersCmd::Unlock { name } => {
            let v = client.unlock_server(&name).await?;
            match v["next"].as_i64() {
                Some(id) => println!("unlocked {name}; action {id} goes next"),
                None => println!("unlocked {name}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON object from a file, `-` for stdin.
fn json_file(file: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => bail!("{}: not a JSON object", file.display()),
    }
}

async fn profiles(client: &Client, cmd: ProfilesCmd) -> anyhow::Result<()> {
    let path = |name: &str| format!("/v1/launch-profiles/{}", urlencode(name));
    match cmd {
        ProfilesCmd::Add { name, file } => {
            let mut body = json_file(&file)?;
            body.insert("name".into(), json!(name));
            client
                .post("/v1/launch-profiles", &Value::Object(body))
                .await?;
            println!("added launch profile {name}");
        }
        ProfilesCmd::List => {
            let v = client.get("/v1/launch-profiles").await?;
            println!(
                "{:<16} {:<16} {:<12} {:<24} DB",
                "NAME", "IMAGE", "TYPE", "SUBNET"
            );
            for p in v["profiles"].as_array().into_iter().flatten() {
                let spec = &p["spec"];
                println!(
                    "{:<16} {:<16} {:<12} {:<24} {}",
                    p["name"].as_str().unwrap_or_default(),
                    spec["image_id"].as_str().unwrap_or_default(),
                    spec["instance_type"].as_str().unwrap_or_default(),
                    spec["subnet_id"].as_str().unwrap_or_default(),
                    if spec["db_server"].is_object() {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
        }
        ProfilesCmd::Show { name } => {
            let v = client.get(&path(&name)).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ProfilesCmd::Set { name, file } => {
            let body = json_file(&file)?;
            client.patch(&path(&name), &Value::Object(body)).await?;
            println!("changed launch profile {name}");
        }
        ProfilesCmd::Rm { name } => {
            client.delete(&path(&name)).await?;
            println!("removed launch profile {name}");
        }
    }
    Ok(())
}

async fn schedules(client: &Client, cmd: SchedulesCmd) -> anyhow::Result<()> {
    let path = |name: &str| format!("/v1/schedules/{}", urlencode(name));
    match cmd {
        SchedulesCmd::List => {
            println!(
                "{:<28} {:<24} {:<16} {:<20} {:<26} LAST RUN",
                "NAME", "TARGET", "KIND", "WHEN", "NEXT"
            );
            for s in client
                .get("/v1/schedules")
                .await?
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let target = match (
                    s["target"]["server"].as_str(),
                    s["target"]["cluster"].as_str(),
                ) {
                    (Some(server), _) => server.to_string(),
                    (_, Some(c)) => format!("{c}/{}", s["target"]["role"].as_str().unwrap_or("")),
                    _ => "-".into(),
                };
                let when = match s["cron"].as_str() {
                    Some(c) => c.to_string(),
                    None => format!("every {}s", s["every_s"]),
                };
                let last = &s["last_runs"][0];
                let last = match last["outcome"].as_str() {
                    Some("fired") => format!(
                        "action {} {}",
                        last["action_id"],
                        last["status"].as_str().unwrap_or("")
                    ),
                    Some(other) => format!("{other}: {}", last["reason"].as_str().unwrap_or("")),
                    None => "-".into(),
                };
                println!(
                    "{:<28} {:<24} {:<16} {:<20} {:<26} {last}",
                    s["name"].as_str().unwrap_or_default(),
                    target,
                    s["kind"].as_str().unwrap_or_default(),
                    when,
                    s["next_fire_at"].as_str().unwrap_or("disabled"),
                );
            }
        }
        SchedulesCmd::Show { name } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.get(&path(&name)).await?)?
            );
        }
        SchedulesCmd::Add {
            name,
            server,
            cluster,
            role,
            kind,
            params,
            cron,
            every,
            jitter,
            catch_up,
        } => {
            let params: Option<Value> = match params {
                Some(p) => Some(serde_json::from_str(&p).context("--params: not JSON")?),
                None => None,
            };
            let target = match server {
                Some(s) => json!({"server": s}),
                None => json!({"cluster": cluster, "role": role}),
            };
            let mut body = json!({"name": name, "target": target, "kind": kind});
            for (k, v) in [
                ("params", params),
                ("cron", cron.map(Value::from)),
                ("every_s", every.map(Value::from)),
                ("jitter_s", jitter.map(Value::from)),
                ("catch_up", catch_up.map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let (_, s) = client.post("/v1/schedules", &body).await?;
            println!(
                "added {}: next at {}",
                s["name"].as_str().unwrap_or_default(),
                s["next_fire_at"].as_str().unwrap_or("-")
            );
        }
        SchedulesCmd::Enable { name } => {
            client
                .patch(&path(&name), &json!({"enabled": true}))
                .await?;
            println!("enabled {name}");
        }
        SchedulesCmd::Disable { name } => {
            client
                .patch(&path(&name), &json!({"enabled": false}))
                .await?;
            println!("disabled {name}");
        }
        SchedulesCmd::Rm { name } => {
            client.delete(&path(&name)).await?;
            println!("removed {name}");
        }
    }
    Ok(())
}

/// A queued action: its id, or with `wait` its log followed to the end and its exit code.
async fn submitted(
    client: &Client,
    action: &Action,
    wait: bool,
    what: &str,
) -> anyhow::Result<ExitCode> {
    if !wait {
        println!("{}", action.id);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("action {}{what} queued on {}", action.id, action.server);
    let done = follow(client, action.id).await?;
    Ok(exit_code(&done))
}

/// Print the log as it grows until the action is over; returns the final action.
async fn follow(client: &Client, id: i64) -> anyhow::Result<Action> {
    let mut after = 0;
    loop {
        let action = client.action(id).await?;
        let chunk = client.log(id, after).await?;
        print!("{}", chunk.text);
        after = chunk.last_seq;
        if action.status.is_terminal() {
            // Lines written between the two reads.
            print!("{}", client.log(id, after).await?.text);
            return Ok(action);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn exit_code(a: &Action) -> ExitCode {
    let code = match (a.status, a.exit_code) {
        (Status::Succeeded, _) => 0,
        (_, Some(c)) if (1..=255).contains(&c) => c as u8,
        (Status::TimedOut, _) => 124,
        (Status::Cancelled, _) => 130,
        (Status::Interrupted, _) => 75,
        _ => 1,
    };
    if code != 0 {
        eprintln!("action {} {}", a.id, a.status);
    }
    ExitCode::from(code)
}

/// An action's params from `--params JSON` and `-p NAME=VALUE` (VALUE as JSON when it parses).
fn action_params(params: Option<&str>, pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut obj = match params {
        None => serde_json::Map::new(),
        Some(p) => match serde_json::from_str(p) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => bail!("--params: not a JSON object: {p}"),
        },
    };
    for kv in pairs {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("-p: {kv:?} is not NAME=VALUE");
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
        obj.insert(k.to_string(), value);
    }
    Ok(serde_json::Value::Object(obj))
}
