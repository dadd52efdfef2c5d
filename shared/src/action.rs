//! Actions: their kinds, statuses and the stored row.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::ActionSpec;

/// Idempotency keys ServerActions makes itself begin with this; a client's may not.
pub const INTERNAL_KEY_PREFIX: &str = "sa:";

/// What an action does. One file per kind in `worker/src/actions/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::Type))]
#[cfg_attr(feature = "store", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RunScript,
    RunBoot,
    DbStatus,
    DbConfigureMaster,
    DbConfigureSlave,
    DbPromote,
    DbFailover,
    DbChecksum,
    DbBackup,
    DbRestore,
    DbVerifyBackup,
    ServerLaunch,
    ServerTerminate,
    DbLaunchSlave,
    DbLaunchMaster,
}

impl ActionKind {
    pub const ALL: &'static [ActionKind] = &[
        ActionKind::RunScript,
        ActionKind::RunBoot,
        ActionKind::DbStatus,
        ActionKind::DbConfigureMaster,
        ActionKind::DbConfigureSlave,
        ActionKind::DbPromote,
        ActionKind::DbFailover,
        ActionKind::DbChecksum,
        ActionKind::DbBackup,
        ActionKind::DbRestore,
        ActionKind::DbVerifyBackup,
        ActionKind::ServerLaunch,
        ActionKind::ServerTerminate,
        ActionKind::DbLaunchSlave,
        ActionKind::DbLaunchMaster,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::RunScript => "run_script",
            ActionKind::RunBoot => "run_boot",
            ActionKind::DbStatus => "db_status",
            ActionKind::DbConfigureMaster => "db_configure_master",
            ActionKind::DbConfigureSlave => "db_configure_slave",
            ActionKind::DbPromote => "db_promote",
            ActionKind::DbFailover => "db_failover",
            ActionKind::DbChecksum => "db_checksum",
            ActionKind::DbBackup => "db_backup",
            ActionKind::DbRestore => "db_restore",
            ActionKind::DbVerifyBackup => "db_verify_backup",
            ActionKind::ServerLaunch => "server_launch",
            ActionKind::ServerTerminate => "server_terminate",
            ActionKind::DbLaunchSlave => "db_launch_slave",
            ActionKind::DbLaunchMaster => "db_launch_master",
        }
    }

    /// How long it may run when its request sets no `timeout_s`.
    pub fn default_timeout_s(self) -> u32 {
        const HOUR: u32 = 3600;
        match self {
            ActionKind::RunScript => HOUR,
            ActionKind::RunBoot => 2 * HOUR,
            ActionKind::DbStatus => 120,
            ActionKind::DbConfigureMaster | ActionKind::DbPromote | ActionKind::DbFailover => {
                15 * 60
            }
            ActionKind::DbChecksum => 4 * HOUR,
            // They copy whole databases.
            ActionKind::DbConfigureSlave
            | ActionKind::DbBackup
            | ActionKind::DbRestore
            | ActionKind::DbVerifyBackup
            | ActionKind::DbLaunchSlave
            | ActionKind::DbLaunchMaster => 24 * HOUR,
            ActionKind::ServerLaunch => 30 * 60,
            ActionKind::ServerTerminate => 10 * 60,
        }
    }

    /// Whether running it twice is harmless: then an interrupted run is retried by default.
    pub fn retry_safe(self) -> bool {
        match self {
            ActionKind::RunScript | ActionKind::RunBoot => false,
            // Read-only.
            ActionKind::DbStatus => true,
            // Rewrites its own checksum table only: running it again starts over.
            ActionKind::DbChecksum => true,
            // A new backup row and object each time; an interrupted one stays uncommitted.
            ActionKind::DbBackup => true,
            // Scratch mysqld only.
            ActionKind::DbVerifyBackup => true,
            ActionKind::DbRestore => false,
            // An instance is looked up by the action's tag before one is made; terminating
            // twice is terminating once.
            ActionKind::ServerLaunch | ActionKind::ServerTerminate => true,
            // The seeding is not.
            ActionKind::DbLaunchSlave | ActionKind::DbLaunchMaster => false,
            ActionKind::DbConfigureMaster
            | ActionKind::DbConfigureSlave
            | ActionKind::DbPromote
            | ActionKind::DbFailover => false,
        }
    }

    /// The route that submits it, for the kinds `POST /v1/actions` does not take (a launch
    /// registers its server first; a termination has its own checks).
    pub fn own_route(self) -> Option<&'static str> {
        match self {
            ActionKind::ServerLaunch | ActionKind::DbLaunchSlave | ActionKind::DbLaunchMaster => {
                Some("POST /v1/servers/launch (which registers the server)")
            }
            ActionKind::ServerTerminate => Some("POST /v1/servers/{name}/terminate"),
            _ => None,
        }
    }

    /// The human title used in the log's `Executing action: ...` line.
    pub fn title(self) -> &'static str {
        match self {
            ActionKind::RunScript => "run script",
            ActionKind::RunBoot => "run boot scripts",
            ActionKind::DbStatus => "DB status",
            ActionKind::DbConfigureMaster => "DB configure master",
            ActionKind::DbConfigureSlave => "DB configure slave",
            ActionKind::DbPromote => "DB promote to master",
            ActionKind::DbFailover => "DB failover: promote slave to master",
            ActionKind::DbChecksum => "DB checksum master vs slaves",
            ActionKind::DbBackup => "DB backup to S3",
            ActionKind::DbRestore => "DB restore from S3 backup",
            ActionKind::DbVerifyBackup => "DB verify backup by restoring it",
            ActionKind::ServerLaunch => "launch server instance",
            ActionKind::ServerTerminate => "terminate server instance",
            ActionKind::DbLaunchSlave => "DB launch slave instance",
            ActionKind::DbLaunchMaster => "DB launch master instance from S3 backup",
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// An action of a run waiting for a free slot of its concurrency (not yet queued).
    Held,
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
        Status::Held,
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
            Status::Held => "held",
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
        !matches!(
            self,
            Status::Held | Status::Queued | Status::Waiting | Status::Running
        )
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
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "store", derive(sqlx::FromRow))]
pub struct Action {
    pub id: i64,
    pub server: String,
    /// `kind` and `params`.
    #[serde(flatten)]
    #[cfg_attr(feature = "store", sqlx(flatten))]
    pub spec: ActionSpec,
    #[cfg_attr(feature = "store", sqlx(try_from = "String"))]
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
    /// How often a failed or interrupted run is retried.
    #[cfg_attr(feature = "store", sqlx(json(nullable)))]
    pub retry: Option<RetryPolicy>,
    /// Earliest start of the next attempt (retry backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Why the action was asked to stop while running (cancel, preemption).
    pub cancel_requested: Option<String>,
    /// What the action found out (`db_status`: replication state...).
    pub result: Option<serde_json::Value>,
    /// Who asked for it: `token:<name>`, `schedule:<name>` or `system:<reason>`.
    pub submitted_by: String,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        self.spec.kind()
    }

    /// Its `timeout_s`, else its kind's default.
    pub fn timeout(&self) -> std::time::Duration {
        let s = self
            .timeout_s
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or_else(|| self.kind().default_timeout_s());
        std::time::Duration::from_secs(s.into())
    }

    /// The retry of a run that ended `status`, if the action's policy asks for one.
    pub fn next_retry(&self, status: Status) -> Option<Retry> {
        self.retry?.next(self.attempt, status)
    }
}

