//! Action logs.
//! - `GET /v1/actions/{id}/log`: the rendered log as `text/plain`, streamed in pages; `?after=SEQ`
//!   for the rest (header `X-Last-Seq`); `?download=1` as an attachment. With
//!   `Accept: text/event-stream` it follows the action live: one event per line (`id` = seq),
//!   then an `end` event once the action is over and every line was sent (one poller per action
//!   feeds every follower: see `tails`).
//! - `GET /v1/actions/{id}/lines`: JSON pages for the viewer: `?after=SEQ&limit=N`, `?tail=N`
//!   (the last N), `?q=TEXT` (case-insensitive search, after `after`).

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::{db::logs, log::LogLine, log_archive};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    startup::AppState,
    tails::{Next, Tail},
};

const PAGE: i64 = 10_000;
const MAX_LIMIT: i64 = 10_000;

#[derive(Deserialize)]
pub struct LogQuery {
    after: Option<String>,
    download: Option<String>,
}

fn parse_seq(field: &str, v: Option<&str>) -> ApiResult<i32> {
    match v {
        None => Ok(0),
        Some(s) => s.parse().ok().filter(|n: &i32| *n >= 0).ok_or_else(|| {
            ApiError::bad(
                field,
                format!("{field}: must be a non-negative sequence number"),
            )
        }),
    }
}

#[utoipa::path(get, path = "/v1/actions/{id}/log", tag = "logs", params(
    ("id" = i64, Path), ("after" = Option<i32>, Query, description = "lines after this seq"),
    ("download" = Option<String>, Query)), responses(
    (status = 200, description = "the rendered lines (or, with Accept: text/event-stream, a live stream); header X-Last-Seq", body = String, content_type = "text/plain"),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody),
    (status = 503, description = "SA_SSE_MAX live tails are open", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let action = super::reach_action(&state, &caller, &id).await?;
    let id = action.id;
    let mut after = parse_seq("after", q.after.as_deref())?;
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_events {
        // EventSource resumes with Last-Event-ID after a reconnect.
        if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            after = parse_seq("Last-Event-ID", Some(last))?;
        }
        if let Some((rx, _)) = archived(&state, id).await? {
            return Ok(replay(rx, after).into_response());
        }
        let tail = state
            .tails
            .follow(id)
            .map_err(|full| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, full.to_string()))?;
        return Ok(follow(tail, after).into_response());
    }
    if let Some((rx, last)) = archived(&state, id).await? {
        let text = stream_of(rx).filter_map(move |l| async move {
            match l {
                Ok(l) if l.seq > after => Some(Ok(format!("{}\n", l.render()))),
                Ok(_) => None,
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        });
        return Ok(text_response(
            Body::from_stream(text),
            last,
            q.download.is_some(),
            id,
        ));
    }
    let upto = logs::last_seq(&state.pool, id).await?.max(after);
    let pool = state.pool.clone();
    let pages = futures::stream::try_unfold(after, move |from| {
        let pool = pool.clone();
        async move {
            if from >= upto {
                return Ok::<_, sqlx::Error>(None);
            }
            let lines = logs::fetch(&pool, id, from, upto, PAGE).await?;
            let Some(last) = lines.last().map(|l| l.seq) else {
                return Ok(None);
            };
            let mut text = String::with_capacity(lines.len() * 32);
            for l in &lines {
                text.push_str(&l.render());
                text.push('\n');
            }
            Ok(Some((text, last)))
        }
    });
    Ok(text_response(
        Body::from_stream(pages),
        upto,
        q.download.is_some(),
        id,
    ))
}

fn text_response(body: Body, last_seq: i32, download: bool, id: i64) -> Response {
    let mut resp = (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-last-seq"),
                last_seq.to_string(),
            ),
        ],
        body,
    )
        .into_response();
    if download {
        let value = format!("attachment; filename=\"action-{id}.log\"");
        resp.headers_mut()
            .insert(header::CONTENT_DISPOSITION, value.parse().expect("ascii"));
    }
    resp
}

/// An archived log (see `shared::log_archive`): its lines streamed from the bucket, and its
/// last sequence number (sequence numbers run from 1 without gaps). `None`: it is in the store.
async fn archived(state: &AppState, id: i64) -> ApiResult<Option<(Archived, i32)>> {
    let Some(a) = log_archive::get(&state.pool, id).await? else {
        return Ok(None);
    };
    let bucket = state.bucket.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this log was moved to the backup bucket, and this api has no SA_S3_BUCKET",
        )
    })?;
    Ok(Some((log_archive::lines(bucket, &a), a.lines)))
}

type Archived = tokio::sync::mpsc::Receiver<Result<LogLine, String>>;

fn stream_of(rx: Archived) -> impl futures::Stream<Item = Result<LogLine, String>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (l, rx)) })
}

/// An archived log as server-sent events: its lines after `after`, then `end`.
fn replay(rx: Archived, after: i32) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = stream_of(rx)
        .filter_map(move |l| async move {
            match l {
                Ok(l) if l.seq > after => {
                    Some(Event::default().id(l.seq.to_string()).data(l.render()))
                }
                _ => None,
            }
        })
        .chain(futures::stream::once(async {
            Event::default().event("end").data("end")
        }))
        .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Server-sent events: new lines as they are stored, then `end`.
