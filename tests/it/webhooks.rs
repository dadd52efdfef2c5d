//! Webhooks: events posted to a receiver on loopback, signed with HMAC-SHA256, retried after
//! a failed attempt with the same idempotency id, every attempt visible in the API.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, http::HeaderMap, http::StatusCode, routing::post, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use shared::Status;

use crate::{eventually, TestApp, TestHost};

/// What the receiver got: event header, delivery id header, signature header, body.
pub type Got = Arc<Mutex<Vec<(String, String, String, Value)>>>;

/// A receiver on loopback that answers 500 to its first `fail` requests, then 200.
pub async fn receiver(fail: usize) -> (SocketAddr, Got) {
    let got: Got = Arc::default();
    let seen = Arc::new(Mutex::new(0usize));
    let (g, s) = (got.clone(), seen.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                let mut n = s.lock().unwrap();
                *n += 1;
                if *n <= fail {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                g.lock().unwrap().push((
                    h("x-serveractions-event"),
                    h("x-serveractions-delivery"),
                    h("x-serveractions-signature"),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
                // The signature is checked on the bytes as sent.
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                if h("x-serveractions-signature") != want {
                    return StatusCode::UNAUTHORIZED;
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

pub const SECRET: &str = "a-webhook-secret-of-ours";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn action_events_arrive_signed_and_a_failed_attempt_is_retried() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let (addr, got) = receiver(1).await;
    let url = format!("http://{addr}/hook");

    for (body, field) in [
        (
            json!({"url": "ftp://x/y", "events": ["action.finished"], "secret": SECRET}),
            "url",
        ),
        (
            json!({"url": url, "events": ["action.exploded"], "secret": SECRET}),
            "events",
        ),
        (
            json!({"url": url, "events": [], "secret": SECRET}),
            "events",
        ),
        (
            json!({"url": url, "events": ["action.failed"], "secret": "short"}),
            "secret",
        ),
    ] {
        let err = app.client.post("/v1/webhooks", &body).await.unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{body}: {err:?}"
        );
    }
    let (status, hook) = app
        .client
        .post(
            "/v1/webhooks",
            &json!({"url": url, "events": ["action.finished", "action.failed"], "secret": SECRET}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{hook}");
    assert!(
        !hook.to_string().contains(SECRET),
        "the secret leaked: {hook}"
    );
    let id = hook["id"].as_i64().unwrap();

    let (ok, _) = app
        .act("web1", "run_script", json!({"script": "true"}))
        .await
        .unwrap();
    let (bad, _) = app
        .act("web1", "run_script", json!({"script": "exit 3"}))
        .await
        .unwrap();
    assert_eq!((ok.status, bad.status), (Status::Succeeded, Status::Failed));
    let all = eventually(Duration::from_secs(20), async || {
        got.lock().unwrap().len() >= 3
    })
    .await;
    let received = got.lock().unwrap().clone();
    assert!(all, "{received:?}");
    let events: Vec<(&str, i64)> = received
        .iter()
        .map(|(e, _, _, b)| (e.as_str(), b["data"]["action"].as_i64().unwrap()))
        .collect();
    for want in [
        ("action.finished", ok.id),
        ("action.finished", bad.id),
        ("action.failed", bad.id),
    ] {
        assert!(events.contains(&want), "{want:?} missing: {events:?}");
    }
    assert!(!events.contains(&("action.failed", ok.id)), "{events:?}");
    for (event, delivery, _, body) in &received {
        assert_eq!(body["event"], *event);
        assert_eq!(body["id"], *delivery, "the idempotency id is the body's");
    }

    // The first attempt got a 500: retried, with the same id, both attempts counted.
    let d = app
        .client
        .get(&format!("/v1/webhooks/{id}/deliveries"))
        .await
        .unwrap();
    let ds = d["deliveries"].as_array().unwrap();
    assert!(ds.iter().all(|x| x["status"] == "delivered"), "{d}");
    let retried = ds
        .iter()
        .find(|x| x["attempts"] == 2)
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(retried["last_status"], 200, "{d}");
    assert_eq!(
        received
            .iter()
            .filter(|r| r.1 == retried["event_id"])
            .count(),
        1
    );
    let listed = app.client.get("/v1/webhooks").await.unwrap();
    assert!(!listed.to_string().contains(SECRET), "{listed}");
    app.client
        .delete(&format!("/v1/webhooks/{id}"))
        .await
        .unwrap();
    let err = app
        .client
        .get(&format!("/v1/webhooks/{id}/deliveries"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, client::ClientError::Api { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sactl_manages_webhooks_and_names_a_bad_field() {
    use std::io::Write;
    let app = TestApp::spawn().await.unwrap();
    let sactl = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(testbed::procs::bin_dir().join("sactl"))
            .env("SA_API_URL", &app.api_url)
            .env("SA_TOKEN", &app.token)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sactl runs (cargo build --bins first)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = sactl(
        &[
            "webhooks",
            "add",
            "http://127.0.0.1:9/x",
            "--event",
            "action.exploded",
        ],
        &format!("{SECRET}\n"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("events"), "{out}");
    let (code, out) = sactl(
        &[
            "webhooks",
            "add",
            "http://127.0.0.1:9/x",
            "--event",
            "failover.started",
        ],
        &format!("{SECRET}\n"),
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = sactl(&["webhooks", "list"], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("http://127.0.0.1:9/x") && out.contains("failover.started"),
        "{out}"
    );
    assert!(!out.contains(SECRET), "{out}");
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, out) = sactl(&["webhooks", "deliveries", &id], "");
    assert_eq!(code, 0, "{out}");
    let (code, out) = sactl(&["webhooks", "rm", &id], "");
    assert_eq!(code, 0, "{out}");
    let (code, _) = sactl(&["webhooks", "rm", &id], "");
    assert_ne!(code, 0);
}
