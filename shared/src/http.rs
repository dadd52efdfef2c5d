//! The HTTP contract's bodies shared by the api's routes, the client, `sactl` and the tests
//! (the rows they return are `Action`, `Server`, `Backup`...). Documented in the api's OpenAPI
//! document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    action::{Action, ActionKind, RetryPolicy},
    spec::ActionSpec,
};

/// `POST /v1/actions`. `kind` and `params` are parsed by `ActionSpec::parse` (so a bad one is
/// a 4xx naming its field), hence plain here.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub server: String,
    #[schema(value_type = ActionKind)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    #[serde(default)]
    pub urgent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl ActionRequest {
    /// `spec` on `server`, with the defaults for everything else.
    pub fn new(server: &str, spec: &ActionSpec) -> Self {
        ActionRequest {
            server: server.into(),
            kind: spec.kind().as_str().into(),
            params: Some(spec.params()),
            ..Default::default()
        }
    }
}

/// `GET /v1/actions`: newest first.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionList {
    pub actions: Vec<Action>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

/// Every error's body: `{"error": "...", "field": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// The request field at fault (`params.script`, `body`...).
    pub field: Option<String>,
}

/// `POST /v1/secrets`: store a named secret (or replace its value).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    pub name: String,
    pub value: String,
}

/// A named secret as listed: never its value.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct SecretInfo {
    pub name: String,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /v1/secrets`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}
