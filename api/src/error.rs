//! The API error type: a status, a message and the offending field, rendered as
//! `{"error": "...", "field": "..."}`. Internal errors are logged, never shown.

use axum::{
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
pub use shared::http::ErrorBody;
use shared::validate::FieldError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).field(field)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn field(mut self, field: &str) -> Self {
        self.field = Some(field.into());
        self
    }
    /// A failure of ours: log the detail, answer 500 without it.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        let msg = format!("{}: {}", e.field, e.message);
        Self::new(StatusCode::BAD_REQUEST, msg).field(&e.field)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let message = match &r {
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                format!(
                    "request body is larger than {} bytes",
                    crate::startup::MAX_BODY_BYTES
                )
            }
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with Content-Type: application/json".into()
            }
            JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", r.body_text()),
            _ => r.body_text(),
        };
        Self::new(r.status(), message).field("body")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Deserialize a JSON value into `T`, naming the field that does not fit.
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names missing/unknown fields in backticks: "missing field `name`".
        let named = inner.split('`').nth(1).map(str::to_string);
        let field = if path == "." {
            named.unwrap_or_else(|| "body".into())
        } else {
            path
        };
        ApiError::bad(&field, format!("{field}: {inner}"))
    })
}
