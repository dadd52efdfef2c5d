//! Who may do what: roles, the scope of a token, and the bodies of `/v1/tokens`. The api
//! enforces them (`api/src/auth.rs`); `sactl` and the tests share the types.

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{action::ActionKind, validate, validate::FieldError};

/// A token's role. Each includes the ones before it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads servers, actions, logs, clusters, backups and schedules.
    Viewer,
    /// Runs scripts, status, backups and checksums; cancels.
    Operator,
    /// Every database kind: configure, promote, restore, verify.
    Dba,
    /// Servers, schedules, tokens, the audit trail: everything.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Viewer, Role::Operator, Role::Dba, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Dba => "dba",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (viewer, operator, dba, admin)"))
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl ActionKind {
    /// The least role that may submit (and cancel) an action of this kind.
    pub fn required_role(self) -> Role {
        match self {
            ActionKind::RunScript
            | ActionKind::RunBoot
            | ActionKind::DbStatus
            | ActionKind::DbBackup
            | ActionKind::DbChecksum => Role::Operator,
            ActionKind::DbConfigureMaster
            | ActionKind::DbConfigureSlave
            | ActionKind::DbPromote
            | ActionKind::DbFailover
            | ActionKind::DbRestore
            | ActionKind::DbVerifyBackup
            | ActionKind::DbLaunchSlave
            | ActionKind::DbLaunchMaster => Role::Dba,
            ActionKind::ServerLaunch => Role::Operator,
            // It destroys the machine.
            ActionKind::ServerTerminate => Role::Admin,
        }
    }
}

/// The servers a token reaches: those named, those with one of the tags, those in one of the
/// clusters. All three empty: every server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct Scope {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "store", sqlx(json))]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub clusters: Vec<String>,
}

impl Scope {
    pub fn is_everything(&self) -> bool {
        self.servers.is_empty() && self.tags.is_empty() && self.clusters.is_empty()
    }

    /// Whether the server `name` with `tags` (a JSON map) in `cluster` is within the scope.
    pub fn covers(&self, name: &str, tags: &serde_json::Value, cluster: Option<&str>) -> bool {
        self.is_everything()
            || self.servers.iter().any(|s| s == name)
            || self
                .tags
                .iter()
                .any(|(k, v)| tags.get(k).and_then(|t| t.as_str()) == Some(v.as_str()))
            || cluster.is_some_and(|c| self.covers_cluster(c))
    }

    /// Whether the whole cluster is within the scope.
    pub fn covers_cluster(&self, cluster: &str) -> bool {
        self.is_everything() || self.clusters.iter().any(|c| c == cluster)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        for s in &self.servers {
            validate::server_name("servers", s)?;
        }
        for c in &self.clusters {
            validate::server_name("clusters", c)?;
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return Err(FieldError::new(
                    "tags",
                    "each tag is KEY=VALUE with a 1-64 character key and a value of at most 256",
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    /// `servers web1, web2; tag role=web; cluster shop`, or `everything`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("every server");
        }
        let mut parts = Vec::new();
        if !self.servers.is_empty() {
            parts.push(format!("servers {}", self.servers.join(", ")));
        }
        if !self.tags.is_empty() {
            let tags: Vec<_> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("tags {}", tags.join(", ")));
        }
        if !self.clusters.is_empty() {
            parts.push(format!("clusters {}", self.clusters.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Parse `KEY=VALUE` (a `--tag` option).
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parse a lifetime such as `90m`, `12h`, `30d`, `2w` (up to ten years).
pub fn parse_lifetime(s: &str) -> Result<chrono::Duration, String> {
    let err = || format!("{s:?} is not a lifetime such as 90m, 12h, 30d or 2w");
    let unit = s.chars().last().ok_or_else(err)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| err())?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(err()),
    };
    if n <= 0 || n.saturating_mul(secs) > 10 * 366 * 86_400 {
        return Err(format!("{s:?}: must be more than 0 and at most ten years"));
    }
    Ok(chrono::Duration::seconds(n * secs))
}

/// The options that make a token, shared by `sa-api tokens create` and `sactl tokens create`.
#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// viewer, operator, dba or admin.
    #[arg(long)]
    pub role: Role,
    /// Reach only this server (repeatable).
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Reach only servers with this tag, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Reach only servers of this cluster (repeatable).
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
    /// Lifetime, e.g. 90m, 12h, 30d; none: it does not expire.
    #[arg(long)]
    pub expires_in: Option<String>,
}

impl TokenArgs {
    pub fn request(self, name: String) -> TokenRequest {
        TokenRequest {
            name,
            role: self.role,
            scope: Scope {
                servers: self.servers,
                tags: self.tags.into_iter().collect(),
                clusters: self.clusters,
            },
            expires_in: self.expires_in,
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    #[serde(flatten)]
    pub scope: Scope,
    /// A lifetime such as `30d`; none: the token does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

impl TokenRequest {
    /// Checks the fields; the expiry it asks for.
    pub fn validate(&self) -> Result<Option<chrono::Duration>, FieldError> {
        validate::server_name("name", &self.name)?;
        self.scope.validate()?;
        self.expires_in
            .as_deref()
            .map(parse_lifetime)
            .transpose()
            .map_err(|e| FieldError::new("expires_in", e))
    }
}

/// A token as listed: never its secret, which only `TokenCreated` carries, once.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    #[cfg_attr(feature = "store", sqlx(try_from = "String"))]
    pub role: Role,
    #[serde(flatten)]
    #[cfg_attr(feature = "store", sqlx(flatten))]
    pub scope: Scope,
    /// `token:<name>` of its creator, or `sa-api` (the command line, the first start).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /v1/tokens` answers the secret once, with the token.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// Shown only here: the store keeps a hash.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// One row of the audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub client_addr: String,
    pub method: String,
    /// The route's pattern, e.g. `/v1/servers/{name}`.
    pub route: String,
    /// `server:<name>`, `cluster:<name>`, `action:<id>`, `schedule:<name>`, `token:<name>`.
    pub target: Option<String>,
    /// The HTTP status answered.
    pub status: i32,
    /// For updates: the fields given or changed (secret values masked).
    pub changes: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_include_the_ones_before_them() {
        assert!(Role::Admin > Role::Dba && Role::Dba > Role::Operator);
        assert!(Role::Operator > Role::Viewer);
        assert_eq!(ActionKind::DbPromote.required_role(), Role::Dba);
        assert_eq!(ActionKind::DbBackup.required_role(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_scope_covers_named_tagged_and_clustered_servers() {
        let web = Scope {
            tags: [("role".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        assert!(web.covers("w1", &json!({"role": "web"}), None));
        assert!(!web.covers("d1", &json!({"role": "db"}), Some("shop")));
        assert!(!web.covers("x", &json!({}), None));
        let shop = Scope {
            servers: vec!["lone".into()],
            clusters: vec!["shop".into()],
            ..Default::default()
        };
        assert!(shop.covers("d1", &json!({}), Some("shop")));
        assert!(shop.covers("lone", &json!({}), None));
        assert!(!shop.covers_cluster("blog"));
        assert!(Scope::default().covers("any", &json!({}), None));
        assert_eq!(shop.to_string(), "servers lone; clusters shop");
    }

    #[test]
    fn lifetimes_parse_with_units_and_bounds() {
        assert_eq!(parse_lifetime("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_lifetime("90m").unwrap(),
            chrono::Duration::minutes(90)
        );
        for bad in ["", "d", "0d", "-1d", "30", "3y", "99999w"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_tag("role=web").unwrap(),
            ("role".into(), "web".into())
        );
        assert!(parse_tag("=web").is_err());
    }
}
