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

/// Append lines of a running action, fenced by its server's lease: nothing is written and
/// `Ok(false)` comes back once the lease `(server, generation)` is gone. Large batches go
/// through COPY. The lease row is share-locked until commit, so a reaper waits for the batch.
pub async fn append_fenced(
    pool: &PgPool,
    lease: (&str, i64),
    action_id: i64,
    first_seq: i32,
    lines: &[NewLine],
    copy_from: usize,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM server_leases WHERE server = $1 AND generation = $2 FOR KEY SHARE",
    )
    .bind(lease.0)
    .bind(lease.1)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        return Ok(false);
    }
    if lines.len() >= copy_from {
        copy(&mut tx, action_id, first_seq, lines).await?;
    } else {
        append(&mut *tx, action_id, first_seq, lines).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Append a large batch with `COPY ... FROM STDIN` (the store's fastest path; same result as
/// [`append`]).
async fn copy(
    conn: &mut sqlx::PgConnection,
    action_id: i64,
    first_seq: i32,
    lines: &[NewLine],
) -> sqlx::Result<()> {
    let mut data = String::with_capacity(lines.len() * 64);
    for (i, l) in lines.iter().enumerate() {
        use std::fmt::Write;
        let _ = write!(
            data,
            "{action_id}\t{}\t{}\t{}\t",
            first_seq + i as i32,
            l.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            l.stream as i16
        );
        escape_copy_text(&l.line, &mut data);
        data.push('\n');
    }
    let mut copy = conn
        .copy_in_raw("COPY action_log (action_id, seq, ts, stream, line) FROM STDIN")
        .await?;
    if let Err(e) = copy.send(data.into_bytes()).await {
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

/// Escape a value for COPY's text format.
fn escape_copy_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
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
/// The most line text one page of the log holds (a page always has at least one line): what a
/// request for 10,000 lines of 64 KiB each costs the api stays bounded.
pub const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// Rows of `inner` (seq, ts, stream, line) in `order`, cut once their text passes `PAGE_BYTES`.
fn bounded(inner: &str, order: &str) -> String {
    format!(
        "SELECT seq, ts, stream, line FROM (
             SELECT seq, ts, stream, line,
                    sum(octet_length(line)) OVER (ORDER BY seq {order}) - octet_length(line) AS before
             FROM ({inner}) page) w
         WHERE before < {PAGE_BYTES} ORDER BY seq {order}"
    )
}

pub async fn fetch(
    pool: &PgPool,
    action_id: i64,
    after: i32,
    upto: i32,
    limit: i64,
) -> sqlx::Result<Vec<LogLine>> {
    let rows: Vec<(i32, DateTime<Utc>, i16, String)> = sqlx::query_as(&bounded(
        "SELECT seq, ts, stream, line FROM action_log
         WHERE action_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        "",
    ))
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

fn to_lines(rows: Vec<(i32, DateTime<Utc>, i16, String)>) -> Vec<LogLine> {
    rows.into_iter()
        .map(|(seq, ts, stream, line)| LogLine {
            seq,
            ts,
            stream: Stream::from_i16(stream),
            line,
        })
        .collect()
}

/// The last `limit` lines, in order (for "jump to the end").
pub async fn tail(pool: &PgPool, action_id: i64, limit: i64) -> sqlx::Result<Vec<LogLine>> {
    let mut rows: Vec<(i32, DateTime<Utc>, i16, String)> = sqlx::query_as(&bounded(
        "SELECT seq, ts, stream, line FROM action_log WHERE action_id = $1 ORDER BY seq DESC LIMIT $2",
        "DESC",
    ))
    .bind(action_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(to_lines(rows))
}

/// Lines after `after` containing `needle` (case-insensitive), at most `limit`, in order.
pub async fn search(
    pool: &PgPool,
    action_id: i64,
    needle: &str,
    after: i32,
    limit: i64,
) -> sqlx::Result<Vec<LogLine>> {
    // strpos on lower(): a plain substring, no LIKE wildcards to escape.
    let rows = sqlx::query_as(&bounded(
        "SELECT seq, ts, stream, line FROM action_log
         WHERE action_id = $1 AND seq > $2 AND strpos(lower(line), lower($3)) > 0
         ORDER BY seq LIMIT $4",
        "",
    ))
    .bind(action_id)
    .bind(after)
    .bind(needle)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(to_lines(rows))
}
