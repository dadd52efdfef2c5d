//! Scripts as building blocks: `/v1/scripts` (revisions, diffs, attachments streamed to the
//! backup bucket or PostgreSQL), `/v1/templates`, `/v1/deployments` (and `clone`), and a
//! server's place among them (`PATCH /v1/servers/{name}`).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Body,
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    Json,
};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::{
    auth::Role,
    db::scripts::{self as store, StoreError},
    scripts::{
        attachment_name, Attachment, DeploymentDoc, ScriptDoc, ScriptRevision, TemplateDoc,
        TemplateRevision, MAX_ATTACHMENT_BYTES,
    },
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::error::ErrorBody;
use crate::{
    auth::{Audit, Caller},
    error::{from_value, ApiError, ApiResult},
    startup::AppState,
};

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::NoServer(_) => ApiError::bad("server", e.to_string()),
            StoreError::Field(f) => f.into(),
            StoreError::Duplicate(what) => {
                ApiError::new(StatusCode::CONFLICT, format!("{what} already exists")).field("name")
            }
            StoreError::Db(e) => e.into(),
        }
    }
}

#[derive(Deserialize)]
pub struct RevisionQuery {
    revision: Option<i32>,
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i32,
    to: i32,
}

fn no_script(name: &str) -> ApiError {
    ApiError::not_found(format!("no script named {name:?}"))
}

#[utoipa::path(post, path = "/v1/scripts", tag = "scripts", request_body = ScriptDoc, responses(
    (status = 201, description = "revision 1", body = ScriptRevision), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a script of that name exists", body = ErrorBody)))]
/// A stored script: `{name, body, description?, inputs?: [{name, type, default?, required?,
/// choices?, description?}], packages?}`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ScriptRevision>)> {
    caller.require(Role::Operator, "writing a script")?;
    let Json(body) = body?;
    let changes = body.clone();
    let doc: ScriptDoc = from_value(body)?;
    doc.validate()?;
    audit.target(format!("script:{}", doc.name));
    let mut tx = state.pool.begin().await?;
    let rev = store::create(&mut tx, &doc, &caller.origin()).await?;
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(rev)))
}

#[utoipa::path(put, path = "/v1/scripts/{name}", tag = "scripts", params(("name" = String, Path)), request_body = ScriptDoc, responses(
    (status = 200, description = "its new revision (attachments carried over)", body = ScriptRevision),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn revise(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<ScriptRevision>> {
    caller.require(Role::Operator, "writing a script")?;
    super::named("script", &name)?;
    audit.target(format!("script:{name}"));
    let Json(body) = body?;
    let changes = body.clone();
    let mut doc: ScriptDoc = from_value(body)?;
    if !doc.name.is_empty() && doc.name != name {
        return Err(ApiError::bad("name", "the path names the script"));
    }
    doc.name = name.clone();
    doc.validate()?;
    let mut tx = state.pool.begin().await?;
    let rev = store::revise(&mut tx, &name, &caller.origin(), |r| {
        r.body = doc.body;
        r.description = doc.description;
        r.inputs = doc.inputs;
        r.packages = doc.packages;
    })
    .await?;
    audit.commit(tx, StatusCode::OK, Some(changes)).await?;
    Ok(Json(rev))
}

#[utoipa::path(get, path = "/v1/scripts", tag = "scripts", responses(
    (status = 200, description = "every script at its newest revision", body = Object)))]
pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "listing scripts")?;
    Ok(Json(json!({ "scripts": store::list(&state.pool).await? })))
}

#[utoipa::path(get, path = "/v1/scripts/{name}", tag = "scripts", params(("name" = String, Path), ("revision" = Option<i32>, Query)), responses(
    (status = 200, description = "the revision (default: the newest)", body = ScriptRevision), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RevisionQuery>,
) -> ApiResult<Json<ScriptRevision>> {
    caller.require(Role::Viewer, "reading a script")?;
    super::named("script", &name)?;
    store::revision(&mut *state.pool.acquire().await?, &name, q.revision)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("no script {name:?} at revision {:?}", q.revision))
        })
}

