//! `sactl`: the ServerActions command line, a thin client of the HTTP API.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::{urlencode, Client, ClientError};
use serde_json::{json, Value};
use shared::{
    action::{Action, Status},
    auth::TokenArgs,
    http::ActionRequest,
    scripts::{InputDecl, InputType, ScriptDoc, ScriptRef},
    spec::{ActionSpec, RunBootParams, RunScriptParams, SecretInput, SecretRef},
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
// Parsed once per run: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Register and list managed servers.
    #[command(subcommand)]
    Servers(ServersCmd),
    /// Run a script on a server: `sactl run web1 -- 'uptime'`; or on many (a fleet run, followed
    /// to its end): `sactl run --tag role=web --concurrency 5 --max-failures 2 -- 'uptime'`.
    Run {
        /// The server (not with --servers, --tag or --deployment).
        server: Option<String>,
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
        /// A fleet run on every server with this tag, KEY=VALUE (repeatable: all must match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A fleet run on every server of this deployment.
        #[arg(long)]
        deployment: Option<String>,
        /// A fleet run on these servers: a,b,c.
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// A fleet run's actions running at once (default: all).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// Stop a fleet run's dispatching after this many failures (the rest end cancelled).
        #[arg(long)]
        max_failures: Option<u32>,
        /// Stop a fleet run's dispatching once more than this percentage of it failed.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
        max_fail_percent: Option<u32>,
        /// The script (joined with spaces).
        #[arg(last = true)]
        script: Vec<String>,
    },
    /// Stored scripts: `sactl scripts add deploy --file deploy.sh --input VERSION:text --required
    /// VERSION`, edit, list, show, revisions, diff, attach, detach, run.
    #[command(subcommand)]
    Scripts(ScriptsCmd),
    /// Server templates (boot, operational and decommission scripts): add, set, list, show.
    #[command(subcommand)]
    Templates(TemplatesCmd),
    /// Run a server's boot scripts (its template's, or --template's):
    /// `sactl boot web7 --wait`.
    Boot {
        server: String,
        /// A template instead of the server's own.
        #[arg(long)]
        template: Option<String>,
        /// With --template: its revision (default the newest).
        #[arg(long, requires = "template", value_parser = clap::value_parser!(i32).range(1..))]
        revision: Option<i32>,
        /// An input value, NAME=VALUE (repeatable); `NAME=@secret:S` names a stored secret.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Follow the log and exit with the action's exit code.
        #[arg(long)]
        wait: bool,
    },
    /// Deployments: input values shared by their servers: add, list, show, set, clone, rm.
    #[command(subcommand)]
    Deployments(DeploymentsCmd),
    /// Fleet runs (`sactl run --tag ...`): list, show.
    #[command(subcommand)]
    Runs(RunsCmd),
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

/// A script's body and declarations (`scripts add` and `scripts edit`).
#[derive(clap::Args)]
struct ScriptFlags {
    /// The script's body.
    #[arg(long)]
    file: PathBuf,
    #[arg(long)]
    description: Option<String>,
    /// A declared input, NAME:TYPE[:DEFAULT] (repeatable); TYPE is text, secret, number,
    /// choice, server_address or cluster_master; a secret's DEFAULT is `@secret:NAME`.
    #[arg(long = "input", value_name = "NAME:TYPE[:DEFAULT]")]
    inputs: Vec<String>,
    /// An input that must be given a value (repeatable).
    #[arg(long = "required", value_name = "NAME")]
    required: Vec<String>,
    /// A choice input's choices, NAME=a,b,c (repeatable).
    #[arg(long = "choices", value_name = "NAME=a,b,c")]
    choices: Vec<String>,
    /// Every input as a JSON list (`@FILE`: from a file, `-`: stdin), instead of --input:
    /// `[{"name", "type", "default"?, "required"?, "choices"?, "description"?}]`.
    #[arg(long, conflicts_with = "inputs", value_name = "JSON")]
    inputs_json: Option<String>,
    /// A package installed first (repeatable).
    #[arg(long = "package", value_name = "PACKAGE")]
    packages: Vec<String>,
}

#[derive(Subcommand)]
enum ScriptsCmd {
    /// A new script (revision 1).
    Add {
        name: String,
        #[command(flatten)]
        flags: ScriptFlags,
    },
    /// A new revision of a script; the inputs, packages and description not given are kept.
    Edit {
        name: String,
        #[command(flatten)]
        flags: ScriptFlags,
    },
    /// Every script at its newest revision.
    List,
    /// A script's declarations and body.
    Show {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        revision: Option<i32>,
    },
    /// A script's revisions, newest first.
    Revisions { name: String },
    /// The unified diff between two revisions.
    Diff {
        name: String,
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        from: i32,
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        to: i32,
    },
    /// Attach a file (in `$ATTACH_DIR` as the script runs): a new revision.
    Attach {
        name: String,
        file: PathBuf,
        /// Its name there (default the file's name).
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Remove an attachment: a new revision.
    Detach { name: String, file: String },
    /// Run a stored script on a server: `sactl scripts run web1 deploy -i VERSION=1.4 --wait`.
    Run {
        server: String,
        name: String,
        /// Default the newest.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        revision: Option<i32>,
        /// An input value, NAME=VALUE (repeatable; sent as text); `NAME=@secret:S` names a
        /// stored secret.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Follow the log and exit with the action's exit code.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum TemplatesCmd {
    /// A new template from a JSON document (`@FILE`: from a file, `-`: stdin):
    /// `{"boot": [{"name", "revision"?}], "operational": [...], "decommission": [...],
    /// "inputs": {...}}`.
    Add {
        name: String,
        #[arg(long)]
        json: String,
    },
    /// A new revision of a template: the whole document, as for add.
    Set {
        name: String,
        #[arg(long)]
        json: String,
    },
    List,
    Show {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        revision: Option<i32>,
    },
}

#[derive(Subcommand)]
enum DeploymentsCmd {
    Add {
        name: String,
        /// An input value, NAME=VALUE (repeatable); `NAME=@secret:S` names a stored secret.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
    },
    List,
    /// Its inputs and servers.
    Show {
        name: String,
    },
    /// Change input values: the given ones over the current.
    Set {
        name: String,
        /// An input value, NAME=VALUE (repeatable); `NAME=@secret:S` names a stored secret.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Remove an input value (repeatable).
        #[arg(long)]
        unset: Vec<String>,
    },
    /// A new deployment with NAME's inputs and the given ones over them.
    Clone {
        name: String,
        new: String,
        /// An input value, NAME=VALUE (repeatable).
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
    },
    /// Remove a deployment (refused while servers belong to it).
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum RunsCmd {
    /// Runs, newest first.
    List,
    /// A run's actions and counts.
    Show { id: i64 },
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
    /// Set a server's template, deployment and input values:
    /// `sactl servers place web7 --template web --deployment prod -i PORT=8080`.
    Place {
        name: String,
        #[arg(long, conflicts_with = "no_template")]
        template: Option<String>,
        /// Take the server out of its template.
        #[arg(long)]
        no_template: bool,
        #[arg(long, conflicts_with = "no_deployment")]
        deployment: Option<String>,
        /// Take the server out of its deployment.
        #[arg(long)]
        no_deployment: bool,
        /// An input value, NAME=VALUE (repeatable; over the server's current ones);
        /// `NAME=@secret:S` names a stored secret.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Remove one of the server's input values (repeatable).
        #[arg(long)]
        unset: Vec<String>,
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
        Cmd::Scripts(cmd) => return scripts(&client, cmd).await,
        Cmd::Templates(cmd) => templates(&client, cmd).await?,
        Cmd::Deployments(cmd) => deployments(&client, cmd).await?,
        Cmd::Runs(cmd) => return runs(&client, cmd).await,
        Cmd::Boot {
            server,
            template,
            revision,
            inputs,
            wait,
        } => {
            let spec = ActionSpec::RunBoot(RunBootParams {
                template: template.map(|name| ScriptRef { name, revision }),
                inputs: input_values(&inputs)?,
                ..Default::default()
            });
            let action = client
                .submit_action(&ActionRequest::new(&server, &spec))
                .await?;
            return submitted(&client, &action, wait, " (run_boot)").await;
        }
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
            tags,
            deployment,
            servers,
            concurrency,
            max_failures,
            max_fail_percent,
            script,
        } => {
            let target = fleet_target(&tags, deployment.as_deref(), &servers)?;
            match (&server, &target) {
                (Some(_), Some(_)) => bail!(
                    "server: give SERVER or one of --servers, --tag, --deployment (a fleet run), not both"
                ),
                (None, None) => bail!(
                    "server: missing (sactl run SERVER -- SCRIPT, or a fleet run with --servers a,b, --tag K=V or --deployment D)"
                ),
                (Some(_), None) => {
                    for (flag, given) in [
                        ("--concurrency", concurrency.is_some()),
                        ("--max-failures", max_failures.is_some()),
                        ("--max-fail-percent", max_fail_percent.is_some()),
                    ] {
                        if given {
                            bail!("{flag}: only for a fleet run (--servers, --tag or --deployment)");
                        }
                    }
                }
                (None, Some(_)) => {
                    if urgent {
                        bail!("--urgent: not for a fleet run");
                    }
                    if idempotency_key.is_some() {
                        bail!("--idempotency-key: not for a fleet run");
                    }
                }
            }
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
            let params = RunScriptParams {
                script,
                env: vars,
                secrets: hidden,
                ..Default::default()
            };
            let Some(server) = server else {
                // A fleet run (`target` is given: checked above); it is always followed.
                let mut body = json!({
                    "target": target,
                    "kind": "run_script",
                    "params": serde_json::to_value(&params)?,
                });
                for (k, v) in [
                    ("concurrency", concurrency),
                    ("max_failures", max_failures),
                    ("max_fail_percent", max_fail_percent),
                    ("timeout_s", timeout),
                ] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                return fleet_run(&client, &body).await;
            };
            let spec = ActionSpec::RunScript(params);
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
        ServersCmd::Place {
            name,
            template,
            no_template,
            deployment,
            no_deployment,
            inputs,
            unset,
        } => {
            let path = format!("/v1/servers/{}", urlencode(&name));
            let mut body = json!({});
            match (template, no_template) {
                (Some(t), _) => body["template"] = json!(t),
                (None, true) => body["template"] = Value::Null,
                (None, false) => {}
            }
            match (deployment, no_deployment) {
                (Some(d), _) => body["deployment"] = json!(d),
                (None, true) => body["deployment"] = Value::Null,
                (None, false) => {}
            }
            if !inputs.is_empty() || !unset.is_empty() {
                let current = client.get(&path).await?;
                let merged = merge_inputs(
                    &current["inputs"],
                    &inputs,
                    &unset,
                    &format!("server {name}"),
                )?;
                body["inputs"] = Value::Object(merged);
            }
            if body.as_object().is_some_and(|b| b.is_empty()) {
                bail!("nothing to change: give --template, --no-template, --deployment, --no-deployment, -i NAME=VALUE or --unset NAME");
            }
            let s = client.patch(&path, &body).await?;
            println!(
                "{name}: template {}, deployment {}, inputs {}",
                s["template"].as_str().unwrap_or("-"),
                s["deployment"].as_str().unwrap_or("-"),
                show_inputs(&s["inputs"])
            );
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

/// Input values from `-i NAME=VALUE` (sent as text, a number too; `@secret:S` names a stored
/// secret).
fn input_values(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for kv in pairs {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("-i: {kv:?} is not NAME=VALUE");
        };
        if k.is_empty() {
            bail!("-i: {kv:?} has no NAME");
        }
        out.insert(k.to_string(), input_value("-i", v)?);
    }
    Ok(out)
}

/// One input value: `@secret:S` is `{"secret_ref": S}`, anything else its text.
fn input_value(flag: &str, v: &str) -> anyhow::Result<Value> {
    match v.strip_prefix("@secret:") {
        Some("") => bail!("{flag}: {v:?}: @secret: needs a stored secret's name"),
        Some(name) => Ok(json!({ "secret_ref": name })),
        None => Ok(json!(v)),
    }
}

/// `current` (a JSON object of input values, of `what`) with `-i` pairs over it and the
/// `--unset` names removed.
fn merge_inputs(
    current: &Value,
    pairs: &[String],
    unset: &[String],
    what: &str,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for name in unset {
        if merged.remove(name).is_none() {
            bail!("--unset {name}: {what} has no input {name}");
        }
    }
    for (k, v) in input_values(pairs)? {
        merged.insert(k, v);
    }
    Ok(merged)
}

/// An input value as `-i` takes it.
fn show_value(v: &Value) -> String {
    match (v.as_str(), v["secret_ref"].as_str()) {
        (Some(s), _) => s.to_string(),
        (None, Some(r)) => format!("@secret:{r}"),
        (None, None) => v.to_string(),
    }
}

/// A JSON object of input values as `K=V K=V`, `-` when there is none.
fn show_inputs(v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", show_value(v)))
        .collect();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(" ")
    }
}

/// A JSON argument: the text itself, `@FILE` a file's, `-` stdin's.
fn json_arg(flag: &str, arg: &str) -> anyhow::Result<Value> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else if let Some(f) = arg.strip_prefix('@') {
        std::fs::read_to_string(f).with_context(|| format!("{flag}: cannot read {f}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).with_context(|| format!("{flag}: not JSON"))
}

/// `--input NAME:TYPE[:DEFAULT]`.
fn input_decl(spec: &str) -> anyhow::Result<InputDecl> {
    let mut parts = spec.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let ty = parts.next().unwrap_or_default();
    if name.is_empty() || ty.is_empty() {
        bail!("--input: {spec:?} is not NAME:TYPE[:DEFAULT]");
    }
    let Ok(ty) = serde_json::from_value::<InputType>(json!(ty)) else {
        bail!(
            "--input {spec:?}: type {ty:?} is not one of text, secret, number, choice, server_address, cluster_master"
        );
    };
    let default = match parts.next() {
        Some(d) => Some(input_value("--input", d)?),
        None => None,
    };
    Ok(InputDecl {
        name: name.to_string(),
        ty,
        default,
        required: false,
        choices: Vec::new(),
        description: None,
    })
}

/// The body of `scripts add` (`head` none) or `scripts edit` (`head`: the newest revision,
/// which supplies the inputs, packages and description the flags leave out).
fn script_doc(name: &str, flags: ScriptFlags, head: Option<&Value>) -> anyhow::Result<Value> {
    let body = std::fs::read_to_string(&flags.file)
        .with_context(|| format!("--file: cannot read {}", flags.file.display()))?;
    let mut inputs: Vec<InputDecl> = match (&flags.inputs_json, head) {
        (Some(j), _) => serde_json::from_value(json_arg("--inputs-json", j)?).context(
            "--inputs-json: not a list of inputs [{\"name\", \"type\", \"default\"?, \"required\"?, \"choices\"?, \"description\"?}]",
        )?,
        (None, _) if !flags.inputs.is_empty() => flags
            .inputs
            .iter()
            .map(|s| input_decl(s))
            .collect::<anyhow::Result<_>>()?,
        (None, Some(h)) => serde_json::from_value(h["inputs"].clone())
            .context("the script's current inputs (give --input or --inputs-json)")?,
        (None, None) => Vec::new(),
    };
    for n in &flags.required {
        let Some(d) = inputs.iter_mut().find(|d| &d.name == n) else {
            bail!("--required {n}: no input {n} (declare it with --input {n}:TYPE)");
        };
        d.required = true;
    }
    for c in &flags.choices {
        let Some((n, list)) = c.split_once('=') else {
            bail!("--choices: {c:?} is not NAME=a,b,c");
        };
        let Some(d) = inputs.iter_mut().find(|d| d.name == n) else {
            bail!("--choices {c}: no input {n} (declare it with --input {n}:choice)");
        };
        d.choices = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if d.choices.is_empty() {
            bail!("--choices {c}: no choices listed");
        }
    }
    let packages: Vec<String> = match head {
        Some(h) if flags.packages.is_empty() => {
            serde_json::from_value(h["packages"].clone()).unwrap_or_default()
        }
        _ => flags.packages,
    };
    let description = flags
        .description
        .or_else(|| head.and_then(|h| h["description"].as_str().map(String::from)));
    let doc = ScriptDoc {
        // On `PUT` the path names it (an empty name is left out).
        name: if head.is_some() {
            String::new()
        } else {
            name.to_string()
        },
        body,
        description,
        inputs,
        packages,
    };
    Ok(serde_json::to_value(&doc)?)
}

/// One revision of a script, readably: its declarations, then its body.
fn print_script(s: &Value) {
    println!(
        "script {} revision {} by {} at {}",
        s["script"].as_str().unwrap_or_default(),
        s["revision"],
        s["created_by"].as_str().unwrap_or_default(),
        s["created_at"].as_str().unwrap_or_default()
    );
    if let Some(d) = s["description"].as_str() {
        println!("description: {d}");
    }
    for i in s["inputs"].as_array().into_iter().flatten() {
        let mut line = format!(
            "input {:<24} {:<14}",
            i["name"].as_str().unwrap_or_default(),
            i["type"].as_str().unwrap_or_default()
        );
        if i["required"] == true {
            line.push_str(" required");
        }
        if !i["default"].is_null() {
            line.push_str(&format!(" default={}", show_value(&i["default"])));
        }
        let choices: Vec<&str> = i["choices"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !choices.is_empty() {
            line.push_str(&format!(" choices={}", choices.join(",")));
        }
        if let Some(d) = i["description"].as_str() {
            line.push_str(&format!("  # {d}"));
        }
        println!("{}", line.trim_end());
    }
    let packages: Vec<&str> = s["packages"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !packages.is_empty() {
        println!("packages: {}", packages.join(" "));
    }
    for a in s["attachments"].as_array().into_iter().flatten() {
        println!(
            "attachment {:<30} {:>12} bytes  sha256 {}",
            a["file"].as_str().unwrap_or_default(),
            a["size"],
            a["sha256"].as_str().unwrap_or_default()
        );
    }
    println!("---");
    let body = s["body"].as_str().unwrap_or_default();
    print!("{body}");
    if !body.ends_with('\n') {
        println!();
    }
}

/// A list of script references: `a,b@3`, `-` when empty.
fn script_refs(v: &Value) -> String {
    let refs: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default();
            match r["revision"].as_i64() {
                Some(n) => format!("{name}@{n}"),
                None => name.to_string(),
            }
        })
        .collect();
    if refs.is_empty() {
        "-".into()
    } else {
        refs.join(",")
    }
}

async fn scripts(client: &Client, cmd: ScriptsCmd) -> anyhow::Result<ExitCode> {
    let path = |name: &str| format!("/v1/scripts/{}", urlencode(name));
    match cmd {
        ScriptsCmd::Add { name, flags } => {
            let body = script_doc(&name, flags, None)?;
            let (_, s) = client.post("/v1/scripts", &body).await?;
            println!("added script {name}: revision {}", s["revision"]);
        }
        ScriptsCmd::Edit { name, flags } => {
            let head = client.script(&name, None).await?;
            let body = script_doc(&name, flags, Some(&head))?;
            let s = client.put(&path(&name), &body).await?;
            println!("{name}: revision {}", s["revision"]);
        }
        ScriptsCmd::List => {
            let v = client.get("/v1/scripts").await?;
            println!(
                "{:<24} {:>4}  {:<30} {:<20} {:>6}  DESCRIPTION",
                "NAME", "REV", "INPUTS", "PACKAGES", "FILES"
            );
            for s in v["scripts"].as_array().into_iter().flatten() {
                let names = |k: &str, field: Option<&str>| -> String {
                    let list: Vec<&str> = s[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| match field {
                            Some(f) => x[f].as_str(),
                            None => x.as_str(),
                        })
                        .collect();
                    if list.is_empty() {
                        "-".into()
                    } else {
                        list.join(",")
                    }
                };
                println!(
                    "{:<24} {:>4}  {:<30} {:<20} {:>6}  {}",
                    s["script"].as_str().unwrap_or_default(),
                    s["revision"].as_i64().unwrap_or_default(),
                    names("inputs", Some("name")),
                    names("packages", None),
                    s["attachments"].as_array().map_or(0, Vec::len),
                    s["description"]
                        .as_str()
                        .and_then(|d| d.lines().next())
                        .unwrap_or_default()
                );
            }
        }
        ScriptsCmd::Show { name, revision } => {
            print_script(&client.script(&name, revision).await?);
        }
        ScriptsCmd::Revisions { name } => {
            let v = client.get(&format!("{}/revisions", path(&name))).await?;
            println!(
                "{:>4}  {:<20} {:<25} {:>6} {:>6}  DESCRIPTION",
                "REV", "BY", "CREATED", "INPUTS", "FILES"
            );
            for s in v["revisions"].as_array().into_iter().flatten() {
                println!(
                    "{:>4}  {:<20} {:<25} {:>6} {:>6}  {}",
                    s["revision"].as_i64().unwrap_or_default(),
                    s["created_by"].as_str().unwrap_or_default(),
                    s["created_at"].as_str().unwrap_or_default(),
                    s["inputs"].as_array().map_or(0, Vec::len),
                    s["attachments"].as_array().map_or(0, Vec::len),
                    s["description"]
                        .as_str()
                        .and_then(|d| d.lines().next())
                        .unwrap_or_default()
                );
            }
        }
        ScriptsCmd::Diff { name, from, to } => {
            let v = client
                .get(&format!("{}/diff?from={from}&to={to}", path(&name)))
                .await?;
            print!("{}", v["diff"].as_str().unwrap_or_default());
        }
        ScriptsCmd::Attach {
            name,
            file,
            as_name,
        } => {
            let file_name = match as_name {
                Some(n) => n,
                None => match file.file_name().and_then(|f| f.to_str()) {
                    Some(f) => f.to_string(),
                    None => bail!(
                        "--as: give the attachment's name ({} has no UTF-8 file name)",
                        file.display()
                    ),
                },
            };
            let bytes = std::fs::read(&file)
                .with_context(|| format!("FILE: cannot read {}", file.display()))?;
            let (_, s) = client
                .put_bytes(
                    &format!("{}/attachments/{}", path(&name), urlencode(&file_name)),
                    bytes,
                )
                .await?;
            println!("{name}: attached {file_name}: revision {}", s["revision"]);
        }
        ScriptsCmd::Detach { name, file } => {
            let v = client
                .delete_json(&format!("{}/attachments/{}", path(&name), urlencode(&file)))
                .await?;
            println!("{name}: detached {file}: revision {}", v["revision"]);
        }
        ScriptsCmd::Run {
            server,
            name,
            revision,
            inputs,
            wait,
        } => {
            let spec = ActionSpec::RunScript(RunScriptParams {
                script_ref: Some(ScriptRef { name, revision }),
                inputs: input_values(&inputs)?,
                ..Default::default()
            });
            let action = client
                .submit_action(&ActionRequest::new(&server, &spec))
                .await?;
            return submitted(client, &action, wait, " (run_script)").await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn templates(client: &Client, cmd: TemplatesCmd) -> anyhow::Result<()> {
    let path = |name: &str| format!("/v1/templates/{}", urlencode(name));
    let doc = |json: &str| -> anyhow::Result<serde_json::Map<String, Value>> {
        match json_arg("--json", json)? {
            Value::Object(m) => Ok(m),
            _ => bail!("--json: not a JSON object"),
        }
    };
    match cmd {
        TemplatesCmd::Add { name, json } => {
            let mut body = doc(&json)?;
            body.insert("name".into(), json!(name));
            let (_, t) = client.post("/v1/templates", &Value::Object(body)).await?;
            println!("added template {name}: revision {}", t["revision"]);
        }
        TemplatesCmd::Set { name, json } => {
            let mut body = doc(&json)?;
            body.remove("name");
            let t = client.put(&path(&name), &Value::Object(body)).await?;
            println!("{name}: revision {}", t["revision"]);
        }
        TemplatesCmd::List => {
            let v = client.get("/v1/templates").await?;
            println!(
                "{:<24} {:>4}  {:<30} {:<30} DECOMMISSION",
                "NAME", "REV", "BOOT", "OPERATIONAL"
            );
            for t in v["templates"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>4}  {:<30} {:<30} {}",
                    t["template"].as_str().unwrap_or_default(),
                    t["revision"].as_i64().unwrap_or_default(),
                    script_refs(&t["boot"]),
                    script_refs(&t["operational"]),
                    script_refs(&t["decommission"])
                );
            }
        }
        TemplatesCmd::Show { name, revision } => {
            let mut p = path(&name);
            if let Some(r) = revision {
                p.push_str(&format!("?revision={r}"));
            }
            println!("{}", serde_json::to_string_pretty(&client.get(&p).await?)?);
        }
    }
    Ok(())
}

async fn deployments(client: &Client, cmd: DeploymentsCmd) -> anyhow::Result<()> {
    let path = |name: &str| format!("/v1/deployments/{}", urlencode(name));
    match cmd {
        DeploymentsCmd::Add { name, inputs } => {
            let body = json!({"name": name, "inputs": input_values(&inputs)?});
            client.post("/v1/deployments", &body).await?;
            println!("added deployment {name}");
        }
        DeploymentsCmd::List => {
            let v = client.get("/v1/deployments").await?;
            println!("{:<24} INPUTS", "NAME");
            for d in v["deployments"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {}",
                    d["name"].as_str().unwrap_or_default(),
                    show_inputs(&d["inputs"])
                );
            }
        }
        DeploymentsCmd::Show { name } => {
            let v = client.deployment(&name).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DeploymentsCmd::Set {
            name,
            inputs,
            unset,
        } => {
            if inputs.is_empty() && unset.is_empty() {
                bail!("nothing to change: give -i NAME=VALUE or --unset NAME");
            }
            let current = client.deployment(&name).await?;
            let merged = merge_inputs(
                &current["inputs"],
                &inputs,
                &unset,
                &format!("deployment {name}"),
            )?;
            let v = client
                .patch(&path(&name), &json!({ "inputs": merged }))
                .await?;
            println!("{name}: {}", show_inputs(&v["inputs"]));
        }
        DeploymentsCmd::Clone { name, new, inputs } => {
            let body = json!({"name": new, "inputs": input_values(&inputs)?});
            let (_, v) = client
                .post(&format!("{}/clone", path(&name)), &body)
                .await?;
            println!("cloned {name} as {new}: {}", show_inputs(&v["inputs"]));
        }
        DeploymentsCmd::Rm { name } => {
            client.delete(&path(&name)).await?;
            println!("removed deployment {name}");
        }
    }
    Ok(())
}

/// A fleet run's target from `--tag`, `--deployment`, `--servers` (none: not a fleet run).
fn fleet_target(
    tags: &[String],
    deployment: Option<&str>,
    servers: &[String],
) -> anyhow::Result<Option<Value>> {
    let given: Vec<&str> = [
        ("--servers", !servers.is_empty()),
        ("--tag", !tags.is_empty()),
        ("--deployment", deployment.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, g)| g.then_some(flag))
    .collect();
    if given.len() > 1 {
        bail!(
            "{}: give only one of --servers, --tag, --deployment",
            given.join(" and ")
        );
    }
    if !servers.is_empty() {
        let names: Vec<&str> = servers.iter().map(|s| s.trim()).collect();
        if names.iter().any(|s| s.is_empty()) {
            bail!("--servers: an empty name in the list (a,b,c)");
        }
        return Ok(Some(json!({ "servers": names })));
    }
    if !tags.is_empty() {
        let mut t = serde_json::Map::new();
        for pair in tags {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--tag: {pair:?} is not KEY=VALUE"))?;
            t.insert(k.into(), json!(v));
        }
        return Ok(Some(json!({ "tags": t })));
    }
    Ok(deployment.map(|d| json!({ "deployment": d })))
}

/// A run's target as text: `servers a,b`, `tags k=v`, `deployment d`.
fn show_target(t: &Value) -> String {
    if let Some(s) = t["servers"].as_array() {
        let names: Vec<&str> = s.iter().filter_map(Value::as_str).collect();
        format!("servers {}", names.join(","))
    } else if let Some(tags) = t["tags"].as_object() {
        let pairs: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}={}", show_value(v)))
            .collect();
        format!("tags {}", pairs.join(","))
    } else if let Some(d) = t["deployment"].as_str() {
        format!("deployment {d}")
    } else {
        t.to_string()
    }
}

/// Whether an action of a run's page has ended.
fn run_action_ended(a: &Value) -> bool {
    a["finished_at"].is_string()
        || serde_json::from_value::<Status>(a["status"].clone()).is_ok_and(|s| s.is_terminal())
}

/// An action of a run: `web3  succeeded  exit 0  action 17`.
fn run_action_line(a: &Value, width: usize) -> String {
    let mut line = format!(
        "{:<width$}  {:<9}",
        a["server"].as_str().unwrap_or_default(),
        a["status"].as_str().unwrap_or_default()
    );
    if let Some(c) = a["exit_code"].as_i64() {
        line.push_str(&format!("  exit {c}"));
    }
    line.push_str(&format!("  action {}", a["id"]));
    if let Some(e) = a["error"].as_str().and_then(|e| e.lines().next()) {
        line.push_str(&format!("  ({e})"));
    }
    line
}

/// `run 4: 20 actions: 16 succeeded, 2 failed, 2 cancelled (why it stopped)`.
fn run_summary(run: &Value) -> String {
    let total = run["total"]
        .as_i64()
        .unwrap_or_else(|| run["actions"].as_array().map_or(0, |a| a.len() as i64));
    let mut line = format!(
        "run {}: {total} action{}",
        run["id"],
        if total == 1 { "" } else { "s" }
    );
    let parts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|s| {
            let n = run["counts"][s.as_str()].as_i64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    if !parts.is_empty() {
        line.push_str(": ");
        line.push_str(&parts.join(", "));
    }
    if let Some(r) = run["stopped_reason"].as_str() {
        line.push_str(&format!(" ({r})"));
    }
    line
}

/// 0 when every action of the run succeeded, else 1.
fn run_exit_code(run: &Value) -> ExitCode {
    let all_ok = run["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|a| a["status"] == "succeeded");
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The width of a run's server column.
fn server_width(run: &Value) -> usize {
    run["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["server"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Submit a fleet run and follow it to its end: each action's line as it ends, then the
/// summary. Exit status 1 when any action did not succeed.
async fn fleet_run(client: &Client, body: &Value) -> anyhow::Result<ExitCode> {
    let created = client.create_run(body).await?;
    let id = created["run"]["id"]
        .as_i64()
        .context("unexpected answer from the api: no run id")?;
    eprintln!(
        "run {id}: {} actions on {}",
        created["actions"].as_array().map_or(0, Vec::len),
        show_target(&created["run"]["target"])
    );
    let mut printed = std::collections::BTreeSet::new();
    loop {
        let run = client.run(id).await?;
        let width = server_width(&run);
        for a in run["actions"].as_array().into_iter().flatten() {
            if run_action_ended(a) && printed.insert(a["id"].as_i64().unwrap_or_default()) {
                println!("{}", run_action_line(a, width));
            }
        }
        if !run["finished_at"].is_null() {
            println!("{}", run_summary(&run));
            return Ok(run_exit_code(&run));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn runs(client: &Client, cmd: RunsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCmd::List => {
            println!(
                "{:>6}  {:<12} {:<30} {:>5} {:>5}  {:<20} {:<25} STATE",
                "ID", "KIND", "TARGET", "TOTAL", "CONC", "BY", "CREATED"
            );
            for r in client.runs().await? {
                let state = match (r["finished_at"].as_str(), r["stopped_reason"].as_str()) {
                    (_, Some(reason)) => format!("stopped: {reason}"),
                    (Some(at), None) => format!("finished {at}"),
                    (None, None) => "running".into(),
                };
                println!(
                    "{:>6}  {:<12} {:<30} {:>5} {:>5}  {:<20} {:<25} {state}",
                    r["id"].as_i64().unwrap_or_default(),
                    r["kind"].as_str().unwrap_or_default(),
                    show_target(&r["target"]),
                    r["total"].as_i64().unwrap_or_default(),
                    r["concurrency"].as_i64().unwrap_or_default(),
                    r["submitted_by"].as_str().unwrap_or_default(),
                    r["created_at"].as_str().unwrap_or_default()
                );
            }
        }
        RunsCmd::Show { id } => {
            let run = client.run(id).await?;
            let mut limits = vec![format!("concurrency {}", run["concurrency"])];
            if let Some(m) = run["max_failures"].as_i64() {
                limits.push(format!("max_failures {m}"));
            }
            if let Some(p) = run["max_fail_percent"].as_i64() {
                limits.push(format!("max_fail_percent {p}%"));
            }
            println!(
                "run {id}: {} on {}, {}; by {} at {}; {}",
                run["kind"].as_str().unwrap_or_default(),
                show_target(&run["target"]),
                limits.join(", "),
                run["submitted_by"].as_str().unwrap_or_default(),
                run["created_at"].as_str().unwrap_or_default(),
                match run["finished_at"].as_str() {
                    Some(at) => format!("finished {at}"),
                    None => "running".into(),
                }
            );
            let width = server_width(&run);
            for a in run["actions"].as_array().into_iter().flatten() {
                println!("{}", run_action_line(a, width));
            }
            println!("{}", run_summary(&run));
            if !run["finished_at"].is_null() {
                return Ok(run_exit_code(&run));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
