//! ServerActions shared crate: domain types, configuration, telemetry, queue topology and the
//! PostgreSQL access layer used by the api, the workers and the test bed.

pub mod action;
pub mod auth;
pub mod backoff;
pub mod config;
#[cfg(feature = "store")]
pub mod db;
#[cfg(feature = "store")]
pub mod dns;
pub mod errors;
pub mod http;
pub mod launch;
pub mod log;
#[cfg(feature = "s3")]
pub mod log_archive;
#[cfg(feature = "store")]
pub mod queue;
pub mod retention;
#[cfg(feature = "s3")]
pub mod s3;
pub mod schedule;
pub mod scripts;
#[cfg(feature = "store")]
pub mod secrets;
pub mod spec;
pub mod telemetry;
#[cfg(feature = "s3")]
pub mod trailer;
pub mod validate;

pub use action::{Action, ActionKind, RetryPolicy, Status};
pub use config::Config;
pub use spec::ActionSpec;
