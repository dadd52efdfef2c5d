//! Launch profiles: what a new EC2 instance is made from and how the workers reach it. A
//! profile is one typed document (`LaunchProfile`), checked once where it enters (`parse`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{self, FieldError};

/// `{name, image_id, instance_type, subnet_id, ...}` as `POST /v1/launch-profiles` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchProfile {
    pub image_id: String,
    pub instance_type: String,
    pub subnet_id: String,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_instance_profile: Option<String>,
    /// Put on the instance and on its server record.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The login user of the image (the workers' key is authorized for it).
    pub ssh_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// Which of the instance's addresses the workers connect to.
    #[serde(default)]
    pub address: AddressKind,
    /// Where the pinned host key comes from.
    #[serde(default)]
    pub host_key_source: HostKeySource,
    /// The instance runs mysqld: how the workers manage it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_server: Option<DbServerProfile>,
    /// A server template: the launched server names it, and its boot scripts run (`run_boot`,
    /// queued once SSH answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressKind {
    #[default]
    Private,
    Public,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKeySource {
    /// The worker makes the instance's ed25519 host key and hands it over in the user data.
    #[default]
    Generated,
    /// The image makes its own keys; cloud-init prints them on the console
    /// (`-----BEGIN SSH HOST KEY KEYS-----`), which is polled until they appear.
    Console,
}

/// A DB server's settings, as at registration (`POST /v1/servers`). In paths and commands,
/// `{address}` stands for the instance's address and `{name}` for the server's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DbServerProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_config_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_datadir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_restart_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_stop_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_password_ref: Option<String>,
    /// Run on the instance when mysqld does not answer after boot (e.g. `sudo apt-get install
    /// -y mariadb-server`): for images without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_command: Option<String>,
}

/// The database column list, in the order `DbServerProfile::fields` gives them.
pub const DB_FIELDS: [&str; 9] = [
    "db_host",
    "db_config_file",
    "db_datadir",
    "db_restart_command",
    "db_stop_command",
    "db_start_command",
    "db_user",
    "db_password_ref",
    "install_command",
];

impl DbServerProfile {
    /// Each setting with its name, `{name}` and `{address}` filled in.
    pub fn fields(&self, name: &str, address: &str) -> Vec<(&'static str, Option<String>)> {
        let values = [
            &self.db_host,
            &self.db_config_file,
            &self.db_datadir,
            &self.db_restart_command,
            &self.db_stop_command,
            &self.db_start_command,
            &self.db_user,
            &self.db_password_ref,
            &self.install_command,
        ];
        DB_FIELDS
            .into_iter()
            .zip(values)
            .map(|(field, v)| {
                let filled = v
                    .as_ref()
                    .map(|v| v.replace("{address}", address).replace("{name}", name));
                (field, filled)
            })
            .collect()
    }
}

impl LaunchProfile {
    /// A profile as a client sent it: unknown fields and bad values are refused by name.
    pub fn parse(body: Value) -> Result<Self, FieldError> {
        let p: LaunchProfile = serde_path_to_error::deserialize(body).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            FieldError::new(validate::serde_field(&path, &inner, ""), inner)
        })?;
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), FieldError> {
        for (field, v) in [
            ("image_id", &self.image_id),
            ("instance_type", &self.instance_type),
            ("subnet_id", &self.subnet_id),
        ] {
            aws_id(field, v)?;
        }
        for (i, g) in self.security_group_ids.iter().enumerate() {
            aws_id(&format!("security_group_ids.{i}"), g)?;
        }
        if let Some(p) = &self.iam_instance_profile {
            aws_id("iam_instance_profile", p)?;
        }
        for (k, v) in &self.tags {
            let field = format!("tags.{k}");
            if k.is_empty()
                || k.len() > 128
                || k.starts_with("aws:")
                || k.starts_with("serveractions:")
            {
                return Err(FieldError::new(
                    field,
                    "tag keys are 1-128 characters and may not start with aws: or serveractions:",
                ));
            }
            if v.len() > 256 || k.chars().chain(v.chars()).any(char::is_control) {
                return Err(FieldError::new(
                    field,
                    "tag values are at most 256 characters, no control characters",
                ));
            }
        }
        if let Some(t) = &self.template {
            validate::server_name("template", t)?;
        }
        validate::ssh_user(&self.ssh_user)?;
        if self.ssh_port == Some(0) {
            return Err(FieldError::new("ssh_port", "ssh_port: must be 1-65535"));
        }
        let Some(db) = &self.db_server else {
            return Ok(());
        };
        if db.db_port == Some(0) {
            return Err(FieldError::new("db_server.db_port", "must be 1-65535"));
        }
        // Checked as they will be once filled in.
        for (field, v) in db.fields("name", "127.0.0.1") {
            let Some(v) = v else { continue };
            let named = |e: FieldError| FieldError::new(format!("db_server.{field}"), e.message);
            match field {
                "db_host" => validate::address(&v).map_err(named)?,
                "db_config_file" | "db_datadir" => validate::config_path(&v).map_err(named)?,
                "db_user" => validate::db_user(&v).map_err(named)?,
                "db_password_ref" => validate::server_name(field, &v).map_err(named)?,
                _ => validate::command(field, &v).map_err(named)?,
            }
        }
        Ok(())
    }
}

