//! The benchmarks' shared floors: jobs over a fixed number of tasks, and commands over one
//! openssh native-mux session per host (sa-bench's (b), which sa-bench-runs compares against).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use crate::hosts::{TestHost, LOGIN_USER};

/// Run `total` jobs over `c` tasks; job i gets index i. Returns jobs per second.
pub async fn parallel<F, Fut>(c: usize, total: usize, job: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    job(i).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `n` times `true` over one openssh native-mux session per host, `c` in flight; execs per
/// second.
pub async fn native_mux(
    hosts: &[TestHost],
    key: &Path,
    known_hosts: &Path,
    c: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::Builder::new()
        .prefix("sa-mux-")
        .tempdir_in("/tmp")?;
    let mut sessions = Vec::new();
    for h in hosts {
        let s = openssh::SessionBuilder::default()
            .user(LOGIN_USER.into())
            .keyfile(key)
            .user_known_hosts_file(known_hosts)
            .known_hosts_check(openssh::KnownHosts::Strict)
            .control_directory(dir.path())
            .connect_mux(h.address.to_string())
            .await?;
        sessions.push(Arc::new(s));
    }
    let sessions = Arc::new(sessions);
    let rate = parallel(c, n, move |i| {
        let s = sessions[i % sessions.len()].clone();
        async move {
            let st = s.command("true").status().await?;
            anyhow::ensure!(st.success(), "exec failed");
            Ok(())
        }
    })
    .await?;
    Ok(rate)
}
