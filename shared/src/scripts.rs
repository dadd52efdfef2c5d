//! Scripts as building blocks (pure types and rules; the rows are in `db/scripts.rs`): a script's
//! declared inputs, packages and attachments, server templates (ordered lists of script
//! references), and how an input's value is resolved: script default < template < deployment <
//! server < the action's own. Dynamic types (`server_address`, `cluster_master`) resolve on the
//! worker as the script starts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    spec::MAX_SCRIPT_BYTES,
    validate::{self, FieldError},
};

/// Attachments of up to this many bytes are accepted.
pub const MAX_ATTACHMENT_BYTES: u64 = 1 << 30;

/// What an input's value is, and how it reaches the script's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Any text (a number is taken as its text).
    Text,
    /// A stored secret (`{"secret_ref": NAME}`), or on an action a value (sealed until it ends);
    /// never shown, masked in the log.
    Secret,
    Number,
    /// One of the input's `choices`.
    Choice,
    /// A server's name; the script gets its address as the action starts.
    ServerAddress,
    /// A cluster's name; the script gets the address of its master as the action starts.
    ClusterMaster,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Secret => "secret",
            InputType::Number => "number",
            InputType::Choice => "choice",
            InputType::ServerAddress => "server_address",
            InputType::ClusterMaster => "cluster_master",
        }
    }
}

/// One declared input: an environment variable of the script.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: InputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl InputDecl {
    /// `value` as this input takes it (`field` names it in an error): text and numbers as
    /// JSON strings and numbers, a secret as `{"secret_ref"}` or (`inline_secret`) a string.
    pub fn check(
        &self,
        field: &str,
        value: &Value,
        inline_secret: bool,
    ) -> Result<Value, FieldError> {
        let bad = |m: String| Err(FieldError::new(field, m.to_string()));
        match (self.ty, value) {
            (InputType::Text, Value::String(s)) if !s.contains('\0') => Ok(value.clone()),
            (InputType::Text, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (InputType::Text, _) => bad("text without NUL bytes".into()),
            (InputType::Number, Value::Number(_)) => Ok(value.clone()),
            (InputType::Number, Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::String(s.trim().into())),
                _ => bad(format!("{s:?} is not a number")),
            },
            (InputType::Number, _) => bad("a number".into()),
            (InputType::Choice, Value::String(s)) if self.choices.contains(s) => Ok(value.clone()),
            (InputType::Choice, _) => bad(format!("one of {:?}", self.choices)),
            (InputType::Secret, Value::Object(o)) if o.len() == 1 => match o.get("secret_ref") {
                Some(Value::String(r)) => {
                    validate::server_name(&format!("{field}.secret_ref"), r)?;
                    Ok(value.clone())
                }
                _ => bad("{\"secret_ref\": NAME}".into()),
            },
            (InputType::Secret, Value::String(s)) if inline_secret && !s.contains('\0') => {
                Ok(value.clone())
            }
            (InputType::Secret, _) if inline_secret => {
                bad("a value or {\"secret_ref\": NAME}".into())
            }
            (InputType::Secret, _) => {
                bad("{\"secret_ref\": NAME} (a secret's value is given only on an action)".into())
            }
            (InputType::ServerAddress, Value::String(s)) => {
                validate::server_name(field, s).map(|()| value.clone())
            }
            (InputType::ServerAddress, _) => bad("a server's name".into()),
            (InputType::ClusterMaster, Value::String(s)) => {
                validate::server_name(field, s).map(|()| value.clone())
            }
            (InputType::ClusterMaster, _) => bad("a cluster's name".into()),
        }
    }
}

/// A new script or a new revision of one: `POST /v1/scripts`, `PUT /v1/scripts/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptDoc {
    /// Given on `POST`; the path names it on `PUT`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Vec<InputDecl>,
    /// Packages installed first with the server's package manager (apt, dnf or yum), each
    /// skipped when present.
    #[serde(default)]
    pub packages: Vec<String>,
}

impl ScriptDoc {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::server_name("name", &self.name)?;
        if self.body.trim().is_empty() {
            return Err(FieldError::new("body", "must not be empty"));
        }
        if self.body.len() > MAX_SCRIPT_BYTES || self.body.contains('\0') {
            return Err(FieldError::new(
                "body",
                format!("at most {MAX_SCRIPT_BYTES} bytes, no NUL"),
            ));
        }
        if let Some(d) = &self.description {
            if d.len() > 4000 || d.contains('\0') {
                return Err(FieldError::new(
                    "description",
                    "at most 4000 characters, no NUL",
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let field = format!("inputs[{i}]");
            if !validate::is_shell_identifier(&input.name) || input.name.starts_with("SA_") {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    "an environment variable name (letters, digits, _; not starting with a digit or SA_)",
                ));
            }
            if input.name == "ATTACH_DIR" || !seen.insert(input.name.clone()) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("{:?} is declared twice or is ATTACH_DIR", input.name),
                ));
            }
            if (input.ty == InputType::Choice) == input.choices.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.choices"),
                    "a choice input lists its choices; other types none",
                ));
            }
            if let Some(d) = &input.default {
                input.check(&format!("{field}.default"), d, false)?;
            }
        }
        for (i, p) in self.packages.iter().enumerate() {
            package_name(&format!("packages[{i}]"), p)?;
        }
        Ok(())
    }
}

