//! `GET /api/v1/workers`: the workers (module instance pools) of this node that run the
//! tenant's modules, with their slots in all and in use.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;

/// `{workers: [{node_id, module, slots, in_use}]}`.
pub async fn list_workers(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let Some(node) = &state.node else {
        return Ok(Json(json!({"workers": []})));
    };
    let mut workers: Vec<Value> = node
        .workers()
        .into_iter()
        .filter(|w| w.tenant_id == tenant)
        .map(|w| {
            json!({
                "node_id": node.id(),
                "module": w.module,
                "slots": w.slots,
                "in_use": w.in_use,
            })
        })
        .collect();
    workers.sort_by(|a, b| a["module"].as_str().cmp(&b["module"].as_str()));
    Ok(Json(json!({"workers": workers})))
}
