//! What an action does: one typed value per kind (`ActionSpec`), parsed once where it enters
//! (`ActionSpec::parse`: the api, the scheduler's defaults), stored as the `kind` and `params`
//! columns and decoded once where rows are read (`FromRow`). Each kind's file in
//! `worker/src/actions/` receives its own params.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    action::ActionKind,
    scripts::{ResolvedInput, ScriptRef},
    validate::{self, FieldError},
};

/// An action's kind with its params; serialized as `{"kind": ..., "params": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case")]
pub enum ActionSpec {
    RunScript(RunScriptParams),
    RunBoot(RunBootParams),
    DbStatus(NoParams),
    DbConfigureMaster(ConfigureMasterParams),
    DbConfigureSlave(ConfigureSlaveParams),
    DbPromote(PromoteParams),
    DbFailover(FailoverParams),
    DbChecksum(ChecksumParams),
    DbBackup(BackupParams),
    DbRestore(RestoreParams),
    DbVerifyBackup(VerifyParams),
    ServerLaunch(LaunchParams),
    ServerTerminate(NoParams),
    DbLaunchSlave(LaunchSlaveParams),
    DbLaunchMaster(LaunchMasterParams),
}

impl ActionSpec {
    /// A kind and its params as a client sent them: every error names its field (`kind`,
    /// `params.<field>`). Missing or null params are `{}`.
    pub fn parse(kind: &str, params: Option<Value>) -> Result<Self, FieldError> {
        let kind: ActionKind = kind.parse().map_err(|e| FieldError::new("kind", e))?;
        let params = match params {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p) => p,
        };
        let spec = Self::from_parts(kind.as_str(), params)?;
        spec.validate()?;
        Ok(spec)
    }

    /// A stored kind and params (validated when they were stored).
    pub fn from_parts(kind: &str, params: Value) -> Result<Self, FieldError> {
        let mut body = serde_json::Map::new();
        body.insert("kind".into(), Value::String(kind.into()));
        body.insert("params".into(), params);
        serde_path_to_error::deserialize(Value::Object(body)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let field = validate::serde_field(&path, &inner, "params");
            FieldError::new(field, format!("{inner} (in {kind} params)"))
        })
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            ActionSpec::RunScript(_) => ActionKind::RunScript,
            ActionSpec::RunBoot(_) => ActionKind::RunBoot,
            ActionSpec::DbStatus(_) => ActionKind::DbStatus,
            ActionSpec::DbConfigureMaster(_) => ActionKind::DbConfigureMaster,
            ActionSpec::DbConfigureSlave(_) => ActionKind::DbConfigureSlave,
            ActionSpec::DbPromote(_) => ActionKind::DbPromote,
            ActionSpec::DbFailover(_) => ActionKind::DbFailover,
            ActionSpec::DbChecksum(_) => ActionKind::DbChecksum,
            ActionSpec::DbBackup(_) => ActionKind::DbBackup,
            ActionSpec::DbRestore(_) => ActionKind::DbRestore,
            ActionSpec::DbVerifyBackup(_) => ActionKind::DbVerifyBackup,
            ActionSpec::ServerLaunch(_) => ActionKind::ServerLaunch,
            ActionSpec::ServerTerminate(_) => ActionKind::ServerTerminate,
            ActionSpec::DbLaunchSlave(_) => ActionKind::DbLaunchSlave,
            ActionSpec::DbLaunchMaster(_) => ActionKind::DbLaunchMaster,
        }
    }

    /// The params as stored in the `params` column.
    pub fn params(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("params serialize");
        v["params"].take()
    }

    /// The cluster the action names, and whether it is the action that makes its server a
    /// member (configure, restore as master or slave). Any other DB action that names one
    /// runs only on a server that is already a member of it.
    pub fn cluster(&self) -> Option<(&str, bool)> {
        match self {
            ActionSpec::DbConfigureMaster(p) => Some((&p.cluster, true)),
            ActionSpec::DbConfigureSlave(p) => Some((&p.cluster, true)),
            ActionSpec::DbRestore(p) => Some((&p.cluster, true)),
            ActionSpec::DbChecksum(p) => Some((&p.cluster, false)),
            ActionSpec::DbPromote(PromoteParams {
                cluster: Some(c), ..
            }) => Some((c, false)),
            ActionSpec::DbFailover(p) => Some((&p.cluster, false)),
            ActionSpec::DbLaunchSlave(p) => Some((&p.cluster, true)),
            ActionSpec::DbLaunchMaster(p) => Some((&p.cluster, true)),
            _ => None,
        }
    }

    /// The cluster whose lock this action holds while it runs, if it changes a topology
    /// (`server_cluster`: its server's cluster).
    pub fn topology_cluster<'a>(&'a self, server_cluster: Option<&'a str>) -> Option<&'a str> {
        match self {
            ActionSpec::DbConfigureMaster(p) => Some(&p.cluster),
            ActionSpec::DbConfigureSlave(p) => Some(&p.cluster),
            ActionSpec::DbRestore(p) => Some(&p.cluster),
            ActionSpec::DbPromote(p) => p.cluster.as_deref().or(server_cluster),
            ActionSpec::DbFailover(p) => Some(&p.cluster),
            ActionSpec::DbLaunchSlave(p) => Some(&p.cluster),
            ActionSpec::DbLaunchMaster(p) => Some(&p.cluster),
            _ => None,
        }
    }

    /// Why this action may not run on a server in `cluster` (`master`: it is that cluster's
    /// master), if it may not: the field to name and the reason. A DB action that names a
    /// cluster runs on one of its members, unless it is the action that makes the server one; a
    /// server never moves between clusters by an action; a master is neither turned into a
    /// slave by configuring nor restored over without `replace`.
    pub fn refusal(&self, server: &str, cluster: Option<&str>, master: bool) -> Option<String> {
        let (named, adds) = self.cluster()?;
        let own = match cluster {
            Some(c) if c == named => true,
            None if adds => false,
            Some(other) => {
                return Some(format!(
                    "server {server:?} is a member of cluster {other:?}, not {named:?}"
                ))
            }
            None => {
                return Some(format!(
                    "server {server:?} is not a member of cluster {named:?} (it is in no cluster)"
                ))
            }
        };
        match self {
            ActionSpec::DbConfigureSlave(_) if own && master => Some(format!(
                "server {server:?} is the master of cluster {named:?}: it cannot become its slave (promote another server first)"
            )),
            ActionSpec::DbRestore(p) if own && master && !p.replace => Some(format!(
                "server {server:?} is the master of cluster {named:?}: a restore replaces its data; give params.replace: true to do it"
            )),
            _ => None,
        }
    }

    /// The rules serde cannot express.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            ActionSpec::RunScript(p) => p.validate(),
            ActionSpec::RunBoot(p) => p.validate(),
            ActionSpec::DbStatus(_) => Ok(()),
            ActionSpec::DbPromote(p) => {
                if let Some(c) = &p.cluster {
                    cluster_name(c)?;
                }
                match &p.replaces {
                    Some(r) => validate::server_name("params.replaces", r),
                    None => Ok(()),
                }
            }
            ActionSpec::DbConfigureMaster(p) => {
                cluster_name(&p.cluster)?;
                match &p.dns_name {
                    Some(n) => validate::address(n)
                        .map_err(|_| FieldError::new("params.dns_name", "must be a DNS name")),
                    None => Ok(()),
                }
            }
            ActionSpec::DbConfigureSlave(p) => cluster_name(&p.cluster),
            ActionSpec::DbFailover(p) => {
                cluster_name(&p.cluster)?;
                validate::server_name("params.replaces", &p.replaces)?;
                match &p.evidence {
                    Some(e) if e.len() > 4000 || e.contains('\0') => Err(FieldError::new(
                        "params.evidence",
                        "params.evidence: at most 4000 characters, no NUL",
                    )),
                    _ => Ok(()),
                }
            }
            ActionSpec::DbChecksum(p) => cluster_name(&p.cluster),
            ActionSpec::DbBackup(p) => p.validate(),
            ActionSpec::DbRestore(p) => p.validate(),
            ActionSpec::DbVerifyBackup(p) => p.validate(),
            ActionSpec::ServerLaunch(p) => validate::server_name("params.profile", &p.profile),
            ActionSpec::ServerTerminate(_) => Ok(()),
            ActionSpec::DbLaunchSlave(p) => {
                cluster_name(&p.cluster)?;
                validate::server_name("params.profile", &p.profile)
            }
            ActionSpec::DbLaunchMaster(p) => {
                cluster_name(&p.cluster)?;
                validate::server_name("params.profile", &p.profile)?;
                if matches!(p.backup, BackupRef::Object { .. }) {
                    return Err(FieldError::new(
                        "params.backup",
                        "a backup id or \"latest\"",
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(feature = "store")]
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ActionSpec {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        let kind: String = row.try_get("kind")?;
        let sqlx::types::Json(params): sqlx::types::Json<Value> = row.try_get("params")?;
        Self::from_parts(&kind, params).map_err(|e| sqlx::Error::ColumnDecode {
            index: "params".into(),
            source: Box::new(e),
        })
    }
}

fn cluster_name(cluster: &str) -> Result<(), FieldError> {
    validate::server_name("params.cluster", cluster)
}

fn lineage_name(lineage: &Option<String>) -> Result<(), FieldError> {
    match lineage {
        Some(l) => validate::server_name("params.lineage", l),
        None => Ok(()),
    }
}

/// Kinds that take no params: only `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// `run_script`: a shell script run by the login shell, with environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunScriptParams {
    /// The script itself; or, instead, `script_ref`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A stored script (its revision pinned at submission: the newest when none is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_ref: Option<ScriptRef>,
    /// The stored script's input values given by this action (the top of the inheritance).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
    /// Filled at submission: every input's value and where it came from (secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<BTreeMap<String, ResolvedInput>>,
    /// Environment that is never shown: a value (stored sealed until the action ends, shown as
    /// `***`) or `{"secret_ref": NAME}` from the secret store. It reaches the script over the
    /// SSH channel, never on a command line, and is masked in the log.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretInput>,
}

/// `run_boot`: a server template's boot scripts, in order, each a step of the log; the first
/// failure stops it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBootParams {
    /// Default: the server's template (its revision pinned at submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ScriptRef>,
    /// Input values above the server's (secrets only as `{"secret_ref"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
    /// Filled at submission: each boot script's pinned revision and resolved inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

impl RunBootParams {
    fn validate(&self) -> Result<(), FieldError> {
        if !self.steps.is_empty() {
            return Err(FieldError::new(
                "params.steps",
                "filled in by ServerActions from the template",
            ));
        }
        if let Some(t) = &self.template {
            t.validate("params.template")?;
        }
        crate::scripts::layer_names("params.inputs", &self.inputs)
    }
}

/// One script of a sequence as an action recorded it: the pinned revision and its inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub script: String,
    pub revision: i32,
    pub inputs: BTreeMap<String, ResolvedInput>,
}