#[utoipa::path(get, path = "/v1/scripts/{name}/revisions", tag = "scripts", params(("name" = String, Path)), responses(
    (status = 200, description = "every revision, newest first", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn revisions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "reading a script")?;
    super::named("script", &name)?;
    let all = store::revisions(&state.pool, &name).await?;
    if all.is_empty() {
        return Err(no_script(&name));
    }
    Ok(Json(json!({ "revisions": all })))
}

/// A revision as the text its diff compares: body, then the declarations.
fn diff_text(r: &ScriptRevision) -> String {
    let mut t = r.body.clone();
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str("--- declarations ---\n");
    if let Some(d) = &r.description {
        t.push_str(&format!("description: {d}\n"));
    }
    for i in &r.inputs {
        t.push_str(&format!(
            "input: {}\n",
            serde_json::to_string(i).unwrap_or_default()
        ));
    }
    for p in &r.packages {
        t.push_str(&format!("package: {p}\n"));
    }
    for a in &r.attachments {
        t.push_str(&format!(
            "attachment: {} {} bytes sha256 {}\n",
            a.file, a.size, a.sha256
        ));
    }
    t
}

#[utoipa::path(get, path = "/v1/scripts/{name}/diff", tag = "scripts", params(("name" = String, Path), ("from" = i32, Query), ("to" = i32, Query)), responses(
    (status = 200, description = "a unified diff of two revisions (body, inputs, packages, attachments)", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "reading a script")?;
    super::named("script", &name)?;
    let mut conn = state.pool.acquire().await?;
    let mut get = async |rev: i32, field: &str| {
        store::revision(&mut conn, &name, Some(rev))
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("no revision {rev} of script {name:?}")).field(field)
            })
    };
    let a = get(q.from, "from").await?;
    let b = get(q.to, "to").await?;
    let (ta, tb) = (diff_text(&a), diff_text(&b));
    let diff = similar::TextDiff::from_lines(&ta, &tb)
        .unified_diff()
        .header(
            &format!("{name} revision {}", q.from),
            &format!("{name} revision {}", q.to),
        )
        .to_string();
    Ok(Json(json!({ "from": q.from, "to": q.to, "diff": diff })))
}

#[utoipa::path(put, path = "/v1/scripts/{name}/attachments/{file}", tag = "scripts", params(("name" = String, Path), ("file" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 200, description = "the script's new revision, with the attachment (sha256 recorded)", body = ScriptRevision),
    (status = 400, description = "a bad file name", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody),
    (status = 413, description = "larger than the limit", body = ErrorBody)))]
