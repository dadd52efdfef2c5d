//! The action log writer: one per running action, the only writer of that action's lines while
//! it runs. Lines go through a bounded channel (memory stays flat whatever the script prints)
//! and are stored in batches with consecutive sequence numbers; while one batch is written, the
//! next one accumulates.

use std::time::Duration;

use chrono::Utc;
use prometheus::IntCounter;
use shared::{db::logs::NewLine, log::Stream};
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};

const CHANNEL: usize = 16 * 1024;
const BATCH: usize = 8 * 1024;
/// Batches at least this large go through COPY, smaller ones through one INSERT.
const COPY_FROM: usize = 512;

/// Where an action writes its lines. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<NewLine>,
}

impl LogSink {
    pub async fn line(&self, stream: Stream, mut line: String) {
        // PostgreSQL text cannot hold NUL: show it as U+FFFD rather than lose the line.
        if line.contains('\0') {
            line = line.replace('\0', "\u{FFFD}");
        }
        let line = NewLine {
            ts: Utc::now(),
            stream,
            line,
        };
        // Fails only if the writer gave up (store unreachable): the runner reports that.
        let _ = self.tx.send(line).await;
    }

    /// A `[time] [ServerActionsWorker] : msg` line (one per line of `msg`).
    pub async fn system(&self, msg: impl AsRef<str>) {
        for l in msg.as_ref().lines() {
            self.line(Stream::System, l.to_string()).await;
        }
    }
}

pub struct LogWriter {
    sink: LogSink,
    task: JoinHandle<Result<i32, sqlx::Error>>,
}

impl LogWriter {
    /// Start writing after line `last` (what the action's log already holds).
    pub fn start(pool: PgPool, action_id: i64, last: i32, lines_written: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let task = tokio::spawn(write_loop(pool, action_id, last, rx, lines_written));
        Self {
            sink: LogSink { tx },
            task,
        }
    }

    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// Flush everything sent so far and stop. Returns the last sequence number stored.
    pub async fn close(self) -> Result<i32, sqlx::Error> {
        drop(self.sink);
        self.task.await.expect("log writer task panicked")
    }
}

async fn write_loop(
    pool: PgPool,
    action_id: i64,
    mut last: i32,
    mut rx: mpsc::Receiver<NewLine>,
    lines_written: IntCounter,
) -> Result<i32, sqlx::Error> {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut attempt = 0;
        loop {
            let stored = if batch.len() >= COPY_FROM {
                shared::db::logs::append_copy(&pool, action_id, last + 1, &batch).await
            } else {
                shared::db::logs::append(&pool, action_id, last + 1, &batch).await
            };
            match stored {
                Ok(()) => break,
                // The store restarting: keep the lines (bounded channel = backpressure) and retry.
                Err(e) if attempt < 30 => {
                    attempt += 1;
                    tracing::warn!(action = action_id, error = %e, "log write failed, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        last += batch.len() as i32;
        lines_written.inc_by(batch.len() as u64);
        batch.clear();
    }
    Ok(last)
}