/// A secret value: given here, or named in the secret store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SecretInput {
    Ref(SecretRef),
    /// The value itself; `***` once stored.
    Value(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub secret_ref: String,
}

impl RunScriptParams {
    fn validate(&self) -> Result<(), FieldError> {
        let script = |m: &str| Err(FieldError::new("params.script", m));
        if self.resolved.is_some() {
            return Err(FieldError::new(
                "params.resolved",
                "filled in by ServerActions; give params.inputs",
            ));
        }
        if let Some(r) = &self.script_ref {
            r.validate("params.script_ref")?;
            if !self.script.is_empty() {
                return script("give params.script or params.script_ref, not both");
            }
            if !self.env.is_empty() || !self.secrets.is_empty() {
                return Err(FieldError::new(
                    "params.inputs",
                    "a stored script takes its values as inputs (not env or secrets)",
                ));
            }
            return crate::scripts::layer_names("params.inputs", &self.inputs);
        }
        if !self.inputs.is_empty() {
            return Err(FieldError::new(
                "params.inputs",
                "only with params.script_ref (a pasted script takes env)",
            ));
        }
        if self.script.trim().is_empty() {
            return script("must not be empty");
        }
        if self.script.len() > MAX_SCRIPT_BYTES {
            return script(&format!("is longer than {MAX_SCRIPT_BYTES} bytes"));
        }
        if self.script.contains('\0') {
            return script("must not contain NUL bytes");
        }
        for (name, value) in &self.env {
            let field = format!("params.env.{name}");
            if !validate::is_shell_identifier(name) {
                return Err(FieldError::new(
                    field,
                    "is not a valid environment variable name (letters, digits, _; not starting with a digit)",
                ));
            }
            if value.contains('\0') {
                return Err(FieldError::new(field, "value must not contain NUL bytes"));
            }
        }
        for (name, input) in &self.secrets {
            let field = format!("params.secrets.{name}");
            if !validate::is_shell_identifier(name) {
                return Err(FieldError::new(
                    field,
                    "is not a valid environment variable name (letters, digits, _; not starting with a digit)",
                ));
            }
            if self.env.contains_key(name) {
                return Err(FieldError::new(field, "is also in params.env"));
            }
            match input {
                SecretInput::Value(v) if v.contains('\0') => {
                    return Err(FieldError::new(field, "value must not contain NUL bytes"))
                }
                SecretInput::Ref(r) => {
                    validate::server_name(&format!("{field}.secret_ref"), &r.secret_ref)?
                }
                SecretInput::Value(_) => {}
            }
        }
        Ok(())
    }
}

