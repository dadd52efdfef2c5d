//! A headless Chromium driven over WebDriver (`chromedriver`, Debian's `chromium-driver`), for
//! the viewer tests: open a page, run a script in it, take a screenshot. The few WebDriver calls
//! needed are plain JSON over HTTP on loopback.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let profile = tempfile::tempdir()?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let Some(session) = resp["value"]["sessionId"].as_str() else {
            bail!("no WebDriver session: {resp}");
        };
        Ok(Self {
            session: format!("{base}/session/{session}"),
            http,
            driver,
            _profile: profile,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await?.json().await?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await?;
        Ok(())
    }

    /// Run `script` (a function body; use `return`) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Poll `script` until it returns true.
    pub async fn wait_for(&self, script: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Value::Bool(true)) = self.eval(script).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Sign the viewer in with `token`: open `{base_url}/ui/actions`, fill in the token prompt
    /// and wait until the viewer accepted it (the prompt is gone). The token stays in this
    /// tab's session storage for the pages opened after. Already signed in (no prompt), it
    /// signs out first.
    pub async fn sign_in(&self, base_url: &str, token: &str) -> anyhow::Result<()> {
        self.goto(&format!("{base_url}/ui/actions")).await?;
        let shown = "return !!document.getElementById('token') || \
                     !!document.getElementById('actions')";
        if !self.wait_for(shown, Duration::from_secs(10)).await {
            bail!("neither the token prompt nor the actions page was shown");
        }
        if self
            .eval("return !document.getElementById('token')")
            .await?
            == Value::Bool(true)
        {
            self.eval("document.getElementById('sign-out').click(); return true")
                .await?;
        }
        if !self
            .wait_for(
                "return !!document.getElementById('token')",
                Duration::from_secs(10),
            )
            .await
        {
            bail!("no token prompt");
        }
        // A JSON string is a JavaScript string literal.
        let script = format!(
            "document.getElementById('token').value = {}; \
             document.getElementById('token-form').requestSubmit(); return true",
            Value::String(token.to_string())
        );
        self.eval(&script).await?;
        if !self
            .wait_for(
                "return !document.getElementById('token-form')",
                Duration::from_secs(20),
            )
            .await
        {
            let why = self
                .eval("const e = document.getElementById('token-error'); return e ? e.textContent : ''")
                .await
                .unwrap_or_default();
            bail!("the viewer did not accept the token: {why}");
        }
        Ok(())
    }

    /// The text of an open alert dialog, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.call(reqwest::Method::GET, "/alert/text", None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    pub async fn screenshot(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the browser it started.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.driver.id().to_string()])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
