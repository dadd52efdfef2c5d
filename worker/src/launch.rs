//! Launching a server on EC2, under the launch action files (`server_launch`,
//! `db_launch_slave`, `db_launch_master`), and ending one (`server_terminate`, the `ec2_stop`
//! fence). A launch never connects to a host it cannot verify: the worker makes the instance's
//! ed25519 host key and hands it over in the cloud-init user data (or reads the key the image
//! made from the console), pins it on the server, and waits until SSH answers with that key.
//! Retry-safe: the instance carries the action's id as a tag and is looked up before one is
//! made, so a launch interrupted anywhere makes one instance.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::json;
use shared::{
    db::{
        profiles,
        servers::{self, Server, ServerState},
    },
    launch::{self, AddressKind, HostKeySource},
    ActionKind,
};

use crate::{
    ctx::{ActionError, Ctx},
    ec2::{Ec2Error, Instance, RunRequest},
    ssh::SshError,
    Worker,
};

/// How often the instance and its SSH are polled (the SDK's waiter: every 15 s).
const POLL: Duration = Duration::from_secs(1);

impl From<Ec2Error> for ActionError {
    fn from(e: Ec2Error) -> Self {
        ActionError::Failed(e.to_string())
    }
}

/// Why `action` may not run on `server` as the server is now: only launches run on one being
/// launched, nothing but a terminate on one stopped, nothing on one terminated.
pub fn refusal(action: &shared::Action, server: &Server) -> Option<String> {
    let kind = action.kind();
    let launching = matches!(
        kind,
        ActionKind::ServerLaunch | ActionKind::DbLaunchSlave | ActionKind::DbLaunchMaster
    );
    match server.state {
        ServerState::Registered | ServerState::Running if !launching => None,
        ServerState::Launching | ServerState::Running | ServerState::LaunchFailed if launching => {
            None
        }
        ServerState::Stopped | ServerState::LaunchFailed if kind == ActionKind::ServerTerminate => {
            None
        }
        state => Some(format!(
            "server {:?} is {}: {} cannot run there",
            server.name,
            state.as_str(),
            kind
        )),
    }
}

/// What a launch took, step by step (seconds).
#[derive(Default)]
pub struct Timings {
    /// RunInstances (or finding the instance an earlier attempt made).
    pub request_s: f64,
    /// Until the instance runs with an address.
    pub running_s: f64,
    /// Until SSH answers with the pinned host key.
    pub ssh_s: f64,
    /// A DB launch: until mysqld answers.
    pub mysqld_s: Option<f64>,
}

impl Timings {
    pub fn json(&self) -> serde_json::Value {
        let mut t = json!({"request_s": round(self.request_s), "running_s": round(self.running_s), "ssh_s": round(self.ssh_s)});
        if let Some(m) = self.mysqld_s {
            t["mysqld_s"] = json!(round(m));
        }
        t
    }

    /// From the request to a reachable server (and mysqld answering, for a DB launch).
    pub fn total_s(&self) -> f64 {
        self.request_s + self.running_s + self.ssh_s + self.mysqld_s.unwrap_or(0.0)
    }
}

