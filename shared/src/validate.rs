//! Input validation shared by the api (which rejects bad requests with a 4xx naming the field)
//! and the worker (which re-checks what it runs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A rejected input: which field, and why. Never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// `run_script` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunScriptParams {
    pub script: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

pub fn run_script_params(params: &Value) -> Result<RunScriptParams, FieldError> {
    let obj = params
        .as_object()
        .ok_or_else(|| FieldError::new("params", "must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "script" | "env")) {
        return Err(FieldError::new(
            format!("params.{k}"),
            "unknown parameter for run_script (expected script, env)",
        ));
    }
    let script = match obj.get("script") {
        None | Some(Value::Null) => return Err(FieldError::new("params.script", "is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(FieldError::new("params.script", "must be a string")),
    };
    if script.trim().is_empty() {
        return Err(FieldError::new("params.script", "must not be empty"));
    }
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(FieldError::new(
            "params.script",
            format!("is longer than {MAX_SCRIPT_BYTES} bytes"),
        ));
    }
    if script.contains('\0') {
        return Err(FieldError::new(
            "params.script",
            "must not contain NUL bytes",
        ));
    }
    let mut env = BTreeMap::new();
    match obj.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let field = format!("params.env.{name}");
                if !is_shell_identifier(name) {
                    return Err(FieldError::new(
                        field,
                        "is not a valid environment variable name (letters, digits, _; not starting with a digit)",
                    ));
                }
                let Value::String(value) = value else {
                    return Err(FieldError::new(field, "value must be a string"));
                };
                if value.contains('\0') {
                    return Err(FieldError::new(field, "value must not contain NUL bytes"));
                }
                env.insert(name.clone(), value.clone());
            }
        }
        Some(_) => {
            return Err(FieldError::new(
                "params.env",
                "must be an object of NAME: \"value\" strings",
            ))
        }
    }
    Ok(RunScriptParams { script, env })
}

/// `db_configure_master` / `db_configure_slave` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterParams {
    pub cluster: String,
    /// The master's DNS record (db_configure_master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// Switch binlog_format to ROW (db_configure_master).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fix: bool,
    /// Where a slave's data comes from: `master` (a copy, the default) or `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `false`: do not create the cluster's default backup schedules (db_configure_slave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_schedules: Option<bool>,
}

/// Params of the kinds that name a cluster (`db_configure_master`, `db_configure_slave`,
/// `db_checksum`): only the parameters of `kind` are accepted.
pub fn cluster_params(kind: &str, params: &Value) -> Result<ClusterParams, FieldError> {
    let obj = params
        .as_object()
        .ok_or_else(|| FieldError::new("params", "must be an object"))?;
    let allowed: &[&str] = match kind {
        "db_configure_master" => &["cluster", "dns_name", "fix"],
        "db_configure_slave" => &["cluster", "from", "default_schedules"],
        _ => &["cluster"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(FieldError::new(
            format!("params.{k}"),
            format!(
                "unknown parameter for {kind} (expected {})",
                allowed.join(", ")
            ),
        ));
    }
    let cluster = match obj.get("cluster") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(FieldError::new("params.cluster", "is required")),
        Some(_) => return Err(FieldError::new("params.cluster", "must be a string")),
    };
    server_name("params.cluster", &cluster)?;
    let dns_name = match obj.get("dns_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            address(s).map_err(|_| FieldError::new("params.dns_name", "must be a DNS name"))?;
            Some(s.clone())
        }
        Some(_) => return Err(FieldError::new("params.dns_name", "must be a string")),
    };
    let fix = match obj.get("fix") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(FieldError::new("params.fix", "must be true or false")),
    };
    let from = match obj.get("from") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "master" || s == "backup" => Some(s.clone()),
        Some(_) => return Err(FieldError::new(
            "params.from",
            "must be \"master\" (a copy of the master) or \"backup\" (the cluster's latest backup)",
        )),
    };
    let default_schedules = match obj.get("default_schedules") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(FieldError::new(
                "params.default_schedules",
                "must be true or false",
            ))
        }
    };
    Ok(ClusterParams {
        cluster,
        dns_name,
        fix,
        from,
        default_schedules,
    })
}

