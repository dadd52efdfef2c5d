//! A typed client of the HTTP API, used by `sactl`, the demo, the benchmark and the tests. It
//! shares the api's types (`shared` without its store) and links no server code.

use std::time::Duration;

use serde_json::{json, Value};
use shared::{
    action::Action,
    auth::{AuditList, TokenCreated, TokenInfo, TokenList, TokenRequest},
    http::{ActionList, ActionRequest, ErrorBody},
    spec::{ActionSpec, RunScriptParams},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status}: {message}")]
    Api {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("cannot reach the api: {0}")]
    Http(#[from] reqwest::Error),
    /// A 2xx answer that is not what the route returns (another program on the port?).
    #[error("unexpected answer from the api: {0}")]
    Body(#[from] serde_json::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Http(_) | ClientError::Body(_) => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

/// A page of log text and the last sequence number it includes.
pub struct LogChunk {
    pub text: String,
    pub last_seq: i32,
}

impl Client {
    /// A client without a token (only `/healthz` answers it).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::default(),
            token: None,
            ca_pem: None,
        }
        .rebuild()
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_string());
        self.rebuild()
    }

    /// The same client, also trusting the PEM certificate(s) in `pem` (a private CA, or a
    /// self-signed api).
    pub fn with_ca(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        reqwest::Certificate::from_pem_bundle(pem)?;
        self.ca_pem = Some(pem.to_vec());
        Ok(self.rebuild())
    }

    fn rebuild(mut self) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")) {
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .default_headers(headers);
        for cert in self
            .ca_pem
            .as_deref()
            .and_then(|p| reqwest::Certificate::from_pem_bundle(p).ok())
            .unwrap_or_default()
        {
            b = b.add_root_certificate(cert);
        }
        self.http = b.build().unwrap_or_default();
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api {
                status,
                message: b.error,
                field: b.field,
            },
            Err(_) => ClientError::Api {
                status,
                message: format!(
                    "unknown error: {}",
                    text.chars().take(200).collect::<String>()
                ),
                field: None,
            },
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        let resp = Self::check(self.http.post(self.url(path)).json(body).send().await?).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        Ok(Self::check(self.http.get(self.url(path)).send().await?)
            .await?
            .json()
            .await?)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        Ok(
            Self::check(self.http.patch(self.url(path)).json(body).send().await?)
                .await?
                .json()
                .await?,
        )
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        Ok(
            Self::check(self.http.put(self.url(path)).json(body).send().await?)
                .await?
                .json()
                .await?,
        )
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        Self::check(self.http.delete(self.url(path)).send().await?).await?;
        Ok(())
    }

    /// `DELETE` a route that answers with a body (e.g. a script's new revision).
    pub async fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        Ok(Self::check(self.http.delete(self.url(path)).send().await?)
            .await?
            .json()
            .await?)
    }

    /// `PUT` a raw body (a script's attachment), `application/octet-stream`. Without the
    /// client's 2-minute limit: an attachment may be large.
    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<(u16, Value), ClientError> {
        let resp = Self::check(
            self.http
                .put(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .timeout(Duration::from_secs(3600))
                .body(bytes)
                .send()
                .await?,
        )
        .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    /// `GET /v1/scripts/{name}`: its newest revision, or `revision`.
    pub async fn script(&self, name: &str, revision: Option<i32>) -> Result<Value, ClientError> {
        let mut path = format!("/v1/scripts/{}", urlencode(name));
        if let Some(r) = revision {
            path.push_str(&format!("?revision={r}"));
        }
        self.get(&path).await
    }

    /// `GET /v1/deployments/{name}`: `{name, inputs, servers}`.
    pub async fn deployment(&self, name: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/deployments/{}", urlencode(name)))
            .await
    }

    /// `POST /v1/runs`: one action per server of the target; answers `{"run": Run, "actions":
    /// [ids]}`.
    pub async fn create_run(&self, body: &Value) -> Result<Value, ClientError> {
        Ok(self.post("/v1/runs", body).await?.1)
    }

    /// `GET /v1/runs/{id}`: the run with its `counts` and `actions`.
    pub async fn run(&self, id: i64) -> Result<Value, ClientError> {
        self.get(&format!("/v1/runs/{id}")).await
    }

    /// `GET /v1/runs`, newest first.
    pub async fn runs(&self) -> Result<Vec<Value>, ClientError> {
        let v = self.get("/v1/runs").await?;
        Ok(v["runs"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.http.get(self.url("/metrics")).send().await?;
        Ok(Self::check(resp).await?.text().await?)
    }

    /// `GET /healthz` answered 200.
    pub async fn healthy(&self) -> bool {
        match self.http.get(self.url("/healthz")).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    pub async fn add_server(&self, server: &Value) -> Result<Value, ClientError> {
        Ok(self.post("/v1/servers", server).await?.1)
    }

    /// Release the lock an action that could not be stopped left on `server`.
    pub async fn unlock_server(&self, server: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/servers/{}/unlock", urlencode(server));
        Ok(self.post(&path, &Value::Null).await?.1)
    }

    pub async fn servers(&self) -> Result<Vec<Value>, ClientError> {
        let v = self.get("/v1/servers").await?;
        Ok(v["servers"].as_array().cloned().unwrap_or_default())
    }

    /// Submit any action request body (the tests' bad ones too).
    pub async fn submit(&self, body: &Value) -> Result<Action, ClientError> {
        let (_, v) = self.post("/v1/actions", body).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Promote the most advanced slave of `cluster` (a `db_promote` on its master's server).
    pub async fn promote_cluster(&self, cluster: &str, force: bool) -> Result<Action, ClientError> {
        let path = format!("/v1/clusters/{cluster}/promote");
        let (_, v) = self
            .post(&path, &serde_json::json!({ "force": force }))
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    pub async fn submit_action(&self, request: &ActionRequest) -> Result<Action, ClientError> {
        self.submit(&serde_json::to_value(request)?).await
    }

    pub async fn run_script(
        &self,
        server: &str,
        script: &str,
        env: &[(&str, &str)],
    ) -> Result<Action, ClientError> {
        let spec = ActionSpec::RunScript(RunScriptParams {
            secrets: Default::default(),
            script: script.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
        self.submit_action(&ActionRequest::new(server, &spec)).await
    }

    pub async fn action(&self, id: i64) -> Result<Action, ClientError> {
        let v = self.get(&format!("/v1/actions/{id}")).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Cancel an action; returns it (status `cancelled` if it had not started).
    pub async fn cancel(&self, id: i64) -> Result<Action, ClientError> {
        let (_, v) = self
            .post(&format!("/v1/actions/{id}/cancel"), &json!({}))
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// `query` is the raw query string, e.g. `server=web1&limit=10`.
    pub async fn actions(&self, query: &str) -> Result<(Vec<Action>, Option<i64>), ClientError> {
        let list: ActionList =
            serde_json::from_value(self.get(&format!("/v1/actions?{query}")).await?)?;
        Ok((list.actions, list.next_before))
    }

    pub async fn log(&self, id: i64, after: i32) -> Result<LogChunk, ClientError> {
        let resp = Self::check(
            self.http
                .get(self.url(&format!("/v1/actions/{id}/log?after={after}")))
                .send()
                .await?,
        )
        .await?;
        let last_seq = resp
            .headers()
            .get("x-last-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(after);
        Ok(LogChunk {
            text: resp.text().await?,
            last_seq,
        })
    }

    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated, ClientError> {
        let (_, v) = self.post("/v1/tokens", &serde_json::to_value(req)?).await?;
        Ok(serde_json::from_value(v)?)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let list: TokenList = serde_json::from_value(self.get("/v1/tokens").await?)?;
        Ok(list.tokens)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo, ClientError> {
        let resp = self
            .http
            .delete(self.url(&format!("/v1/tokens/{name}")))
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// `query` is the raw query string, e.g. `token=alice&limit=20`.
    pub async fn audit(&self, query: &str) -> Result<AuditList, ClientError> {
        Ok(serde_json::from_value(
            self.get(&format!("/v1/audit?{query}")).await?,
        )?)
    }

    /// Poll until the action is terminal (or `limit` passes).
    pub async fn wait(&self, id: i64, limit: Duration) -> Result<Action, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut backoff =
            shared::backoff::Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            let a = self.action(id).await?;
            if a.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(a);
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// `s` percent-encoded for one path segment or query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
