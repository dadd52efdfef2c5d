//! ServerActions api: the HTTP API (`routes`), the outbox relay that publishes stored actions to
//! RabbitMQ, metrics, and the typed HTTP `client` that `sactl` and the tests use.
//! Invariant: the api never opens SSH; it only stores, publishes and reads.

pub mod client;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod routes;
pub mod scheduler;
pub mod startup;
pub mod ui;

pub use startup::Application;
