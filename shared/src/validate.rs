//! Field checks of the api's inputs (which rejects bad requests with a 4xx naming the field):
//! `FieldError` and the rules for names, addresses, paths and commands. An action's params are
//! typed in `spec.rs`.

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

/// The field a `serde_path_to_error` failure is about: its path, or for a missing field the field
/// itself (serde reports it at its parent); `root` names the document itself.
pub fn serde_field(path: &str, inner: &str, root: &str) -> String {
    let named = inner
        .starts_with("missing field")
        .then(|| inner.split('`').nth(1))
        .flatten();
    match (path, named) {
        (".", Some(n)) if root.is_empty() => n.to_string(),
        (".", None) if root.is_empty() => "body".to_string(),
        (".", Some(n)) => format!("{root}.{n}"),
        (".", None) => root.to_string(),
        (p, Some(n)) => format!("{p}.{n}"),
        (p, None) => p.to_string(),
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

/// A new server's name: a server name that is not a route under `/v1/servers/` (`launch`).
pub fn new_server_name(s: &str) -> Result<(), FieldError> {
    server_name("name", s)?;
    if s == "launch" {
        return Err(FieldError::new(
            "name",
            "name: \"launch\" is taken by POST /v1/servers/launch: choose another",
        ));
    }
    Ok(())
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

/// A MySQL/MariaDB user name (without host part).
pub fn db_user(s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 80
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "db_user",
            "must be 1-80 letters, digits, '_', '-', '.' or '$'",
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
