//! Integration tests against the real PostgreSQL, RabbitMQ and sshd test hosts.
//! One binary; one module per scenario.

mod auth;
mod backup;
mod bad_input;
mod cancel;
mod chaos;
mod cli;
mod crash;
mod db;
mod dns;
mod ec2;
mod failover;
mod faults;
mod logs;
mod ordering;
mod poison;
mod runs;
mod scheduler;
mod scripts;
mod secrets;
mod serialization;
mod shutdown;
mod ssh_failures;
mod topology;
mod viewer;
mod webhooks;

use std::time::Duration;

pub use testbed::{TestApp, TestHost};

/// Poll `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every system line of a log has the seed's prefix: `[YYYY-MM-DD HH:MM:SS] [ServerActionsWorker] : `.
pub fn assert_seed_format(log: &str) {
    let re_ok = |l: &str| {
        let b = l.as_bytes();
        l.len() > 44
            && b[0] == b'['
            && chrono::NaiveDateTime::parse_from_str(&l[1..20], "%Y-%m-%d %H:%M:%S").is_ok()
            && l[20..].starts_with("] [ServerActionsWorker] : ")
    };
    let lines: Vec<&str> = log.lines().collect();
    for l in lines.iter().filter(|l| l.starts_with("[20")) {
        assert!(re_ok(l), "system line not in seed format: {l:?}\n{log}");
    }
    let exec = lines
        .iter()
        .position(|l| re_ok(l) && l.ends_with("] : Executing: 'Executing action: run script'"))
        .unwrap_or_else(|| panic!("no Executing line:\n{log}"));
    // After Executing: possibly how long it waited, then who has the lock.
    let mut lock = lines.get(exec + 1).copied().unwrap_or_default();
    if lock.contains("] : Waited ") {
        lock = lines.get(exec + 2).copied().unwrap_or_default();
    }
    assert!(
        re_ok(lock) && lock.contains("] : Process ") && lock.ends_with(" has the lock."),
        "line after Executing: {lock:?}"
    );
    let last = lines.last().copied().unwrap_or_default();
    assert!(re_ok(last), "last line not in seed format: {last:?}");
}