/// Streamed: spooled to a private temporary file while hashed, then stored in the backup
/// bucket (`attachments/<sha256>-<id>`) or, without one, in PostgreSQL in 1 MiB chunks.
pub async fn attach(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path((name, file)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<ScriptRevision>> {
    caller.require(Role::Operator, "writing a script")?;
    super::named("script", &name)?;
    attachment_name("file", &file)?;
    audit.target(format!("script:{name}"));
    if store::revision(&mut *state.pool.acquire().await?, &name, None)
        .await?
        .is_none()
    {
        return Err(no_script(&name));
    }
    let spool = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let mut out = tokio::fs::File::from_std(spool.reopen().map_err(ApiError::internal)?);
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| ApiError::bad("body", format!("the upload broke off: {e}")))?
    {
        size += chunk.len() as u64;
        if size > MAX_ATTACHMENT_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an attachment is at most {MAX_ATTACHMENT_BYTES} bytes"),
            )
            .field("body"));
        }
        hash.update(&chunk);
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    let sha256 = shared::s3::hex(&hash.finalize());
    let mut tx = state.pool.begin().await?;
    let blob = match &state.bucket {
        Some(bucket) => {
            let key = format!("attachments/{sha256}");
            bucket
                .put_file(&key, spool.path())
                .await
                .map_err(ApiError::internal)?;
            store::insert_blob(&mut tx, &sha256, size as i64, Some(&key)).await?
        }
        None => {
            let blob = store::insert_blob(&mut tx, &sha256, size as i64, None).await?;
            let mut f = tokio::fs::File::open(spool.path())
                .await
                .map_err(ApiError::internal)?;
            let mut buf = vec![0u8; store::BLOB_CHUNK];
            for seq in 0.. {
                let n = read_full(&mut f, &mut buf)
                    .await
                    .map_err(ApiError::internal)?;
                if n == 0 && seq > 0 {
                    break;
                }
                store::insert_chunk(&mut tx, blob, seq, &buf[..n]).await?;
                if n < buf.len() {
                    break;
                }
            }
            blob
        }
    };
    let a = Attachment {
        file: file.clone(),
        sha256: sha256.clone(),
        size: size as i64,
        blob,
    };
    let rev = store::revise(&mut tx, &name, &caller.origin(), |r| {
        store::with_attachment(r, a)
    })
    .await?;
    audit
        .commit(
            tx,
            StatusCode::OK,
            Some(json!({"attachment": file, "sha256": sha256, "size": size})),
        )
        .await?;
    Ok(Json(rev))
}

/// Read until `buf` is full or the file ends.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = f.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

#[utoipa::path(delete, path = "/v1/scripts/{name}/attachments/{file}", tag = "scripts", params(("name" = String, Path), ("file" = String, Path)), responses(
    (status = 200, description = "the script's new revision, without it", body = ScriptRevision), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn detach(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Json<ScriptRevision>> {
    caller.require(Role::Operator, "writing a script")?;
    super::named("script", &name)?;
    audit.target(format!("script:{name}"));
    let mut tx = state.pool.begin().await?;
    let head = store::revision(&mut tx, &name, None)
        .await?
        .ok_or_else(|| no_script(&name))?;
    if !head.attachments.iter().any(|a| a.file == file) {
        return Err(ApiError::not_found(format!(
            "script {name:?} has no attachment {file:?}"
        )));
    }
    let rev = store::revise(&mut tx, &name, &caller.origin(), |r| {
        r.attachments.retain(|a| a.file != file)
    })
    .await?;
    audit
        .commit(tx, StatusCode::OK, Some(json!({"detached": file})))
        .await?;
    Ok(Json(rev))
}

// Templates.

#[utoipa::path(post, path = "/v1/templates", tag = "scripts", request_body = TemplateDoc, responses(
    (status = 201, description = "revision 1", body = TemplateRevision), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a template of that name exists", body = ErrorBody)))]
/// A server template: `{name, boot: [{name, revision?}], operational, decommission, inputs}`.
pub async fn create_template(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TemplateRevision>)> {
    caller.require(Role::Operator, "writing a template")?;
    let Json(body) = body?;
    let changes = body.clone();
    let doc: TemplateDoc = from_value(body)?;
    doc.validate()?;
    audit.target(format!("template:{}", doc.name));
    let mut tx = state.pool.begin().await?;
    let rev = store::save_template(&mut tx, &doc, true, &caller.origin()).await?;
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(rev)))
}

#[utoipa::path(put, path = "/v1/templates/{name}", tag = "scripts", params(("name" = String, Path)), request_body = TemplateDoc, responses(
    (status = 200, description = "its new revision", body = TemplateRevision), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn revise_template(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<TemplateRevision>> {
    caller.require(Role::Operator, "writing a template")?;
    super::named("template", &name)?;
    audit.target(format!("template:{name}"));
    let Json(body) = body?;
    let changes = body.clone();
    let mut doc: TemplateDoc = from_value(body)?;
    if !doc.name.is_empty() && doc.name != name {
        return Err(ApiError::bad("name", "the path names the template"));
    }
    doc.name = name;
    doc.validate()?;
    let mut tx = state.pool.begin().await?;
    let rev = store::save_template(&mut tx, &doc, false, &caller.origin()).await?;
    audit.commit(tx, StatusCode::OK, Some(changes)).await?;
    Ok(Json(rev))
}

#[utoipa::path(get, path = "/v1/templates", tag = "scripts", responses(
    (status = 200, description = "every template at its newest revision", body = Object)))]
