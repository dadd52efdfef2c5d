//! ServerActions shared crate: domain types, configuration, telemetry, queue topology and the
//! PostgreSQL access layer used by the api, the workers and the test bed.

pub mod action;
pub mod config;
pub mod db;
pub mod dns;
pub mod log;
pub mod queue;
pub mod retention;
pub mod schedule;
pub mod spec;
pub mod telemetry;
pub mod validate;

pub use action::{Action, ActionKind, RetryPolicy, Status};
pub use config::Config;
pub use spec::ActionSpec;
