//! `run_script`: run a shell script on the server, streaming stdout/stderr into the log.
//!
//! The remote command (read by the login shell, which must be POSIX: sh, dash, bash, ksh, zsh)
//! records `PGID ACTION_ID` in the server's pid file (sshd makes every non-PTY session its own
//! process group, so the shell's pid is the group id), exports the environment as
//! `export NAME='value' ...` (values shell-quoted, names validated as identifiers) and runs the
//! script with `eval 'script'`; an EXIT trap empties the pid file. Only shell builtins: no
//! process is started beyond what the script itself runs, but for `base64 -d` when the action
//! has secrets: those are read from stdin (name, base64 of the value) into the environment
//! before the script starts, so no value is ever on a command line, and every form of them
//! (plain, base64, URL-encoded) is stored as `***` in the log.
//! Stop (timeout, lost lease, shutdown) kills the whole group: TERM, then KILL after a grace
//! period, and only if the pid file still names this action.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use openssh::Stdio;
use shared::{
    db::{secrets, servers::Server},
    log::Stream,
    spec::{RunScriptParams, SecretInput},
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{ActionError, Ctx};
use crate::{
    logwriter::LogSink,
    ssh::{pidfile, SshError},
};

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .expect("NUL bytes are rejected by validation")
        .into_owned()
}

/// The remote command line for a script and its environment. Its secrets (when it has any)
/// come on stdin, never on the command line: `NAME` and base64 of the value, a line each, then
/// an empty line.
pub fn remote_command(server: &Server, action_id: i64, p: &RunScriptParams) -> String {
    let pid = pidfile(server);
    let env: String = p
        .env
        .iter()
        .map(|(k, v)| format!(" {k}={}", quote(v)))
        .collect();
    let export = if env.is_empty() {
        String::new()
    } else {
        format!("export{env}; ")
    };
    let secrets = if p.secrets.is_empty() {
        ""
    } else {
        "while IFS= read -r sa_n && [ -n \"$sa_n\" ]; do IFS= read -r sa_v; \
         sa_v=$(printf '%s' \"$sa_v\" | base64 -d) || exit 125; export \"$sa_n=$sa_v\"; done; \
         unset sa_n sa_v; exec </dev/null; "
    };
    // The pid file, in a directory only the SSH user can write (made 0700 when it is missing;
    // one that is a link or not the user's own is refused); no file, no script. Only builtins
    // once the directory exists: no process is started per action for it.
    let dir = crate::ssh::PID_DIR;
    format!(
        "d=\"{dir}\"; {{ [ -d \"$d\" ] || (umask 077; mkdir \"$d\"); }} && [ ! -L \"$d\" ] && [ -O \"$d\" ] \
         && echo \"$$ {action_id}\" > \"{pid}\" \
         || {{ echo \"ServerActions: cannot write the pid file {pid} in a private directory\" >&2; exit 125; }}; \
         trap ': > \"{pid}\"' EXIT; unset d; {secrets}{export}eval {script}",
        script = quote(&p.script)
    )
}