pub async fn list_templates(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "listing templates")?;
    Ok(Json(
        json!({ "templates": store::templates(&state.pool).await? }),
    ))
}

#[utoipa::path(get, path = "/v1/templates/{name}", tag = "scripts", params(("name" = String, Path), ("revision" = Option<i32>, Query)), responses(
    (status = 200, description = "the revision (default: the newest)", body = TemplateRevision), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show_template(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RevisionQuery>,
) -> ApiResult<Json<TemplateRevision>> {
    caller.require(Role::Viewer, "reading a template")?;
    super::named("template", &name)?;
    store::template(&mut *state.pool.acquire().await?, &name, q.revision)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("no template {name:?} at revision {:?}", q.revision))
        })
}

// Deployments.

fn no_deployment(name: &str) -> ApiError {
    ApiError::not_found(format!("no deployment named {name:?}"))
}

#[utoipa::path(post, path = "/v1/deployments", tag = "scripts", request_body = DeploymentDoc, responses(
    (status = 201, description = "created", body = DeploymentDoc), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 409, description = "a deployment of that name exists", body = ErrorBody)))]
pub async fn create_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DeploymentDoc>)> {
    caller.require(Role::Operator, "creating a deployment")?;
    let Json(body) = body?;
    let changes = body.clone();
    let doc: DeploymentDoc = from_value(body)?;
    doc.validate()?;
    audit.target(format!("deployment:{}", doc.name));
    let mut tx = state.pool.begin().await?;
    store::create_deployment(&mut tx, &doc).await?;
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputsBody {
    #[schema(value_type = Object)]
    inputs: BTreeMap<String, Value>,
}

#[utoipa::path(patch, path = "/v1/deployments/{name}", tag = "scripts", params(("name" = String, Path)), request_body = InputsBody, responses(
    (status = 200, description = "its inputs replaced", body = DeploymentDoc), (status = 400, description = "a bad field, named", body = ErrorBody),
    (status = 404, description = "not found", body = ErrorBody)))]
pub async fn patch_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<DeploymentDoc>> {
    caller.require(Role::Operator, "changing a deployment")?;
    super::named("deployment", &name)?;
    audit.target(format!("deployment:{name}"));
    let Json(body) = body?;
    let changes = body.clone();
    let b: InputsBody = from_value(body)?;
    shared::scripts::layer_names("inputs", &b.inputs)?;
    let mut tx = state.pool.begin().await?;
    if !store::set_deployment_inputs(&mut tx, &name, &b.inputs).await? {
        return Err(no_deployment(&name));
    }
    audit.commit(tx, StatusCode::OK, Some(changes)).await?;
    Ok(Json(DeploymentDoc {
        name,
        inputs: b.inputs,
    }))
}

#[utoipa::path(get, path = "/v1/deployments", tag = "scripts", responses(
    (status = 200, description = "every deployment", body = Object)))]
pub async fn list_deployments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "listing deployments")?;
    Ok(Json(
        json!({ "deployments": store::deployments(&state.pool).await? }),
    ))
}

#[utoipa::path(get, path = "/v1/deployments/{name}", tag = "scripts", params(("name" = String, Path)), responses(
    (status = 200, description = "the deployment and its servers", body = Object), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn show_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer, "reading a deployment")?;
    super::named("deployment", &name)?;
    let d = store::deployment(&mut *state.pool.acquire().await?, &name)
        .await?
        .ok_or_else(|| no_deployment(&name))?;
    let servers: Vec<String> = shared::db::servers::list(&state.pool)
        .await?
        .into_iter()
        .filter(|s| s.deployment.as_deref() == Some(name.as_str()) && caller.reach(s).is_ok())
        .map(|s| s.name)
        .collect();
    Ok(Json(
        json!({"name": d.name, "inputs": d.inputs, "servers": servers}),
    ))
}

