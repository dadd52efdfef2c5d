//! Webhook delivery: the outbox of `webhook_deliveries` is posted at least once, signed, with
//! backoff retries (`shared::db::webhooks`). Headers: `X-ServerActions-Event`,
//! `X-ServerActions-Delivery` (the event's idempotency id, the same on every attempt) and
//! `X-ServerActions-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's secret>`.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use shared::db::webhooks::{self, Due};
use tokio_util::sync::CancellationToken;

use crate::startup::AppState;

/// How long one attempt may take.
const ATTEMPT: Duration = Duration::from_secs(5);

pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub async fn deliver(state: Arc<AppState>, every: Duration, shutdown: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(ATTEMPT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let due = match webhooks::due(&state.pool, 50, 2.0 * ATTEMPT.as_secs_f64()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                continue;
            }
        };
        let sends = due.into_iter().map(|d| attempt(&state, &http, d));
        futures::future::join_all(sends).await;
    }
}

async fn attempt(state: &AppState, http: &reqwest::Client, d: Due) {
    let sealed = shared::secrets::Sealed {
        nonce: d.secret_nonce,
        ciphertext: d.secret_ciphertext,
    };
    let outcome = match state.keys.open(&sealed) {
        Err(e) => Err((None, format!("cannot open the webhook's secret: {e:#}"))),
        Ok(secret) => {
            let body = serde_json::to_vec(&d.body.0).expect("JSON serializes");
            let sent = http
                .post(&d.url)
                .header("content-type", "application/json")
                .header("x-serveractions-event", &d.event)
                .header("x-serveractions-delivery", &d.event_id)
                .header(
                    "x-serveractions-signature",
                    signature(secret.as_bytes(), &body),
                )
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                Ok(r) => Err((
                    Some(r.status().as_u16()),
                    format!("answered {}", r.status()),
                )),
                Err(e) => Err((None, shared::errors::chain(&e))),
            }
        }
    };
    let recorded = match outcome {
        Ok(status) => webhooks::delivered(&state.pool, d.id, status).await,
        Err((status, error)) => {
            tracing::warn!(delivery = d.id, attempt = d.attempts + 1, error = %error, "webhook delivery failed; retried later");
            webhooks::retry(&state.pool, d.id, status, &error).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(delivery = d.id, error = %e, "webhook outcome not recorded; it may be sent again");
    }
}
