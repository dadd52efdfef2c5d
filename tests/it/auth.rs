//! Access control against the real api and PostgreSQL: every route needs a token, roles and
//! scopes limit what a token may do, expired and revoked tokens are refused, secrets never
//! leak, every mutating call is audited, and the api is safe to open in a browser.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::auth::{Role, Scope};

use crate::{TestApp, TestHost};

/// Every operation of the OpenAPI document, with its path filled in.
pub(crate) async fn operations(app: &TestApp) -> Vec<(Method, String)> {
    let doc = app.client.get("/v1/openapi.json").await.unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path = path.replace("{id}", "1").replace("{name}", "web1");
        for m in item.as_object().unwrap().keys() {
            ops.push((m.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    assert!(
        ops.len() >= 25,
        "the document lists too few operations: {ops:?}"
    );
    ops
}

async fn send(
    app: &TestApp,
    (method, path): &(Method, String),
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method.clone(), app.client.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if *method != Method::GET && *method != Method::DELETE {
        req = req.json(&json!({}));
    }
    req.send().await.unwrap()
}

fn is_mutating(m: &Method) -> bool {
    *m != Method::GET
}

fn tagged(host: &TestHost, name: &str, role: &str) -> Value {
    let mut s = host.server_json(name);
    s["tags"] = json!({ "role": role });
    s
}

pub(crate) async fn audit_rows(app: &TestApp) -> Vec<Value> {
    let v = app.client.get("/v1/audit?limit=1000").await.unwrap();
    let mut rows = v["entries"].as_array().unwrap().clone();
    rows.reverse();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_healthz_needs_a_token_and_a_refusal_changes_nothing() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let ops = operations(&app).await;
    let audited_before = audit_rows(&app).await.len();
    let mut mutating = 0;
    for op in &ops {
        let resp = send(&app, op, None).await;
        if op.1 == "/healthz" {
            assert_eq!(resp.status(), StatusCode::OK, "{op:?}");
            continue;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{op:?}");
        assert!(resp.headers().contains_key("www-authenticate"), "{op:?}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("Bearer"),
            "{op:?}: {body}"
        );
        mutating += usize::from(is_mutating(&op.0));
    }
    // A malformed and an unknown token are refused the same way.
    let submit = (Method::POST, "/v1/actions".to_string());
    for bad in ["nope", &format!("sa_{}", "A".repeat(43))] {
        let resp = send(&app, &submit, Some(bad)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(
        app.action_count().await,
        0,
        "a refused request stored an action"
    );
    assert_eq!(
        app.queued_messages().await.unwrap(),
        0,
        "a refused request queued"
    );
    // Each refused mutating call left an audit row saying 401, without a token name.
    let rows = audit_rows(&app).await;
    let refused: Vec<_> = rows[audited_before..].iter().collect();
    assert_eq!(refused.len(), mutating + 2, "{refused:#?}");
    assert!(refused
        .iter()
        .all(|r| r["status"] == 401 && r["token_name"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_limit_what_a_token_may_do() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.client
        .add_server(&tagged(&host, "web1", "web"))
        .await
        .unwrap();
    app.client
        .add_server(&tagged(&host, "db1", "db"))
        .await
        .unwrap();
    let viewer = app
        .client_as("view", Role::Viewer, Scope::default())
        .await
        .unwrap();
    let operator = app
        .client_as("ops", Role::Operator, Scope::default())
        .await
        .unwrap();
    let dba = app
        .client_as("dba", Role::Dba, Scope::default())
        .await
        .unwrap();
    let web_only = Scope {
        tags: [("role".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    let web_ops = app
        .client_as("web-ops", Role::Operator, web_only)
        .await
        .unwrap();
    let act = |server: &str, kind: &str| json!({"server": server, "kind": kind, "params": {}});
    let script = |server: &str| json!({"server": server, "kind": "run_script", "params": {"script": "true"}});

    // A viewer reads everything and changes nothing.
    assert_eq!(viewer.servers().await.unwrap().len(), 2);
    let viewer_token = viewer_secret(&app).await;
    for op in operations(&app).await {
        if is_mutating(&op.0) {
            let resp = send(&app, &op, Some(&viewer_token)).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "viewer {op:?}");
        }
    }

    // An operator runs scripts and backups, not promotes, restores, servers, schedules, tokens.
    assert_eq!(status(operator.submit(&script("web1")).await), 202);
    for kind in ["db_promote", "db_restore", "db_configure_master"] {
        let e = operator.submit(&act("db1", kind)).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{kind}: {e}");
        assert!(e.to_string().contains("needs dba"), "{e}");
    }
    for (path, body) in [
        ("/v1/servers", tagged(&host, "web2", "web")),
        (
            "/v1/schedules",
            json!({"name": "s", "target": {"server": "web1"}, "kind": "db_status", "every_s": 60}),
        ),
        ("/v1/tokens", json!({"name": "mine", "role": "admin"})),
    ] {
        let e = operator.post(path, &body).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{path}: {e}");
    }
    assert_eq!(operator.tokens().await.unwrap_err().status(), Some(403));
    // A dba may promote.
    assert_eq!(status(dba.submit(&act("db1", "db_status")).await), 202);
    assert_eq!(status(dba.submit(&act("db1", "db_promote")).await), 202);

    // A token scoped to role=web reaches web1 only, and says why not db1.
    assert_eq!(status(web_ops.submit(&script("web1")).await), 202);
    let e = web_ops.submit(&script("db1")).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("tags role=web"), "{e}");
    let names: Vec<_> = web_ops
        .servers()
        .await
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web1"]);
    let (listed, _) = web_ops.actions("limit=100").await.unwrap();
    assert!(!listed.is_empty() && listed.iter().all(|a| a.server == "web1"));
    let on_db1 = dba.actions("server=db1").await.unwrap().0[0].id;
    assert_eq!(
        web_ops.action(on_db1).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        web_ops.cancel(on_db1).await.unwrap_err().status(),
        Some(403)
    );
    // Who submitted each action is on it.
    let by: Vec<_> = listed.iter().map(|a| a.submitted_by.as_str()).collect();
    assert!(
        by.contains(&"token:web-ops") && by.contains(&"token:ops"),
        "{by:?}"
    );
}

/// The secret of a new viewer token (for raw requests).
async fn viewer_secret(app: &TestApp) -> String {
    app.client
        .create_token(&shared::auth::TokenRequest {
            name: "view-raw".into(),
            role: Role::Viewer,
            scope: Scope::default(),
            expires_in: None,
        })
        .await
        .unwrap()
        .token
}

fn status<T>(r: Result<T, client::ClientError>) -> u16 {
    match r {
        Ok(_) => 202,
        Err(e) => e.status().unwrap_or(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused_and_the_secret_is_kept_nowhere() {
    let app = TestApp::spawn().await.unwrap();
    // Through an sa-api process, whose log is read at the end.
    let (api, admin) = app.start_api_process("auth-api").await.unwrap();
    let made = admin
        .create_token(&shared::auth::TokenRequest {
            name: "short".into(),
            role: Role::Viewer,
            scope: Scope::default(),
            expires_in: Some("1s".into()),
        })
        .await
        .unwrap();
    let short = admin.clone().with_token(&made.token);
    assert!(made.info.expires_at.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = short.servers().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("expired"), "{e}");

    // `sa-api tokens create` against the store prints the secret alone.
    let out = std::process::Command::new(testbed::procs::bin_dir().join("sa-api"))
        .env_clear()
        .envs(testbed::procs::env_of(&app.cfg))
        .args([
            "tokens", "create", "--name", "ci", "--role", "operator", "--tag", "role=web",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap();
    let secret = secret.trim();
    assert!(
        secret.starts_with("sa_") && !secret.contains('\n'),
        "{secret:?}"
    );
    let ci = admin.clone().with_token(secret);
    assert!(ci.servers().await.unwrap().is_empty());

    // Revoked through the api: refused at once by it.
    admin.revoke_token("ci").await.unwrap();
    let e = ci.servers().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("revoked"), "{e}");

    // The store holds only hashes; no response, audit row or log line holds a secret.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(hashes.contains(&shared::db::tokens::hash(secret)));
    let everything: String =
        sqlx::query_scalar("SELECT (SELECT json_agg(t)::text FROM tokens t) || (SELECT json_agg(a)::text FROM audit a)")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let listed = serde_json::to_string(&admin.tokens().await.unwrap()).unwrap();
    let audit = serde_json::to_string(&admin.audit("limit=1000").await.unwrap()).unwrap();
    let log_file = format!("/tmp/{}.log", api.name);
    drop(api);
    let log = std::fs::read_to_string(log_file).unwrap();
    for secret in [secret, made.token.as_str(), app.token.as_str()] {
        for (what, text) in [
            ("store", &everything),
            ("list", &listed),
            ("audit", &audit),
            ("log", &log),
        ] {
            assert!(!text.contains(secret), "a secret is in the {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_call_is_audited_with_its_token_and_outcome() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    let ops = app
        .client_as("ops", Role::Operator, Scope::default())
        .await
        .unwrap();
    app.add_host("web1", &host).await.unwrap();
    let a = ops.run_script("web1", "sleep 30", &[]).await.unwrap();
    ops.cancel(a.id).await.unwrap();
    assert_eq!(
        ops.post("/v1/servers", &host.server_json("web2"))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let schedule = json!({"name": "st", "target": {"server": "web1"}, "kind": "run_script",
        "params": {"script": "true", "env": {"DB_PASSWORD": "hunter2"}}, "every_s": 3600});
    app.client.post("/v1/schedules", &schedule).await.unwrap();
    app.client
        .patch("/v1/schedules/st", &json!({"every_s": 7200}))
        .await
        .unwrap();
    app.client_as("tmp", Role::Viewer, Scope::default())
        .await
        .unwrap();
    app.client.revoke_token("tmp").await.unwrap();
    app.client.delete("/v1/servers/web1").await.unwrap();
    let rows = audit_rows(&app).await;
    let seen: Vec<(String, String, String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["token_name"].as_str().unwrap_or("-").to_string(),
                r["method"].as_str().unwrap().to_string(),
                r["route"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
                r["target"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let row = |t: &str, m: &str, r: &str, s: i64, target: &str| {
        (
            t.to_string(),
            m.to_string(),
            r.to_string(),
            s,
            target.to_string(),
        )
    };
    let expected = vec![
        row("admin", "POST", "/v1/tokens", 201, "token:ops"),
        row("admin", "POST", "/v1/servers", 201, "server:web1"),
        row("ops", "POST", "/v1/actions", 202, "server:web1"),
        row(
            "ops",
            "POST",
            "/v1/actions/{id}/cancel",
            200,
            &format!("action:{}", a.id),
        ),
        row("ops", "POST", "/v1/servers", 403, "server:web2"),
        row("admin", "POST", "/v1/schedules", 201, "schedule:st"),
        row("admin", "PATCH", "/v1/schedules/{name}", 200, "schedule:st"),
        row("admin", "POST", "/v1/tokens", 201, "token:tmp"),
        row("admin", "DELETE", "/v1/tokens/{name}", 200, "token:tmp"),
        row("admin", "DELETE", "/v1/servers/{name}", 204, "server:web1"),
    ];
    assert_eq!(seen, expected);
    let patch = &rows[6]["changes"]["every_s"];
    assert_eq!(*patch, json!({"from": 3600, "to": 7200}));
    assert_eq!(rows[2]["changes"]["action"], a.id);
    assert!(rows.iter().all(|r| r["client_addr"] == "127.0.0.1"));
    assert_eq!(rows[5]["changes"]["params"]["env"]["DB_PASSWORD"], "***");
    assert!(!serde_json::to_string(&rows).unwrap().contains("hunter2"));
    // Filters.
    let by_ops = app.client.audit("token=ops").await.unwrap().entries;
    assert_eq!(by_ops.len(), 3);
    let on_st = app
        .client
        .audit("target=schedule:st")
        .await
        .unwrap()
        .entries;
    assert_eq!(on_st.len(), 2);
    let action = app.client.action(a.id).await.unwrap();
    assert_eq!(action.submitted_by, "token:ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_safe_to_open_in_a_browser() {
    let app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| app.client.url(p);
    let body = json!({"server": "web1", "kind": "run_script", "params": {"script": "true"}});

    // DNS rebinding: a Host that is not ours is refused, whatever the token.
    let r = http
        .get(url("/v1/servers"))
        .header("host", "rebind.example:8080")
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let r = http
        .get(url("/ui/actions"))
        .header("host", "rebind.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    // CSRF: a state change from another origin is refused, from our own it is not.
    let r = http
        .post(url("/v1/actions"))
        .header("origin", "http://evil.example")
        .bearer_auth(&app.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.action_count().await, 0);
    let r = http
        .post(url("/v1/actions"))
        .header("origin", app.api_url.as_str())
        .bearer_auth(&app.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // No cookie is set, and a cancel without a token is refused.
    let r = http
        .post(url(&format!("/v1/actions/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.headers().contains_key("set-cookie"));
    // /metrics needs a token; /healthz does not.
    let r = http.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(app
        .client
        .metrics()
        .await
        .unwrap()
        .contains("sa_actions_submitted_total"));
    assert!(http
        .get(url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // Guessing tokens: after 20 bad ones from an address, even a good one waits.
    for _ in 0..20 {
        let r = http
            .get(url("/v1/servers"))
            .bearer_auth(format!("sa_{}", "B".repeat(43)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = http
        .get(url("/v1/servers"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_writes_one_admin_token_file_and_metrics_may_be_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/admin-token");
    let f = file.clone();
    let app = TestApp::spawn_with(move |c| {
        c.admin_token_file = Some(f);
        c.metrics_open = true;
    })
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(app.client.tokens().await.unwrap()[0].name == "admin");
    assert!(reqwest::get(app.client.url("/metrics"))
        .await
        .unwrap()
        .status()
        .is_success());
    // Another new store with the file still there: the api refuses to overwrite it.
    let f = file.clone();
    let err = TestApp::spawn_with(move |c| c.admin_token_file = Some(f))
        .await
        .err()
        .expect("an api that would overwrite the token file");
    assert!(
        format!("{err:#}").contains("SA_ADMIN_TOKEN_FILE"),
        "{err:#}"
    );
    // No token checks at all is for the benchmark, on loopback only.
    let err = TestApp::spawn_with(|c| {
        c.insecure_no_auth = true;
        c.listen = ([0, 0, 0, 0], 0).into();
    })
    .await
    .err()
    .expect("an api without tokens on every interface");
    assert!(
        format!("{err:#}").contains("SA_INSECURE_NO_AUTH"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_tls_with_its_own_certificate() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let (c, k) = (cert_file.clone(), key_file.clone());
    let app = TestApp::spawn_with(move |cfg| {
        cfg.tls_cert = Some(c);
        cfg.tls_key = Some(k);
    })
    .await
    .unwrap();
    assert!(app.api_url.starts_with("https://"));
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    assert_eq!(app.client.servers().await.unwrap().len(), 1);
    // Plain HTTP to the same port gets no answer; an untrusted client refuses the certificate.
    let plain = app.api_url.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    assert!(!client::Client::new(&app.api_url).healthy().await);
}
