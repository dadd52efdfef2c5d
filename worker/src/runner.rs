//! Run one action whose lease this worker holds: log writer, heartbeat, timeout, the kind's
//! code, then the final status and the lease release (fenced by the lease generation).

use std::sync::Arc;

use shared::{
    action::{Action, Status},
    db::{
        leases::{self, Finished, Outcome, Started},
        servers::Server,
    },
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    actions::{self, ActionError, Ctx, Done},
    heartbeat::{self, Stop, StopReason},
    logwriter::LogWriter,
    Worker,
};

/// Run `action`, then, while the worker is not shutting down, the actions its server hands
/// over (the next one in line starts in the same transaction that ends this one).
pub async fn run(worker: Arc<Worker>, started: Started, shutdown: CancellationToken) {
    let mut current = Some(started);
    while let Some(started) = current.take() {
        let span = tracing::info_span!(
            "action",
            id = started.action.id,
            kind = started.action.kind().as_str(),
            server = %started.action.server
        );
        current = run_one(&worker, started, &shutdown)
            .instrument(span)
            .await
            .map(|b| *b);
    }
}

async fn run_one(
    worker: &Arc<Worker>,
    started: Started,
    shutdown: &CancellationToken,
) -> Option<Box<Started>> {
    let Started {
        action,
        server,
        generation,
        last_seq,
    } = started;
    let id = action.id;
    let clock = std::time::Instant::now();
    if let Some(s) = action.started_at {
        worker.metrics.lock_wait.observe(
            (s - action.created_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
    let outcome = match execute(
        worker,
        &action,
        &server,
        generation,
        last_seq,
        shutdown.clone(),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            // The store failed under us; the lease will expire and the reaper will interrupt it.
            tracing::error!(action = id, error = %format!("{e:#}"), "cannot run action");
            return None;
        }
    };
    let status = outcome.status;
    let taker = worker.taker();
    let hand_off = (!worker.draining.is_cancelled()).then_some(&taker);
    // The store may be restarting: keep trying while the lease can still be ours.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(worker.lease_s());
    let finished = loop {
        match leases::finish(
            &worker.pool,
            &action.server,
            id,
            generation,
            &outcome,
            hand_off,
        )
        .await
        {
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(action = id, error = %e, "cannot record the final status yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            r => break r,
        }
    };
    let next = match finished {
        Ok(Finished::Done { next, kick }) => {
            // The header (written when the lease was taken) and the closing line.
            worker
                .metrics
                .log_lines
                .inc_by(shared::log::HEADER_LINES + 1);
            worker.kick(kick).await;
            next
        }
        Ok(Finished::LeaseLost) => {
            tracing::warn!(
                action = id,
                "lease lost before the end: final status not written"
            );
            return None;
        }
        Err(e) => {
            tracing::error!(action = id, error = %e, "cannot record the final status; the lease will expire");
            return None;
        }
    };
    worker
        .metrics
        .finished
        .with_label_values(&[action.kind().as_str(), status.as_str()])
        .inc();
    worker
        .metrics
        .duration
        .with_label_values(&[action.kind().as_str()])
        .observe(clock.elapsed().as_secs_f64());
    next
}

async fn execute(
    worker: &Arc<Worker>,
    action: &Action,
    server: &Server,
    generation: i64,
    last_seq: i32,
    shutdown: CancellationToken,
) -> anyhow::Result<Outcome> {
    let stop = Arc::new(Stop::default());
    let _registered = worker.register(action.id, stop.clone());
    // The writer stops the action if it finds the lease gone (fencing).
    let writer = LogWriter::start(
        worker,
        action.id,
        last_seq,
        (action.server.clone(), generation),
        stop.clone(),
    );
    let log = writer.sink();
    let done = CancellationToken::new();
    tokio::spawn(heartbeat::watch(
        worker.clone(),
        action.server.clone(),
        generation,
        action.timeout().as_secs() as u32,
        stop.clone(),
        done.clone(),
        shutdown,
    ));

    // A panic in an action ends it `failed` with the panic's message; the server is released
    // like after any other end.
    let mut ctx = Ctx {
        worker,
        action,
        server,
        log: log.clone(),
        stop: &stop,
        cluster_lock: None,
    };
    let result = caught(async {
        if let Some(fault) = worker.fault.get() {
            fault(action);
        }
        if let Some(why) = crate::launch::refusal(action, server) {
            return Err(ActionError::Failed(why));
        }
        // The server's place in its cluster as it is now (the api checked it at submit).
        let master = server.db_role == Some(shared::db::servers::DbRole::Master);
        if let Some(why) = action
            .spec
            .refusal(&server.name, server.cluster.as_deref(), master)
        {
            return Err(ActionError::Failed(why));
        }
        if let Some(cluster) = action.spec.topology_cluster(server.cluster.as_deref()) {
            ctx.cluster_lock = Some(cluster_lock(&ctx, cluster, generation).await?);
        }
        actions::run(&ctx).await
    })
    .await;
    if let Some(lock) = ctx.cluster_lock.take() {
        // It would also end with the server's lease.
        if let Err(e) = leases::release_cluster(&worker.pool, &lock).await {
            tracing::warn!(action = action.id, error = %e, "cluster lock not released; it ends with the lease");
        }
    }
    // Its log sink too: the writer closes once every sink is gone.
    drop(ctx);
    done.cancel();
    let mut outcome = outcome(result, stop.reason(), action);
    if let Some(err) = &mut outcome.error {
        *err = log.masked(err);
        log.system(&*err).await;
    }
    drop(log);
    writer.close().await?;
    Ok(outcome)
}

/// Take the lock of `cluster` for a topology action: one topology change per cluster at a time.
/// An urgent action fails at once naming the holder (a promote must not wait behind another);
/// an ordinary one waits its turn (logged), as long as its timeout allows.
async fn cluster_lock(
    ctx: &Ctx<'_>,
    cluster: &str,
    generation: i64,
) -> Result<shared::db::clusters::ClusterLock, ActionError> {
    let mut announced = false;
    loop {
        let taken = leases::take_cluster(
            &ctx.worker.pool,
            cluster,
            ctx.action.id,
            &ctx.server.name,
            generation,
        )
        .await?;
        let (holder, kind, on) = match taken {
            leases::ClusterTake::Taken(lock) => {
                if announced {
                    ctx.log
                        .system(format!("Got the lock of cluster {cluster}."))
                        .await;
                }
                return Ok(lock);
            }
            leases::ClusterTake::Held {
                action_id,
                kind,
                server,
            } => (action_id, kind, server),
        };
        if ctx.action.urgent {
            return Err(ActionError::Failed(format!(
                "cluster {cluster} is locked by action {holder} ({} on {on}): one topology change at a time; nothing was changed",
                kind.as_str()
            )));
        }
        if !announced {
            ctx.log
                .system(format!(
                    "Waiting for the lock of cluster {cluster}, held by action {holder} ({} on {on})...",
                    kind.as_str()
                ))
                .await;
            announced = true;
        }
        tokio::select! {
            _ = ctx.stop.stopped() => return Err(ActionError::Stopped),
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

/// What `run` returns, or its panic as a failure that says so.
async fn caught(
    run: impl std::future::Future<Output = Result<Done, ActionError>>,
) -> Result<Done, ActionError> {
    match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ActionError::Failed(format!(
                "the worker hit a bug running it (panic: {what})"
            )))
        }
    }
}

fn outcome(
    result: Result<Done, ActionError>,
    stop: Option<StopReason>,
    action: &Action,
) -> Outcome {
    let found = result.as_ref().ok().and_then(|d| d.result.clone());
    let result = result.map(|d| d.exit_code);
    let (status, exit_code, error, message) = match (result, stop) {
        (Ok(0), _) => (
            Status::Succeeded,
            Some(0),
            None,
            "Server action successfully completed".to_string(),
        ),
        (Ok(code), _) => (
            Status::Failed,
            Some(code),
            None,
            format!("Server action failed: exit code {code}"),
        ),
        (Err(ActionError::Stopped), Some(StopReason::Timeout(t))) => (
            Status::TimedOut,
            None,
            Some(format!(
                "Timed out after {t} s: the remote process group was killed."
            )),
            "Server action timed out".into(),
        ),
        (Err(ActionError::Stopped), Some(StopReason::Cancelled(why))) => (
            Status::Cancelled,
            None,
            Some(format!("{why}: the remote process group was killed.")),
            "Server action cancelled".into(),
        ),
        (Err(ActionError::Stopped), Some(StopReason::Shutdown)) => (
            Status::Interrupted,
            None,
            Some("The worker is shutting down: the remote process group was killed.".into()),
            "Server action interrupted".into(),
        ),
        (Err(ActionError::Stopped), _) => (
            Status::Interrupted,
            None,
            Some("This worker lost the server's lock: the remote process group was killed.".into()),
            "Server action interrupted".into(),
        ),
        (Err(ActionError::Unstoppable(why)), _) => {
            let error = format!(
                "Could not stop it ({why}): it may still run, so the server stays locked until \
                 an operator checks it and runs `sactl servers unlock {}`.",
                action.server
            );
            return Outcome {
                status: Status::Failed,
                exit_code: None,
                message: vec!["Server action failed".into(), error.clone()],
                error: Some(error),
                retry_in: None,
                result: found,
                keep_locked: Some(why),
            };
        }
        (Err(e), _) => (
            Status::Failed,
            None,
            Some(e.to_string()),
            "Server action failed".into(),
        ),
    };
    let mut message = vec![message];
    // Failed and interrupted runs are retried when the action says so.
    let retry = action.next_retry(status);
    if let Some(r) = &retry {
        message.push(r.line());
    }
    Outcome {
        status,
        exit_code,
        error,
        message,
        retry_in: retry.map(|r| f64::from(r.backoff_s)),
        result: found,
        keep_locked: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(retry: serde_json::Value) -> Action {
        serde_json::from_value(serde_json::json!({
            "id": 7, "server": "web1", "kind": "run_script", "params": {"script": "true"},
            "status": "running", "exit_code": null, "error": null, "timeout_s": null,
            "urgent": false, "idempotency_key": null, "worker": "w", "waiting_on": null,
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "attempt": 1, "retry": retry, "not_before": null, "cancel_requested": null,
            "result": null, "submitted_by": "token:test"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_action_fails_with_its_message() {
        let r = caught(async { panic!("boom at line 3") }).await;
        match r {
            Err(ActionError::Failed(m)) => assert!(m.contains("panic: boom at line 3"), "{m}"),
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("no error"),
        }
        let o = outcome(
            caught(async { panic!("x") }).await,
            None,
            &action(serde_json::Value::Null),
        );
        assert_eq!(o.status, Status::Failed);
    }

    #[test]
    fn an_outcome_follows_the_exit_code_the_stop_reason_and_the_retry_policy() {
        let plain = action(serde_json::Value::Null);
        let o = outcome(Ok(Done::exit(0)), None, &plain);
        assert_eq!(
            (o.status, o.exit_code, o.error),
            (Status::Succeeded, Some(0), None)
        );
        let o = outcome(Ok(Done::exit(3)), None, &plain);
        assert_eq!(
            (o.status, o.exit_code, o.retry_in),
            (Status::Failed, Some(3), None)
        );
        assert_eq!(o.message, ["Server action failed: exit code 3"]);
        let o = outcome(
            Err(ActionError::Stopped),
            Some(StopReason::Timeout(5)),
            &plain,
        );
        assert_eq!(o.status, Status::TimedOut);
        assert!(o.error.unwrap().starts_with("Timed out after 5 s"));
        let why = StopReason::Cancelled("Cancelled by request".into());
        let o = outcome(Err(ActionError::Stopped), Some(why), &plain);
        assert_eq!(o.status, Status::Cancelled);
        let o = outcome(
            Err(ActionError::Stopped),
            Some(StopReason::LeaseLost),
            &plain,
        );
        assert_eq!(o.status, Status::Interrupted);
        let o = outcome(
            Err(ActionError::Failed("no such server".into())),
            None,
            &plain,
        );
        assert_eq!(
            (o.status, o.error.as_deref()),
            (Status::Failed, Some("no such server"))
        );

        let retried = action(serde_json::json!({"max": 2, "backoff_s": 4}));
        let o = outcome(Ok(Done::exit(1)), None, &retried);
        assert_eq!(o.retry_in, Some(4.0));
        assert_eq!(o.message[1], "Retrying: attempt 2 of 3 in 4 s.");
        let o = outcome(
            Err(ActionError::Stopped),
            Some(StopReason::Timeout(1)),
            &retried,
        );
        assert_eq!(o.retry_in, None, "a timeout is final");
    }
}