/// The action's secrets, opened: inline ones from its sealed copies, named ones from the store
/// (as they are now).
async fn open_secrets(
    ctx: &Ctx<'_>,
    p: &RunScriptParams,
) -> Result<Vec<(String, String)>, ActionError> {
    if p.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let worker = ctx.worker;
    let keys = worker.keys.as_ref().ok_or_else(|| {
        ActionError::Failed(format!(
            "the action has secrets and this worker has no key to open them ({} is missing)",
            worker.cfg.secret_key_path().display()
        ))
    })?;
    let own = secrets::for_action(&worker.pool, ctx.action.id).await?;
    let mut out = Vec::new();
    for (name, input) in &p.secrets {
        let sealed = match input {
            SecretInput::Ref(r) => secrets::get(&worker.pool, &r.secret_ref)
                .await?
                .ok_or_else(|| {
                    ActionError::Failed(format!(
                        "secret {name}: {:?} is no longer in the secret store",
                        r.secret_ref
                    ))
                })?,
            SecretInput::Value(_) => own
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| {
                    ActionError::Failed(format!("secret {name}: its sealed value is gone"))
                })?,
        };
        let value = keys
            .open(&sealed)
            .map_err(|e| ActionError::Failed(format!("secret {name}: {e:#}")))?;
        out.push((name.clone(), value));
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx<'_>, params: &RunScriptParams) -> Result<i32, ActionError> {
    let secrets = open_secrets(ctx, params).await?;
    for (_, value) in &secrets {
        ctx.log.mask(value);
    }
    let ssh = &ctx.worker.ssh;
    let slot = ssh.session(ctx.server).await?;
    let target = format!(
        "{}@{}:{}",
        ctx.server.ssh_user, ctx.server.address, ctx.server.ssh_port
    );
    let session_error = |e: openssh::Error| SshError::Session {
        target: target.clone(),
        reason: shared::errors::chain(&e),
    };
    let mut child = slot
        .session
        .clone()
        .arc_raw_command(remote_command(ctx.server, ctx.action.id, params))
        .stdin(if secrets.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(session_error)?;
    if let Some(mut stdin) = child.stdin().take() {
        use base64::Engine;
        use tokio::io::AsyncWriteExt;
        let mut payload = String::new();
        for (name, value) in &secrets {
            let v = base64::engine::general_purpose::STANDARD.encode(value);
            payload.push_str(&format!("{name}\n{v}\n"));
        }
        payload.push('\n');
        stdin
            .write_all(payload.as_bytes())
            .await
            .map_err(|e| ActionError::Failed(format!("could not hand the secrets over: {e}")))?;
        let _ = stdin.shutdown().await;
    }
    let stdout = child.stdout().take().expect("piped");
    let stderr = child.stderr().take().expect("piped");
    let log = ctx.log.clone();
    let cfg = &ctx.worker.cfg;
    let out = Output {
        log: &log,
        line_max: cfg.log_line_max,
        max_bytes: cfg.log_max_bytes,
        seen: AtomicU64::new(0),
        dropped_bytes: AtomicU64::new(0),
        dropped_lines: AtomicU64::new(0),
    };
    let run = async {
        // Drain both streams to EOF before waiting for the status (openssh#103).
        let (o, e) = tokio::join!(
            pump(stdout, Stream::Stdout, &out),
            pump(stderr, Stream::Stderr, &out)
        );
        if let Err(err) = o.and(e) {
            log.system(format!("Reading the script's output failed: {err}"))
                .await;
        }
        out.close().await;
        child.wait().await
    };
    tokio::pin!(run);
    tokio::select! {
        status = &mut run => match status {
            Ok(s) => s.code().ok_or_else(|| ActionError::Failed("the remote process ended without an exit code".into())),
            // openssh reports exit code 127 as an error; it is one only if the master is dead.
            Err(openssh::Error::Remote(e)) if e.kind() == io::ErrorKind::NotFound
                && ssh.check(ctx.server, &slot.session).await => Ok(127),
            Err(e) => {
                ssh.check(ctx.server, &slot.session).await;
                Err(session_error(e).into())
            }
        },
        _ = ctx.stop.stopped() => {
            ctx.log.system("Stopping: terminating the remote process group (TERM, then KILL).").await;
            match ssh.exec(ctx.server, &crate::ssh::kill_action_command(ctx.server, ctx.action.id, true)).await {
                Ok((_, out)) => match crate::ssh::Killed::parse(&out) {
                    crate::ssh::Killed::Group(pg) => ctx.log.system(format!("Process group {pg} terminated.")).await,
                    crate::ssh::Killed::Nothing => {}
                    other => {
                        ctx.log.system(format!("Stopping failed: {other}.")).await;
                        return Err(ActionError::Unstoppable(other.to_string()));
                    }
                },
                Err(e) => {
                    ctx.log.system(format!("Could not kill the remote process group: {e}")).await;
                    return Err(ActionError::Unstoppable(format!("the kill command did not run: {e}")));
                }
            }
            // Keep what the script printed before it died.
            let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
            Err(ActionError::Stopped)
        }
    }
}

/// Marks a line cut at `SA_LOG_LINE_MAX`: the next line goes on with it.
const CUT_MARK: &str = " [line continues]";

/// What the script prints, on its way into the log: lines cut at `SA_LOG_LINE_MAX` (the cut
/// marked), invalid UTF-8 shown as `\xNN` (secret values are masked by the sink), nothing stored beyond
/// `SA_LOG_MAX_BYTES`: the rest is counted, and the log says how much it left out.
struct Output<'a> {
    log: &'a LogSink,
    line_max: usize,
    max_bytes: u64,
    seen: AtomicU64,
    dropped_bytes: AtomicU64,
    dropped_lines: AtomicU64,
}