pub fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// Launch the action's server from `profile`: instance, address, pinned host key, SSH. Returns
/// the server as it is then (`running`).
pub async fn launch(ctx: &Ctx<'_>, profile: &str) -> Result<(Server, Timings), ActionError> {
    let (worker, log, name) = (ctx.worker, &ctx.log, ctx.server.name.as_str());
    let spec = profiles::get(&worker.pool, profile)
        .await?
        .ok_or_else(|| ActionError::Failed(format!("launch profile {profile:?} does not exist")))?
        .spec
        .0;
    let mut t = Timings::default();
    let clock = Instant::now();
    let (instance, generated) = match worker.ec2.launched_by(ctx.action.id).await? {
        Some(i) => {
            log.system(format!(
                "Instance {} made by an earlier attempt of this action is reused ({}).",
                i.id, i.state
            ))
            .await;
            let key = match spec.host_key_source {
                HostKeySource::Generated => Some(handed_over_key(worker, &i.id).await?),
                HostKeySource::Console => None,
            };
            (i, key)
        }
        None => {
            let login = login_key(worker).await?;
            let host_key = match spec.host_key_source {
                HostKeySource::Generated => Some(KeyPair::generate(worker, name).await?),
                HostKeySource::Console => None,
            };
            let user_data = user_data(name, host_key.as_ref(), &login);
            let tags: Vec<(String, String)> = match ctx.server.tags.0.as_object() {
                Some(o) => o
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                    .collect(),
                None => Vec::new(),
            };
            let request = RunRequest {
                profile: &spec,
                server: name,
                action_id: ctx.action.id,
                tags: &tags,
                user_data: &user_data,
            };
            log.system(format!(
                "Launching an instance of {} ({}) in {} from profile {profile} (host key: {}).",
                spec.image_id,
                spec.instance_type,
                spec.subnet_id,
                match spec.host_key_source {
                    HostKeySource::Generated => "made here, handed over in the user data",
                    HostKeySource::Console => "the image's own, read from the console",
                }
            ))
            .await;
            let i = worker.ec2.run(&request).await?;
            (i, host_key.map(|k| k.public))
        }
    };
    servers::set_instance(&worker.pool, name, &instance.id).await?;
    t.request_s = clock.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(worker.cfg.launch_timeout_s);
    let (instance, address) = running(ctx, &instance.id, spec.address, deadline).await?;
    t.running_s = clock.elapsed().as_secs_f64() - t.request_s;
    log.system(format!(
        "Instance {} is running at {address} ({:.1} s).",
        instance.id, t.running_s
    ))
    .await;
    let host_key = match generated {
        Some(k) => k,
        None => console_key(ctx, &instance.id, deadline).await?,
    };
    let db = spec
        .db_server
        .as_ref()
        .map(|d| d.fields(name, &address))
        .unwrap_or_default();
    let db_port = spec.db_server.as_ref().and_then(|d| d.db_port);
    let server =
        servers::set_launched(&worker.pool, name, &address, &host_key, db_port, &db).await?;
    log.system(format!("Host key pinned: {host_key}.")).await;
    let ssh_clock = Instant::now();
    ssh_ready(ctx, &server, deadline).await?;
    t.ssh_s = ssh_clock.elapsed().as_secs_f64();
    servers::set_state(&worker.pool, name, ServerState::Running).await?;
    log.system(format!(
        "SSH answers with the pinned host key ({:.1} s): server {name} is running.",
        t.ssh_s
    ))
    .await;
    let server = Server {
        state: ServerState::Running,
        ..server
    };
    Ok((server, t))
}

/// A DB launch: `launch`, then mysqld answering (`mariadb::server::ensure_mysqld`). A launch
/// that gives up leaves the server `launch_failed`.
pub async fn launch_db(ctx: &Ctx<'_>, profile: &str) -> Result<(Server, Timings), ActionError> {
    let (server, mut t) = match launch(ctx, profile).await {
        Ok(l) => l,
        Err(e) => {
            failed(ctx.worker, &ctx.server.name).await;
            return Err(e);
        }
    };
    let clock = Instant::now();
    crate::mariadb::server::ensure_mysqld(&ctx.on(&server), profile).await?;
    t.mysqld_s = Some(clock.elapsed().as_secs_f64());
    Ok((server, t))
}

/// What a launch action's result says of the instance.
pub fn result(server: &Server, t: &Timings) -> serde_json::Value {
    json!({"instance_id": server.instance_id, "address": server.address, "host_key": server.host_key, "timings": t.json()})
}

/// Mark a launch that gave up: its server cannot be reached (the instance is kept for a retry
/// or a terminate).
pub async fn failed(worker: &Worker, server: &str) {
    if let Err(e) = servers::set_state(&worker.pool, server, ServerState::LaunchFailed).await {
        tracing::warn!(server, error = %e, "launch_failed not recorded");
    }
}