/// `db_configure_master`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureMasterParams {
    pub cluster: String,
    /// The master's DNS record (default `<cluster>-master`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// Switch binlog_format to ROW.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fix: bool,
}

/// Where a new slave's data comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlaveSource {
    /// A copy of the master's databases (`mysqldump` streamed through the worker).
    #[default]
    Master,
    /// The cluster's latest committed backup.
    Backup,
}

/// `db_configure_slave`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureSlaveParams {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<SlaveSource>,
    /// `false`: do not create the cluster's default backup schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_schedules: Option<bool>,
}

/// `db_promote`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteParams {
    /// Promote although it cannot be proven safe: the master is not proven dead, a slave is
    /// ahead of this one, its relay log is not applied, GTIDs diverge, or the dead master could
    /// not be fenced. Each overridden check is logged.
    #[serde(default)]
    pub force: bool,
    /// A cluster-level promote: the most advanced slave of this cluster is chosen (the action
    /// runs on the cluster's master). Without it, the action's server is the slave promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The master this promote replaces; the api fills in the cluster's master at submission.
    /// If the master has changed by the time it runs (another promote won), it is refused:
    /// two promotes submitted against one master make one change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// `db_failover`: what the watcher submits when a cluster's master is dead (an operator may
/// too): the cluster-level promote of its most advanced slave, never forced, then the cluster's
/// spare (a server tagged `spare_for: <cluster>`) is configured as a slave from the latest
/// backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverParams {
    pub cluster: String,
    /// The dead master: refused if the cluster's master has changed since.
    pub replaces: String,
    /// What the watcher saw, for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Since when the watcher has seen the master unreachable with no slave connected to it:
    /// that much of the `SA_DEAD_MASTER_S` window is not waited again (every slave is still
    /// read afresh first). A time in the future counts as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_since: Option<DateTime<Utc>>,
}