#[utoipa::path(delete, path = "/v1/deployments/{name}", tag = "scripts", params(("name" = String, Path)), responses(
    (status = 204, description = "deleted"), (status = 404, description = "not found", body = ErrorBody),
    (status = 409, description = "servers belong to it", body = ErrorBody)))]
pub async fn delete_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Operator, "deleting a deployment")?;
    super::named("deployment", &name)?;
    audit.target(format!("deployment:{name}"));
    let mut tx = state.pool.begin().await?;
    match store::delete_deployment(&mut tx, &name).await? {
        Ok(true) => {
            audit.commit(tx, StatusCode::NO_CONTENT, None).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(no_deployment(&name)),
        Err(servers) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "servers belong to deployment {name:?}: {}",
                servers.join(", ")
            ),
        )),
    }
}

#[utoipa::path(post, path = "/v1/deployments/{name}/clone", tag = "scripts", params(("name" = String, Path)), request_body = DeploymentDoc, responses(
    (status = 201, description = "the copy: the source's inputs with these over them", body = DeploymentDoc),
    (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "the new name exists", body = ErrorBody)))]
pub async fn clone_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DeploymentDoc>)> {
    caller.require(Role::Operator, "creating a deployment")?;
    super::named("deployment", &name)?;
    let Json(body) = body?;
    let changes = body.clone();
    let new: DeploymentDoc = from_value(body)?;
    new.validate()?;
    audit.target(format!("deployment:{}", new.name));
    let mut tx = state.pool.begin().await?;
    let source = store::deployment(&mut tx, &name)
        .await?
        .ok_or_else(|| no_deployment(&name))?;
    let mut inputs = source.inputs;
    inputs.extend(new.inputs);
    let copy = DeploymentDoc {
        name: new.name,
        inputs,
    };
    store::create_deployment(&mut tx, &copy).await?;
    audit.commit(tx, StatusCode::CREATED, Some(changes)).await?;
    Ok((StatusCode::CREATED, Json(copy)))
}

/// A field that may be given as `null`: `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/servers/{name}`: each field given replaces it; `null` clears the template or the
/// deployment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    template: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    deployment: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    inputs: Option<BTreeMap<String, Value>>,
}

#[utoipa::path(patch, path = "/v1/servers/{name}", tag = "servers", params(("name" = String, Path)), request_body = PlaceBody, responses(
    (status = 200, description = "the server with its template, deployment and inputs", body = shared::db::servers::Server),
    (status = 400, description = "a bad field, named", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub async fn place_server(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    audit: Audit,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<shared::db::servers::Server>> {
    caller.require(Role::Operator, "placing a server")?;
    super::named("server", &name)?;
    audit.target(format!("server:{name}"));
    super::reach_server(&state, &caller, &name).await?;
    let Json(body) = body?;
    let changes = body.clone();
    let b: PlaceBody = from_value(body)?;
    if let Some(i) = &b.inputs {
        shared::scripts::layer_names("inputs", i)?;
    }
    let mut tx = state.pool.begin().await?;
    let found = store::place_server(
        &mut tx,
        &name,
        b.template.as_ref().map(Option::as_deref),
        b.deployment.as_ref().map(Option::as_deref),
        b.inputs.as_ref(),
    )
    .await?;
    if !found {
        return Err(ApiError::not_found(format!("no server named {name:?}")));
    }
    let server = shared::db::servers::get_conn(&mut tx, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no server named {name:?}")))?;
    audit.commit(tx, StatusCode::OK, Some(changes)).await?;
    Ok(Json(server))
}
