//! `GET /v1/actions/{id}/log`: the rendered log as text, streamed in pages. `?after=SEQ` returns
//! only later lines; the `X-Last-Seq` header gives the last sequence number included.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use shared::db::{actions, logs};

use crate::{
    error::{ApiError, ApiResult},
    startup::AppState,
};

const PAGE: i64 = 10_000;

#[derive(Deserialize)]
pub struct LogQuery {
    after: Option<String>,
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let id = super::action_id(&id)?;
    let after: i32 = match q.after.as_deref() {
        None => 0,
        Some(s) => s.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad("after", "after: must be a non-negative sequence number")
        })?,
    };
    if actions::get(&state.pool, id).await?.is_none() {
        return Err(ApiError::not_found(format!("no action {id}")));
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
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-last-seq"),
                upto.to_string(),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}
