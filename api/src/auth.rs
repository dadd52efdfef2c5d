//! Who is asking. Every request passes [`guard`]: its `Host` must be ours (DNS rebinding), a
//! state-changing one must not come from another origin (CSRF), `/v1/*` and `/metrics` need a
//! bearer token, bad tokens are rate-limited per client address, and a mutating request that
//! did not write its own audit row (refused, failed) gets one here. Handlers take a [`Caller`]
//! to check roles and scopes, and an accepted mutation writes its row through [`Audit::commit`]
//! in the transaction of its effect.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;
use shared::{
    auth::{Role, Scope, TokenInfo},
    db::{audit, servers::Server, tokens},
};
use sqlx::{Postgres, Transaction};

use crate::{
    error::{ApiError, ApiResult},
    startup::AppState,
};

/// How long a looked-up token is trusted before it is read again (a revocation through another
/// api replica takes effect within this; through this one, at once).
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Bad tokens one client address may present per window before it gets 429s.
const FAILURE_LIMIT: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

pub struct Auth {
    /// `false` only for the benchmark's comparison run (`SA_INSECURE_NO_AUTH`, loopback only).
    enabled: bool,
    metrics_open: bool,
    /// Lower-case host names without port; `*` allows any.
    allowed_hosts: Vec<String>,
    scheme: &'static str,
    cache: RwLock<HashMap<String, (Arc<TokenInfo>, Instant)>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Auth {
    pub fn new(cfg: &shared::Config) -> Self {
        let allowed_hosts = match &cfg.allowed_hosts {
            Some(list) => list.iter().map(|h| h.to_ascii_lowercase()).collect(),
            None => vec![
                host_only(&cfg.listen.ip().to_string()),
                "localhost".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
            ],
        };
        Self {
            enabled: !cfg.insecure_no_auth,
            metrics_open: cfg.metrics_open,
            allowed_hosts,
            scheme: if cfg.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            cache: RwLock::default(),
            failures: Mutex::default(),
        }
    }

    /// Drop a revoked token from the cache.
    pub fn forget(&self, name: &str) {
        self.cache
            .write()
            .expect("token cache")
            .retain(|_, (t, _)| t.name != name);
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host_only(host);
        self.allowed_hosts.iter().any(|h| h == "*" || *h == host)
    }

    /// `Some(seconds to wait)` while `ip` has used up its bad attempts.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().expect("failures");
        let (start, n) = failures.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*n >= FAILURE_LIMIT).then(|| left.as_secs().max(1))
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("failures");
        if failures.len() > 10_000 {
            failures.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// The token a request presents, checked: cached, else read from the store.
    async fn token(&self, state: &AppState, secret: &str) -> Result<Arc<TokenInfo>, String> {
        if !tokens::well_formed(secret) {
            return Err("malformed token".into());
        }
        let hash = tokens::hash(secret);
        let cached = self
            .cache
            .read()
            .expect("token cache")
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(t, _)| t.clone());
        let token = match cached {
            Some(t) => t,
            None => {
                let t = tokens::by_hash(&state.pool, &hash)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "token look-up");
                        "the token store is unreachable".to_string()
                    })?
                    .ok_or("unknown token")?;
                let t = Arc::new(t);
                let pool = state.pool.clone();
                let id = t.id;
                tokio::spawn(async move {
                    let _ = tokens::touch(&pool, id).await;
                });
                self.cache
                    .write()
                    .expect("token cache")
                    .insert(hash, (t.clone(), Instant::now()));
                t
            }
        };
        if token.revoked_at.is_some() {
            return Err(format!("token {:?} was revoked", token.name));
        }
        if let Some(at) = token.expires_at.filter(|at| *at <= chrono::Utc::now()) {
            return Err(format!("token {:?} expired at {at}", token.name));
        }
        Ok(token)
    }
}

/// `host[:port]` → `host`, lower-case (`[::1]:80` → `[::1]`).
fn host_only(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.starts_with('[') {
        return host
            .split_inclusive(']')
            .next()
            .unwrap_or(&host)
            .to_string();
    }
    if host.contains(':') && host.matches(':').count() > 1 {
        // A bare IPv6 address.
        return format!("[{host}]");
    }
    host.split(':').next().unwrap_or(&host).to_string()
}

/// The caller of a request that passed the guard: its token.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<TokenInfo>);

impl Caller {
    /// What an action it submits records as its origin.
    pub fn origin(&self) -> String {
        format!("token:{}", self.0.name)
    }

    pub fn scope(&self) -> &Scope {
        &self.0.scope
    }

