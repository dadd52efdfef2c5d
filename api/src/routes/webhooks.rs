//! `/v1/webhooks` (an unscoped admin's): where events are posted, signed with HMAC-SHA256 by
//! a secret that goes in and never comes out; each webhook's deliveries with their attempts.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::db::webhooks::{self, Delivery, Webhook, EVENTS};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://` or `https://`; redirects are not followed.
    url: String,
    /// Any of `action.finished`, `action.failed`, `failover.started`, `failover.finished`,
    /// `cluster.analysis`.
    events: Vec<String>,
    /// The HMAC-SHA256 key of the `X-ServerActions-Signature` header (16 to 256 characters).
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<Delivery>,
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookRequest, responses(
    (status = 201, description = "created", body = Webhook),
    (status = 400, description = "a bad field, named", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    caller.require_unscoped("managing webhooks")?;
    audit.target("webhooks".to_string());
    let Json(body) = body?;
    let r: WebhookRequest = from_value(body)?;
    let url = reqwest::Url::parse(&r.url)
        .ok()
        .filter(|u| ["http", "https"].contains(&u.scheme()) && u.host().is_some())
        .filter(|_| r.url.len() <= 2000 && !r.url.contains('\0'));
    if url.is_none() {
        return Err(ApiError::bad(
            "url",
            "url: must be an http:// or https:// URL with a host",
        ));
    }
    if r.events.is_empty() {
        return Err(ApiError::bad("events", "events: name at least one event"));
    }
    if let Some(bad) = r.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::bad(
            "events",
            format!(
                "events: unknown event {bad:?} (known: {})",
                EVENTS.join(", ")
            ),
        ));
    }
    if !(16..=256).contains(&r.secret.len()) || r.secret.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "secret",
            "secret: must be 16 to 256 characters, no control characters",
        ));
    }
    let sealed = state.keys.seal(&r.secret);
    let hook = webhooks::create(&state.pool, &r.url, &r.events, &sealed, &caller.origin()).await?;
    audit
        .commit(state.pool.begin().await?, StatusCode::CREATED, None)
        .await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses(
    (status = 200, description = "every webhook (never a secret)", body = WebhookList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<WebhookList>> {
    caller.require_unscoped("managing webhooks")?;
    Ok(Json(WebhookList {
        webhooks: webhooks::list(&state.pool).await?,
    }))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)), responses(
    (status = 204, description = "deleted, with its pending deliveries"),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.require_unscoped("managing webhooks")?;
    audit.target(format!("webhook:{id}"));
    if !webhooks::delete(&state.pool, id).await? {
        return Err(ApiError::not_found(format!("no webhook {id}")));
    }
    audit
        .commit(state.pool.begin().await?, StatusCode::NO_CONTENT, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = i64, Path)), responses(
    (status = 200, description = "the newest 100 deliveries with their attempts and last outcome", body = DeliveryList),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<DeliveryList>> {
    caller.require_unscoped("managing webhooks")?;
    let deliveries = webhooks::deliveries(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))?;
    Ok(Json(DeliveryList { deliveries }))
}
