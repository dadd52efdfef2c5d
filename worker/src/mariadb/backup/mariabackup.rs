//! `mariabackup`: `mariadb-backup --backup --stream=xbstream`, compressed, streamed; its
//! position comes from the tool's log.

use super::{quoted, Inside, Taken};
use crate::{
    ctx::{ActionError, Ctx},
    mysql::ClientOpts,
    s3::{Bucket, Uploaded},
    transfer::{self, piped},
};

pub async fn take(
    ctx: &Ctx<'_>,
    bucket: &Bucket,
    key: &str,
    compress: &str,
    inside: &Inside<'_>,
) -> Result<(Uploaded, Taken), ActionError> {
    let datadir = ctx.server.datadir();
    let opts = ClientOpts::new(ctx.worker, ctx.server).await?;
    // Its chatter goes to a file; the info file (position, GTID) is copied to stderr at the end.
    let cmd = opts.command(&format!(
        "d=$(mktemp -d); mkdir $d/info; {}; tail -n 5 $d/log >&2; \
         sed 's/^/sa-info:/' $d/info/mariadb_backup_info $d/info/xtrabackup_info >&2 2>/dev/null; rm -rf $d",
        piped(
            &format!(
                "mariadb-backup {} --backup --stream=xbstream --datadir={datadir} --target-dir=$d/t \
                 --extra-lsndir=$d/info 2>$d/log",
                opts.backup_args
            ),
            compress
        )
    ));
    let nothing = async { Ok(()) };
    let up = transfer::upload(ctx, ctx.server, bucket, key, &cmd, nothing, |u, tail, _| {
        inside(u, &info_position(tail))
    })
    .await;
    opts.cleanup(ctx.worker, ctx.server).await;
    let (up, stderr, ()) = up?;
    let chatter: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("sa-info:"))
        .collect();
    ctx.log
        .system(format!(
            "mariadb-backup: {}",
            transfer::last_lines(&chatter.join("\n"), 1)
        ))
        .await;
    Ok((up, info_position(&stderr)))
}

/// The position in mariadb-backup's info file (copied to stderr by the backup's command).
pub(super) fn info_position(stderr: &str) -> Taken {
    let mut taken = Taken::default();
    for line in stderr.lines().filter_map(|l| l.strip_prefix("sa-info:")) {
        // binlog_pos = filename 'bin.000002', position '1234', GTID of the last change '0-1-6'
        if let Some(v) = line.trim().strip_prefix("binlog_pos = ") {
            taken.binlog_file = quoted(v, 0);
            taken.binlog_pos = quoted(v, 1).and_then(|p| p.parse().ok());
            taken.gtid = quoted(v, 2).unwrap_or_default();
        }
    }
    taken
}
