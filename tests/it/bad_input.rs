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
        (with("name", json!("launch")), "name"),
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
    // A pasted script, or a stored one by reference with its inputs.
    let run_script = &doc["components"]["schemas"]["RunScriptParams"]["properties"];
    for field in ["script", "env", "secrets", "script_ref", "inputs"] {
        assert!(run_script[field].is_object(), "RunScriptParams.{field}");
    }
}

/// PostgreSQL's text cannot hold a NUL: one in a path, a query or any body field is a 4xx on
/// every route, and a refused mutating request still leaves its audit row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_anywhere_is_refused_and_still_audited() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let nul = "a\u{0}b";
    let body = json!({
        "name": nul, "server": nul, "kind": "run_script", "value": nul, "role": "admin",
        "params": {"script": nul, "env": {"A": nul}, "secrets": {"S": nul}},
        "tags": {nul: nul}, "host": nul, "user": nul, "cron": nul,
    });
    let http = reqwest::Client::new();
    let ops = crate::auth::operations(&app).await;
    let audited_before = crate::auth::audit_rows(&app).await.len();
    let mut mutating = 0;
    for (method, path) in ops.iter().filter(|(_, p)| p.starts_with("/v1/")) {
        let nul_path = path.replace("web1", "web%001").replace("/1", "/%001");
        let tries = [
            (nul_path.clone(), None),
            (format!("{path}?server=%00&target=a%00&token=%00"), None),
            (path.clone(), Some(&body)),
        ];
        for (url, body) in tries {
            let has_body = matches!(method.as_str(), "POST" | "PUT" | "PATCH");
            if (body.is_some() && !has_body) || (body.is_none() && url == *path) {
                continue;
            }
            let mut req = http
                .request(method.clone(), app.client.url(&url))
                .bearer_auth(&app.token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(
                (400..500).contains(&status),
                "{method} {url} answered {status}: {text}"
            );
            mutating += usize::from(*method != reqwest::Method::GET);
        }
    }
    assert!(mutating >= 10, "too few mutating tries: {mutating}");
    assert_eq!(
        app.action_count().await,
        0,
        "a NUL request stored an action"
    );
    let rows = crate::auth::audit_rows(&app).await;
    assert_eq!(
        rows.len() - audited_before,
        mutating,
        "each refused mutating request has its row"
    );
}
