//! The OpenAPI 3.1 document of the HTTP API, generated from the routes' annotations and the
//! request and response types (utoipa), served at `GET /v1/openapi.json`.

use axum::Json;
use shared::{
    action::{Action, ActionKind, RetryOn, RetryPolicy, Status},
    auth::{AuditEntry, AuditList, Role, Scope, TokenCreated, TokenInfo, TokenList, TokenRequest},
    db::{
        backups::{Backup, BackupStatus, Compression, Verdict},
        clusters::{ClusterView, DnsSettings, Event, Fence, Member},
        servers::{DbRole, PromotionRule, Server},
    },
    http::{ActionList, ActionRequest, SecretInfo, SecretList, SecretRequest},
    spec::*,
};
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        RefOr, ResponseBuilder,
    },
    Modify, OpenApi,
};

use crate::{
    error::ErrorBody,
    routes::{
        actions, audit, backups, clusters, health, launch, logs, runs, schedules, scripts, secrets,
        servers, tokens, webhooks,
    },
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
        servers::unlock,
        launch::launch,
        launch::terminate,
        launch::create_profile,
        launch::list_profiles,
        launch::show_profile,
        launch::patch_profile,
        launch::delete_profile,
        actions::submit,
        actions::list,
        actions::show,
        actions::cancel,
        actions::repeat,
        logs::show,
        logs::lines,
        clusters::show,
        clusters::patch,
        clusters::promote,
        clusters::ack,
        clusters::failover_plan,
        clusters::global,
        clusters::set_global,
        webhooks::create,
        webhooks::list,
        webhooks::delete,
        webhooks::deliveries,
        backups::list,
        backups::show,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::patch,
        schedules::delete,
        tokens::create,
        tokens::list,
        tokens::revoke,
        audit::list,
        secrets::put,
        secrets::list,
        secrets::delete,
        scripts::create,
        scripts::revise,
        scripts::list,
        scripts::show,
        scripts::revisions,
        scripts::diff,
        scripts::attach,
        scripts::detach,
        scripts::create_template,
        scripts::revise_template,
        scripts::list_templates,
        scripts::show_template,
        scripts::create_deployment,
        scripts::patch_deployment,
        scripts::list_deployments,
        scripts::show_deployment,
        scripts::delete_deployment,
        scripts::clone_deployment,
        scripts::place_server,
        runs::create,
        runs::list,
        runs::show,
        document,
    ),
    modifiers(&BearerTokens),
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
        RunBootParams,
        Step,
        shared::scripts::ScriptRef,
        shared::scripts::ResolvedInput,
        shared::scripts::InputType,
        shared::scripts::InputDecl,
        shared::scripts::ScriptDoc,
        shared::scripts::ScriptRevision,
        shared::scripts::Attachment,
        shared::scripts::TemplateDoc,
        shared::scripts::TemplateRevision,
        shared::scripts::DeploymentDoc,
        scripts::InputsBody,
        scripts::PlaceBody,
        runs::RunTarget,
        runs::RunRequest,
        shared::db::runs::Run,
        shared::db::runs::RunAction,
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
        LaunchParams,
        LaunchSlaveParams,
        LaunchMasterParams,
        launch::LaunchRequest,
        launch::LaunchRole,
        shared::launch::LaunchProfile,
        shared::launch::AddressKind,
        shared::launch::HostKeySource,
        shared::launch::DbServerProfile,
        shared::db::profiles::StoredProfile,
        shared::db::servers::ServerState,
        Server,
        DbRole,
        Backup,
        BackupStatus,
        Compression,
        Verdict,
        ClusterView,
        Member,
        Event,
        DnsSettings,
        Fence,
        PromotionRule,
        clusters::ClusterPatch,
        clusters::PromoteRequest,
        clusters::GlobalSwitchRequest,
        shared::db::watch::FailoverState,
        shared::db::watch::GlobalSwitch,
        webhooks::WebhookRequest,
        webhooks::WebhookList,
        webhooks::DeliveryList,
        shared::db::webhooks::Webhook,
        shared::db::webhooks::Delivery,
        ActionList,
        ServerList,
        ActionRequest,
        servers::ServerRequest,
        schedules::ScheduleRequest,
        schedules::Target,
        Role,
        Scope,
        TokenRequest,
        TokenInfo,
        TokenCreated,
        TokenList,
        AuditEntry,
        AuditList,
        SecretInput,
        SecretRef,
        SecretRequest,
        SecretInfo,
        SecretList,
    ))
)]
pub struct ApiDoc;

/// Every route but `/healthz` needs `Authorization: Bearer <token>` (`/metrics` unless
/// `SA_METRICS_OPEN`), and answers the guard's refusals.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let refusals = [
            (
                "401",
                "no token, or one that is unknown, expired or revoked",
            ),
            (
                "403",
                "the token's role or scope does not allow it, or another origin",
            ),
            (
                "421",
                "a Host this api does not answer to (SA_ALLOWED_HOSTS)",
            ),
            ("429", "too many bad tokens from this address"),
        ];
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/healthz" {
                continue;
            }
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ]
            .into_iter()
            .flatten()
            {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                for (code, why) in refusals {
                    op.responses
                        .responses
                        .entry(code.into())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(why)
                                    .content(
                                        "application/json",
                                        utoipa::openapi::ContentBuilder::new()
                                            .schema(Some(RefOr::Ref(
                                                utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                                            )))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

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
