//! Backup strategies: each streams a consistent copy of the action's server's databases into
//! the store and says what it took (`Taken`); `actions/db_backup.rs` records and commits it.
//! - `snapshot` (the seed's): global read lock, taken with a short server-side timeout and
//!   retried (a lock request never queues behind a long query for long: it is also killed from a
//!   second session when it expires), binlog position and GTID noted, the server's snapshot
//!   command run, unlock; then the snapshot is streamed as a compressed tar and removed.
//! - `mariabackup`: `mariadb-backup --backup --stream=xbstream`, compressed, streamed.
//! - `logical`: `mysqldump --single-transaction --gtid` of the non-system databases.

pub mod logical;
pub mod mariabackup;
pub mod snapshot;

use std::collections::BTreeMap;

use crate::s3::Uploaded;

/// What a strategy found out besides the upload.
#[derive(Default, Clone)]
pub struct Taken {
    pub gtid: String,
    pub binlog_file: Option<String>,
    pub binlog_pos: Option<u64>,
    pub lock_held_ms: Option<f64>,
    /// Exact row counts at the backup's point (when the strategy can take them there).
    pub tables: Option<BTreeMap<String, u64>>,
}

/// What goes after a backup's stream: the manifest, from the upload and the position taken.
pub type Inside<'a> = dyn Fn(&Uploaded, &Taken) -> Vec<u8> + Sync + 'a;

/// The `n`th single-quoted string of `line`.
fn quoted(line: &str, n: usize) -> Option<String> {
    line.split('\'').nth(2 * n + 1).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::{logical::dump_position, mariabackup::info_position, quoted};

    #[test]
    fn a_dump_and_a_mariabackup_log_give_their_position() {
        let dump = "sa-pos:-- SET GLOBAL gtid_slave_pos='0-1-5';\nnoise\n\
                    sa-pos:-- CHANGE MASTER TO MASTER_LOG_FILE='bin.000003', MASTER_LOG_POS=987;";
        let t = dump_position(dump);
        assert_eq!(t.gtid, "0-1-5");
        assert_eq!(t.binlog_file.as_deref(), Some("bin.000003"));
        assert_eq!(t.binlog_pos, Some(987));
        let info = "sa-info: binlog_pos = filename 'bin.000002', position '1234', GTID of the last change '0-1-6'";
        let t = info_position(info);
        assert_eq!(
            (t.gtid.as_str(), t.binlog_file.as_deref(), t.binlog_pos),
            ("0-1-6", Some("bin.000002"), Some(1234))
        );
        assert_eq!(dump_position("no marks here").gtid, "");
    }

    #[test]
    fn positions_are_read_from_quoted_values() {
        let v = "filename 'bin.000002', position '1234', GTID of the last change '0-1-6'";
        assert_eq!(quoted(v, 0).as_deref(), Some("bin.000002"));
        assert_eq!(quoted(v, 1).as_deref(), Some("1234"));
        assert_eq!(quoted(v, 2).as_deref(), Some("0-1-6"));
        assert_eq!(
            quoted("-- SET GLOBAL gtid_slave_pos='0-1-5';", 0).as_deref(),
            Some("0-1-5")
        );
    }
}
