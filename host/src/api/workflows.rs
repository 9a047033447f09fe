//! `GET /api/v1/workflows` and `GET /api/v1/workflows/{name}`: the tenant's deployed
//! workflows (newest version of each) and one workflow with its versions.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::Query;
use super::page::{self, PageQuery};
use crate::db::module::{WorkflowVersion, workflow_versions, workflows_list};

/// The JSON of a workflow version.
pub fn workflow_json(workflow: &WorkflowVersion) -> Value {
    let definition = &workflow.definition;
    json!({
        "name": workflow.name,
        "version": workflow.version,
        "module": workflow.module_digest,
        "description": definition.description,
        "tasks": definition.tasks,
        "on_failure": definition.on_failure,
        "on_events": definition.on_events,
        "on_crons": definition.on_crons,
        "default_priority": definition.default_priority,
        "concurrency": definition.concurrency,
        "created_at": workflow.created_at,
    })
}

/// `GET /api/v1/workflows?limit=&cursor=` → `{workflows, next_cursor}`, most recently
/// deployed first.
pub async fn list_workflows(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let params = query.params()?;
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = workflows_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |w| {
        (w.created_at, w.name.clone())
    });
    Ok(Json(json!({
        "workflows": rows.iter().map(workflow_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /api/v1/workflows/{name}` → the newest version, with `versions` (newest first).
pub async fn get_workflow(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let versions = workflow_versions(&mut conn, tenant, &name).await?;
    let Some(latest) = versions.first() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_workflow",
            format!("unknown workflow `{name}`"),
        ));
    };
    let mut body = workflow_json(latest);
    body["versions"] = versions
        .iter()
        .map(|v| json!({"version": v.version, "module": v.module_digest, "created_at": v.created_at}))
        .collect();
    Ok(Json(body))
}
