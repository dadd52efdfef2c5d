//! Keeping and recovering server leases: the heartbeat of a running action, and the sweeper
//! that every worker runs to reap expired leases and wake parked actions.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use shared::db::{leases, leases::Heartbeat, servers};
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// Why a running action was told to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    Timeout(u32),
    LeaseLost,
    Shutdown,
    /// Cancel request or preemption, with its reason.
    Cancelled(String),
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
        self.reason.get().cloned()
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
    timeout_s: u32,
    stop: Arc<Stop>,
    done: CancellationToken,
    shutdown: CancellationToken,
) {
    let lease_s = worker.lease_s();
    let every = Duration::from_secs_f64((lease_s / 3.0).max(0.2));
    let timeout = tokio::time::sleep(Duration::from_secs(timeout_s.into()));
    tokio::pin!(timeout);
    let mut last_ok = Instant::now();
    // After a stop the lease is still renewed: the action is being killed and then finished.
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop.stop(StopReason::Shutdown);
                continue;
            }
            _ = &mut timeout, if !stopping => {
                stopping = true;
                stop.stop(StopReason::Timeout(timeout_s));
                continue;
            }
            _ = tokio::time::sleep(every) => {}
        }
        match leases::heartbeat(&worker.pool, &server, generation, lease_s).await {
            Ok(Heartbeat::Held { cancel: None }) => last_ok = Instant::now(),
            Ok(Heartbeat::Held {
                cancel: Some(reason),
            }) => {
                last_ok = Instant::now();
                stopping = true;
                stop.stop(StopReason::Cancelled(reason));
            }
            Ok(Heartbeat::Lost) => {
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

/// Every worker runs this (with a bucket and `SA_LOG_RETENTION_DAYS` > 0): the logs of actions
/// that ended longer ago than that move to the bucket, a few at a time (see
/// `shared::log_archive`; workers never archive the same log twice at once).
pub async fn archiver(worker: Arc<Worker>, shutdown: CancellationToken) {
    let (Some(bucket), days) = (worker.s3.clone(), worker.cfg.log_retention_days) else {
        return;
    };
    if days == 0 {
        return;
    }
    loop {
        let archived = shared::log_archive::archive_due(&worker.pool, &bucket, days, 20).await;
        let pause = match archived {
            // More may be due: go on at once.
            Ok(20..) => Duration::ZERO,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(logs = n, "archived action logs to the bucket");
                }
                Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "archiver: cannot archive logs");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Every worker runs this: expired leases are reaped (their process groups killed, their
/// actions `interrupted` or retried) and free servers whose next action is parked get it
/// published again.
pub async fn sweeper(worker: Arc<Worker>, shutdown: CancellationToken) {
    // Expired leases are looked for often (a cheap query on a small table): recovery after a
    // crash is bounded by the lease plus this. Parked heads, a wider query, less often.
    let every = Duration::from_secs_f64((worker.lease_s() / 20.0).clamp(0.1, 0.5));
    let mut tick: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        tick = tick.wrapping_add(1);
        match leases::expired(&worker.pool).await {
            Ok(expired) => {
                for lease in expired {
                    reap(&worker, &lease).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeper: cannot read leases"),
        }
        if !tick.is_multiple_of(4) {
            continue;
        }
        match leases::stalled_heads(&worker.pool).await {
            Ok(kicks) => worker.kick(kicks).await,
            Err(e) => tracing::warn!(error = %e, "sweeper: cannot find parked actions"),
        }
    }
}

/// Take over the expired lease (fencing the old holder), kill what it left running on the
/// server, then free the server.
async fn reap(worker: &Worker, lease: &leases::Lease) {
    let reaper = format!("{} (reaping)", worker.name);
    let claimed = match leases::claim_expired(&worker.pool, lease, &reaper).await {
        Ok(Some(g)) => g,
        Ok(None) => return, // renewed, or another worker is reaping it
        Err(e) => return tracing::warn!(error = %e, "sweeper: cannot claim a lease"),
    };
    // (what happened, whether the server must stay locked)
    let (killed, stuck) = match servers::get(&worker.pool, &lease.server).await {
        // A launch that had no address yet ran nothing there; a terminated one is gone.
        Ok(Some(server)) if server.address.is_empty() => (
            "nothing ran on it: it had no address yet".to_string(),
            false,
        ),
        Ok(Some(server)) if server.state == servers::ServerState::Terminated => (
            "nothing to kill: its instance is terminated".to_string(),
            false,
        ),
        Ok(Some(server)) => {
            let kill = crate::ssh::kill_action_command(&server, lease.action_id, false);
            match tokio::time::timeout(Duration::from_secs(20), worker.ssh.exec(&server, &kill))
                .await
            {
                Ok(Ok((_, out))) => {
                    let k = crate::ssh::Killed::parse(&out);
                    (k.to_string(), !k.stopped())
                }
                unreachable => {
                    // Its script may still run: the claim expires and a later sweep tries again.
                    let why = match unreachable {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    return tracing::warn!(action = lease.action_id, server = %lease.server, %why,
                        "sweeper: cannot reach the server to kill what a dead worker left; will retry");
                }
            }
        }
        _ => ("server record gone".to_string(), false),
    };
    match leases::reap(&worker.pool, lease, claimed, &killed, stuck).await {
        Ok(kick) => {
            tracing::warn!(action = lease.action_id, server = %lease.server, holder = %lease.holder, %killed, "reaped an expired lease");
            worker.kick(kick).await;
        }
        Err(e) => tracing::warn!(error = %e, "sweeper: cannot reap a lease"),
    }
}

/// Listen for cancel requests (`NOTIFY sa_cancel, 'ID'`) and stop the running action they
/// name. Notifications sent while reconnecting are lost: the heartbeat re-reads the request.
pub async fn cancel_listener(worker: Arc<Worker>, shutdown: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&worker.pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cancel listener cannot connect; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen("sa_cancel").await {
            tracing::warn!(error = %e, "cannot LISTEN sa_cancel; retrying");
            continue;
        }
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => n,
            };
            match n {
                Ok(n) => {
                    let Ok(id) = n.payload().parse::<i64>() else {
                        continue;
                    };
                    let Some(stop) = worker.running(id) else {
                        continue;
                    };
                    let reason = sqlx::query_scalar::<_, Option<String>>(
                        "SELECT cancel_requested FROM actions WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_one(&worker.pool)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "Cancelled by request".into());
                    stop.stop(StopReason::Cancelled(reason));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cancel listener lost its connection");
                    break;
                }
            }
        }
    }
}