/// `server_launch`: an EC2 instance made from a launch profile, its host key pinned before
/// anything connects. Submitted by `POST /v1/servers/launch`, which registers the server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchParams {
    pub profile: String,
}

/// `db_launch_slave`: launch an instance, make sure mysqld runs there, seed it from the
/// cluster's latest backup (from its master when there is none) and make it a slave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchSlaveParams {
    pub cluster: String,
    pub profile: String,
}

/// `db_launch_master`: launch an instance and restore a backup there as the cluster's master
/// (a cluster rebuilt from its backups alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchMasterParams {
    pub cluster: String,
    pub profile: String,
    #[serde(default = "latest")]
    pub backup: BackupRef,
}

fn latest() -> BackupRef {
    BackupRef::LATEST
}

/// `db_checksum`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChecksumParams {
    pub cluster: String,
}

/// How a backup is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::Type))]
#[cfg_attr(feature = "store", sqlx(type_name = "text", rename_all = "lowercase"))]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Snapshot,
    Mariabackup,
    Logical,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Snapshot => "snapshot",
            Strategy::Mariabackup => "mariabackup",
            Strategy::Logical => "logical",
        }
    }
}

/// `db_backup`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Default: `snapshot` when the server has a snapshot command, else `mariabackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Default: the server's cluster, else the server's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// A slave is backed up only while it replicates and lags at most this (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_s: Option<u32>,
}

