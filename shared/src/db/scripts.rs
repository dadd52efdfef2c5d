//! Scripts, their revisions and attachment blobs; server templates; deployments; and how a
//! stored script's inputs resolve for a server (script default < template < deployment <
//! server < action: `crate::scripts::resolve`).

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::{types::Json, PgConnection, PgPool};

use crate::{
    scripts::{
        self, Attachment, DeploymentDoc, InputType, ResolvedInput, ScriptDoc, ScriptRef,
        ScriptRevision, TemplateDoc, TemplateRevision,
    },
    spec::{RunBootParams, RunScriptParams, SecretInput, SecretRef, Step},
    validate::FieldError,
};

use super::servers::Server;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A bad or unknown reference, named (a 4xx).
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{0} already exists")]
    Duplicate(String),
    /// The script or template a path names does not exist (a 404).
    #[error("{0}")]
    NotFound(String),
    /// The action's server does not exist (the store's own 400 says so).
    #[error("no server named {0:?}")]
    NoServer(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

const REVISION: &str = "SELECT r.* FROM script_revisions r";

/// A new script at revision 1.
pub async fn create(
    tx: &mut PgConnection,
    doc: &ScriptDoc,
    by: &str,
) -> Result<ScriptRevision, StoreError> {
    let made = sqlx::query("INSERT INTO scripts (name, head) VALUES ($1, 0)")
        .bind(&doc.name)
        .execute(&mut *tx)
        .await;
    match made {
        Err(e) if unique_violation(&e) => {
            return Err(StoreError::Duplicate(format!("script {:?}", doc.name)))
        }
        r => r?,
    };
    revise(tx, &doc.name, by, |r| {
        r.body = doc.body.clone();
        r.description = doc.description.clone();
        r.inputs = doc.inputs.clone();
        r.packages = doc.packages.clone();
    })
    .await
}

/// A new revision of script `name`: its newest with `change` applied. `None`: no such script.
pub async fn revise(
    tx: &mut PgConnection,
    name: &str,
    by: &str,
    change: impl FnOnce(&mut ScriptRevision),
) -> Result<ScriptRevision, StoreError> {
    let head: Option<i32> =
        sqlx::query_scalar("SELECT head FROM scripts WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let head = head.ok_or_else(|| StoreError::NotFound(format!("no script named {name:?}")))?;
    let mut rev = if head == 0 {
        ScriptRevision {
            script: name.into(),
            revision: 0,
            body: String::new(),
            description: None,
            inputs: Vec::new(),
            packages: Vec::new(),
            attachments: Vec::new(),
            created_by: by.into(),
            created_at: chrono::Utc::now(),
        }
    } else {
        sqlx::query_as(&format!("{REVISION} WHERE script = $1 AND revision = $2"))
            .bind(name)
            .bind(head)
            .fetch_one(&mut *tx)
            .await?
    };
    change(&mut rev);
    let rev: ScriptRevision = sqlx::query_as(
        "WITH h AS (UPDATE scripts SET head = $2, updated_at = now() WHERE name = $1)
         INSERT INTO script_revisions (script, revision, body, description, inputs, packages,
                                       attachments, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(name)
    .bind(head + 1)
    .bind(&rev.body)
    .bind(&rev.description)
    .bind(Json(&rev.inputs))
    .bind(Json(&rev.packages))
    .bind(Json(&rev.attachments))
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    Ok(rev)
}

/// A revision of script `name` (its newest without one).
pub async fn revision(
    conn: &mut PgConnection,
    name: &str,
    revision: Option<i32>,
) -> sqlx::Result<Option<ScriptRevision>> {
    sqlx::query_as(&format!(
        "{REVISION} JOIN scripts s ON s.name = r.script
         WHERE r.script = $1 AND r.revision = COALESCE($2, s.head)"
    ))
    .bind(name)
    .bind(revision)
    .fetch_optional(&mut *conn)
    .await
}

pub async fn revisions(pool: &PgPool, name: &str) -> sqlx::Result<Vec<ScriptRevision>> {
    sqlx::query_as(&format!(
        "{REVISION} WHERE script = $1 ORDER BY revision DESC"
    ))
    .bind(name)
    .fetch_all(pool)
    .await
}

/// Every script at its newest revision.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ScriptRevision>> {
    sqlx::query_as(&format!(
        "{REVISION} JOIN scripts s ON s.name = r.script AND r.revision = s.head ORDER BY r.script"
    ))
    .fetch_all(pool)
    .await
}

/// A new blob row (its content follows as chunks, or is the object `object_key`).
pub async fn insert_blob(
    tx: &mut PgConnection,
    sha256: &str,
    size: i64,
    object_key: Option<&str>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO blobs (sha256, size, object_key) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(sha256)
    .bind(size)
    .bind(object_key)
    .fetch_one(&mut *tx)
    .await
}

pub const BLOB_CHUNK: usize = 1 << 20;

pub async fn insert_chunk(
    tx: &mut PgConnection,
    blob: i64,
    seq: i32,
    data: &[u8],
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
        .bind(blob)
        .bind(seq)
        .bind(data)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Where a blob's content is: its object in the bucket, or its chunks here.
pub async fn blob_object(pool: &PgPool, blob: i64) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar("SELECT object_key FROM blobs WHERE id = $1")
        .bind(blob)
        .fetch_optional(pool)
        .await
}

/// Chunk `seq` of a blob stored here (`None` past the last).
pub async fn chunk(pool: &PgPool, blob: i64, seq: i32) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = $1 AND seq = $2")
        .bind(blob)
        .bind(seq)
        .fetch_optional(pool)
        .await
}

/// The revision with attachment `a` added or replaced.
pub fn with_attachment(rev: &mut ScriptRevision, a: Attachment) {
    rev.attachments.retain(|x| x.file != a.file);
    rev.attachments.push(a);
    rev.attachments.sort_by(|x, y| x.file.cmp(&y.file));
}

// Templates.

#[derive(sqlx::FromRow)]
struct TemplateRow {
    template: String,
    revision: i32,
    spec: Json<TemplateDoc>,
    created_by: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<TemplateRow> for TemplateRevision {
    fn from(r: TemplateRow) -> Self {
        let mut spec = r.spec.0;
        spec.name = String::new();
        TemplateRevision {
            template: r.template,
            revision: r.revision,
            spec,
            created_by: r.created_by,
            created_at: r.created_at,
        }
    }
}

/// Every script a template names must exist (at the revision it pins).
async fn check_refs(conn: &mut PgConnection, doc: &TemplateDoc) -> Result<(), StoreError> {
    for (list, refs) in [
        ("boot", &doc.boot),
        ("operational", &doc.operational),
        ("decommission", &doc.decommission),
    ] {
        for (i, r) in refs.iter().enumerate() {
            if revision(&mut *conn, &r.name, r.revision).await?.is_none() {
                let field = format!("{list}[{i}]");
                return Err(FieldError::new(
                    &field,
                    format!("no script {:?} at revision {:?}", r.name, r.revision),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// A new template (`create`) or a new revision of one.
pub async fn save_template(
    tx: &mut PgConnection,
    doc: &TemplateDoc,
    create: bool,
    by: &str,
) -> Result<TemplateRevision, StoreError> {
    check_refs(&mut *tx, doc).await?;
    let head: Option<i32> = if create {
        match sqlx::query("INSERT INTO templates (name, head) VALUES ($1, 0)")
            .bind(&doc.name)
            .execute(&mut *tx)
            .await
        {
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::Duplicate(format!("template {:?}", doc.name)))
            }
            r => r.map(|_| Some(0))?,
        }
    } else {
        sqlx::query_scalar("SELECT head FROM templates WHERE name = $1 FOR UPDATE")
            .bind(&doc.name)
            .fetch_optional(&mut *tx)
            .await?
    };
    let head =
        head.ok_or_else(|| StoreError::NotFound(format!("no template named {:?}", doc.name)))?;
    let mut spec = doc.clone();
    spec.name = String::new();
    let row: TemplateRow = sqlx::query_as(
        "WITH h AS (UPDATE templates SET head = $2, updated_at = now() WHERE name = $1)
         INSERT INTO template_revisions (template, revision, spec, created_by)
         VALUES ($1, $2, $3, $4) RETURNING *",
    )
    .bind(&doc.name)
    .bind(head + 1)
    .bind(Json(&spec))
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.into())
}

pub async fn template(
    conn: &mut PgConnection,
    name: &str,
    revision: Option<i32>,
) -> sqlx::Result<Option<TemplateRevision>> {
    let row: Option<TemplateRow> = sqlx::query_as(
        "SELECT r.* FROM template_revisions r JOIN templates t ON t.name = r.template
         WHERE r.template = $1 AND r.revision = COALESCE($2, t.head)",
    )
    .bind(name)
    .bind(revision)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn templates(pool: &PgPool) -> sqlx::Result<Vec<TemplateRevision>> {
    let rows: Vec<TemplateRow> = sqlx::query_as(
        "SELECT r.* FROM template_revisions r JOIN templates t ON t.name = r.template AND r.revision = t.head
         ORDER BY r.template",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

// Deployments.

pub async fn create_deployment(tx: &mut PgConnection, d: &DeploymentDoc) -> Result<(), StoreError> {
    match sqlx::query("INSERT INTO deployments (name, inputs) VALUES ($1, $2)")
        .bind(&d.name)
        .bind(Json(&d.inputs))
        .execute(&mut *tx)
        .await
    {
        Err(e) if unique_violation(&e) => {
            Err(StoreError::Duplicate(format!("deployment {:?}", d.name)))
        }
        r => r.map(|_| ()).map_err(Into::into),
    }
}

pub async fn deployment(
    conn: &mut PgConnection,
    name: &str,
) -> sqlx::Result<Option<DeploymentDoc>> {
    let row: Option<(String, Json<BTreeMap<String, Value>>)> =
        sqlx::query_as("SELECT name, inputs FROM deployments WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(name, Json(inputs))| DeploymentDoc { name, inputs }))
}

pub async fn deployments(pool: &PgPool) -> sqlx::Result<Vec<DeploymentDoc>> {
    let rows: Vec<(String, Json<BTreeMap<String, Value>>)> =
        sqlx::query_as("SELECT name, inputs FROM deployments ORDER BY name")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, Json(inputs))| DeploymentDoc { name, inputs })
        .collect())
}

/// Replace a deployment's inputs; false: no such deployment.
pub async fn set_deployment_inputs(
    tx: &mut PgConnection,
    name: &str,
    inputs: &BTreeMap<String, Value>,
) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE deployments SET inputs = $2, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(Json(inputs))
        .execute(&mut *tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Delete a deployment no server belongs to: `Err(servers)` otherwise.
pub async fn delete_deployment(
    tx: &mut PgConnection,
    name: &str,
) -> sqlx::Result<Result<bool, Vec<String>>> {
    let members: Vec<String> =
        sqlx::query_scalar("SELECT name FROM servers WHERE deployment = $1 ORDER BY name")
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
    if !members.is_empty() {
        return Ok(Err(members));
    }
    let r = sqlx::query("DELETE FROM deployments WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(Ok(r.rows_affected() == 1))
}

/// A server's template, deployment and inputs (each `None`: unchanged; `Some(None)`: none).
pub async fn place_server(
    tx: &mut PgConnection,
    server: &str,
    template: Option<Option<&str>>,
    deployment: Option<Option<&str>>,
    inputs: Option<&BTreeMap<String, Value>>,
) -> Result<bool, StoreError> {
    if let Some(Some(t)) = template {
        if self::template(&mut *tx, t, None).await?.is_none() {
            return Err(FieldError::new("template", format!("no template named {t:?}")).into());
        }
    }
    if let Some(Some(d)) = deployment {
        if self::deployment(&mut *tx, d).await?.is_none() {
            return Err(FieldError::new("deployment", format!("no deployment named {d:?}")).into());
        }
    }
    let r = sqlx::query(
        "UPDATE servers SET
             template = CASE WHEN $2 THEN $3 ELSE template END,
             deployment = CASE WHEN $4 THEN $5 ELSE deployment END,
             inputs = COALESCE($6, inputs)
         WHERE name = $1",
    )
    .bind(server)
    .bind(template.is_some())
    .bind(template.flatten())
    .bind(deployment.is_some())
    .bind(deployment.flatten())
    .bind(inputs.map(Json))
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

// Resolution.

/// The layers below the action's own for `server`: its template's inputs (the revision given,
/// else its template's newest), its deployment's, its own.
async fn layers(
    conn: &mut PgConnection,
    server: &Server,
    template: Option<&TemplateRevision>,
) -> sqlx::Result<Vec<(String, BTreeMap<String, Value>)>> {
    let mut out = Vec::new();
    let own_template = match (template, &server.template) {
        (Some(_), _) | (None, None) => None,
        (None, Some(t)) => self::template(&mut *conn, t, None).await?,
    };
    if let Some(t) = template.or(own_template.as_ref()) {
        out.push((format!("template {}", t.template), t.spec.inputs.clone()));
    }
    if let Some(d) = &server.deployment {
        if let Some(d) = deployment(&mut *conn, d).await? {
            out.push((format!("deployment {}", d.name), d.inputs));
        }
    }
    out.push((format!("server {}", server.name), server.inputs.0.clone()));
    Ok(out)
}

fn no_server(server: &str) -> StoreError {
    StoreError::NoServer(server.into())
}

/// Fill a `run_script` on a stored script for `server`: the revision pinned, every input
/// resolved (recorded in `resolved`), secret inputs moved to `secrets` (sealed as any
/// action's).
pub async fn prepare_run_script(
    conn: &mut PgConnection,
    server: &str,
    p: &mut RunScriptParams,
) -> Result<(), StoreError> {
    let Some(r) = p.script_ref.clone() else {
        return Ok(());
    };
    if p.resolved.is_some() {
        return Ok(()); // a repeat: pinned and resolved already
    }
    let rev = revision(&mut *conn, &r.name, r.revision)
        .await?
        .ok_or_else(|| {
            FieldError::new(
                "params.script_ref",
                format!("no script {:?} at revision {:?}", r.name, r.revision),
            )
        })?;
    let server = super::servers::get_conn(&mut *conn, server)
        .await?
        .ok_or_else(|| no_server(server))?;
    let layers = layers(&mut *conn, &server, None).await?;
    let refs: Vec<scripts::Layer<'_>> = layers.iter().map(|(s, l)| (s.clone(), l)).collect();
    let mut resolved = scripts::resolve(&rev.script, &rev.inputs, &refs, &p.inputs, true)?;
    for (name, input) in resolved.iter_mut() {
        if input.ty == InputType::Secret {
            let secret = match &input.value {
                Value::String(v) => SecretInput::Value(v.clone()),
                v => SecretInput::Ref(SecretRef {
                    secret_ref: v["secret_ref"].as_str().unwrap_or_default().into(),
                }),
            };
            if let SecretInput::Value(_) = secret {
                input.value = Value::String(crate::secrets::MASK.into());
            }
            p.secrets.insert(name.clone(), secret);
        }
    }
    p.script_ref = Some(ScriptRef {
        name: rev.script,
        revision: Some(rev.revision),
    });
    p.resolved = Some(resolved);
    Ok(())
}

/// The steps of a sequence of script references for `server` (pinned, inputs resolved; a
/// secret input only as a stored secret's name).
pub async fn steps(
    conn: &mut PgConnection,
    server: &Server,
    template: &TemplateRevision,
    refs: &[ScriptRef],
    action: &BTreeMap<String, Value>,
) -> Result<Vec<Step>, StoreError> {
    let layers = layers(&mut *conn, server, Some(template)).await?;
    let lower: Vec<scripts::Layer<'_>> = layers.iter().map(|(s, l)| (s.clone(), l)).collect();
    let mut out = Vec::new();
    for r in refs {
        let rev = revision(&mut *conn, &r.name, r.revision)
            .await?
            .ok_or_else(|| {
                FieldError::new(
                    "params.template",
                    format!(
                        "its script {:?} at revision {:?} is gone",
                        r.name, r.revision
                    ),
                )
            })?;
        // The action's values reach every step that declares them.
        let own: BTreeMap<String, Value> = action
            .iter()
            .filter(|(k, _)| rev.inputs.iter().any(|d| &d.name == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let inputs = scripts::resolve(&rev.script, &rev.inputs, &lower, &own, false)?;
        out.push(Step {
            script: rev.script,
            revision: rev.revision,
            inputs,
        });
    }
    Ok(out)
}

/// Fill a `run_boot` for `server`: its template (or the one named) pinned, each boot script a
/// step.
pub async fn prepare_run_boot(
    conn: &mut PgConnection,
    server: &str,
    p: &mut RunBootParams,
) -> Result<(), StoreError> {
    if !p.steps.is_empty() {
        return Ok(()); // a repeat: its steps are recorded
    }
    let server = super::servers::get_conn(&mut *conn, server)
        .await?
        .ok_or_else(|| no_server(server))?;
    let wanted = match (&p.template, &server.template) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => ScriptRef {
            name: t.clone(),
            revision: None,
        },
        (None, None) => {
            return Err(FieldError::new(
                "params.template",
                format!("server {:?} names no template; give one", server.name),
            )
            .into())
        }
    };
    let t = template(&mut *conn, &wanted.name, wanted.revision)
        .await?
        .ok_or_else(|| {
            FieldError::new(
                "params.template",
                format!(
                    "no template {:?} at revision {:?}",
                    wanted.name, wanted.revision
                ),
            )
        })?;
    if t.spec.boot.is_empty() {
        return Err(FieldError::new(
            "params.template",
            format!("template {:?} has no boot scripts", t.template),
        )
        .into());
    }
    p.steps = steps(&mut *conn, &server, &t, &t.spec.boot, &p.inputs).await?;
    p.template = Some(ScriptRef {
        name: t.template,
        revision: Some(t.revision),
    });
    Ok(())
}

/// An input as the log's header shows it.
pub fn describe(name: &str, i: &ResolvedInput) -> String {
    let value = match i.ty {
        InputType::Secret => "***".to_string(),
        _ => scripts::env_text(&i.value),
    };
    format!("{name} = {value} ({}, from {})", i.ty.as_str(), i.source)
}