/// `{"max": N, "backoff_s": S, "on"?: "interrupted"}`: a failed or interrupted run goes back
/// in line as attempt + 1 after `backoff_s`, at most `max` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max: u32,
    #[serde(default)]
    pub backoff_s: u32,
    /// Only `interrupted` runs (their worker died or stopped) are retried, not failed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<RetryOn>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryOn {
    Interrupted,
}

/// A run that goes back in line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The attempt it becomes (2 for the first retry).
    pub attempt: i32,
    /// Attempts in all (`max` + 1).
    pub of: u32,
    pub backoff_s: u32,
}

impl Retry {
    /// The log line that says so.
    pub fn line(&self) -> String {
        format!(
            "Retrying: attempt {} of {} in {} s.",
            self.attempt, self.of, self.backoff_s
        )
    }
}

impl RetryPolicy {
    pub const MAX: u32 = 10;
    pub const MAX_BACKOFF_S: u32 = 3600;

    /// Kinds that are safe to run twice are retried after an interruption by default.
    pub fn default_for(kind: ActionKind) -> Option<Self> {
        kind.retry_safe().then_some(RetryPolicy {
            max: 3,
            backoff_s: 5,
            on: Some(RetryOn::Interrupted),
        })
    }

    pub fn validate(&self) -> Result<(), crate::validate::FieldError> {
        if self.max > Self::MAX || self.backoff_s > Self::MAX_BACKOFF_S {
            return Err(crate::validate::FieldError::new(
                "retry",
                format!(
                    "max must be at most {} and backoff_s at most {}",
                    Self::MAX,
                    Self::MAX_BACKOFF_S
                ),
            ));
        }
        Ok(())
    }