impl BackupParams {
    pub const MAX_LAG_S: u32 = 300;

    fn validate(&self) -> Result<(), FieldError> {
        if let Some(t) = &self.tag {
            validate::server_name("params.tag", t)?;
        }
        if self.max_lag_s == Some(0) {
            return Err(FieldError::new(
                "params.max_lag_s",
                "must be at least 1 (seconds)",
            ));
        }
        lineage_name(&self.lineage)
    }
}

/// `"latest"`, a backup id, or `{"object": KEY}`: an object in the bucket, described by the
/// manifest inside it (a restore needs no row in the database: disaster recovery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BackupRef {
    Id(i64),
    Latest(LatestWord),
    Object { object: String },
}

impl BackupRef {
    pub const LATEST: BackupRef = BackupRef::Latest(LatestWord::Latest);
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LatestWord {
    Latest,
}

/// The role a restored server takes in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestoreAs {
    Master,
    Slave,
}

/// `db_restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    pub backup: BackupRef,
    /// With `latest`: the newest backup taken before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    #[serde(rename = "as")]
    pub role: RestoreAs,
    pub cluster: String,
    /// Restore over the cluster's own master (its data is replaced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

impl RestoreParams {
    fn validate(&self) -> Result<(), FieldError> {
        cluster_name(&self.cluster)?;
        lineage_name(&self.lineage)?;
        if let BackupRef::Object { object } = &self.backup {
            if object.is_empty()
                || object.len() > 1024
                || object.starts_with('/')
                || object.starts_with("s3://")
                || object.chars().any(char::is_control)
            {
                return Err(FieldError::new(
                    "params.backup.object",
                    "an object key in the backup bucket, such as \"db1/17/backup.tar.zst\"",
                ));
            }
        }
        if self.before.is_some() && self.backup != BackupRef::LATEST {
            return Err(FieldError::new(
                "params.before",
                "only with \"backup\": \"latest\" (an id names one backup already)",
            ));
        }
        Ok(())
    }
}

/// `db_verify_backup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    pub backup: BackupRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
}

