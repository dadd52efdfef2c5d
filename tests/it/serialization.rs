//! The walking skeleton's main scenario: two workers, three hosts, 30 actions. Actions on one
//! host never overlap; different hosts run at the same time; every log is in the seed format.

use std::time::Duration;

use shared::Status;

use crate::{assert_seed_format, TestApp, TestHost};

/// Intervals `(start, end, id)` from a marks file of lines `start ID T` / `end ID T` (T in ns).
fn intervals(marks: &str) -> Vec<(u128, u128, String)> {
    let mut starts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in marks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t: u128 = f[2].parse().unwrap();
        match f[0] {
            "start" => {
                starts.insert(f[1].to_string(), t);
            }
            "end" => out.push((starts[f[1]], t, f[1].to_string())),
            _ => panic!("bad mark {line}"),
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_actions_two_workers_three_hosts_no_overlap_per_host() {
    let mut app = TestApp::spawn().await.unwrap();
    let hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start().unwrap()).collect();
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("host{i}"), h).await.unwrap();
    }
    app.spawn_worker().await.unwrap();
    app.spawn_worker().await.unwrap();

    let script = r#"echo "start $ACTION $(date +%s%N)" >> "$SA_HOST_DIR/marks"
echo working on $ACTION
sleep 0.3
echo "end $ACTION $(date +%s%N)" >> "$SA_HOST_DIR/marks""#;
    let mut ids = Vec::new();
    for n in 0..30 {
        let server = format!("host{}", n % 3);
        let tag = format!("a{n}");
        let a = app
            .client
            .run_script(&server, script, &[("ACTION", &tag)])
            .await
            .unwrap();
        assert_eq!(a.status, Status::Queued);
        ids.push((a.id, n % 3));
    }
    for (id, _) in &ids {
        let a = app.client.wait(*id, Duration::from_secs(90)).await.unwrap();
        assert_eq!(
            a.status,
            Status::Succeeded,
            "action {id}: {}",
            app.log(*id).await
        );
        assert_eq!(a.exit_code, Some(0));
        let log = app.log(*id).await;
        assert_seed_format(&log);
        assert!(log.contains("\nworking on a"), "{log}");
        assert!(
            log.trim_end()
                .ends_with("] : Server action successfully completed"),
            "{log}"
        );
    }

    // On each host: 10 actions, none overlapping, started in submission order.
    let mut all = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let iv = intervals(&h.read("marks"));
        assert_eq!(iv.len(), 10, "host{i}: {iv:?}");
        for w in iv.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "host{i}: {} and {} overlap",
                w[0].2,
                w[1].2
            );
        }
        let order: Vec<usize> = iv.iter().map(|x| x.2[1..].parse().unwrap()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            order, sorted,
            "host{i}: actions did not start in submission order"
        );
        all.extend(iv);
    }
    // Across hosts: some actions ran at the same time.
    all.sort();
    let overlapping = all.windows(2).filter(|w| w[1].0 < w[0].1).count();
    assert!(overlapping > 0, "no parallelism across hosts: {all:?}");
}
