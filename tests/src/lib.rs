//! The ServerActions test bed: real test hosts (own loopback address, own sshd and host key,
//! a dedicated login user) and the api and workers started in-process against the real
//! PostgreSQL and RabbitMQ. Used by the integration tests, the demo and the benchmark.

pub mod app;
pub mod browser;
pub mod ec2;
pub mod floors;
pub mod hosts;
pub mod procs;
pub mod services;

pub use app::{TestApp, WorkerHandle};
pub use hosts::TestHost;