/// `db_promote` parameters: `{"force"?: bool}`.
pub fn promote_params(params: &Value) -> Result<bool, FieldError> {
    let obj = params
        .as_object()
        .ok_or_else(|| FieldError::new("params", "must be an object"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "force") {
        return Err(FieldError::new(
            format!("params.{k}"),
            "unknown parameter for db_promote (expected force)",
        ));
    }
    match obj.get("force") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(FieldError::new("params.force", "must be true or false")),
    }
}

/// Parameters of kinds that take none.
pub fn no_params(kind: &str, params: &Value) -> Result<(), FieldError> {
    match params.as_object() {
        Some(o) if o.is_empty() => Ok(()),
        Some(o) => Err(FieldError::new(
            format!("params.{}", o.keys().next().expect("not empty")),
            format!("unknown parameter: {kind} takes none"),
        )),
        None => Err(FieldError::new("params", "must be an object")),
    }
}

pub fn is_shell_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && s.len() <= 128
}

/// Server names: what fits in a URL path segment and a file name.
pub fn server_name(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

/// An IP address or a DNS host name.
pub fn address(s: &str) -> Result<(), FieldError> {
    let hostname = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if s.parse::<std::net::IpAddr>().is_ok() || hostname {
        Ok(())
    } else {
        Err(FieldError::new(
            "address",
            "must be an IP address or a host name",
        ))
    }
}

/// The mysqld option file the workers manage: an absolute path of ordinary characters.
pub fn config_path(s: &str) -> Result<(), FieldError> {
    let ok = s.starts_with('/')
        && s.len() <= 255
        && !s.ends_with('/')
        && !s.split('/').any(|part| part == "..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "db_config_file",
            "must be an absolute file path of letters, digits and / . _ - + (no ..)",
        ))
    }
}

/// A command run on a server (restart mysqld, snapshot...): one line of shell.
pub fn command(field: &str, s: &str) -> Result<(), FieldError> {
    if s.trim().is_empty() || s.len() > 1000 || s.chars().any(|c| c.is_control()) {
        Err(FieldError::new(
            field,
            "must be one non-empty line of shell, at most 1000 characters",
        ))
    } else {
        Ok(())
    }
}

pub fn ssh_user(s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "ssh_user",
            "must be a user name (lower-case letters, digits, '_', '-', '.')",
        ))
    }
}

/// A public host key as in a known_hosts line: `TYPE BASE64 [comment]`.
pub fn host_key(s: &str) -> Result<(), FieldError> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let ok = (2..=3).contains(&parts.len())
        && (parts[0].starts_with("ssh-")
            || parts[0].starts_with("ecdsa-")
            || parts[0].starts_with("sk-"))
        && parts[1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        && !s.contains(['\n', '\r']);
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "host_key",
            "must be a public key line such as 'ssh-ed25519 AAAA...'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_script_params_are_checked_field_by_field() {
        let ok =
            run_script_params(&json!({"script": "echo hi", "env": {"A_1": "x'$(y)\n"}})).unwrap();
        assert_eq!(ok.env["A_1"], "x'$(y)\n");
        let field = |v: Value| run_script_params(&v).unwrap_err().field;
        assert_eq!(field(json!({})), "params.script");
        assert_eq!(field(json!({"script": "  "})), "params.script");
        assert_eq!(field(json!({"script": 3})), "params.script");
        assert_eq!(field(json!({"script": "x", "env": []})), "params.env");
        assert_eq!(
            field(json!({"script": "x", "env": {"A B": "1"}})),
            "params.env.A B"
        );
        assert_eq!(
            field(json!({"script": "x", "env": {"1A": "1"}})),
            "params.env.1A"
        );
        assert_eq!(
            field(json!({"script": "x", "env": {"A": 1}})),
            "params.env.A"
        );
        assert_eq!(field(json!({"script": "x", "bogus": 1})), "params.bogus");
        assert_eq!(field(json!("x")), "params");
    }

    #[test]
    fn server_fields() {
        assert!(server_name("name", "db-1.prod").is_ok());
        assert!(server_name("name", "../x").is_err());
        assert!(address("127.42.0.1").is_ok());
        assert!(address("db1.example.com").is_ok());
        assert!(address("a b").is_err());
        assert!(ssh_user("sa-test").is_ok());
        assert!(ssh_user("Root;").is_err());
        assert!(host_key("ssh-ed25519 AAAAC3Nza+/= c").is_ok());
        assert!(host_key("ssh-ed25519 AAAA\nx").is_err());
    }
}

