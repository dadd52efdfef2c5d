//! The RabbitMQ side of the worker: consume with a prefetch bound and manual acks, reconnecting
//! with backoff. A delivery is acked once PostgreSQL says what happens to the action (started,
//! parked or already handled): from then on the lease, not the delivery, is the truth, so long
//! actions never meet the broker's acknowledgement timeout.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use shared::{
    action::ActionMessage,
    backoff::Backoff,
    db::leases::{self, StartOutcome},
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{runner, Worker};

/// How long deliveries may wait here for a free slot before consuming pauses.
const HOLD: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn consume(
    worker: Arc<Worker>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    stop_actions: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(worker.cfg.worker_concurrency));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let result = consume_once(&worker, tracker, &slots, &shutdown, &stop_actions).await;
        if result.is_ok() {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if let Err(e) = result {
            tracing::warn!(error = %e, "rabbitmq connection lost; reconnecting in {delay:?}")
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn consume_once(
    worker: &Arc<Worker>,
    tracker: &TaskTracker,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    stop_actions: &CancellationToken,
) -> anyhow::Result<()> {
    let conn =
        shared::queue::connect(&worker.cfg.amqp_url, &format!("sa-worker {}", worker.name)).await?;
    let ch = conn.create_channel().await?;
    worker.topology.declare(&ch).await?;
    let prefetch = worker.cfg.worker_concurrency.min(u16::MAX as usize) as u16;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consume = || {
        ch.basic_consume(
            worker.topology.queue.as_str().into(),
            worker.name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
    };
    let mut consumer = consume().await?;
    tracing::info!(worker = %worker.name, queue = %worker.topology.queue, "consuming");
    loop {
        // A slot first: a delivery is only taken when it can be handled at once.
        let slot = match tokio::time::timeout(HOLD, slots.clone().acquire_owned()).await {
            Ok(slot) => slot.expect("never closed"),
            Err(_) => {
                // All slots stay busy (long actions): stop consuming, so that no delivery
                // waits unacked here until RabbitMQ's acknowledgement timeout; resume when a
                // slot frees.
                ch.basic_cancel(worker.name.as_str().into(), BasicCancelOptions::default())
                    .await?;
                requeue_buffered(&mut consumer).await;
                let slot = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    s = slots.clone().acquire_owned() => s.expect("never closed"),
                };
                consumer = consume().await?;
                slot
            }
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the consumer was cancelled by the broker"),
        };
        let (worker, stop) = (worker.clone(), stop_actions.clone());
        tracker.spawn(async move {
            handle(worker, delivery, stop).await;
            drop(slot);
        });
    }
    // Unacked deliveries go back to the queue when the channel closes.
    let _ = ch.close(200, "worker shutting down".into()).await;
    let _ = conn.close(200, "worker shutting down".into()).await;
    Ok(())
}

/// After a cancel: hand back what the broker had already sent us.
async fn requeue_buffered(consumer: &mut lapin::Consumer) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        if let Ok(d) = d {
            let _ = d.nack(requeue).await;
        }
    }
}

async fn handle(worker: Arc<Worker>, delivery: Delivery, stop: CancellationToken) {
    let Ok(msg) = serde_json::from_slice::<ActionMessage>(&delivery.data) else {
        dead_letter(&worker, &delivery, "unparseable message").await;
        return;
    };
    let id = msg.action_id;
    let outcome = match leases::try_start(&worker.pool, id, &worker.taker()).await {
        Ok(o) => o,
        Err(e) => {
            // The store is unreachable: hand the message back after a pause.
            tracing::warn!(action = id, error = %e, "cannot reach the store; requeueing");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
            return;
        }
    };
    match outcome {
        StartOutcome::Missing => dead_letter(&worker, &delivery, "no such action").await,
        StartOutcome::AlreadyHandled(status) => {
            tracing::debug!(action = id, %status, "duplicate delivery ignored");
            ack(&delivery, id).await;
        }
        StartOutcome::Waiting { holder, kick } => {
            tracing::debug!(action = id, ?holder, "server busy; action parked");
            ack(&delivery, id).await;
            worker.kick(kick).await;
        }
        StartOutcome::Started(started) => {
            ack(&delivery, id).await;
            runner::run(worker, *started, stop).await;
        }
    }
}

async fn ack(delivery: &Delivery, id: i64) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        // After a channel recovery the old delivery tag is void; the state is in PostgreSQL and
        // a redelivered duplicate is ignored there.
        Ok(false) => tracing::debug!(action = id, "ack of a delivery from a previous channel"),
        Err(e) => tracing::warn!(action = id, error = %e, "ack failed"),
    }
}

async fn dead_letter(worker: &Worker, delivery: &Delivery, why: &str) {
    worker.metrics.dead_lettered.inc();
    tracing::error!(
        reason = why,
        body = %String::from_utf8_lossy(&delivery.data[..delivery.data.len().min(200)]),
        "message sent to the dead-letter queue"
    );
    let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
}
