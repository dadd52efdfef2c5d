//! What an action's code works with, below the action files and above the tools they use
//! (`mariadb/`, `mycnf`, `transfer`, `mysql`, `ssh`, `s3`): its context (`Ctx`), its error
//! (`ActionError`) and how it ended (`Done`).

use std::sync::Arc;

use shared::{action::Action, db::servers::Server, dns::DnsError};

use crate::{heartbeat::Stop, logwriter::LogSink, s3::S3Error, ssh::SshError, Worker};

/// What a kind's code gets: the action, its server, its log, its stop signal and, for a
/// topology kind, its cluster lock.
pub struct Ctx<'a> {
    pub worker: &'a Arc<Worker>,
    pub action: &'a Action,
    pub server: &'a Server,
    pub log: LogSink,
    pub stop: &'a Stop,
    /// The cluster lock a topology kind holds while it runs (see `runner::cluster_lock`).
    pub cluster_lock: Option<shared::db::clusters::ClusterLock>,
}

impl Ctx<'_> {
    /// The cluster lock, which the runner takes before a topology kind's code runs.
    pub fn cluster_lock(&self) -> Result<&shared::db::clusters::ClusterLock, ActionError> {
        self.cluster_lock.as_ref().ok_or_else(|| {
            ActionError::Failed("a topology change without its cluster lock (a bug)".into())
        })
    }

    /// The same action's context on `server` as it is now (after a launch made it reachable).
    pub fn on<'s>(&'s self, server: &'s Server) -> Ctx<'s> {
        Ctx {
            worker: self.worker,
            action: self.action,
            server,
            log: self.log.clone(),
            stop: self.stop,
            cluster_lock: self.cluster_lock.clone(),
        }
    }

    /// The backup store, or why there is none.
    pub fn s3(&self) -> Result<crate::s3::Bucket, ActionError> {
        self.worker.s3.clone().ok_or(S3Error::NoBucket.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Db(#[from] crate::mysql::DbError),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error(transparent)]
    LostRace(#[from] shared::db::clusters::SetMasterError),
    /// Stopped by timeout, lost lease or shutdown; the runner knows which.
    #[error("stopped")]
    Stopped,
    /// Asked to stop, it could not be: the script may still run on the server.
    #[error("{0}")]
    Unstoppable(String),
    #[error("{0}")]
    Failed(String),
    /// The data itself is bad (a backup object's checksum, a stream that does not unpack).
    #[error("{0}")]
    BadData(String),
}

/// How an action ended when it ran to its end.
pub struct Done {
    pub exit_code: i32,
    /// What it found out, kept on the action.
    pub result: Option<serde_json::Value>,
}

impl Done {
    pub fn exit(exit_code: i32) -> Self {
        Done {
            exit_code,
            result: None,
        }
    }
}

/// Run `f` until it ends or the action is told to stop (timeout, cancel, lost lease).
pub async fn stoppable(
    ctx: &Ctx<'_>,
    f: impl std::future::Future<Output = Result<Done, ActionError>>,
) -> Result<Done, ActionError> {
    tokio::select! {
        r = f => r,
        _ = ctx.stop.stopped() => Err(ActionError::Stopped),
    }
}
