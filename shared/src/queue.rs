//! RabbitMQ topology and the confirmed publisher.
//!
//! Topology (names prefixed with `SA_QUEUE_PREFIX`, default `sa`):
//! `sa.actions` (direct exchange) → `sa.actions` (durable queue, dead-letters to `sa.dlx`)
//! `sa.dlx` (fanout exchange) → `sa.actions.dead` (durable queue of messages no worker could use).
//! A message carries only `{"action_id": N}`; PostgreSQL holds the truth.

use std::time::Duration;

use lapin::{
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;

use crate::action::ActionMessage;

pub const ROUTING_KEY: &str = "action";

#[derive(Clone, Debug)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    /// `x-expires` for the queues (ms): tests use it so their queues vanish after them.
    pub expires_ms: Option<u32>,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}.actions"),
            queue: format!("{prefix}.actions"),
            dead_exchange: format!("{prefix}.dlx"),
            dead_queue: format!("{prefix}.actions.dead"),
            expires_ms: None,
        }
    }

    pub fn from_config(cfg: &crate::Config) -> Self {
        Self {
            expires_ms: cfg.queue_expires_ms,
            ..Self::new(&cfg.queue_prefix)
        }
    }

    /// Declare exchanges, queues and bindings (idempotent).
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut dead_args = FieldTable::default();
        let mut args = FieldTable::default();
        if let Some(ms) = self.expires_ms {
            dead_args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange.as_str().into()),
        );
        ch.queue_declare(self.dead_queue.as_str().into(), qopts, dead_args)
            .await?;
        ch.queue_bind(
            self.dead_queue.as_str().into(),
            self.dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(self.queue.as_str().into(), qopts, args)
            .await?;
        ch.queue_bind(
            self.queue.as_str().into(),
            self.exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }
}

pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    Connection::connect(url, props).await
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq refused the message (nack)")]
    Nacked,
    #[error("rabbitmq did not confirm within {0:?}")]
    Timeout(Duration),
}

/// Publishes action ids with publisher confirms. Connects lazily and reconnects after an error;
/// callers treat a failure as "not published yet" (the outbox relay publishes it later).
pub struct Publisher {
    url: String,
    name: String,
    topology: Topology,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(url: &str, name: &str, topology: Topology) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            topology,
            state: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut state = self.state.lock().await;
        if let Some((conn, ch)) = state.as_ref() {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        *state = None;
        let conn = connect(&self.url, &self.name).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        self.topology.declare(&ch).await?;
        *state = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn reset(&self) {
        if let Some((conn, _)) = self.state.lock().await.take() {
            let _ = conn.close(0, "reset".into()).await;
        }
    }

    /// Publish one action id and wait for the broker's confirm.
    pub async fn publish(&self, action_id: i64) -> Result<(), PublishError> {
        let limit = Duration::from_secs(10);
        let result = tokio::time::timeout(limit, self.publish_once(action_id)).await;
        let result = result.unwrap_or(Err(PublishError::Timeout(limit)));
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    async fn publish_once(&self, action_id: i64) -> Result<(), PublishError> {
        let ch = self.channel().await?;
        let body = serde_json::to_vec(&ActionMessage { action_id }).expect("serializable");
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(ShortString::from(action_id.to_string()));
        let confirm = ch
            .basic_publish(
                self.topology.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            // Returned as unroutable: the queue is missing.
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}
