//! ServerActions api: the HTTP API (`routes`, its OpenAPI document), the outbox relay that
//! publishes stored actions to RabbitMQ, the scheduler, metrics and the log viewer (`ui`). Its
//! client and `sactl` are the `client` crate.
//! Invariant: the api never opens SSH; it only stores, publishes and reads.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod routes;
pub mod scheduler;
pub mod startup;
pub mod tails;
pub mod ui;
pub mod webhooks;

pub use startup::Application;