    /// Whether run `attempt`, ended `status`, is retried: failed and interrupted runs, or
    /// only interrupted ones with `on: interrupted`, while `attempt <= max`.
    pub fn next(&self, attempt: i32, status: Status) -> Option<Retry> {
        match status {
            Status::Interrupted => {}
            Status::Failed if self.on.is_none() => {}
            _ => return None,
        }
        (i64::from(attempt) <= i64::from(self.max)).then_some(Retry {
            attempt: attempt + 1,
            of: self.max + 1,
            backoff_s: self.backoff_s,
        })
    }
}

/// The message body on the actions queue: only the id; the row in PostgreSQL is the truth.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionMessage {
    pub action_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_count_attempts_and_respect_on() {
        let p = RetryPolicy {
            max: 2,
            backoff_s: 5,
            on: None,
        };
        let r = p.next(1, Status::Failed).unwrap();
        assert_eq!((r.attempt, r.of, r.backoff_s), (2, 3, 5));
        assert_eq!(r.line(), "Retrying: attempt 2 of 3 in 5 s.");
        assert!(p.next(2, Status::Interrupted).is_some());
        assert_eq!(p.next(3, Status::Failed), None, "max retries used");
        for s in [Status::TimedOut, Status::Cancelled, Status::Succeeded] {
            assert_eq!(p.next(1, s), None, "{s} is final");
        }
        let only = RetryPolicy::default_for(ActionKind::DbStatus).unwrap();
        assert!(only.next(1, Status::Interrupted).is_some());
        assert_eq!(only.next(1, Status::Failed), None);
        assert_eq!(RetryPolicy::default_for(ActionKind::RunScript), None);
        assert!(RetryPolicy {
            max: 11,
            backoff_s: 0,
            on: None
        }
        .validate()
        .is_err());
    }

    #[test]
    fn an_action_serializes_kind_and_params_at_the_top() {
        let a = serde_json::json!({
            "id": 1, "server": "s", "kind": "db_promote", "params": {"force": true},
            "status": "queued", "exit_code": null, "error": null, "timeout_s": null,
            "urgent": true, "idempotency_key": null, "worker": null, "waiting_on": null,
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "attempt": 1, "retry": {"max": 1, "backoff_s": 0}, "not_before": null,
            "cancel_requested": null, "result": null, "submitted_by": "token:t"
        });
        let action: Action = serde_json::from_value(a.clone()).unwrap();
        assert_eq!(
            action.spec,
            ActionSpec::DbPromote(crate::spec::PromoteParams {
                force: true,
                ..Default::default()
            })
        );
        assert_eq!(serde_json::to_value(&action).unwrap(), a);
    }
}
