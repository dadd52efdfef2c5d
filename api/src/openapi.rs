//! The OpenAPI 3.1 document of the HTTP API, generated from the routes' annotations and the
//! request and response types (utoipa), served at `GET /v1/openapi.json`.

use axum::Json;
use shared::{
    action::{Action, ActionKind, RetryOn, RetryPolicy, Status},
    db::{
        backups::{Backup, BackupStatus, Compression, Verdict},
        clusters::ClusterView,
        servers::{DbRole, Server},
    },
    http::{ActionList, ActionRequest},
    spec::*,
};
use utoipa::OpenApi;

use crate::{
    error::ErrorBody,
    routes::{actions, backups, clusters, health, logs, schedules, servers},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ServerActions",
        description = "Run actions (scripts, MariaDB operations) on a fleet of servers."
    ),
    paths(
        health::healthz,
        health::metrics,
        servers::create,
        servers::list,
        servers::show,
        servers::delete,
        actions::submit,
        actions::list,
        actions::show,
        actions::cancel,
        logs::show,
        logs::lines,
        clusters::show,
        backups::list,
        backups::show,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::patch,
        schedules::delete,
        document,
    ),
    components(schemas(
        ErrorBody,
        Action,
        ActionKind,
        Status,
        RetryPolicy,
        RetryOn,
        ActionSpec,
        NoParams,
        RunScriptParams,
        ConfigureMasterParams,
        ConfigureSlaveParams,
        SlaveSource,
        PromoteParams,
        ChecksumParams,
        BackupParams,
        Strategy,
        BackupRef,
        LatestWord,
        RestoreParams,
        RestoreAs,
        VerifyParams,
        Server,
        DbRole,
        Backup,
        BackupStatus,
        Compression,
        Verdict,
        ClusterView,
        ActionList,
        ServerList,
        ActionRequest,
        servers::ServerRequest,
        schedules::ScheduleRequest,
        schedules::Target,
    ))
)]
pub struct ApiDoc;

/// `GET /v1/servers`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ServerList {
    pub servers: Vec<Server>,
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", responses(
    (status = 200, description = "this document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
