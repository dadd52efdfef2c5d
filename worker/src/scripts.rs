//! Running a script on the action's server, streaming stdout/stderr into the log: a pasted one
//! (`run_script`) or a stored revision ([`run_stored`]: `run_script` on a `script_ref`, each
//! step of `run_boot` and of a decommission), which first installs its packages and ships its
//! attachments into a fresh `$ATTACH_DIR` (each sha256 checked; removed afterwards).
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

use std::collections::BTreeMap;

use openssh::Stdio;
use sha2::{Digest, Sha256};
use shared::{
    db::{self, secrets, servers::Server},
    log::Stream,
    scripts::{env_text, InputType, ResolvedInput, ScriptRevision},
    spec::SecretInput,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::{InspectReader, StreamReader};

use crate::{
    ctx::{ActionError, Ctx},
    logwriter::LogSink,
    ssh::{pidfile, SshError},
};

/// A script ready to run: its body, its environment and its opened secrets (which reach it
/// over stdin).
pub struct Script<'a> {
    pub body: &'a str,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
}

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .expect("NUL bytes are rejected by validation")
        .into_owned()
}

/// The remote command line for a script and its environment. Its secrets (when it has any)
/// come on stdin, never on the command line: `NAME` and base64 of the value, a line each, then
/// an empty line.
pub fn remote_command(server: &Server, action_id: i64, p: &Script<'_>) -> String {
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
         trap ': > \"{pid}\"{attach}' EXIT; unset d; {secrets}{export}eval {script}",
        script = quote(p.body),
        attach = if p.env.iter().any(|(k, _)| k == "ATTACH_DIR") {
            "; rm -rf -- \"$ATTACH_DIR\""
        } else {
            ""
        }
    )
}