impl Output<'_> {
    async fn line(&self, stream: Stream, bytes: &[u8], cut: bool) {
        let bytes = match bytes.strip_suffix(b"\r") {
            Some(b) if !cut => b,
            _ => bytes,
        };
        let n = bytes.len() as u64 + 1;
        if self.seen.fetch_add(n, Ordering::Relaxed) + n > self.max_bytes {
            self.dropped_bytes.fetch_add(n, Ordering::Relaxed);
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut text = escape_invalid(bytes);
        if cut {
            text.push_str(CUT_MARK);
        }
        self.log.line(stream, text).await;
    }

    /// The closing line of a cut log (never silently).
    async fn close(&self) {
        let bytes = self.dropped_bytes.load(Ordering::Relaxed);
        if bytes > 0 {
            let lines = self.dropped_lines.load(Ordering::Relaxed);
            self.log
                .system(format!(
                    "Output cut: {bytes} more bytes ({lines} lines) were not stored; an action's log keeps at most {} bytes (SA_LOG_MAX_BYTES).",
                    self.max_bytes
                ))
                .await;
        }
    }
}

/// `bytes` as text, each byte that is not UTF-8 shown as `\xNN`.
fn escape_invalid(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Where to cut a line of more than `max` bytes: at `max`, or just before a UTF-8 character
/// that `max` would split.
fn cut_at(line: &[u8], max: usize) -> usize {
    let mut at = max;
    while at > max.saturating_sub(3) && at < line.len() && line[at] & 0xC0 == 0x80 {
        at -= 1;
    }
    if at == 0 {
        max
    } else {
        at
    }
}

/// Forward `reader` into the log line by line as it is produced.
async fn pump(reader: impl AsyncRead + Unpin, stream: Stream, out: &Output<'_>) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if !line.is_empty() {
                out.line(stream, &line, false).await;
            }
            return Ok(());
        }
        let end = buf.iter().position(|b| *b == b'\n');
        let n = end.unwrap_or(buf.len());
        line.extend_from_slice(&buf[..n]);
        r.consume(end.map_or(n, |i| i + 1));
        while line.len() > out.line_max {
            let rest = line.split_off(cut_at(&line, out.line_max));
            out.line(stream, &line, true).await;
            line = rest;
        }
        if end.is_some() {
            out.line(stream, &line, false).await;
            line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn output_bytes_become_text_without_losing_or_splitting_characters() {
        assert_eq!(escape_invalid(b"ok \xff\xfe end"), "ok \\xff\\xfe end");
        assert_eq!(escape_invalid("héllo".as_bytes()), "héllo");
        // "é" is two bytes: a cut at 2 would split it, so it is cut before it.
        assert_eq!(cut_at("aé".as_bytes(), 2), 1);
        assert_eq!(cut_at(b"abcdef", 4), 4);
    }

    #[test]
    fn env_and_script_are_quoted() {
        let p = RunScriptParams {
            secrets: Default::default(),
            script: "echo \"$A\"".into(),
            env: BTreeMap::from([(
                "A".to_string(),
                "x'; touch /tmp/pwned; '$(id)\n".to_string(),
            )]),
        };
        let server: Server = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "unit-test", "address": "127.0.0.1", "ssh_port": 22, "ssh_user": "u",
            "host_key": null, "db_port": 3306, "tags": {}, "created_at": "2026-11-28T00:00:00Z"
        }))
        .unwrap();
        let cmd = remote_command(&server, 7, &p);
        // Run the wrapper locally with sh and check the value arrives verbatim.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "x'; touch /tmp/pwned; '$(id)\n\n"
        );
        // The pid file, in a private directory, is emptied at the end.
        let home = std::env::var("HOME").unwrap();
        let file = pidfile(&server).replace("$HOME", &home);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::Path::new(&file).parent().unwrap();
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Without a private directory for its pid file, the script does not run.
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".serveractions"), "not a directory").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the pid file"));
    }
}
