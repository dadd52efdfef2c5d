//! Live tails: one poller per followed action, however many clients follow it. The poller reads
//! new lines every 250 ms and broadcasts them; a client catches up from the store once when it
//! connects (and again only if it falls behind the broadcast), then takes the poller's lines.
//! At most `SA_SSE_MAX` tails are open per api: the next one is refused (503).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use prometheus::IntCounter;
use shared::{
    db::{actions, logs},
    log::LogLine,
};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

const POLL: Duration = Duration::from_millis(250);
const PAGE: i64 = 1000;

/// One action's poller, shared by its followers. Only the poller holds the sender: when it
/// stops, every follower's receiver says so.
struct Feed {
    lines: broadcast::Receiver<Arc<[LogLine]>>,
    /// The last sequence number broadcast.
    last: watch::Receiver<i32>,
}

pub struct Tails {
    pool: PgPool,
    feeds: Mutex<HashMap<i64, Weak<Feed>>>,
    open: Arc<AtomicUsize>,
    max: usize,
    /// Store queries made by pollers (the cost of live tails, whatever their number).
    pub queries: IntCounter,
}

/// An open tail: counts against `SA_SSE_MAX` until dropped.
pub struct Tail {
    pool: PgPool,
    id: i64,
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<[LogLine]>>,
    _slot: Slot,
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refused: `SA_SSE_MAX` tails are open.
#[derive(Debug)]
pub struct Full(pub usize);

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} live tails are open on this api (SA_SSE_MAX); try again later",
            self.0
        )
    }
}

impl Tails {
    pub fn new(pool: PgPool, max: usize, queries: IntCounter) -> Self {
        Self {
            pool,
            feeds: Mutex::default(),
            open: Arc::default(),
            max,
            queries,
        }
    }

    /// Follow action `id`.
    pub fn follow(&self, id: i64) -> Result<Tail, Full> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.open.clone());
        if n >= self.max {
            return Err(Full(self.max));
        }
        let mut feeds = self.feeds.lock().expect("tails");
        feeds.retain(|_, f| f.strong_count() > 0);
        let feed = match feeds.get(&id).and_then(Weak::upgrade) {
            Some(f) => f,
            None => {
                let f = self.start(id);
                feeds.insert(id, Arc::downgrade(&f));
                f
            }
        };
        Ok(Tail {
            pool: self.pool.clone(),
            id,
            rx: feed.lines.resubscribe(),
            feed,
            _slot: slot,
        })
    }

    /// The poller of action `id`: it stops once the action is over and its lines are out, or
    /// when no one follows it any more.
    fn start(&self, id: i64) -> Arc<Feed> {
        // A batch is at most one store page (`logs::PAGE_BYTES`): a few in flight at most.
        let (lines, rx) = broadcast::channel(8);
        let (last_tx, last) = watch::channel(-1);
        let feed = Arc::new(Feed { lines: rx, last });
        let weak = Arc::downgrade(&feed);
        let (pool, queries) = (self.pool.clone(), self.queries.clone());
        tokio::spawn(async move {
            let mut after = logs::last_seq(&pool, id).await.unwrap_or(0);
            queries.inc();
            let _ = last_tx.send(after);
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                // The status before the lines: lines stored before it ended are all fetched.
                let terminal =
                    matches!(actions::get(&pool, id).await, Ok(Some(a)) if a.status.is_terminal());
                let fetched = logs::fetch(&pool, id, after, i32::MAX, PAGE).await;
                queries.inc_by(2);
                match fetched {
                    Ok(batch) if !batch.is_empty() => {
                        // `last` first: a follower that subscribes too late for this batch
                        // sees it moved and reads the batch from the store.
                        after = batch.last().map_or(after, |l| l.seq);
                        let _ = last_tx.send(after);
                        let _ = lines.send(batch.into());
                        continue;
                    }
                    // Dropping the sender ends every follower's stream.
                    Ok(_) if terminal => return,
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        });
        feed
    }
}

/// What a follower gets next.
pub enum Next {
    Lines(Vec<LogLine>),
    /// The action is over and every line was given.
    End,
}

impl Tail {
    /// The next lines after `after`, waiting for the poller when there are none yet.
    pub async fn next(&mut self, after: i32) -> Next {
        // Catch up from the store to where the poller is (on connect, or after falling behind):
        // it broadcasts only what it reads after its start.
        let mut last = self.feed.last.clone();
        let upto = match last.wait_for(|v| *v >= 0).await {
            Ok(v) => *v,
            Err(_) => i32::MAX, // the poller is gone: the store has it all
        };
        if upto > after {
            if let Ok(lines) = logs::fetch(&self.pool, self.id, after, upto, PAGE).await {
                if !lines.is_empty() {
                    return Next::Lines(lines);
                }
            }
        }
        loop {
            match self.rx.recv().await {
                Ok(batch) => {
                    let new: Vec<LogLine> =
                        batch.iter().filter(|l| l.seq > after).cloned().collect();
                    if !new.is_empty() {
                        return Next::Lines(new);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return match logs::fetch(&self.pool, self.id, after, i32::MAX, PAGE).await {
                        Ok(lines) if !lines.is_empty() => Next::Lines(lines),
                        _ => continue,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The poller is done: whatever is left is in the store.
                    return match logs::fetch(&self.pool, self.id, after, i32::MAX, PAGE).await {
                        Ok(lines) if !lines.is_empty() => Next::Lines(lines),
                        _ => Next::End,
                    };
                }
            }
        }
    }
}
