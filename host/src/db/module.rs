//! `modules` and `workflows`: uploaded components and the versioned workflows they declare.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::manifest::{Manifest, WorkflowDef};

/// One version of a workflow, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowVersion {
    /// Owner.
    pub tenant_id: Uuid,
    /// Workflow name.
    pub name: String,
    /// Version, from 1.
    pub version: i32,
    /// The module that runs it.
    pub module_digest: String,
    /// Its definition from the module's manifest.
    pub definition: WorkflowDef,
    /// When this version was deployed.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Fuel budgets set for its tasks through the API (filled by `workflow_latest` only, for
    /// the runs it starts).
    pub task_fuel: std::collections::HashMap<String, i64>,
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    tenant_id: Uuid,
    name: String,
    version: i32,
    module_digest: String,
    definition: sqlx::types::Json<WorkflowDef>,
    created_at: chrono::DateTime<chrono::Utc>,
    #[sqlx(default)]
    task_fuel: Option<sqlx::types::Json<std::collections::HashMap<String, i64>>>,
}

impl From<WorkflowRow> for WorkflowVersion {
    fn from(row: WorkflowRow) -> Self {
        Self {
            tenant_id: row.tenant_id,
            name: row.name,
            version: row.version,
            module_digest: row.module_digest,
            definition: row.definition.0,
            created_at: row.created_at,
            task_fuel: row.task_fuel.map(|fuel| fuel.0).unwrap_or_default(),
        }
    }
}

/// Stores a module's bytes and manifest; `false` if this tenant already has it.
pub async fn module_insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(sql!(
        "INSERT INTO modules (tenant_id, digest, bytes, manifest) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, digest) DO NOTHING"
    ))
    .bind(tenant_id)
    .bind(digest)
    .bind(bytes)
    .bind(sqlx::types::Json(manifest))
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether tenant `tenant_id` stores module `digest`.
pub async fn module_exists(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT EXISTS (SELECT 1 FROM modules WHERE tenant_id = $1 AND digest = $2)"
    ))
    .bind(tenant_id)
    .bind(digest)
    .fetch_one(conn)
    .await
}

/// The bytes of a module.
pub async fn module_bytes(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT bytes FROM modules WHERE tenant_id = $1 AND digest = $2"
    ))
    .bind(tenant_id)
    .bind(digest)
    .fetch_optional(conn)
    .await
}

/// Adds the next version of workflow `definition.name`, run by module `digest`.
pub async fn workflow_version_create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
    definition: &WorkflowDef,
) -> Result<WorkflowVersion, sqlx::Error> {
    // Serialise concurrent deploys of the same workflow name so versions never collide.
    sqlx::query(sql!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2, 0))"
    ))
    .bind(tenant_id)
    .bind(&definition.name)
    .execute(&mut *conn)
    .await?;
    let row: WorkflowRow = sqlx::query_as(sql!(
        "INSERT INTO workflows (tenant_id, name, version, module_digest, definition)
         SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4
         FROM workflows WHERE tenant_id = $1 AND name = $2
         RETURNING tenant_id, name, version, module_digest, definition, created_at"
    ))
    .bind(tenant_id)
    .bind(&definition.name)
    .bind(digest)
    .bind(sqlx::types::Json(definition))
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Stores the sealed compiled artifact of module `digest` for engine `engine` (first one wins).
pub async fn module_artifact_store(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
    engine: &str,
    sealed: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "INSERT INTO module_artifacts (tenant_id, digest, engine, sealed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, digest, engine) DO NOTHING"
    ))
    .bind(tenant_id)
    .bind(digest)
    .bind(engine)
    .bind(sealed)
    .execute(conn)
    .await?;
    Ok(())
}

