//! The action log writer: one per running action, the only writer of that action's lines while
//! it runs. Lines go through a channel bounded in lines and in bytes (`SA_LOG_BUFFER_BYTES`: a
//! sender waits for room, which holds back the SSH stream, so memory stays flat whatever the
//! script prints) and are stored in batches with consecutive sequence numbers; while one batch
//! is written, the next one accumulates.

use std::time::Duration;

use chrono::Utc;
use prometheus::IntCounter;
use shared::{
    db::{logs, logs::NewLine},
    log::Stream,
    secrets::Masks,
};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinHandle,
};

use crate::heartbeat::{Stop, StopReason};

const CHANNEL: usize = 16 * 1024;
const BATCH: usize = 8 * 1024;
/// Batches at least this large go through COPY, smaller ones through one INSERT.
const COPY_FROM: usize = 512;

/// Where an action writes its lines. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<NewLine>,
    /// The action's own secret values, and the worker's (database passwords): never stored.
    masks: Masks,
    worker_masks: Masks,
    /// Bytes of line text that may wait in the channel or the batch being stored.
    room: Arc<Semaphore>,
    room_bytes: usize,
}

/// The permits a line takes from the byte budget (its text, at least 1, at most all of it).
fn cost(line: &str, budget: usize) -> u32 {
    line.len().clamp(1, budget) as u32
}

impl LogSink {
    /// Mask `value` (in all its forms) in every line from now on.
    pub fn mask(&self, value: &str) {
        self.masks.add(value);
    }

    /// `text` with the secret values this log masks replaced by `***`.
    pub fn masked(&self, text: &str) -> String {
        let own = self.masks.apply(text);
        let text = own.as_deref().unwrap_or(text);
        self.worker_masks
            .apply(text)
            .unwrap_or_else(|| text.to_string())
    }

    pub async fn line(&self, stream: Stream, mut line: String) {
        // PostgreSQL text cannot hold NUL: show it as U+FFFD rather than lose the line.
        if line.contains('\0') {
            line = line.replace('\0', "\u{FFFD}");
        }
        if let Some(m) = self.masks.apply(&line) {
            line = m;
        }
        if let Some(m) = self.worker_masks.apply(&line) {
            line = m;
        }
        let line = NewLine {
            ts: Utc::now(),
            stream,
            line,
        };
        // Released by the writer once the line is stored.
        if let Ok(p) = self
            .room
            .acquire_many(cost(&line.line, self.room_bytes))
            .await
        {
            p.forget();
        }
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
    /// Start writing after line `last` (what the action's log already holds), for as long as
    /// the lease `(server, generation)` is held; when it is not, the action is stopped.
    pub fn start(
        worker: &crate::Worker,
        action_id: i64,
        last: i32,
        lease: (String, i64),
        stop: Arc<Stop>,
    ) -> Self {
        let buffer_bytes = worker.cfg.log_buffer_bytes;
        let (pool, lines_written) = (worker.pool.clone(), worker.metrics.log_lines.clone());
        let (tx, rx) = mpsc::channel(CHANNEL);
        let room = Arc::new(Semaphore::new(buffer_bytes));
        let w = Writer {
            pool,
            action_id,
            lease,
            stop,
            lines_written,
            room: room.clone(),
            room_bytes: buffer_bytes,
        };
        let task = tokio::spawn(w.run(last, rx));
        Self {
            sink: LogSink {
                tx,
                masks: Masks::default(),
                worker_masks: worker.masks.clone(),
                room,
                room_bytes: buffer_bytes,
            },
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

struct Writer {
    pool: PgPool,
    action_id: i64,
    lease: (String, i64),
    stop: Arc<Stop>,
    lines_written: IntCounter,
    room: Arc<Semaphore>,
    room_bytes: usize,
}

impl Writer {
    /// Give the batch's bytes back to the senders.
    fn release(&self, batch: &[NewLine]) {
        let n: usize = batch
            .iter()
            .map(|l| cost(&l.line, self.room_bytes) as usize)
            .sum();
        self.room.add_permits(n);
    }

    async fn run(self, mut last: i32, mut rx: mpsc::Receiver<NewLine>) -> Result<i32, sqlx::Error> {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let mut attempt = 0;
            loop {
                let lease = (self.lease.0.as_str(), self.lease.1);
                match logs::append_fenced(
                    &self.pool,
                    lease,
                    self.action_id,
                    last + 1,
                    &batch,
                    COPY_FROM,
                )
                .await
                {
                    Ok(true) => break,
                    Ok(false) => {
                        // Fenced off: the lease is gone. Drop the lines, stop the action.
                        self.stop.stop(StopReason::LeaseLost);
                        self.release(&batch);
                        while let Some(l) = rx.recv().await {
                            self.release(std::slice::from_ref(&l));
                        }
                        return Ok(last);
                    }
                    // The store restarting: keep the lines (bounded channel = backpressure) and retry.
                    Err(e) if attempt < 30 => {
                        attempt += 1;
                        tracing::warn!(action = self.action_id, error = %e, "log write failed, retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            last += batch.len() as i32;
            self.lines_written.inc_by(batch.len() as u64);
            self.release(&batch);
            batch.clear();
        }
        Ok(last)
    }
}