/// The action's secrets, opened: inline ones from its sealed copies, named ones from the store
/// (as they are now).
pub async fn open_secrets(
    ctx: &Ctx<'_>,
    secrets: &BTreeMap<String, SecretInput>,
) -> Result<Vec<(String, String)>, ActionError> {
    if secrets.is_empty() {
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
    for (name, input) in secrets {
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

/// Run `script`; its exit code.
pub async fn run(ctx: &Ctx<'_>, script: &Script<'_>) -> Result<i32, ActionError> {
    let secrets = &script.secrets;
    for (_, value) in secrets {
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
        .arc_raw_command(remote_command(ctx.server, ctx.action.id, script))
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
        let mut payload = String::new();
        for (name, value) in secrets {
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

/// Run a stored script's revision with its resolved inputs (`inline`: the action's own sealed
/// secret values, opened): inputs logged, packages installed, attachments shipped into
/// `$ATTACH_DIR` (removed afterwards), then the body. Its exit code.
pub async fn run_stored(
    ctx: &Ctx<'_>,
    rev: &ScriptRevision,
    inputs: &BTreeMap<String, ResolvedInput>,
    inline: &[(String, String)],
) -> Result<i32, ActionError> {
    ctx.log
        .system(format!("Script {} revision {}.", rev.script, rev.revision))
        .await;
    let mut env = Vec::new();
    let mut secrets = Vec::new();
    let mut refs = BTreeMap::new();
    for (name, input) in inputs {
        let value = match input.ty {
            InputType::Secret => {
                match inline.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => secrets.push((name.clone(), v.clone())),
                    None => {
                        refs.insert(
                            name.clone(),
                            serde_json::from_value(input.value.clone())
                                .map_err(|e| ActionError::Failed(format!("input {name}: {e}")))?,
                        );
                    }
                }
                None
            }
            InputType::ServerAddress => Some(server_address(ctx, name, &input.value).await?),
            InputType::ClusterMaster => Some(cluster_master(ctx, name, &input.value).await?),
            _ => Some(env_text(&input.value)),
        };
        let shown = match (&value, input.ty) {
            (Some(v), InputType::ServerAddress | InputType::ClusterMaster) => {
                format!(
                    "{v} ({} {}, from {})",
                    input.ty.as_str(),
                    env_text(&input.value),
                    input.source
                )
            }
            (Some(v), _) => format!("{v} (from {})", input.source),
            (None, _) => format!("*** (secret, from {})", input.source),
        };
        ctx.log.system(format!("Input {name} = {shown}")).await;
        if let Some(v) = value {
            env.push((name.clone(), v));
        }
    }
    secrets.extend(open_secrets(ctx, &refs).await?);
    if !rev.packages.is_empty() {
        let code = install_packages(ctx, &rev.packages).await?;
        if code != 0 {
            return Err(ActionError::Failed(format!(
                "installing packages {} failed (exit code {code}): the script did not run",
                rev.packages.join(" ")
            )));
        }
    }
    let dir = if rev.attachments.is_empty() {
        None
    } else {
        Some(ship_attachments(ctx, rev).await?)
    };
    if let Some(d) = &dir {
        env.push(("ATTACH_DIR".into(), d.clone()));
    }
    let code = run(
        ctx,
        &Script {
            body: &rev.body,
            env,
            secrets,
        },
    )
    .await;
    if let Some(d) = &dir {
        // The script's EXIT trap removes it too; this covers a script that never started.
        let _ = ctx
            .worker
            .ssh
            .exec(ctx.server, &format!("rm -rf -- {}", quote(d)))
            .await;
    }
    code
}

/// Run `steps` in order (`what`: the sequence, for the log), each announced as a step; the first
/// non-zero exit code ends it.
pub async fn run_steps(
    ctx: &Ctx<'_>,
    what: &str,
    steps: &[shared::spec::Step],
) -> Result<i32, ActionError> {
    let n = steps.len();
    for (i, step) in steps.iter().enumerate() {
        ctx.log
            .system(format!(
                "Step {}/{n} of {what}: {} revision {}",
                i + 1,
                step.script,
                step.revision
            ))
            .await;
        let rev = db::scripts::revision(
            &mut *ctx.worker.pool.acquire().await?,
            &step.script,
            Some(step.revision),
        )
        .await?
        .ok_or_else(|| {
            ActionError::Failed(format!(
                "script {:?} revision {} is gone",
                step.script, step.revision
            ))
        })?;
        let code = run_stored(ctx, &rev, &step.inputs, &[]).await?;
        if code != 0 {
            ctx.log
                .system(format!(
                    "Step {}/{n} ({}) failed with exit code {code}: stopping {what}.",
                    i + 1,
                    step.script
                ))
                .await;
            return Ok(code);
        }
        ctx.log
            .system(format!("Step {}/{n} ({}) succeeded.", i + 1, step.script))
            .await;
    }
    Ok(0)
}

async fn server_address(
    ctx: &Ctx<'_>,
    input: &str,
    v: &serde_json::Value,
) -> Result<String, ActionError> {
    let name = env_text(v);
    let server = db::servers::get(&ctx.worker.pool, &name).await?;
    server
        .map(|s| s.address)
        .ok_or_else(|| ActionError::Failed(format!("input {input}: no server named {name:?}")))
}

/// The address of the server a cluster's master record names now.
async fn cluster_master(
    ctx: &Ctx<'_>,
    input: &str,
    v: &serde_json::Value,
) -> Result<String, ActionError> {
    let name = env_text(v);
    let pool = &ctx.worker.pool;
    let cluster = db::clusters::get(pool, &name)
        .await?
        .ok_or_else(|| ActionError::Failed(format!("input {input}: no cluster named {name:?}")))?;
    let master = cluster.master.ok_or_else(|| {
        ActionError::Failed(format!("input {input}: cluster {name:?} has no master"))
    })?;
    server_address(ctx, input, &serde_json::Value::String(master)).await
}

/// Install what is missing of `packages` with the server's package manager (apt, dnf, yum;
/// `sudo -n` when not root); present ones are skipped. Its exit code; the output is logged.
async fn install_packages(ctx: &Ctx<'_>, packages: &[String]) -> Result<i32, ActionError> {
    let list = packages.join(" ");
    let body = format!(
        r#"if command -v apt-get >/dev/null 2>&1; then pm=apt
elif command -v dnf >/dev/null 2>&1; then pm=dnf
elif command -v yum >/dev/null 2>&1; then pm=yum
else echo "no package manager found (apt-get, dnf or yum)" >&2; exit 3; fi
missing=""
for p in {list}; do
  if [ $pm = apt ]; then dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null | grep -q ' installed$' || missing="$missing $p"
  else rpm -q "$p" >/dev/null 2>&1 || missing="$missing $p"; fi
done
if [ -z "$missing" ]; then echo "Packages already installed ($pm): {list}"; exit 0; fi
echo "Installing packages ($pm):$missing"
s=""; [ "$(id -u)" = 0 ] || s="sudo -n"
case $pm in
  apt) $s apt-get install -y -q --no-install-recommends $missing ;;
  *) $s $pm install -y -q $missing ;;
esac"#
    );
    run(
        ctx,
        &Script {
            body: &body,
            env: Vec::new(),
            secrets: Vec::new(),
        },
    )
    .await
}

/// A fresh private directory on the server with every attachment of `rev` in it, each one's
/// sha256 checked on the way (the stored content) and on arrival (what the server wrote).
async fn ship_attachments(ctx: &Ctx<'_>, rev: &ScriptRevision) -> Result<String, ActionError> {
    let ssh = &ctx.worker.ssh;
    let (code, out) = ssh
        .exec(
            ctx.server,
            "umask 077; mktemp -d \"${TMPDIR:-/tmp}/sa-attach-XXXXXXXX\"",
        )
        .await?;
    let dir = out.trim().to_string();
    if code != 0 || dir.is_empty() || dir.contains('\n') {
        return Err(ActionError::Failed(format!(
            "cannot make $ATTACH_DIR on the server: {out}"
        )));
    }
    let shipped = async {
        for a in &rev.attachments {
            ship(ctx, &dir, a).await?;
        }
        Ok::<(), ActionError>(())
    }
    .await;
    if let Err(e) = shipped {
        let _ = ssh
            .exec(ctx.server, &format!("rm -rf -- {}", quote(&dir)))
            .await;
        return Err(e);
    }
    ctx.log
        .system(format!(
            "{} attachment(s) in $ATTACH_DIR {dir}.",
            rev.attachments.len()
        ))
        .await;
    Ok(dir)
}

/// An attachment's stored content: its object in the bucket, or its chunks here.
async fn content<'a>(
    ctx: &'a Ctx<'_>,
    a: &shared::scripts::Attachment,
) -> Result<Box<dyn AsyncRead + Unpin + Send + 'a>, ActionError> {
    match db::scripts::blob_object(&ctx.worker.pool, a.blob).await? {
        None => Err(ActionError::Failed(format!(
            "attachment {}: its content is gone",
            a.file
        ))),
        Some(Some(key)) => Ok(Box::new(ctx.s3()?.get_all(vec![key]))),
        Some(None) => {
            let (pool, blob) = (&ctx.worker.pool, a.blob);
            let chunks = futures::stream::try_unfold(0, move |seq| async move {
                let chunk = db::scripts::chunk(pool, blob, seq)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(chunk.map(|c| (std::io::Cursor::new(c), seq + 1)))
            });
            Ok(Box::new(StreamReader::new(Box::pin(chunks))))
        }
    }
}

async fn ship(
    ctx: &Ctx<'_>,
    dir: &str,
    a: &shared::scripts::Attachment,
) -> Result<(), ActionError> {
    let worker = ctx.worker;
    let path = format!("{dir}/{}", a.file);
    let slot = worker.ssh.session(ctx.server).await?;
    let fail = |e: openssh::Error| {
        ActionError::Failed(format!(
            "shipping {}: {}",
            a.file,
            shared::errors::chain(&e)
        ))
    };
    let mut child = slot
        .session
        .clone()
        .arc_raw_command(format!("cat > {p} && sha256sum {p}", p = quote(&path)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
        .map_err(fail)?;
    let mut stdin = child.stdin().take().expect("piped");
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut reader = InspectReader::new(content(ctx, a).await?, |b: &[u8]| {
        hash.update(b);
        size += b.len() as u64;
    });
    let sent = async {
        tokio::io::copy(&mut reader, &mut stdin).await?;
        stdin.shutdown().await
    }
    .await
    .map_err(|e| ActionError::Failed(format!("shipping {}: {e}", a.file)));
    drop(reader);
    drop(stdin);
    let mut out = String::new();
    if let Some(mut o) = child.stdout().take() {
        let _ = o.read_to_string(&mut out).await;
    }
    let status = child.wait().await.map_err(fail)?;
    sent?;
    let stored = shared::s3::hex(&hash.finalize());
    if stored != a.sha256 {
        return Err(ActionError::Failed(format!(
            "attachment {}: sha256 mismatch: the revision recorded {}, the stored content ({size} bytes) is {stored}: not run",
            a.file, a.sha256
        )));
    }
    let arrived = out.split_whitespace().next().unwrap_or_default();
    if !status.success() || arrived != a.sha256 {
        return Err(ActionError::Failed(format!(
            "attachment {}: sha256 on the server is {arrived:?}, not {}: not run",
            a.file, a.sha256
        )));
    }
    ctx.log
        .system(format!(
            "Attachment {} ({size} bytes, sha256 {}) checked.",
            a.file, a.sha256
        ))
        .await;
    Ok(())
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
        let p = Script {
            secrets: Vec::new(),
            body: "echo \"$A\"",
            env: vec![(
                "A".to_string(),
                "x'; touch /tmp/pwned; '$(id)\n".to_string(),
            )],
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
