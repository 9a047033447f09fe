//! Deploying a module: validate it in the runtime, store it, version its workflows.

use uuid::Uuid;

use crate::cron::CronSchedule;
use crate::db::cron::{NewCron, crons_replace_manifest};
use crate::db::module::{self, WorkflowVersion};
use crate::db::{Db, flow};
use crate::manifest::{Manifest, RateLimitKey};
use crate::quota::QuotaExceeded;
use crate::runtime::{LoadError, Runtime};

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The module was rejected.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// A quota of the tenant refuses it.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A deployed module and the workflow versions it provides.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// sha256 of the module.
    pub digest: String,
    /// Whether this tenant had it already (then no new versions were made).
    pub already_deployed: bool,
    /// The newest version of each workflow it declares.
    pub workflows: Vec<WorkflowVersion>,
}

/// The tenant's `max_module_bytes` (its own, else the default), if it has one.
async fn module_bytes_quota(
    conn: &mut sqlx::PgConnection,
    db: &Db,
    tenant_id: Uuid,
) -> Result<Option<u64>, sqlx::Error> {
    let own = crate::db::quota::tenant_quotas(conn, tenant_id)
        .await?
        .unwrap_or_default();
    Ok(db.quotas.over(&own).max_module_bytes)
}

/// Refuses a module that would take the tenant's stored modules past `max` bytes.
async fn check_module_bytes(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    max: u64,
    size: usize,
) -> Result<(), DeployError> {
    let stored = crate::db::quota::tenant_module_bytes(conn, tenant_id).await?;
    let stored = u64::try_from(stored).unwrap_or(0);
    let size = size as u64;
    if stored + size > max {
        return Err(QuotaExceeded::ModuleBytes { max, stored, size }.into());
    }
    Ok(())
}

/// Validates `bytes` (compile, world, manifest), stores the module and makes a new version of
/// every workflow it declares. Deploying the same bytes again changes nothing. A module that
/// would take the tenant past its `max_module_bytes` is refused, before its compile when
/// that is already clear.
pub async fn deploy_module(
    db: &Db,
    runtime: &Runtime,
    tenant_id: Uuid,
    bytes: &[u8],
) -> Result<Deployed, DeployError> {
    let digest = crate::runtime::Digest::of(bytes).to_string();
    let max_bytes = {
        let mut conn = db.pool.acquire().await?;
        let max = module_bytes_quota(&mut conn, db, tenant_id).await?;
        if let Some(max) = max
            && !module::module_exists(&mut conn, tenant_id, &digest).await?
        {
            check_module_bytes(&mut conn, tenant_id, max, bytes.len()).await?;
        }
        max
    };
    let loaded = runtime.load(bytes).await?;
    let digest = loaded.digest.to_string();
    // Sealed for the other nodes, which then load it without compiling (none without a key).
    let sealed = {
        let (runtime, loaded) = (runtime.clone(), loaded.clone());
        tokio::task::spawn_blocking(move || runtime.sealed_artifact(&loaded))
            .await
            .ok()
            .flatten()
    };
    let mut tx = db.pool.begin().await?;
    if let Some(max) = max_bytes {
        // Again under the tenant's quota lock: two uploads never both take the last room.
        crate::db::quota::tenant_quota_lock(&mut tx, tenant_id).await?;
        if !module::module_exists(&mut tx, tenant_id, &digest).await? {
            check_module_bytes(&mut tx, tenant_id, max, bytes.len()).await?;
        }
    }
    let new = module::module_insert(&mut tx, tenant_id, &digest, bytes, &loaded.manifest).await?;
    if let Some(sealed) = &sealed {
        let engine = runtime.engine_fingerprint();
        module::module_artifact_store(&mut tx, tenant_id, &digest, &engine, sealed).await?;
    }
    let workflows = if new {
        let mut versions = Vec::new();
        for workflow in &loaded.manifest.workflows {
            versions.push(
                module::workflow_version_create(&mut tx, tenant_id, &digest, workflow).await?,
            );
        }
        flow::rate_limits_declare(&mut tx, tenant_id, &static_rate_limits(&loaded.manifest))
            .await?;
        // Each new version's crons replace the previous version's.
        let empty = serde_json::json!({});
        for workflow in &loaded.manifest.workflows {
            let crons: Vec<NewCron<'_>> = workflow
                .on_crons
                .iter()
                .map(|expression| NewCron {
                    workflow: &workflow.name,
                    name: None,
                    expression,
                    timezone: "UTC",
                    input: &empty,
                    additional_metadata: &empty,
                    catch_up: "none",
                    next_tick: CronSchedule::parse(expression, "UTC")
                        .ok()
                        .and_then(|s| s.next_after(chrono::Utc::now())),
                })
                .collect();
            crons_replace_manifest(&mut tx, tenant_id, &workflow.name, &crons).await?;
        }
        crate::db::notify_module_deployed(&mut tx, tenant_id, &digest).await?;
        versions
    } else {
        module::workflows_of_module(&mut tx, tenant_id, &digest).await?
    };
    tx.commit().await?;
    Ok(Deployed {
        digest,
        already_deployed: !new,
        workflows,
    })
}

/// The static rate limits a manifest names: (key, limit, window in ms), one per key (the first
/// declaration with a limit wins).
fn static_rate_limits(manifest: &Manifest) -> Vec<(String, Option<u32>, Option<u64>)> {
    let mut declared: Vec<(String, Option<u32>, Option<u64>)> = Vec::new();
    let tasks = manifest
        .workflows
        .iter()
        .flat_map(|w| w.tasks.iter().chain(w.on_failure.as_ref()));
    for limit in tasks.flat_map(|t| &t.rate_limits) {
        let RateLimitKey::Static(key) = &limit.key else {
            continue;
        };
        let window = limit.duration.map(|d| d.as_duration().as_millis() as u64);
        match declared.iter_mut().find(|d| &d.0 == key) {
            Some(existing) if existing.1.is_none() => {
                existing.1 = limit.limit;
                existing.2 = window;
            }
            Some(_) => {}
            None => declared.push((key.clone(), limit.limit, window)),
        }
    }
    declared
}