/// An EC2 identifier or name: printable, no spaces.
fn aws_id(field: &str, v: &str) -> Result<(), FieldError> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+=@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{field}: 1-255 characters of letters, digits and - _ . : / + = @"),
        ))
    }
}

/// The host keys cloud-init prints on the console between `-----BEGIN SSH HOST KEY KEYS-----`
/// and `-----END SSH HOST KEY KEYS-----`: the ed25519 one ("ssh-ed25519 AAAA..."), if it is
/// there yet.
pub fn console_host_key(console: &str) -> Option<String> {
    let start = console.find("-----BEGIN SSH HOST KEY KEYS-----")?;
    let block = &console[start..];
    let end = block.find("-----END SSH HOST KEY KEYS-----")?;
    block[..end].lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(t @ "ssh-ed25519"), Some(key)) => Some(format!("{t} {key}")),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_console_block_gives_the_ed25519_key() {
        let console = include_str!("../tests/fixtures/console-output.txt");
        assert_eq!(
            console_host_key(console).as_deref(),
            Some(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIApQzlTpBRB2NdQZ74dkCr5nDiSwyUU7JukE+i1OSCtm"
            )
        );
        // Not yet printed: half a block is no key.
        let half = &console[..console.find("-----END SSH HOST KEY KEYS-----").unwrap()];
        assert_eq!(console_host_key(half), None);
        assert_eq!(console_host_key("Cloud-init v. 23.1 running"), None);
    }

    #[test]
    fn profiles_name_their_bad_field() {
        let ok = json!({"image_id": "ami-1", "instance_type": "t3.micro", "subnet_id": "subnet-1",
                        "ssh_user": "admin", "db_server": {"db_datadir": "/data/{name}"}});
        let p = LaunchProfile::parse(ok.clone()).unwrap();
        assert_eq!(
            p.db_server.unwrap().fields("db9", "10.0.0.1")[2],
            ("db_datadir", Some("/data/db9".into()))
        );
        let field = |patch: Value| {
            let mut v = ok.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            LaunchProfile::parse(v).unwrap_err().field
        };
        assert_eq!(field(json!({"image_id": ""})), "image_id");
        assert_eq!(field(json!({"bogus": 1})), "bogus");
        assert_eq!(field(json!({"ssh_user": "a b"})), "ssh_user");
        assert_eq!(field(json!({"host_key_source": "tofu"})), "host_key_source");
        assert_eq!(
            field(json!({"tags": {"serveractions:launch": "1"}})),
            "tags.serveractions:launch"
        );
        assert_eq!(
            field(json!({"db_server": {"db_datadir": "rel/dir"}})),
            "db_server.db_datadir"
        );
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("subnet_id");
        assert_eq!(
            LaunchProfile::parse(missing).unwrap_err().field,
            "subnet_id"
        );
    }
}
