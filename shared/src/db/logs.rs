//! `action_log`: numbered lines per action, appended in batches.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use crate::log::{LogLine, Stream};

/// One line to store; `seq` is assigned by the single writer of the action's log.
#[derive(Clone, Debug)]
pub struct NewLine {
    pub ts: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// Append `lines` with sequence numbers `first_seq..`. One statement whatever the batch size.
pub async fn append(
    db: impl PgExecutor<'_>,
    action_id: i64,
    first_seq: i32,
    lines: &[NewLine],
) -> sqlx::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let ts: Vec<DateTime<Utc>> = lines.iter().map(|l| l.ts).collect();
    let streams: Vec<i16> = lines.iter().map(|l| l.stream as i16).collect();
    let text: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    sqlx::query(
        "INSERT INTO action_log (action_id, seq, ts, stream, line)
         SELECT $1, $2 + o - 1, t, s, l
         FROM UNNEST($3::timestamptz[], $4::smallint[], $5::text[]) WITH ORDINALITY AS u(t, s, l, o)",
    )
    .bind(action_id)
    .bind(first_seq)
    .bind(ts)
    .bind(streams)
    .bind(text)
    .execute(db)
    .await?;
    Ok(())
}

/// Append one system line after whatever is stored (for writers other than the running worker,
/// e.g. the lease reaper; call inside the transaction that changes the action's status).
pub async fn append_system(
    db: &mut sqlx::PgConnection,
    action_id: i64,
    msg: &str,
) -> sqlx::Result<()> {
    let next = last_seq(&mut *db, action_id).await? + 1;
    let lines: Vec<NewLine> = msg
        .lines()
        .map(|l| NewLine {
            ts: Utc::now(),
            stream: Stream::System,
            line: l.to_string(),
        })
        .collect();
    append(db, action_id, next, &lines).await
}

pub async fn last_seq(db: impl PgExecutor<'_>, action_id: i64) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM action_log WHERE action_id = $1")
        .bind(action_id)
        .fetch_one(db)
        .await
}

/// Lines with `after < seq <= upto`, in order, at most `limit`.
pub async fn fetch(
    pool: &PgPool,
    action_id: i64,
    after: i32,
    upto: i32,
    limit: i64,
) -> sqlx::Result<Vec<LogLine>> {
    let rows: Vec<(i32, DateTime<Utc>, i16, String)> = sqlx::query_as(
        "SELECT seq, ts, stream, line FROM action_log
         WHERE action_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
    )
    .bind(action_id)
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, ts, stream, line)| LogLine {
            seq,
            ts,
            stream: Stream::from_i16(stream),
            line,
        })
        .collect())
}
