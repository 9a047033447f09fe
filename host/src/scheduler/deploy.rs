//! Deploying a module: validate it in the runtime, store it, version its workflows.

use uuid::Uuid;

use crate::db::Db;
use crate::db::module::{self, WorkflowVersion};
use crate::runtime::{LoadError, Runtime};

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The module was rejected.
    #[error(transparent)]
    Invalid(#[from] LoadError),
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

/// Validates `bytes` (compile, world, manifest), stores the module and makes a new version of
/// every workflow it declares. Deploying the same bytes again changes nothing.
pub async fn deploy_module(
    db: &Db,
    runtime: &Runtime,
    tenant_id: Uuid,
    bytes: &[u8],
) -> Result<Deployed, DeployError> {
    let loaded = runtime.load(bytes).await?;
    let digest = loaded.digest.to_string();
    let mut tx = db.pool.begin().await?;
    let new = module::module_insert(&mut tx, tenant_id, &digest, bytes, &loaded.manifest).await?;
    let workflows = if new {
        let mut versions = Vec::new();
        for workflow in &loaded.manifest.workflows {
            versions.push(
                module::workflow_version_create(&mut tx, tenant_id, &digest, workflow).await?,
            );
        }
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
