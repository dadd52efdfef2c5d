//! Bad input gets a 4xx naming the field, and nothing is stored or queued.

use serde_json::{json, Value};

use crate::{TestApp, TestHost};

async fn post_raw(app: &TestApp, path: &str, body: &str, content_type: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(app.client.url(path))
        .header("content-type", content_type)
        .bearer_auth(&app.token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_action_requests_are_rejected_and_leave_nothing_behind() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let ok = json!({"server": "web1", "kind": "run_script", "params": {"script": "true"}});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let with_params = |p: Value| with("params", p);
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("server", json!("nope")), 400, "server"),
        (with("server", json!("../etc")), 400, "server"),
        (with("kind", json!("format_disk")), 400, "kind"),
        (with_params(json!({})), 400, "params.script"),
        (with_params(json!({"script": ""})), 400, "params.script"),
        (
            with_params(json!({"script": "   \n"})),
            400,
            "params.script",
        ),
        (with_params(json!({"script": 42})), 400, "params.script"),
        (
            with_params(json!({"script": "true", "env": "A=1"})),
            400,
            "params.env",
        ),
        (
            with_params(json!({"script": "true", "env": ["A"]})),
            400,
            "params.env",
        ),
        (
            with_params(json!({"script": "true", "env": {"A-B": "1"}})),
            400,
            "params.env.A-B",
        ),
        (
            with_params(json!({"script": "true", "env": {"$(id)": "1"}})),
            400,
            "params.env.$(id)",
        ),
        (
            with_params(json!({"script": "true", "env": {"9A": "1"}})),
            400,
            "params.env.9A",
        ),
        (
            with_params(json!({"script": "true", "env": {"A": 1}})),
            400,
            "params.env.A",
        ),
        (with("timeout_s", json!(0)), 400, "timeout_s"),
        // ServerActions' own keys (schedules, after a promote) cannot be taken first.
        (
            with("idempotency_key", json!("sa:after-promote-1")),
            400,
            "idempotency_key",
        ),
        (with("timeout_s", json!("soon")), 400, "timeout_s"),
        (with("surprise", json!(1)), 400, "surprise"),
        (
            json!({"kind": "run_script", "params": {"script": "true"}}),
            400,
            "server",
        ),
        (
            json!({"server": "web1", "params": {"script": "true"}}),
            400,
            "kind",
        ),
    ];
    for (body, status, field) in cases {
        let err = app.client.post("/v1/actions", &body).await.unwrap_err();
        match err {
            client::ClientError::Api {
                status: s,
                field: f,
                message,
            } => {
                assert_eq!(
                    (s, f.as_deref()),
                    (status, Some(field)),
                    "{body}: {message}"
                );
                assert!(!message.is_empty());
            }
            other => panic!("{body}: {other}"),
        }
    }
    // Malformed JSON, wrong content type, oversize body.
    let (s, v) = post_raw(&app, "/v1/actions", "{\"server\": ", "application/json").await;
    assert_eq!((s, v["field"].as_str()), (400, Some("body")), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("malformed JSON"),
        "{v}"
    );
    let (s, v) = post_raw(&app, "/v1/actions", &ok.to_string(), "text/plain").await;
    assert_eq!((s, v["field"].as_str()), (415, Some("body")), "{v}");
    let big =
        json!({"server": "web1", "kind": "run_script", "params": {"script": "x".repeat(2 << 20)}});
    let (s, v) = post_raw(&app, "/v1/actions", &big.to_string(), "application/json").await;
    assert_eq!((s, v["field"].as_str()), (413, Some("body")), "{v}");
    let long = json!({"server": "web1", "kind": "run_script", "params": {"script": "x".repeat(300 << 10)}});
    let (s, v) = post_raw(&app, "/v1/actions", &long.to_string(), "application/json").await;
    assert_eq!(
        (s, v["field"].as_str()),
        (400, Some("params.script")),
        "{v}"
    );

    assert_eq!(
        app.action_count().await,
        0,
        "a rejected request stored an action"
    );
    assert_eq!(
        app.queued_messages().await.unwrap(),
        0,
        "a rejected request queued a message"
    );

    // Bad query parameters name the parameter too.
    for (q, field) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("before=x", "before"),
        ("colour=red", "colour"),
    ] {
        let err = app
            .client
            .get(&format!("/v1/actions?{q}"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{q}: {err:?}"
        );
    }
    let err = app.client.get("/v1/actions/abc").await.unwrap_err();
    assert!(
        matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == "id"),
        "{err:?}"
    );
    assert_eq!(
        app.client
            .get("/v1/actions/999999")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_server_registrations_are_rejected() {
    let app = TestApp::spawn().await.unwrap();
    let ok = json!({"name": "db1", "address": "127.42.9.9", "ssh_user": "satest"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("name", json!("")), "name"),
        (with("name", json!("a/b")), "name"),
        (with("address", json!("not an address")), "address"),
        (with("ssh_user", json!("Root;rm")), "ssh_user"),
        (with("ssh_port", json!(70000)), "ssh_port"),
        (with("ssh_port", json!(0)), "ssh_port"),
        (with("host_key", json!("not a key")), "host_key"),
        (with("tags", json!([1])), "tags"),
        (
            with("db_config_file", json!("etc/my.cnf")),
            "db_config_file",
        ),
        (
            with("db_config_file", json!("/etc/../root/x; rm -rf /")),
            "db_config_file",
        ),
        (with("db_restart_command", json!("")), "db_restart_command"),
        (
            with("db_restart_command", json!("systemctl restart\nmariadb")),
            "db_restart_command",
        ),
        (json!({"address": "127.0.0.1", "ssh_user": "x"}), "name"),
    ] {
        let err = app.client.post("/v1/servers", &body).await.unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{body}: {err:?}"
        );
    }
    assert!(app.client.servers().await.unwrap().is_empty());
    let (status, _) = app.client.post("/v1/servers", &ok).await.unwrap();
    assert_eq!(status, 201);
    let err = app.client.post("/v1/servers", &ok).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert_eq!(app.client.servers().await.unwrap().len(), 1);
    app.client.delete("/v1/servers/db1").await.unwrap();
    assert_eq!(
        app.client
            .get("/v1/servers/db1")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_its_openapi_document() {
    let app = TestApp::spawn().await.unwrap();
    let doc = app.client.get("/v1/openapi.json").await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/actions",
        "/v1/actions/{id}",
        "/v1/servers",
        "/v1/schedules",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    // One variant per kind, each with its own params.
    let kinds = doc["components"]["schemas"]["ActionSpec"]["oneOf"]
        .as_array()
        .unwrap();
    assert_eq!(kinds.len(), shared::ActionKind::ALL.len());
    assert_eq!(
        doc["components"]["schemas"]["RunScriptParams"]["required"],
        json!(["script"])
    );
}