    /// 403 unless the token's role is at least `role`.
    pub fn require(&self, role: Role, what: &str) -> ApiResult<()> {
        if self.0.role >= role {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has role {}; {what} needs {role}",
                self.0.name, self.0.role
            ),
        ))
    }

    /// 403 unless the token reaches every server (tokens, the audit trail).
    pub fn require_unscoped(&self, what: &str) -> ApiResult<()> {
        self.require(Role::Admin, what)?;
        if self.scope().is_everything() {
            return Ok(());
        }
        Err(self.outside(&format!("{what} needs a token without a scope")))
    }

    /// 403 unless `server` is within the token's scope.
    pub fn reach(&self, server: &Server) -> ApiResult<()> {
        self.reach_parts(&server.name, &server.tags.0, server.cluster.as_deref())
    }

    /// 403 unless the server `name` with `tags` in `cluster` is within the token's scope.
    pub fn reach_parts(&self, name: &str, tags: &Value, cluster: Option<&str>) -> ApiResult<()> {
        if self.scope().covers(name, tags, cluster) {
            return Ok(());
        }
        Err(self.outside(&format!("server {name:?}")))
    }

    pub fn reach_cluster(&self, cluster: &str) -> ApiResult<()> {
        if self.scope().covers_cluster(cluster) {
            return Ok(());
        }
        Err(self.outside(&format!("cluster {cluster:?}")))
    }

    fn outside(&self, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} is outside the scope of token {:?} ({})",
                self.0.name,
                self.scope()
            ),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "this route needs a token"))
    }
}

/// The audit row of a mutating request, filled in as it is handled.
#[derive(Clone)]
pub struct Audit(Arc<AuditState>);

struct AuditState {
    entry: Mutex<audit::NewEntry>,
    written: AtomicBool,
}

impl Audit {
    /// What the request is about: `server:web1`, `action:7`...
    pub fn target(&self, target: impl Into<String>) {
        self.0.entry.lock().expect("audit").target = Some(target.into());
    }

    /// The row as it stands, with `status` (for a statement that writes it with its effect).
    pub fn entry(&self, status: StatusCode) -> audit::NewEntry {
        let mut e = self.0.entry.lock().expect("audit").clone();
        e.status = status.as_u16();
        e
    }

    /// Its row was written with its effect (see [`Audit::entry`]).
    pub fn written(&self) {
        self.0.written.store(true, Ordering::Release);
    }

    /// Write the row of an accepted request in its transaction, then commit it.
    pub async fn commit(
        &self,
        mut tx: Transaction<'_, Postgres>,
        status: StatusCode,
        changes: Option<Value>,
    ) -> ApiResult<()> {
        let entry = {
            let mut e = self.0.entry.lock().expect("audit");
            e.status = status.as_u16();
            e.changes = changes.map(masked);
            e.clone()
        };
        audit::record(&mut tx, &entry).await?;
        tx.commit().await?;
        self.0.written.store(true, Ordering::Release);
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Audit>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a mutating route outside the guard"))
    }
}

/// `v` with secret values replaced by `"***"`: fields named like a password, secret or token,
/// and every value of an `env` map (a script's environment).
fn masked(mut v: Value) -> Value {
    fn walk(v: &mut Value, secret: bool) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    let s = k.contains("password") || k.contains("secret") || k == "token";
                    if k == "env" {
                        if let Value::Object(env) = x {
                            env.values_mut().for_each(|e| *e = Value::from("***"));
                            continue;
                        }
                    }
                    walk(x, secret || s);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|x| walk(x, secret)),
            _ if secret => *v = Value::from("***"),
            _ => {}
        }
    }
    walk(&mut v, false);
    v
}

fn is_mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The target a path names, for the audit rows of refused requests.
fn path_target(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches("/v1/").split('/');
    let (kind, name) = (parts.next()?, parts.next()?);
    let kind = kind.strip_suffix('s').unwrap_or(kind);
    Some(format!("{kind}:{name}"))
}