fn package_name(field: &str, p: &str) -> Result<(), FieldError> {
    let ok = !p.is_empty()
        && p.len() <= 128
        && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{p:?} is not a package name (lower-case letters, digits, + - . _)"),
        ))
    }
}

/// An attachment's file name in `$ATTACH_DIR`.
pub fn attachment_name(field: &str, f: &str) -> Result<(), FieldError> {
    validate::server_name(field, f)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub file: String,
    pub sha256: String,
    pub size: i64,
    /// Its content: the `blobs` row.
    pub blob: i64,
}

/// One immutable revision of a script.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct ScriptRevision {
    pub script: String,
    pub revision: i32,
    pub body: String,
    pub description: Option<String>,
    #[cfg_attr(feature = "store", sqlx(json))]
    pub inputs: Vec<InputDecl>,
    #[cfg_attr(feature = "store", sqlx(json))]
    pub packages: Vec<String>,
    #[cfg_attr(feature = "store", sqlx(json))]
    pub attachments: Vec<Attachment>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A script by name, at a revision (none: its newest, pinned when an action is submitted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i32>,
}

impl ScriptRef {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate::server_name(&format!("{field}.name"), &self.name)?;
        match self.revision {
            Some(r) if r < 1 => Err(FieldError::new(
                format!("{field}.revision"),
                "revisions count from 1",
            )),
            _ => Ok(()),
        }
    }
}

/// A server template: `POST /v1/templates`, `PUT /v1/templates/{name}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDoc {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Run in order by `run_boot` (and after an EC2 launch whose profile names the template);
    /// the first failure stops it.
    #[serde(default)]
    pub boot: Vec<ScriptRef>,
    /// Offered to run on the template's servers.
    #[serde(default)]
    pub operational: Vec<ScriptRef>,
    /// Run in order before `server_terminate`.
    #[serde(default)]
    pub decommission: Vec<ScriptRef>,
    /// Input values for its scripts (above a script's defaults).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
}

impl TemplateDoc {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::server_name("name", &self.name)?;
        for (list, refs) in [
            ("boot", &self.boot),
            ("operational", &self.operational),
            ("decommission", &self.decommission),
        ] {
            for (i, r) in refs.iter().enumerate() {
                r.validate(&format!("{list}[{i}]"))?;
            }
        }
        layer_names("inputs", &self.inputs)
    }
}