/// Poll until the instance runs and has the address the profile connects to.
async fn running(
    ctx: &Ctx<'_>,
    id: &str,
    kind: AddressKind,
    deadline: Instant,
) -> Result<(Instance, String), ActionError> {
    loop {
        if let Some(i) = ctx.worker.ec2.instance(id).await? {
            if i.ended() {
                return Err(ActionError::Failed(format!(
                    "instance {id} is {} before it ran",
                    i.state
                )));
            }
            let address = match kind {
                AddressKind::Private => i.private_ip.clone(),
                AddressKind::Public => i.public_ip.clone(),
            };
            if let (true, Some(a)) = (i.state == "running", address) {
                return Ok((i, a));
            }
        }
        wait(ctx, deadline, || format!("instance {id} to run")).await?;
    }
}

/// The ed25519 key cloud-init printed on the console, polled until it is there.
async fn console_key(ctx: &Ctx<'_>, id: &str, deadline: Instant) -> Result<String, ActionError> {
    ctx.log
        .system(format!(
            "Reading instance {id}'s host key from its console..."
        ))
        .await;
    loop {
        let console = ctx.worker.ec2.console(id).await?;
        if let Some(key) = launch::console_host_key(&console) {
            return Ok(key);
        }
        wait(ctx, deadline, || {
            format!("instance {id}'s console to show its SSH host keys")
        })
        .await?;
    }
}

/// Poll SSH until it answers with the pinned key. Any other key ends the launch at once.
async fn ssh_ready(ctx: &Ctx<'_>, server: &Server, deadline: Instant) -> Result<(), ActionError> {
    loop {
        match ctx.worker.ssh.exec(server, "true").await {
            Ok(_) => return Ok(()),
            Err(SshError::Connect { reason, .. }) if host_key_refused(&reason) => {
                return Err(ActionError::Failed(format!(
                    "{} answered with a host key other than the one pinned at launch: not connecting ({reason})",
                    server.address
                )))
            }
            Err(e) => {
                let why = e.to_string();
                wait(ctx, deadline, || {
                    format!("SSH on {} to answer (last: {why})", server.address)
                })
                .await?
            }
        }
    }
}

/// OpenSSH's words for a host key that is not the pinned one.
pub fn host_key_refused(reason: &str) -> bool {
    reason.contains("Host key verification failed")
        || reason.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || reason.contains("No ED25519 host key is known")
}

async fn wait(
    ctx: &Ctx<'_>,
    deadline: Instant,
    what: impl FnOnce() -> String,
) -> Result<(), ActionError> {
    if Instant::now() >= deadline {
        return Err(ActionError::Failed(format!(
            "gave up after {} s (SA_LAUNCH_TIMEOUT_S) waiting for {}",
            ctx.worker.cfg.launch_timeout_s,
            what()
        )));
    }
    if ctx.stop.reason().is_some() {
        return Err(ActionError::Stopped);
    }
    tokio::time::sleep(POLL).await;
    Ok(())
}

/// The cloud-init user data: the host key pair and the workers' login key. JSON is YAML, and
/// cloud-init reads it after its `#cloud-config` line.
fn user_data(name: &str, host_key: Option<&KeyPair>, login: &str) -> String {
    let mut cfg = json!({
        "hostname": name,
        "ssh_authorized_keys": [login],
    });
    if let Some(k) = host_key {
        cfg["ssh_deletekeys"] = json!(true);
        cfg["ssh_keys"] = json!({"ed25519_private": k.private, "ed25519_public": k.public});
    }
    format!("#cloud-config\n{cfg}\n")
}

/// The public host key this action handed over (read back from the instance's user data).
async fn handed_over_key(worker: &Worker, id: &str) -> Result<String, ActionError> {
    let data = worker.ec2.user_data(id).await?.unwrap_or_default();
    let cfg: Option<serde_json::Value> = data
        .strip_prefix("#cloud-config\n")
        .and_then(|j| serde_json::from_str(j).ok());
    cfg.as_ref()
        .and_then(|c| c["ssh_keys"]["ed25519_public"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            ActionError::Failed(format!(
                "instance {id} carries no host key of ours in its user data: terminate it and launch again"
            ))
        })
}