/// Parse `params` into `T` (which denies unknown fields); errors name `params.<field>`.
fn parse_params<T: serde::de::DeserializeOwned>(
    kind: &str,
    params: &Value,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let named = inner.split('`').nth(1).map(str::to_string);
        let field = match (path.as_str(), named) {
            (".", Some(n)) => format!("params.{n}"),
            (".", None) => "params".to_string(),
            (p, _) => format!("params.{p}"),
        };
        FieldError::new(field, format!("{inner} (in {kind} params)"))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
}

pub fn backup_params(params: &Value) -> Result<BackupParams, FieldError> {
    let p: BackupParams = parse_params("db_backup", params)?;
    if let Some(t) = &p.tag {
        server_name("params.tag", t)?;
    }
    if let Some(l) = &p.lineage {
        server_name("params.lineage", l)?;
    }
    Ok(p)
}

/// `"latest"`, a backup id, or `{"object": KEY}`: an object in the bucket, described by the
/// manifest inside it (a restore needs no row in the database: disaster recovery).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum BackupRef {
    Id(i64),
    Latest(LatestWord),
    Object { object: String },
}

fn object_key(r: &BackupRef) -> Result<(), FieldError> {
    match r {
        BackupRef::Object { object }
            if object.is_empty()
                || object.len() > 1024
                || object.starts_with('/')
                || object.starts_with("s3://")
                || object.chars().any(char::is_control) =>
        {
            Err(FieldError::new(
                "params.backup.object",
                "an object key in the backup bucket, such as \"db1/17/backup.tar.zst\"",
            ))
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatestWord {
    Latest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreAs {
    Master,
    Slave,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    pub backup: BackupRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    #[serde(rename = "as")]
    pub role: RestoreAs,
    pub cluster: String,
}

pub fn restore_params(params: &Value) -> Result<RestoreParams, FieldError> {
    let p: RestoreParams = parse_params("db_restore", params)?;
    server_name("params.cluster", &p.cluster)?;
    if let Some(l) = &p.lineage {
        server_name("params.lineage", l)?;
    }
    object_key(&p.backup)?;
    if p.before.is_some() && p.backup != BackupRef::Latest(LatestWord::Latest) {
        return Err(FieldError::new(
            "params.before",
            "only with \"backup\": \"latest\" (an id names one backup already)",
        ));
    }
    Ok(p)
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    pub backup: BackupRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
}

pub fn verify_params(params: &Value) -> Result<VerifyParams, FieldError> {
    let p: VerifyParams = parse_params("db_verify_backup", params)?;
    if matches!(p.backup, BackupRef::Object { .. }) {
        // Its verdict is recorded on the backup's row.
        return Err(FieldError::new(
            "params.backup",
            "a backup id or \"latest\" (an object without its row cannot record a verdict)",
        ));
    }
    if let Some(l) = &p.lineage {
        server_name("params.lineage", l)?;
    }
    Ok(p)
}
