//! `logical`: `mysqldump --single-transaction --gtid` of the non-system databases, compressed,
//! streamed; its position comes from the dump's own comments.

use super::{quoted, Inside, Taken};
use crate::{
    ctx::{ActionError, Ctx},
    mysql::{ClientOpts, Db},
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
    let mut db = Db::connect(ctx.worker, ctx.server).await?;
    let databases = db.user_databases().await;
    db.close().await;
    let databases = databases?;
    if databases.is_empty() {
        return Err(ActionError::Failed(
            "nothing to back up: the server has no databases of its own".into(),
        ));
    }
    let opts = ClientOpts::new(ctx.worker, ctx.server).await?;
    // The position is in the dump as comments (binlog file at the top, GTID at the end): awk
    // copies those lines to stderr on the way.
    let dump = format!(
        "mysqldump {} --single-transaction --gtid --master-data=2 --routines --events --triggers --databases {}",
        opts.args,
        crate::mysql::database_arguments(&databases)
    );
    let copy_position = "awk '/^-- (SET GLOBAL gtid_slave_pos|CHANGE MASTER TO MASTER_LOG_FILE)/ { print \"sa-pos:\" $0 > \"/dev/stderr\" } { print }'";
    let cmd = opts.command(&piped(&dump, &format!("{copy_position} | {compress}")));
    let nothing = async { Ok(()) };
    let up = transfer::upload(ctx, ctx.server, bucket, key, &cmd, nothing, |u, tail, _| {
        inside(u, &dump_position(tail))
    })
    .await;
    opts.cleanup(ctx.worker, ctx.server).await;
    let (up, stderr, ()) = up?;
    Ok((up, dump_position(&stderr)))
}

/// The position mysqldump wrote (copied to stderr by the backup's pipeline).
pub(super) fn dump_position(stderr: &str) -> Taken {
    let mut taken = Taken::default();
    for line in stderr.lines().filter_map(|l| l.strip_prefix("sa-pos:")) {
        if line.contains("gtid_slave_pos") {
            if let Some(g) = quoted(line, 0) {
                taken.gtid = g;
            }
        } else if line.contains("MASTER_LOG_FILE") {
            taken.binlog_file = quoted(line, 0);
            taken.binlog_pos = line
                .split("MASTER_LOG_POS=")
                .nth(1)
                .and_then(|p| p.trim_end_matches(';').trim().parse().ok());
        }
    }
    taken
}