/// The workers' login key (`SA_SSH_KEY`), public half.
async fn login_key(worker: &Worker) -> Result<String, ActionError> {
    let key = worker.cfg.ssh_key.as_ref().ok_or_else(|| {
        ActionError::Failed(
            "SA_SSH_KEY is not set: a launched server must authorize the workers' key".into(),
        )
    })?;
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let text = match tokio::fs::read_to_string(&public).await {
        Ok(t) => t,
        Err(_) => keygen(&["-y", "-f"], key).await?,
    };
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

struct KeyPair {
    private: String,
    /// "ssh-ed25519 AAAA..."
    public: String,
}

impl KeyPair {
    /// A fresh ed25519 pair from `ssh-keygen`, made in the worker's private SSH directory and
    /// removed from disk at once.
    async fn generate(worker: &Worker, name: &str) -> Result<Self, ActionError> {
        let path = worker
            .ssh
            .control_dir()
            .join(format!("hostkey-{name}-{}", std::process::id()));
        let _ = tokio::fs::remove_file(&path).await;
        let made = keygen(&["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"], &path).await;
        let pair = async {
            made?;
            let private = tokio::fs::read_to_string(&path).await;
            let public = tokio::fs::read_to_string(path.with_extension("pub")).await;
            match (private, public) {
                (Ok(private), Ok(public)) => Ok(KeyPair {
                    private,
                    public: public
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                }),
                _ => Err(ActionError::Failed("ssh-keygen wrote no key pair".into())),
            }
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        let _ = tokio::fs::remove_file(path.with_extension("pub")).await;
        pair
    }
}

async fn keygen(args: &[&str], path: &Path) -> Result<String, ActionError> {
    let out = tokio::process::Command::new("ssh-keygen")
        .args(args)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ActionError::Failed(format!("running ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(ActionError::Failed(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Terminate the action's server's instance and wait until EC2 says so.
pub async fn terminate(ctx: &Ctx<'_>) -> Result<serde_json::Value, ActionError> {
    let server = ctx.server;
    let id = server
        .instance_id
        .as_deref()
        .ok_or_else(|| ActionError::Failed(format!("server {:?} has no instance", server.name)))?;
    // As the api did: the master may have changed since.
    if server.db_role == Some(servers::DbRole::Master) {
        return Err(ActionError::Failed(format!(
            "server {:?} is the master of cluster {:?}: promote another server first",
            server.name,
            server.cluster.as_deref().unwrap_or("?")
        )));
    }
    ctx.log
        .system(format!("Terminating instance {id} ({})...", server.address))
        .await;
    ctx.worker.ec2.terminate(id).await?;
    let deadline = Instant::now() + Duration::from_secs(ctx.worker.cfg.launch_timeout_s);
    loop {
        match ctx.worker.ec2.instance(id).await? {
            Some(i) if i.state != "terminated" => {}
            _ => break,
        }
        wait(ctx, deadline, || format!("instance {id} to terminate")).await?;
    }
    servers::set_state(&ctx.worker.pool, &server.name, ServerState::Terminated).await?;
    ctx.worker.ssh.forget(&server.name).await;
    ctx.log
        .system(format!(
            "Instance {id} is terminated; server {} is terminated.",
            server.name
        ))
        .await;
    Ok(json!({"instance_id": id}))
}

/// The `ec2_stop` fence of a dead master: `StopInstances` with `Force`, then the state.
pub async fn fence(worker: &Worker, server: &Server) -> Result<String, String> {
    let id = server
        .instance_id
        .as_deref()
        .ok_or_else(|| format!("{} has no instance to stop", server.name))?;
    worker.ec2.stop(id).await.map_err(|e| e.to_string())?;
    servers::set_state(&worker.pool, &server.name, ServerState::Stopped)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("instance {id} stopped (StopInstances, Force)"))
}
