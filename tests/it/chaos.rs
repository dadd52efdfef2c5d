//! Chaos: 300 actions over 10 hosts and 3 worker processes while a loop SIGKILLs a random
//! worker every few seconds (and starts a new one) and RabbitMQ restarts once. Afterwards every
//! action has ended, no two actions overlapped on a host, and every `succeeded` action ran
//! exactly once.

use std::{collections::HashMap, time::Duration};

use shared::Status;
use testbed::{procs::Proc, services::PrivateRabbit};

use crate::{TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_workers_and_restart_rabbitmq_under_load() {
    let rabbit = PrivateRabbit::start().unwrap();
    let app = TestApp::spawn_with(|c| {
        c.amqp_url = rabbit.url();
        c.lease_s = 3;
    })
    .await
    .unwrap();
    let hosts: Vec<TestHost> = (0..10).map(|_| TestHost::start().unwrap()).collect();
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("c{i}"), h).await.unwrap();
    }
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| app.start_worker_process(&format!("chaos{i}")).unwrap())
        .collect();
    let script = r#"echo "start $N" >> "$SA_HOST_DIR/marks"; sleep 0.2; echo "end $N" >> "$SA_HOST_DIR/marks""#;
    let mut ids = HashMap::new();
    for n in 0..300 {
        let tag = format!("x{n}");
        let a = app
            .client
            .run_script(&format!("c{}", n % 10), script, &[("N", &tag)])
            .await
            .unwrap();
        ids.insert(tag, a.id);
    }
    // Kill a worker every 2.5 s, five times; restart RabbitMQ once in between.
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (seed >> 33) as usize % workers.len();
        workers[victim].signal("KILL");
        workers[victim] = app
            .start_worker_process(&format!("chaos{victim}-{round}"))
            .unwrap();
        if round == 2 {
            rabbit.restart().unwrap();
        }
    }
    let mut status_of = HashMap::new();
    let mut counts = std::collections::BTreeMap::new();
    for (tag, id) in &ids {
        let a = app
            .client
            .wait(*id, Duration::from_secs(120))
            .await
            .unwrap();
        assert!(
            a.status.is_terminal(),
            "{tag} (action {id}) still {}",
            a.status
        );
        *counts.entry(a.status.as_str()).or_insert(0) += 1;
        status_of.insert(tag.clone(), a.status);
    }
    println!("chaos: actions by status: {counts:?}");
    assert!(
        counts.get("succeeded").copied().unwrap_or(0) >= 250,
        "{counts:?}"
    );
    for (i, h) in hosts.iter().enumerate() {
        let marks = h.read("marks");
        let mut open: Option<&str> = None;
        let mut runs: HashMap<&str, (u32, u32)> = HashMap::new();
        for line in marks.lines() {
            let (what, tag) = line.split_once(' ').unwrap();
            let r = runs.entry(tag).or_default();
            match what {
                "start" => {
                    r.0 += 1;
                    if let Some(prev) = open {
                        // Only a run killed by the reaper may end without an "end" mark.
                        assert_ne!(
                            status_of[prev],
                            Status::Succeeded,
                            "c{i}: {tag} started while {prev} ran"
                        );
                    }
                    open = Some(tag);
                }
                _ => {
                    r.1 += 1;
                    assert_eq!(open, Some(tag), "c{i}: {tag} ended while {open:?} ran");
                    open = None;
                }
            }
        }
        for (tag, status) in &status_of {
            if *status == Status::Succeeded && tag_host(tag) == i {
                assert_eq!(
                    runs.get(tag.as_str()),
                    Some(&(1, 1)),
                    "c{i}: succeeded {tag} did not run exactly once"
                );
            }
        }
    }
    drop(workers);
}

fn tag_host(tag: &str) -> usize {
    tag[1..].parse::<usize>().unwrap() % 10
}
