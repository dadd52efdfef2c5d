//! Streams between a command on a server and S3, through the worker: the command's stdout is
//! uploaded as it comes (`upload`), or an object is fed to a command's stdin (`download`), with
//! a progress line every few seconds. Nothing is buffered beyond the uploader's parts in flight.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use openssh::Stdio;
use sha2::{Digest, Sha256};
use shared::db::{backups::Backup, servers::Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::io::InspectReader;

use crate::{
    ctx::{ActionError, Ctx},
    s3::{hex, Bucket, Uploaded},
};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The end of a command's stderr kept for its error message.
const STDERR_TAIL: usize = 16 << 10;

/// Marks the producer's exit status in a pipeline's stderr: `{ producer; echo sa-exit:$? >&2; } | zstd`.
const EXIT_MARK: &str = "sa-exit:";
/// Marks the niceness the stream's producer got, in its stderr.
const NICE_MARK: &str = "sa-nice:";
/// Prefixed to an upload's command: the producer yields CPU and I/O to the database on the same
/// host (the login shell lowers its own priority, which the pipeline inherits; ignored where
/// `renice`/`ionice` are missing), and says which niceness it got.
const YIELD: &str = "renice -n 10 -p $$ >/dev/null 2>&1; ionice -c 2 -n 7 -p $$ >/dev/null 2>&1; \
                     echo \"sa-nice:$(nice)\" >&2; ";

/// Run `cmd` on `server` and upload its stdout as `key`, followed by what `trailer` makes of
/// the upload, the command's stderr and the result of `alongside`, which runs while the stream
/// flows (work the stream need not wait for, such as counting rows). The upload is completed
/// only if `alongside` succeeded and the command exits 0 and, when its stderr carries
/// [`EXIT_MARK`], the marked status is 0 too; otherwise it is aborted. Returns what was
/// uploaded (without the trailer), the command's stderr (tail) and what `alongside` returned.
pub async fn upload<R>(
    ctx: &Ctx<'_>,
    server: &Server,
    bucket: &Bucket,
    key: &str,
    cmd: &str,
    alongside: impl std::future::Future<Output = Result<R, ActionError>>,
    trailer: impl FnOnce(&Uploaded, &str, &R) -> Vec<u8>,
) -> Result<(Uploaded, String, R), ActionError> {
    let slot = ctx.worker.ssh.session(server).await?;
    let mut child = slot
        .session
        .clone()
        .arc_raw_command(format!("{YIELD}{cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(|e| {
            ActionError::Failed(format!(
                "starting the backup command: {}",
                shared::errors::chain(&e)
            ))
        })?;
    let stdout = child.stdout().take().expect("piped");
    let stderr = child.stderr().take().expect("piped");
    let progress = Arc::new(AtomicU64::new(0));
    let (err_tx, err_rx) = tokio::sync::oneshot::channel();
    let errors = async move {
        let tail = read_tail(stderr).await;
        let _ = err_tx.send(tail);
    };
    // `alongside`'s result waits for the stream's end (`confirm`); its failure stops the upload
    // at once (`stop`): no use streaming the rest of a backup that cannot be committed.
    let side_error = std::sync::Mutex::new(None);
    let (side_tx, side_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let alongside = async {
        match alongside.await {
            Ok(r) => {
                let _ = side_tx.send(r);
            }
            Err(e) => {
                *side_error.lock().expect("poisoned") = Some(e);
                let _ = stop_tx.send(());
            }
        }
    };
    let stop = async {
        if stop_rx.await.is_err() {
            // `alongside` succeeded: nothing stops the upload.
            std::future::pending::<()>().await
        }
    };
    // Awaited by the uploader once the stream ended, before its last chunk.
    let rejected_tail = std::sync::Mutex::new(String::new());
    let progress_read = progress.clone();
    let ended = std::sync::OnceLock::new();
    let confirm = async {
        let status = child.wait().await;
        let tail = err_rx.await.unwrap_or_default();
        let ok = matches!(status, Ok(ref s) if s.success()) && marked_ok(&tail);
        let nice = tail
            .lines()
            .find_map(|l| l.trim().strip_prefix(NICE_MARK))
            .map(|n| format!(", produced at nice {}", n.trim()))
            .unwrap_or_default();
        ctx.log
            .system(format!(
                "Stream ended ({:.1} MiB{nice}); finishing the upload...",
                progress_read.load(Ordering::Relaxed) as f64 / 1048576.0
            ))
            .await;
        let _ = ended.set(Instant::now());
        if !ok {
            *rejected_tail.lock().expect("poisoned") = tail.clone();
        }
        match side_rx.await {
            Ok(r) => (ok, (tail, Some(r))),
            // `alongside` failed (`side_error`).
            Err(_) => (false, (tail, None)),
        }
    };
    // Only called once `confirm` said yes: `alongside` succeeded.
    let trailer = |u: &Uploaded, (tail, r): &(String, Option<R>)| {
        r.as_ref().map(|r| trailer(u, tail, r)).unwrap_or_default()
    };
    let upload = Box::pin(bucket.upload(key, stdout, &progress, stop, confirm, trailer));
    let (up, (), ()) = tokio::select! {
        r = async { tokio::join!(upload, errors, alongside) } => r,
        _ = report(ctx, &progress, "uploaded", Some(&ended)) => unreachable!("report never ends"),
    };
    match up {
        Ok((u, (tail, Some(r)))) => Ok((u, tail, r)),
        Ok((_, (_, None))) | Err(crate::s3::S3Error::Rejected) => {
            let side_error = side_error.lock().expect("poisoned").take();
            if let Some(e) = side_error {
                if ended.get().is_none() {
                    ctx.log
                        .system(format!("Upload stopped before the stream ended: {e}"))
                        .await;
                }
                return Err(e);
            }
            Err(ActionError::Failed(format!(
                "the backup command failed: {}",
                last_lines(&rejected_tail.lock().expect("poisoned"), 5)
            )))
        }
        Err(e) => Err(ActionError::Failed(e.to_string())),
    }
}

/// Feed `backup`'s objects to `cmd`'s stdin on `server`: their bytes up to the manifest inside
/// (see [`crate::trailer`]), whose sha256 must equal the manifest's.
/// The command must not make its result visible before the worker says so: it writes into a
/// staging place, and the caller moves it into place only after this returned Ok.
pub async fn download(
    ctx: &Ctx<'_>,
    server: &Server,
    bucket: &Bucket,
    backup: &Backup,
    cmd: &str,
) -> Result<u64, ActionError> {
    let (key, sha256) = (
        &backup.object_key,
        backup.sha256.as_deref().unwrap_or_default(),
    );
    let body = bucket.get_all(backup.object_keys());
    let stream = backup.bytes.map_or(u64::MAX, |n| n as u64);
    let progress = Arc::new(AtomicU64::new(0));
    let mut hasher = Sha256::new();
    let mut reader = InspectReader::new(body.take(stream), |b: &[u8]| {
        hasher.update(b);
        progress.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    let slot = ctx.worker.ssh.session(server).await?;
    let mut child = slot
        .session
        .clone()
        .arc_raw_command(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(|e| {
            ActionError::Failed(format!(
                "starting the restore command: {}",
                shared::errors::chain(&e)
            ))
        })?;
    let mut stdin = child.stdin().take().expect("piped");
    let stderr = child.stderr().take().expect("piped");
    let feed = async {
        let n = tokio::io::copy(&mut reader, &mut stdin).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        n
    };
    let (copied, tail) = tokio::select! {
        r = async { tokio::join!(feed, read_tail(stderr)) } => r,
        _ = report(ctx, &progress, "downloaded", None) => unreachable!("report never ends"),
    };
    let status = child.wait().await;
    let copied = copied.map_err(|e| ActionError::Failed(format!("streaming {key}: {e}")))?;
    drop(reader);
    let got = hex(&hasher.finalize());
    if got != sha256 {
        return Err(ActionError::BadData(format!(
            "the backup object {key} is corrupted: sha256 {got}, the manifest says {sha256}"
        )));
    }
    if !matches!(status, Ok(ref s) if s.success()) || !marked_ok(&tail) {
        // The whole object arrived with the right checksum: its content does not unpack.
        return Err(ActionError::BadData(format!(
            "the restore command failed: {}",
            last_lines(&tail, 5)
        )));
    }
    Ok(copied)
}

/// Log the transferred bytes and rate every few seconds, and once the source has `ended`,
/// how long the last chunks have been uploading (never returns).
async fn report(
    ctx: &Ctx<'_>,
    bytes: &AtomicU64,
    what: &str,
    ended: Option<&std::sync::OnceLock<Instant>>,
) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let line = match ended.and_then(|e| e.get()) {
            Some(at) => format!(
                "... finishing the upload ({:.0} s)",
                at.elapsed().as_secs_f64()
            ),
            None => {
                let n = bytes.load(Ordering::Relaxed) as f64 / 1048576.0;
                let rate = n / started.elapsed().as_secs_f64();
                format!("... {what} {n:.1} MiB ({rate:.1} MiB/s)")
            }
        };
        ctx.log.system(line).await;
    }
}

async fn read_tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// `producer | consumer`, with the producer's exit status marked on stderr (a pipeline's own
/// status is only its last command's): check it with [`marked_ok`].
pub fn piped(producer: &str, consumer: &str) -> String {
    format!("{{ {producer}; echo {EXIT_MARK}$? >&2; }} | {consumer}")
}

/// No [`EXIT_MARK`] line, or every one of them says 0.
pub fn marked_ok(stderr: &str) -> bool {
    stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix(EXIT_MARK))
        .all(|code| code.trim() == "0")
}

/// The last `n` non-empty lines that are not exit marks, joined with " / ".
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(EXIT_MARK) && !l.starts_with(NICE_MARK))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_marks_decide() {
        assert!(marked_ok("some noise\n"));
        assert!(marked_ok("x\nsa-exit:0\n"));
        assert!(!marked_ok("mysqldump: Got error: 1045\nsa-exit:2\n"));
        assert_eq!(last_lines("a\n\nb\nsa-exit:2\nc\n", 2), "b / c");
        assert_eq!(
            last_lines("sa-nice:10\ntar: x: Cannot open\n", 2),
            "tar: x: Cannot open"
        );
    }
}