/// The sealed compiled artifact of module `digest` for engine `engine`, if one is stored.
pub async fn module_artifact(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
    engine: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT sealed FROM module_artifacts WHERE tenant_id = $1 AND digest = $2 AND engine = $3"
    ))
    .bind(tenant_id)
    .bind(digest)
    .bind(engine)
    .fetch_optional(conn)
    .await
}

/// The newest version of workflow `name`.
pub async fn workflow_latest(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
) -> Result<Option<WorkflowVersion>, sqlx::Error> {
    let row: Option<WorkflowRow> = sqlx::query_as(sql!(
        "SELECT tenant_id, name, version, module_digest, definition, created_at,
                (SELECT jsonb_object_agg(f.task, f.fuel) FROM task_fuel f
                 WHERE f.tenant_id = w.tenant_id AND f.workflow = w.name) AS task_fuel
         FROM workflows w
         WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The newest version of each of the given workflows that this module declares.
pub async fn workflows_of_module(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    digest: &str,
) -> Result<Vec<WorkflowVersion>, sqlx::Error> {
    let rows: Vec<WorkflowRow> = sqlx::query_as(sql!(
        "SELECT DISTINCT ON (name) tenant_id, name, version, module_digest, definition, created_at
         FROM workflows WHERE tenant_id = $1 AND module_digest = $2
         ORDER BY name, version DESC"
    ))
    .bind(tenant_id)
    .bind(digest)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The newest version of every workflow of the tenant that subscribes to some event.
pub async fn workflows_with_event_triggers(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<WorkflowVersion>, sqlx::Error> {
    let rows: Vec<WorkflowRow> = sqlx::query_as(
        sql!("SELECT * FROM (
             SELECT DISTINCT ON (name) tenant_id, name, version, module_digest, definition, created_at
             FROM workflows WHERE tenant_id = $1 ORDER BY name, version DESC
         ) latest
         WHERE jsonb_array_length(definition -> 'on_events') > 0"),
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A stored module, without its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSummary {
    /// sha256 of the bytes, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// Its manifest.
    pub manifest: Manifest,
    /// When it was uploaded.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A page of the tenant's modules, newest first.
pub async fn modules_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    page: &super::PageParams<String>,
) -> Result<Vec<ModuleSummary>, sqlx::Error> {
    let (before_at, before_digest) = page.before.clone().unzip();
    let rows: Vec<(
        String,
        i64,
        sqlx::types::Json<Manifest>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(sql!(
        "SELECT digest, octet_length(bytes)::bigint, manifest, created_at FROM modules
         WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, digest) < ($2, $3))
         ORDER BY created_at DESC, digest DESC LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(before_at)
    .bind(before_digest)
    .bind(page.limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(digest, size, manifest, created_at)| ModuleSummary {
            digest,
            size,
            manifest: manifest.0,
            created_at,
        })
        .collect())
}

/// A page of the newest version of each of the tenant's workflows, most recently deployed
/// first.
pub async fn workflows_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    page: &super::PageParams<String>,
) -> Result<Vec<WorkflowVersion>, sqlx::Error> {
    let (before_at, before_name) = page.before.clone().unzip();
    let rows: Vec<WorkflowRow> = sqlx::query_as(
        sql!("SELECT * FROM (
             SELECT DISTINCT ON (name) tenant_id, name, version, module_digest, definition, created_at
             FROM workflows WHERE tenant_id = $1 ORDER BY name, version DESC
         ) latest
         WHERE $2::timestamptz IS NULL OR (created_at, name) < ($2, $3)
         ORDER BY created_at DESC, name DESC LIMIT $4"),
    )
    .bind(tenant_id)
    .bind(before_at)
    .bind(before_name)
    .bind(page.limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Every version of workflow `name`, newest first.
pub async fn workflow_versions(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
) -> Result<Vec<WorkflowVersion>, sqlx::Error> {
    let rows: Vec<WorkflowRow> = sqlx::query_as(sql!(
        "SELECT tenant_id, name, version, module_digest, definition, created_at FROM workflows
         WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
