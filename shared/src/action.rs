//! Actions: their kinds, statuses and the stored row.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an action does. One file per kind in `worker/src/actions/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RunScript,
    DbStatus,
    DbConfigureMaster,
    DbConfigureSlave,
    DbPromote,
    DbChecksum,
    DbBackup,
    DbRestore,
    DbVerifyBackup,
}

impl ActionKind {
    pub const ALL: &'static [ActionKind] = &[
        ActionKind::RunScript,
        ActionKind::DbStatus,
        ActionKind::DbConfigureMaster,
        ActionKind::DbConfigureSlave,
        ActionKind::DbPromote,
        ActionKind::DbChecksum,
        ActionKind::DbBackup,
        ActionKind::DbRestore,
        ActionKind::DbVerifyBackup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::RunScript => "run_script",
            ActionKind::DbStatus => "db_status",
            ActionKind::DbConfigureMaster => "db_configure_master",
            ActionKind::DbConfigureSlave => "db_configure_slave",
            ActionKind::DbPromote => "db_promote",
            ActionKind::DbChecksum => "db_checksum",
            ActionKind::DbBackup => "db_backup",
            ActionKind::DbRestore => "db_restore",
            ActionKind::DbVerifyBackup => "db_verify_backup",
        }
    }

    /// Whether running it twice is harmless: then an interrupted run is retried by default.
    pub fn retry_safe(self) -> bool {
        match self {
            ActionKind::RunScript => false,
            // Read-only.
            ActionKind::DbStatus => true,
            // Rewrites its own checksum table only: running it again starts over.
            ActionKind::DbChecksum => true,
            // A new backup row and object each time; an interrupted one stays uncommitted.
            ActionKind::DbBackup => true,
            // Scratch mysqld only.
            ActionKind::DbVerifyBackup => true,
            ActionKind::DbRestore => false,
            ActionKind::DbConfigureMaster
            | ActionKind::DbConfigureSlave
            | ActionKind::DbPromote => false,
        }
    }

    /// The human title used in the log's `Executing action: ...` line.
    pub fn title(self) -> &'static str {
        match self {
            ActionKind::RunScript => "run script",
            ActionKind::DbStatus => "DB status",
            ActionKind::DbConfigureMaster => "DB configure master",
            ActionKind::DbConfigureSlave => "DB configure slave",
            ActionKind::DbPromote => "DB promote to master",
            ActionKind::DbChecksum => "DB checksum master vs slaves",
            ActionKind::DbBackup => "DB backup to S3",
            ActionKind::DbRestore => "DB restore from S3 backup",
            ActionKind::DbVerifyBackup => "DB verify backup by restoring it",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?} (known: {})", known.join(", "))
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Waiting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Interrupted,
}

impl Status {
    pub const ALL: &'static [Status] = &[
        Status::Queued,
        Status::Waiting,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::TimedOut,
        Status::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Interrupted => "interrupted",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::Waiting | Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Status::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown status {s:?} (known: {})", known.join(", "))
            })
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// An action as stored and as the API returns it.
#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct Action {
    pub id: i64,
    pub server: String,
    pub kind: String,
    pub params: serde_json::Value,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub timeout_s: Option<i32>,
    pub urgent: bool,
    pub idempotency_key: Option<String>,
    pub worker: Option<String>,
    /// The action holding the server's lock while this one is `waiting`.
    pub waiting_on: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// 1 for the first run; retries count up.
    pub attempt: i32,
    /// `{"max": N, "backoff_s": S}`: how often a failed or interrupted run is retried.
    pub retry: Option<serde_json::Value>,
    /// Earliest start of the next attempt (retry backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Why the action was asked to stop while running (cancel, preemption).
    pub cancel_requested: Option<String>,
    /// What the action found out (`db_status`: replication state...).
    pub result: Option<serde_json::Value>,
}

impl Action {
    /// `Some((next attempt, backoff in s))` when a run that ended `status` is retried: failed
    /// and interrupted runs, or only interrupted ones when the policy says `"on": "interrupted"`
    /// (the default of retry-safe kinds).
    pub fn next_retry(&self, status: Status) -> Option<(i32, f64)> {
        let retry = self.retry.as_ref()?;
        let interrupted_only = retry.get("on").and_then(|o| o.as_str()) == Some("interrupted");
        match status {
            Status::Interrupted => {}
            Status::Failed if !interrupted_only => {}
            _ => return None,
        }
        let max = retry.get("max")?.as_i64()?;
        let backoff = retry
            .get("backoff_s")
            .and_then(|b| b.as_f64())
            .unwrap_or(0.0);
        (i64::from(self.attempt) <= max).then_some((self.attempt + 1, backoff))
    }
}

/// The message body on the actions queue: only the id; the row in PostgreSQL is the truth.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionMessage {
    pub action_id: i64,
}