/// The names of a layer of input values (template, deployment, server, action).
pub fn layer_names(field: &str, layer: &BTreeMap<String, Value>) -> Result<(), FieldError> {
    for name in layer.keys() {
        if !validate::is_shell_identifier(name) {
            return Err(FieldError::new(
                format!("{field}.{name}"),
                format!("{field}.{name}: not an input name (letters, digits, _)"),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateRevision {
    pub template: String,
    pub revision: i32,
    /// Its lists and inputs (`name` left out: it is `template`).
    pub spec: TemplateDoc,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A deployment: `POST /v1/deployments`, `PATCH`, and `clone`'s body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentDoc {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
}

impl DeploymentDoc {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::server_name("name", &self.name)?;
        layer_names("inputs", &self.inputs)
    }
}

/// An input's value as an action recorded it, with where it came from (`default`, `template
/// web`, `deployment prod`, `server web1`, `action`). A secret's value is `***` (sealed with
/// the action) or `{"secret_ref": NAME}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolvedInput {
    #[serde(rename = "type")]
    pub ty: InputType,
    pub value: Value,
    pub source: String,
}

/// A layer of values and its source name, lowest first.
pub type Layer<'a> = (String, &'a BTreeMap<String, Value>);

/// Resolve every declared input from the layers (lowest first; the last is the action's own,
/// whose names must be declared). A required input given nowhere is an error naming it.
pub fn resolve(
    script: &str,
    decls: &[InputDecl],
    layers: &[Layer<'_>],
    action: &BTreeMap<String, Value>,
    inline_secrets: bool,
) -> Result<BTreeMap<String, ResolvedInput>, FieldError> {
    if let Some(unknown) = action.keys().find(|k| !decls.iter().any(|d| &d.name == *k)) {
        let field = format!("params.inputs.{unknown}");
        return Err(FieldError::new(
            &field,
            format!("script {script:?} declares no input {unknown:?}"),
        ));
    }
    let mut out = BTreeMap::new();
    for d in decls {
        let mut found = d.default.clone().map(|v| (v, "default".to_string()));
        for (source, layer) in layers {
            if let Some(v) = layer.get(&d.name) {
                found = Some((v.clone(), source.clone()));
            }
        }
        if let Some(v) = action.get(&d.name) {
            found = Some((v.clone(), "action".into()));
        }
        let field = format!("params.inputs.{}", d.name);
        match found {
            Some((v, source)) => {
                let inline = inline_secrets && source == "action";
                let value = d.check(&field, &v, inline).map_err(|e| {
                    FieldError::new(&e.field, format!("{} (from {source})", e.message))
                })?;
                out.insert(d.name.clone(), ResolvedInput { ty: d.ty, value, source });
            }
            None if d.required => {
                return Err(FieldError::new(
                    &field,
                    format!("script {script:?} requires input {:?}, given by no template, deployment, server or the action", d.name),
                ))
            }
            None => {}
        }
    }
    Ok(out)
}

/// The text an environment variable gets for a static value.
pub fn env_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(v: Value) -> InputDecl {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn each_level_overrides_the_one_below() {
        let decls = vec![decl(json!({"name": "A", "type": "text", "default": "d"}))];
        let t = BTreeMap::from([("A".to_string(), json!("t"))]);
        let d = BTreeMap::from([("A".to_string(), json!("dep"))]);
        let s = BTreeMap::from([("A".to_string(), json!("srv"))]);
        let a = BTreeMap::from([("A".to_string(), json!(7))]);
        let none = BTreeMap::new();
        let layers = [
            ("template t".to_string(), &t),
            ("deployment d".to_string(), &d),
            ("server s".to_string(), &s),
        ];
        let r = |n: usize, action: &BTreeMap<String, Value>| {
            resolve("x", &decls, &layers[..n], action, true).unwrap()["A"].clone()
        };
        assert_eq!(
            (r(0, &none).value, r(0, &none).source),
            (json!("d"), "default".into())
        );
        assert_eq!(r(1, &none).source, "template t");
        assert_eq!(r(2, &none).source, "deployment d");
        assert_eq!(r(3, &none).value, json!("srv"));
        assert_eq!(
            (r(3, &a).value, r(3, &a).source),
            (json!("7"), "action".into())
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let decls = vec![
            decl(json!({"name": "N", "type": "number"})),
            decl(json!({"name": "C", "type": "choice", "choices": ["a", "b"]})),
            decl(json!({"name": "R", "type": "text", "required": true})),
            decl(json!({"name": "S", "type": "secret"})),
        ];
        let none = BTreeMap::new();
        let field = |a: Value| {
            let a: BTreeMap<String, Value> = serde_json::from_value(a).unwrap();
            resolve("x", &decls, &[], &a, false).unwrap_err().field
        };
        assert_eq!(field(json!({})), "params.inputs.R");
        assert_eq!(field(json!({"R": "r", "N": "ten"})), "params.inputs.N");
        assert_eq!(field(json!({"R": "r", "C": "z"})), "params.inputs.C");
        assert_eq!(field(json!({"R": "r", "S": "plain"})), "params.inputs.S");
        assert_eq!(field(json!({"R": "r", "Q": 1})), "params.inputs.Q");
        let ok = BTreeMap::from([
            ("R".to_string(), json!("r")),
            ("S".to_string(), json!({"secret_ref": "k"})),
        ]);
        assert_eq!(resolve("x", &decls, &[], &ok, false).unwrap().len(), 2);
        assert!(resolve("x", &decls, &[("d".into(), &none)], &ok, false).is_ok());
    }

    #[test]
    fn declarations_are_checked() {
        let doc = |inputs: Value, packages: Value| -> ScriptDoc {
            serde_json::from_value(
                json!({"name": "s", "body": "true", "inputs": inputs, "packages": packages}),
            )
            .unwrap()
        };
        let field = |d: ScriptDoc| d.validate().unwrap_err().field;
        assert_eq!(
            field(doc(json!([{"name": "1X", "type": "text"}]), json!([]))),
            "inputs[0].name"
        );
        assert_eq!(
            field(doc(json!([{"name": "C", "type": "choice"}]), json!([]))),
            "inputs[0].choices"
        );
        assert_eq!(
            field(doc(
                json!([{"name": "N", "type": "number", "default": "x"}]),
                json!([])
            )),
            "inputs[0].default"
        );
        assert_eq!(
            field(doc(json!([]), json!(["ok", "Bad Name"]))),
            "packages[1]"
        );
        assert!(doc(
            json!([{"name": "N", "type": "number", "default": 3}]),
            json!(["figlet"])
        )
        .validate()
        .is_ok());
    }
}