impl VerifyParams {
    fn validate(&self) -> Result<(), FieldError> {
        if matches!(self.backup, BackupRef::Object { .. }) {
            // Its verdict is recorded on the backup's row.
            return Err(FieldError::new(
                "params.backup",
                "a backup id or \"latest\" (an object without its row cannot record a verdict)",
            ));
        }
        lineage_name(&self.lineage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(kind: &str, params: Value) -> String {
        ActionSpec::parse(kind, Some(params)).unwrap_err().field
    }

    #[test]
    fn run_script_params_are_checked_field_by_field() {
        let ok = ActionSpec::parse(
            "run_script",
            Some(json!({"script": "echo hi", "env": {"A_1": "x'$(y)\n"}})),
        )
        .unwrap();
        let ActionSpec::RunScript(p) = &ok else {
            panic!("{ok:?}")
        };
        assert_eq!(p.env["A_1"], "x'$(y)\n");
        let f = |v: Value| field("run_script", v);
        assert_eq!(f(json!({})), "params.script");
        assert_eq!(f(json!({"script": "  "})), "params.script");
        assert_eq!(f(json!({"script": 3})), "params.script");
        assert_eq!(f(json!({"script": "x", "env": []})), "params.env");
        assert_eq!(
            f(json!({"script": "x", "env": {"A B": "1"}})),
            "params.env.A B"
        );
        assert_eq!(
            f(json!({"script": "x", "env": {"1A": "1"}})),
            "params.env.1A"
        );
        assert_eq!(f(json!({"script": "x", "env": {"A": 1}})), "params.env.A");
        assert_eq!(f(json!({"script": "x", "bogus": 1})), "params.bogus");
        assert_eq!(f(json!("x")), "params");
    }

    #[test]
    fn every_kind_names_its_bad_field() {
        assert_eq!(
            ActionSpec::parse("format_disk", None).unwrap_err().field,
            "kind"
        );
        assert_eq!(field("db_status", json!({"x": 1})), "params.x");
        assert_eq!(field("db_promote", json!({"force": "yes"})), "params.force");
        assert_eq!(field("db_configure_master", json!({})), "params.cluster");
        assert_eq!(
            field(
                "db_configure_master",
                json!({"cluster": "c", "from": "master"})
            ),
            "params.from"
        );
        assert_eq!(
            field(
                "db_configure_slave",
                json!({"cluster": "c", "from": "tape"})
            ),
            "params.from"
        );
        assert_eq!(
            field("db_checksum", json!({"cluster": "a/b"})),
            "params.cluster"
        );
        assert_eq!(
            field("db_backup", json!({"strategy": "tape"})),
            "params.strategy"
        );
        assert_eq!(
            field("db_restore", json!({"backup": 1, "cluster": "c"})),
            "params.as"
        );
        assert_eq!(
            field(
                "db_restore",
                json!({"backup": {"object": ""}, "as": "slave", "cluster": "c"})
            ),
            "params.backup.object"
        );
        assert_eq!(
            field(
                "db_restore",
                json!({"backup": 3, "before": "2026-01-01T00:00:00Z", "as": "slave", "cluster": "c"})
            ),
            "params.before"
        );
        assert_eq!(
            field("db_verify_backup", json!({"backup": {"object": "k"}})),
            "params.backup"
        );
    }

    #[test]
    fn specs_round_trip_through_their_stored_columns() {
        let specs = [
            json!({"kind": "run_script", "params": {"script": "true"}}),
            json!({"kind": "db_status"}),
            json!({"kind": "db_promote", "params": {}}),
            json!({"kind": "db_configure_slave", "params": {"cluster": "c", "from": "backup"}}),
            json!({"kind": "db_restore", "params": {"backup": "latest", "as": "master", "cluster": "c"}}),
            json!({"kind": "db_verify_backup", "params": {"backup": 7}}),
        ];
        for s in specs {
            let spec =
                ActionSpec::parse(s["kind"].as_str().unwrap(), s.get("params").cloned()).unwrap();
            assert_eq!(
                spec.kind().as_str(),
                s["kind"],
                "the tag is the kind's name"
            );
            let back = ActionSpec::from_parts(spec.kind().as_str(), spec.params()).unwrap();
            assert_eq!(back, spec);
        }
    }
}
