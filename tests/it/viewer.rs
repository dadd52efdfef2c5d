//! The log viewer in a real (headless) Chromium: the token prompt, live tail without reloading,
//! hostile output shown as text, filters, a 1,000,000-line log that opens at once and is
//! searched on the server. Screenshots of the action page and the list are saved under the
//! target directory.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use shared::Status;
use testbed::browser::Browser;

use crate::{TestApp, TestHost};

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("ui-screenshots").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_tails_live_escapes_output_filters_and_opens_big_logs() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let browser = Browser::start().await.unwrap();

    let failing = app
        .client
        .run_script("web1", "echo broken >&2; exit 2", &[])
        .await
        .unwrap();
    app.wait(failing.id).await;
    let slow = app
        .client
        .run_script(
            "web1",
            r#"echo '<script>alert(1)</script>'; echo '<img src=x onerror=alert(2)>'; for i in 1 2 3 4 5 6 7 8; do echo "tick $i"; sleep 0.5; done"#,
            &[],
        )
        .await
        .unwrap();

    browser.sign_in(&app.api_url, &app.token).await.unwrap();

    // The action page: lines appear while it runs, without a reload.
    browser
        .goto(&format!("{}/ui/actions/{}", app.api_url, slow.id))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('log')",
                Duration::from_secs(10)
            )
            .await
    );
    assert_tails_live(&browser, "tick 6").await;
    // Hostile output is text: no element was created from it, no dialog opened.
    assert!(browser
        .eval(&log_has("<script>alert(1)</script>"))
        .await
        .unwrap()
        .as_bool()
        .unwrap());
    assert!(browser
        .eval(&log_has("<img src=x onerror=alert(2)>"))
        .await
        .unwrap()
        .as_bool()
        .unwrap());
    let injected = browser
        .eval("return document.querySelectorAll('#log img, #log script').length")
        .await
        .unwrap();
    assert_eq!(injected, 0);
    assert_eq!(browser.alert_text().await, None, "an alert opened");
    let lines = browser
        .eval("return document.querySelectorAll('#log div').length")
        .await
        .unwrap();
    assert_eq!(
        lines.as_u64().unwrap() as usize,
        app.log(slow.id).await.lines().count(),
        "line count differs"
    );
    browser.screenshot(&artifact("action.png")).await.unwrap();

    // The list: both actions, then only the failed one with the status filter.
    browser
        .goto(&format!("{}/ui/actions", app.api_url))
        .await
        .unwrap();
    let rows = "return document.querySelectorAll('#actions tr[data-id]').length";
    assert!(
        browser
            .wait_for(&format!("{rows} === 2"), Duration::from_secs(10))
            .await
    );
    browser.screenshot(&artifact("actions.png")).await.unwrap();
    browser
        .goto(&format!("{}/ui/actions?status=failed", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(&format!("{rows} === 1"), Duration::from_secs(10))
            .await
    );
    let id = browser
        .eval("return document.querySelector('#actions tr[data-id]').dataset.id")
        .await
        .unwrap();
    assert_eq!(id, Value::String(failing.id.to_string()));

    // A 1,000,000-line log opens with its first page and is searched on the server.
    let big = app
        .client
        .run_script("web1", "seq 1000000", &[])
        .await
        .unwrap();
    let big = app
        .client
        .wait(big.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(big.status, Status::Succeeded);
    let opened = std::time::Instant::now();
    browser
        .goto(&format!("{}/ui/actions/{}", app.api_url, big.id))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return document.querySelectorAll('#log div').length >= 1000",
                Duration::from_secs(20)
            )
            .await
    );
    println!("1M-line log page shown in {:?}", opened.elapsed());
    browser
        .eval("document.getElementById('search').value = '999990'; document.getElementById('search-form').requestSubmit(); return true")
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return document.getElementById('results').textContent.includes(': 999990')",
                Duration::from_secs(20)
            )
            .await
    );
    browser
        .eval("document.getElementById('end').click(); return true")
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                &log_has("Server action successfully completed"),
                Duration::from_secs(20)
            )
            .await
    );

    // The pages carry a Content-Security-Policy.
    let resp = reqwest::get(format!("{}/ui/actions", app.api_url))
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_asks_for_a_token_and_tails_with_auth_on() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let browser = Browser::start().await.unwrap();

    let before = app
        .client
        .run_script("web1", "echo before", &[])
        .await
        .unwrap();
    app.wait(before.id).await;

    // No token: the prompt instead of the page.
    browser
        .goto(&format!("{}/ui/actions", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('token')",
                Duration::from_secs(10)
            )
            .await,
        "no token prompt"
    );
    assert_eq!(
        browser
            .eval("return !!document.getElementById('actions')")
            .await
            .unwrap(),
        Value::Bool(false),
        "the actions table is shown without a token"
    );

    // A wrong token: the API's message, and the prompt stays.
    browser
        .eval(
            "document.getElementById('token').value = 'sa_wrong'; \
             document.getElementById('token-form').requestSubmit(); return true",
        )
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "const e = document.getElementById('token-error'); \
                 return !!e && e.textContent.trim().length > 0",
                Duration::from_secs(10)
            )
            .await,
        "no message for a wrong token"
    );
    assert_eq!(
        browser
            .eval(
                "return !!document.getElementById('token') && \
                 !document.getElementById('actions')"
            )
            .await
            .unwrap(),
        Value::Bool(true),
        "the prompt went away after a wrong token"
    );
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('sa_token')")
            .await
            .unwrap(),
        Value::Null,
        "a refused token was kept"
    );

    // The right token: the list, with the action submitted before and who submitted it.
    browser.sign_in(&app.api_url, &app.token).await.unwrap();
    assert!(
        browser
            .wait_for(
                &format!(
                    "return !!document.querySelector('#actions tr[data-id=\"{}\"]')",
                    before.id
                ),
                Duration::from_secs(10)
            )
            .await,
        "the earlier action is not listed"
    );
    let by = browser
        .eval(&format!(
            "const heads = [...document.querySelectorAll('#actions th')].map((h) => h.textContent); \
             const row = document.querySelector('#actions tr[data-id=\"{}\"]'); \
             const i = heads.indexOf('By'); return i < 0 ? null : row.cells[i].textContent",
            before.id
        ))
        .await
        .unwrap();
    assert!(
        by.as_str().is_some_and(|s| !s.is_empty()),
        "no submitter in the By column: {by}"
    );

    // A running action's page: lines stream in over the authenticated fetch, without a reload.
    let slow = app
        .client
        .run_script(
            "web1",
            r#"for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done"#,
            &[],
        )
        .await
        .unwrap();
    browser
        .goto(&format!("{}/ui/actions/{}", app.api_url, slow.id))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('log')",
                Duration::from_secs(10)
            )
            .await,
        "no action page"
    );
    assert_tails_live(&browser, "tick 5").await;
    assert!(browser
        .eval("return document.getElementById('facts').textContent.includes('Submitted by')")
        .await
        .unwrap()
        .as_bool()
        .unwrap());
    // Every line once: none lost or repeated across the stream (its last ones may follow the
    // facts by a moment).
    let stored = app.log(slow.id).await.lines().count();
    let shown = "return document.querySelectorAll('#log div').length";
    assert!(
        browser
            .wait_for(&format!("{shown} === {stored}"), Duration::from_secs(10))
            .await,
        "{} lines shown, {stored} stored",
        browser.eval(shown).await.unwrap()
    );

    // The token is in this tab's session storage only: no cookie.
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('sa_token')")
            .await
            .unwrap(),
        Value::String(app.token.clone())
    );
    assert_eq!(
        browser.eval("return document.cookie").await.unwrap(),
        Value::String(String::new())
    );

    // Sign out: the token is gone and the prompt is back.
    browser
        .eval("document.getElementById('sign-out').click(); return true")
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(
                "return !!document.getElementById('token') && !document.getElementById('log')",
                Duration::from_secs(10)
            )
            .await,
        "no prompt after signing out"
    );
    assert_eq!(
        browser
            .eval("return sessionStorage.getItem('sa_token')")
            .await
            .unwrap(),
        Value::Null
    );
}