fn has_nul(uri: &axum::http::Uri) -> bool {
    let raw = uri.path_and_query().map_or("", |p| p.as_str());
    raw.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// Middleware: see the module comment.
pub async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Only a mutating `/v1` request has an audit row: reads cost nothing here.
    let audit = (is_mutating(req.method()) && path.starts_with("/v1/")).then(|| {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| path.clone(), |m| m.as_str().to_string());
        Audit(Arc::new(AuditState {
            entry: Mutex::new(audit::NewEntry {
                client_addr: addr.map_or_else(|| "unknown".into(), |a| a.to_string()),
                method: req.method().to_string(),
                target: path_target(&path),
                route,
                ..Default::default()
            }),
            written: AtomicBool::new(false),
        }))
    });
    let authority = req.uri().authority().map(|a| a.to_string());
    let admitted = admit(
        &state,
        addr,
        (req.method(), &path),
        req.headers(),
        authority.as_deref(),
    )
    .await;
    let mut resp = match admitted {
        Err(refusal) => refusal,
        // PostgreSQL's text cannot hold a NUL: refuse it here rather than in every query.
        Ok(_) if has_nul(req.uri()) => {
            ApiError::bad("url", "the URL holds a NUL character (%00)").into_response()
        }
        Ok(caller) => {
            if let Some(a) = &audit {
                if let Some(c) = &caller {
                    let mut e = a.0.entry.lock().expect("audit");
                    e.token_id = Some(c.0.id).filter(|id| *id > 0);
                    e.token_name = Some(c.0.name.clone());
                }
                req.extensions_mut().insert(a.clone());
            }
            if let Some(c) = caller {
                req.extensions_mut().insert(c);
            }
            next.run(req).await
        }
    };
    if path.starts_with("/v1/") {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(a) = audit.filter(|a| !a.0.written.load(Ordering::Acquire)) {
        let mut entry = a.0.entry.lock().expect("audit").clone();
        entry.status = resp.status().as_u16();
        let written = match state.pool.acquire().await {
            Ok(mut conn) => audit::record(&mut conn, &entry).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, route = %entry.route, "cannot write an audit row");
        }
    }
    resp
}

/// The checks before a request reaches its route: its caller (`None` on open routes), or the
/// answer that refuses it.
async fn admit(
    state: &AppState,
    addr: Option<IpAddr>,
    (method, path): (&Method, &str),
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<Option<Caller>, Response> {
    let auth = &state.auth;
    if path == "/healthz" {
        return Ok(None);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    let Some(host) = host.filter(|h| auth.host_allowed(h)) else {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "host {:?} is not one this api answers to (SA_ALLOWED_HOSTS)",
                host.unwrap_or("")
            ),
        )
        .into_response());
    };
    if is_mutating(method) {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ours = format!("{}://{host}", auth.scheme);
            if !origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&ours)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a cross-origin request may not change anything",
                )
                .into_response());
            }
        }
    }
    let needs_token = path.starts_with("/v1/") || (path == "/metrics" && !auth.metrics_open);
    if !needs_token {
        return Ok(None);
    }
    if !auth.enabled {
        return Ok(Some(Caller(Arc::new(anonymous()))));
    }
    let ip = addr.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Some(wait) = auth.blocked(ip) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many bad tokens from {ip}; try again in {wait} s"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Err(resp);
    }
    let unauthorized = |msg: String| {
        let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"serveractions\""),
        );
        resp
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this route needs a token: send Authorization: Bearer <token>".into(),
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let checked = match secret {
        None => Err("malformed Authorization header: expected \"Bearer <token>\"".to_string()),
        Some(secret) => auth.token(state, secret).await,
    };
    match checked {
        Ok(token) => Ok(Some(Caller(token))),
        Err(why) => {
            auth.failed(ip);
            Err(unauthorized(why))
        }
    }
}

/// The caller when authentication is off: an unscoped admin named `anonymous`.
fn anonymous() -> TokenInfo {
    TokenInfo {
        id: 0,
        name: "anonymous".into(),
        role: Role::Admin,
        scope: Scope::default(),
        created_by: "sa-api".into(),
        created_at: chrono::Utc::now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_changes_mask_secret_values() {
        let v = serde_json::json!({
            "params": {"script": "x", "env": {"DB_PASSWORD": "hunter2", "MODE": "a"}},
            "mysql_password": "p", "s3": {"secret_access_key": "k"}, "every_s": {"from": 1, "to": 2}
        });
        let m = masked(v);
        assert!(!m.to_string().contains("hunter2") && !m.to_string().contains("\"k\""));
        assert_eq!(m["params"]["env"]["MODE"], "***");
        assert_eq!(m["params"]["script"], "x");
        assert_eq!(m["mysql_password"], "***");
        assert_eq!(m["every_s"]["to"], 2);
    }

    #[test]
    fn hosts_compare_without_their_port() {
        assert_eq!(host_only("LocalHost:8080"), "localhost");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(host_only("::1"), "[::1]");
        assert_eq!(host_only("127.0.0.1"), "127.0.0.1");
        assert_eq!(path_target("/v1/servers/web1"), Some("server:web1".into()));
        assert_eq!(path_target("/v1/actions/7/cancel"), Some("action:7".into()));
        assert_eq!(path_target("/v1/actions"), None);
    }
}
