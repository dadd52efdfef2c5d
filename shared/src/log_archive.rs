//! Old action logs, moved to the backup bucket. Once an action ended more than
//! `SA_LOG_RETENTION_DAYS` ago, a worker writes its lines as gzipped JSON lines to
//! `logs/action-<id>.jsonl.gz` (in chunks, like backups), records it in `action_log_archives`,
//! and deletes the lines from PostgreSQL in small batches. The api reads an archived log back
//! from the bucket, streamed (slower than from PostgreSQL, never held whole in memory).

use std::{
    io::{BufRead, Write},
    sync::atomic::AtomicU64,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::{io::AsyncWriteExt, sync::mpsc};

use crate::{
    db::{backups::chunk_key, logs},
    log::{LogLine, Stream},
    s3::Bucket,
};

/// Lines deleted from PostgreSQL per statement once a log is archived.
const DELETE_BATCH: i64 = 5_000;
/// A claim older than this is taken to belong to a worker that died.
const CLAIM_S: f64 = 600.0;

/// Where the log of action `id` goes (its chunks: `<key>.000001`...).
pub fn key(id: i64) -> String {
    format!("logs/action-{id}.jsonl.gz")
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Archive {
    pub action_id: i64,
    pub object_key: String,
    pub chunks: i32,
    pub lines: i32,
    pub bytes: i64,
}

/// The archive of action `id`, once complete.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Archive>> {
    sqlx::query_as(
        "SELECT action_id, object_key, chunks, lines, bytes FROM action_log_archives
         WHERE action_id = $1 AND done_at IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One stored line.
#[derive(Serialize, Deserialize)]
struct Stored {
    seq: i32,
    ts: DateTime<Utc>,
    stream: i16,
    line: String,
}

/// Archive the logs of up to `batch` actions that ended more than `days` days ago; returns
/// how many were archived.
pub async fn archive_due(
    pool: &PgPool,
    bucket: &Bucket,
    days: u32,
    batch: i64,
) -> anyhow::Result<usize> {
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM actions WHERE NOT log_archived AND finished_at IS NOT NULL
           AND finished_at < now() - make_interval(days => $1)
         ORDER BY finished_at LIMIT $2",
    )
    .bind(days as i32)
    .bind(batch)
    .fetch_all(pool)
    .await?;
    let mut done = 0;
    for id in due {
        if archive_one(pool, bucket, id).await? {
            done += 1;
        }
    }
    Ok(done)
}

/// Archive the log of action `id` unless another worker is at it. An action without lines is
/// only marked.
async fn archive_one(pool: &PgPool, bucket: &Bucket, id: i64) -> anyhow::Result<bool> {
    let key = key(id);
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO action_log_archives (action_id, object_key) VALUES ($1, $2)
         ON CONFLICT (action_id) DO UPDATE SET claimed_at = now()
           WHERE action_log_archives.done_at IS NULL
             AND action_log_archives.claimed_at < now() - make_interval(secs => $3)
         RETURNING action_id",
    )
    .bind(id)
    .bind(&key)
    .bind(CLAIM_S)
    .fetch_optional(pool)
    .await?;
    if claimed.is_none() {
        return Ok(false);
    }
    let last = logs::last_seq(pool, id).await?;
    let (chunks, lines, bytes) = if last == 0 {
        (0, 0, 0)
    } else {
        upload(pool, bucket, id, &key).await?
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE action_log_archives SET done_at = now(), chunks = $2, lines = $3, bytes = $4
         WHERE action_id = $1",
    )
    .bind(id)
    .bind(chunks)
    .bind(lines)
    .bind(bytes)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE actions SET log_archived = true WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Readers go to the bucket from now on: the lines can go, a batch at a time.
    loop {
        let gone = sqlx::query(
            "DELETE FROM action_log WHERE action_id = $1 AND seq IN
               (SELECT seq FROM action_log WHERE action_id = $1 ORDER BY seq LIMIT $2)",
        )
        .bind(id)
        .bind(DELETE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        if gone == 0 {
            return Ok(true);
        }
    }
}

/// Stream the lines of action `id` from PostgreSQL into the bucket, gzipped, a page at a time.
/// Returns (chunks, lines, compressed bytes).
async fn upload(
    pool: &PgPool,
    bucket: &Bucket,
    id: i64,
    key: &str,
) -> anyhow::Result<(i32, i32, i64)> {
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<i32, String>>();
    let pool = pool.clone();
    tokio::spawn(async move {
        let result = async {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let (mut after, mut count) = (0, 0);
            loop {
                let page = logs::fetch(&pool, id, after, i32::MAX, 10_000)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last().map(|l| l.seq) else {
                    break;
                };
                for l in page {
                    let stored = Stored {
                        seq: l.seq,
                        ts: l.ts,
                        stream: l.stream as i16,
                        line: l.line,
                    };
                    serde_json::to_writer(&mut gz, &stored).map_err(|e| e.to_string())?;
                    gz.write_all(b"\n").map_err(|e| e.to_string())?;
                    count += 1;
                }
                after = last;
                let out = std::mem::take(gz.get_mut());
                tx.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            let out = gz.finish().map_err(|e| e.to_string())?;
            tx.write_all(&out).await.map_err(|e| e.to_string())?;
            tx.shutdown().await.map_err(|e| e.to_string())?;
            Ok(count)
        }
        .await;
        let _ = done_tx.send(result);
    });
    let progress = AtomicU64::new(0);
    let confirm = async {
        match done_rx.await {
            Ok(Ok(n)) => (true, Ok(n)),
            Ok(Err(e)) => (false, Err(e)),
            Err(_) => (false, Err("the log reader stopped".to_string())),
        }
    };
    let (up, lines) = bucket
        .upload(
            key,
            rx,
            &progress,
            std::future::pending(),
            confirm,
            |_, _| Vec::new(),
        )
        .await?;
    let lines = lines.map_err(|e| anyhow::anyhow!("reading the log of action {id}: {e}"))?;
    Ok((up.chunks as i32, lines, up.bytes as i64))
}

/// The lines of `archive`, in order, decoded as the bucket streams them (a bounded channel:
/// a slow reader holds the download back).
pub fn lines(bucket: &Bucket, archive: &Archive) -> mpsc::Receiver<Result<LogLine, String>> {
    let (tx, rx) = mpsc::channel(1024);
    if archive.chunks <= 0 {
        return rx; // nothing was stored: no lines
    }
    let keys = (1..=archive.chunks.max(0) as usize)
        .map(|n| chunk_key(&archive.object_key, n))
        .collect();
    let bridge = tokio_util::io::SyncIoBridge::new(bucket.get_all(keys));
    tokio::task::spawn_blocking(move || {
        let gz = std::io::BufReader::new(flate2::read::GzDecoder::new(bridge));
        for line in gz.lines() {
            let parsed = line.map_err(|e| e.to_string()).and_then(|l| {
                serde_json::from_str::<Stored>(&l)
                    .map(|s| LogLine {
                        seq: s.seq,
                        ts: s.ts,
                        stream: Stream::from_i16(s.stream),
                        line: s.line,
                    })
                    .map_err(|e| e.to_string())
            });
            let failed = parsed.is_err();
            if tx.blocking_send(parsed).is_err() || failed {
                return;
            }
        }
    });
    rx
}