/// On an action page: the first tick and then `last` appear without a reload, and the facts
/// show the end.
async fn assert_tails_live(browser: &Browser, last: &str) {
    browser
        .eval("window.__same_page = 'yes'; return true")
        .await
        .unwrap();
    assert!(
        browser
            .wait_for(&log_has("tick 1"), Duration::from_secs(20))
            .await,
        "no live lines"
    );
    assert!(
        browser
            .wait_for(&log_has(last), Duration::from_secs(20))
            .await,
        "live tail stalled"
    );
    assert_eq!(
        browser.eval("return window.__same_page").await.unwrap(),
        "yes",
        "the page reloaded"
    );
    assert!(
        browser
            .wait_for(
                "return document.getElementById('facts').textContent.includes('succeeded')",
                Duration::from_secs(20)
            )
            .await,
        "the facts did not show the end"
    );
}

/// A script that says whether the page's log shows `s`.
fn log_has(s: &str) -> String {
    format!("return document.getElementById('log').textContent.includes({s:?})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_draws_a_runs_grid_and_offers_operational_scripts() {
    let mut app = TestApp::spawn().await.unwrap();
    let hosts = [
        TestHost::start().unwrap(),
        TestHost::start().unwrap(),
        TestHost::start().unwrap(),
    ];
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("web{i}"), h).await.unwrap();
    }
    std::fs::write(hosts[1].dir.join("fail"), "").unwrap();
    app.spawn_worker().await.unwrap();
    let (_, made) = app
        .client
        .post("/v1/runs", &serde_json::json!({"target": {"servers": ["web0", "web1", "web2"]}, "kind": "run_script",
            "params": {"script": "[ ! -e \"$SA_HOST_DIR/fail\" ]"}}))
        .await
        .unwrap();
    let id = made["run"]["id"].as_i64().unwrap();
    let browser = Browser::start().await.unwrap();
    browser.sign_in(&app.api_url, &app.token).await.unwrap();
    browser
        .goto(&format!("{}/ui/runs/{id}", app.api_url))
        .await
        .unwrap();
    // Live: the grid fills in as the actions end.
    assert!(
        browser
            .wait_for(
                "const c = [...document.querySelectorAll('#grid .cell')].map(c => c.dataset.status); \
                 return c.length === 3 && c.filter(s => s === 'succeeded').length === 2 && c[1] === 'failed' \
                   && document.getElementById('finished').textContent !== 'running'",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        browser.eval("return document.body.innerText").await.unwrap()
    );
    browser.screenshot(&artifact("run.png")).await.unwrap();

    // A server's template offers its operational scripts; a click runs one there.
    let (s, _) = app
        .client
        .post(
            "/v1/scripts",
            &serde_json::json!({"name": "rotate-logs", "body": "echo rotated on $(hostname)"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    let (s, _) = app
        .client
        .post(
            "/v1/templates",
            &serde_json::json!({"name": "web", "operational": [{"name": "rotate-logs"}]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    app.client
        .patch("/v1/servers/web0", &serde_json::json!({"template": "web"}))
        .await
        .unwrap();
    browser
        .goto(&format!("{}/ui/servers/web0", app.api_url))
        .await
        .unwrap();
    assert!(
        browser
            .wait_for("return [...document.querySelectorAll('#operational button')].some(b => b.textContent === 'Run rotate-logs')", Duration::from_secs(10))
            .await
    );
    browser
        .eval("document.querySelector('#operational button').click(); return true")
        .await
        .unwrap();
    assert!(
        browser
            .wait_for("return location.pathname.startsWith('/ui/actions/') && document.body.innerText.includes('rotated on')", Duration::from_secs(30))
            .await,
        "{}",
        browser.eval("return document.body.innerText").await.unwrap()
    );
}
