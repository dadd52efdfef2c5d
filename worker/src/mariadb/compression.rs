//! How backup streams are compressed on a server: zstd when it has a working one, else gzip.

use shared::db::backups::Compression;

use crate::ctx::{ActionError, Ctx};

/// zstd when the action's server has a working one (fast), else gzip.
pub async fn detect(ctx: &Ctx<'_>) -> Result<Compression, ActionError> {
    let (_, out) = ctx
        .worker
        .ssh
        .exec(
            ctx.server,
            "zstd -V >/dev/null 2>&1 && echo zstd || echo gzip",
        )
        .await?;
    Ok(if out.trim() == "zstd" {
        Compression::Zstd
    } else {
        Compression::Gzip
    })
}
