//! Keeping and recovering server leases: the heartbeat of a running action, and the sweeper
//! that every worker runs to reap expired leases and wake parked actions.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use shared::db::leases;
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// Why a running action was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Timeout(u32),
    LeaseLost,
    Shutdown,
}

/// A stop signal with its first reason.
#[derive(Default)]
pub struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }
}

/// Watch a running action until `done`: renew its lease every third of its length, and stop
/// it when the lease is lost (renewal refused, or none succeeded for a whole lease period),
/// when its timeout passes, or when the worker shuts down. One task per running action.
pub async fn watch(
    worker: Arc<Worker>,
    server: String,
    generation: i64,
    timeout_s: Option<u32>,
    stop: Arc<Stop>,
    done: CancellationToken,
    shutdown: CancellationToken,
) {
    let lease_s = worker.lease_s();
    let every = Duration::from_secs_f64((lease_s / 3.0).max(0.2));
    let deadline = timeout_s.map(|t| tokio::time::Instant::now() + Duration::from_secs(t.into()));
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = shutdown.cancelled() => return stop.stop(StopReason::Shutdown),
            _ = &mut timeout => return stop.stop(StopReason::Timeout(timeout_s.unwrap_or_default())),
            _ = tokio::time::sleep(every) => {}
        }
        match leases::heartbeat(&worker.pool, &server, generation, lease_s).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                tracing::warn!(%server, generation, "lease lost");
                return stop.stop(StopReason::LeaseLost);
            }
            Err(e) if last_ok.elapsed().as_secs_f64() < lease_s => {
                tracing::warn!(%server, error = %e, "heartbeat failed, retrying");
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, "no heartbeat for a whole lease: giving up");
                return stop.stop(StopReason::LeaseLost);
            }
        }
    }
}

/// Every worker runs this: expired leases are reaped (their actions end `interrupted`) and
/// free servers whose next action is parked get it published again.
pub async fn sweeper(worker: Arc<Worker>, shutdown: CancellationToken) {
    let every = Duration::from_secs_f64((worker.lease_s() / 6.0).clamp(0.5, 5.0));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match leases::reap_expired(&worker.pool).await {
            Ok(kicks) => worker.kick(kicks).await,
            Err(e) => tracing::warn!(error = %e, "sweeper: cannot reap leases"),
        }
        match leases::stalled_heads(&worker.pool).await {
            Ok(kicks) => worker.kick(kicks).await,
            Err(e) => tracing::warn!(error = %e, "sweeper: cannot find parked actions"),
        }
    }
}