fn follow(tail: Tail, after: i32) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let state = (
        tail,
        after,
        std::collections::VecDeque::<LogLine>::new(),
        false,
    );
    let stream = futures::stream::unfold(
        state,
        |(mut tail, mut after, mut pending, done)| async move {
            if let Some(l) = pending.pop_front() {
                let ev = Event::default().id(l.seq.to_string()).data(l.render());
                return Some((Ok(ev), (tail, after, pending, done)));
            }
            if done {
                return None;
            }
            match tail.next(after).await {
                Next::Lines(lines) => {
                    after = lines.last().map_or(after, |l| l.seq);
                    pending.extend(lines);
                    let l = pending.pop_front().expect("not empty");
                    let ev = Event::default().id(l.seq.to_string()).data(l.render());
                    Some((Ok(ev), (tail, after, pending, false)))
                }
                Next::End => Some((
                    Ok(Event::default().event("end").data("end")),
                    (tail, after, pending, true),
                )),
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
pub struct LinesQuery {
    after: Option<String>,
    limit: Option<String>,
    tail: Option<String>,
    q: Option<String>,
}

fn parse_limit(field: &str, v: Option<&str>, default: i64) -> ApiResult<i64> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    field,
                    format!("{field}: must be an integer from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

/// `GET /v1/actions/{id}/lines`: JSON pages and search for the viewer.
#[utoipa::path(get, path = "/v1/actions/{id}/lines", tag = "logs", params(
    ("id" = i64, Path), ("after" = Option<i32>, Query), ("limit" = Option<i64>, Query),
    ("tail" = Option<i64>, Query), ("q" = Option<String>, Query, description = "case-insensitive search")),
    responses((status = 200, description = "a JSON page of the log", body = Object), (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn lines(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LinesQuery>,
) -> ApiResult<Json<Value>> {
    let action = super::reach_action(&state, &caller, &id).await?;
    let after = parse_seq("after", q.after.as_deref())?;
    let limit = parse_limit("limit", q.limit.as_deref(), 1000)?;
    if let Some(needle) = &q.q {
        if needle.is_empty() || needle.len() > 500 || needle.contains('\0') {
            return Err(ApiError::bad("q", "q: must be 1-500 characters, no NUL"));
        }
    }
    let tail = q
        .tail
        .as_deref()
        .map(|t| parse_limit("tail", Some(t), 1000))
        .transpose()?;
    if let Some((rx, last_seq)) = archived(&state, action.id).await? {
        let lines = page_of_archive(rx, after, limit, tail, q.q.as_deref()).await?;
        return Ok(Json(
            json!({"lines": lines, "last_seq": last_seq, "status": action.status}),
        ));
    }
    let lines = match (&q.q, tail) {
        (Some(needle), _) => logs::search(&state.pool, action.id, needle, after, limit).await?,
        (None, Some(n)) => logs::tail(&state.pool, action.id, n).await?,
        (None, None) => logs::fetch(&state.pool, action.id, after, i32::MAX, limit).await?,
    };
    let last_seq = logs::last_seq(&state.pool, action.id).await?;
    let lines: Vec<Value> = lines.iter().map(line_json).collect();
    Ok(Json(
        json!({"lines": lines, "last_seq": last_seq, "status": action.status}),
    ))
}

fn line_json(l: &LogLine) -> Value {
    json!({"seq": l.seq, "ts": l.ts, "stream": l.stream, "text": l.render()})
}

/// A page of an archived log, read from the bucket as the store's queries would answer it:
/// the lines after `after` (containing `needle`), or the last `tail`; at most
/// `logs::PAGE_BYTES` of text.
async fn page_of_archive(
    mut rx: Archived,
    after: i32,
    limit: i64,
    tail: Option<i64>,
    needle: Option<&str>,
) -> ApiResult<Vec<Value>> {
    let needle = needle.map(str::to_lowercase);
    let (mut page, mut bytes) = (std::collections::VecDeque::new(), 0i64);
    while let Some(l) = rx.recv().await {
        let l = l.map_err(|e| ApiError::internal(format!("reading the archived log: {e}")))?;
        if let (Some(n), None) = (tail, &needle) {
            bytes += l.line.len() as i64;
            page.push_back(l);
            while page.len() as i64 > n || bytes > logs::PAGE_BYTES {
                let Some(gone) = page.pop_front() else { break };
                bytes -= gone.line.len() as i64;
            }
            continue;
        }
        let wanted = l.seq > after
            && needle
                .as_deref()
                .is_none_or(|n| l.line.to_lowercase().contains(n));
        if wanted {
            bytes += l.line.len() as i64;
            page.push_back(l);
            if page.len() as i64 >= limit || bytes >= logs::PAGE_BYTES {
                break;
            }
        }
    }
    Ok(page.iter().map(line_json).collect())
}
