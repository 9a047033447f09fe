//! `GET /api/v1/workers`: the workers (module instance pools) of this node that run the
//! tenant's modules, with their slots in all and in use.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;

/// A worker: a module's instance pool on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    /// The node.
    pub node_id: Uuid,
    /// The module's digest.
    pub module: String,
    /// Its slots.
    pub slots: u32,
    /// Slots running a task now.
    pub in_use: u32,
}

/// The workers of the node that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// By module.
    pub workers: Vec<Worker>,
}

/// `{workers: [{node_id, module, slots, in_use}]}`.
#[utoipa::path(get, path = "/api/v1/workers", tag = "tenant",
    responses((status = 200, description = "This node's workers of the tenant's modules", body = WorkerList)),
    security(("tenant_token" = [])))]
pub async fn list_workers(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<WorkerList>, ApiError> {
    let Some(node) = &state.node else {
        return Ok(Json(WorkerList { workers: vec![] }));
    };
    let mut workers: Vec<Worker> = node
        .workers()
        .into_iter()
        .filter(|w| w.tenant_id == tenant)
        .map(|w| Worker {
            node_id: node.id(),
            module: w.module,
            slots: w.slots,
            in_use: w.in_use,
        })
        .collect();
    workers.sort_by(|a, b| a.module.cmp(&b.module));
    Ok(Json(WorkerList { workers }))
}
