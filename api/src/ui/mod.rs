//! The log viewer: one static HTML shell for every `/ui/...` page, a script and a style sheet,
//! all compiled in. The pages read the same JSON API as `sactl`; every string from the API is
//! put into the page as text (never as HTML), and a Content-Security-Policy allows only our own
//! script and style.

use std::sync::Arc;

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Redirect},
    routing::get,
    Router,
};

use crate::startup::AppState;

const SHELL: &str = include_str!("shell.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<Arc<AppState>> {
    let page = || async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], SHELL) };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/actions") }))
        .route("/ui", get(|| async { Redirect::to("/ui/actions") }))
        .route("/ui/actions", get(page))
        .route("/ui/actions/{id}", get(page))
        .route("/ui/servers", get(page))
        .route("/ui/servers/{name}", get(page))
        .route("/ui/clusters/{name}", get(page))
        .route("/ui/schedules", get(page))
        .route("/ui/runs", get(page))
        .route("/ui/runs/{id}", get(page))
        .route(
            "/ui/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/ui/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
}

/// Middleware: the security headers on every response.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> impl IntoResponse {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
