//! `GET /api/v1/workflows` and `GET /api/v1/workflows/{name}`: the tenant's deployed
//! workflows (newest version of each) and one workflow with its versions; `PUT
//! /api/v1/workflows/{name}/tasks/{task}/fuel` sets a task's fuel budget.

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
    body["task_fuel"] = crate::db::task_fuel::task_fuel_of_workflow(&mut conn, tenant, &name)
        .await?
        .into_iter()
        .map(|(task, fuel)| (task, json!(fuel)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    body["versions"] = versions
        .iter()
        .map(|v| json!({"version": v.version, "module": v.module_digest, "created_at": v.created_at}))
        .collect();
    Ok(Json(body))
}

/// Body of `PUT /api/v1/workflows/{name}/tasks/{task}/fuel`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFuel {
    /// Instructions one attempt may execute; `null` returns the task to the node's budget.
    fuel: Option<u64>,
}

/// `PUT /api/v1/workflows/{name}/tasks/{task}/fuel` `{fuel}`: the fuel budget of every attempt
/// of `task` in runs started from now on (runs in flight keep theirs); `{"fuel": null}` removes
/// it. → `{workflow, task, fuel}`.
pub async fn set_task_fuel(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((name, task)): Path<(String, String)>,
    super::extract::Json(body): super::extract::Json<SetFuel>,
) -> Result<Json<Value>, ApiError> {
    let fuel = match body.fuel {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_fuel",
                "`fuel` must be at least 1 (or null for the node's budget)",
            ));
        }
        Some(fuel) => Some(i64::try_from(fuel).map_err(|_| {
            ApiError::bad_request(
                "invalid_fuel",
                format!("`fuel` must be at most {}", i64::MAX),
            )
        })?),
        None => None,
    };
    let mut tx = state.db.pool.begin().await?;
    let Some(workflow) = crate::db::module::workflow_latest(&mut tx, tenant, &name).await? else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_workflow",
            format!("unknown workflow `{name}`"),
        ));
    };
    let definition = &workflow.definition;
    let known = definition
        .tasks
        .iter()
        .chain(definition.on_failure.as_ref())
        .any(|t| t.name == task);
    if !known {
        let names: Vec<&str> = definition.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_task",
            format!(
                "workflow `{name}` has no task `{task}` (its tasks: {})",
                names.join(", ")
            ),
        ));
    }
    crate::db::task_fuel::task_fuel_set(&mut tx, tenant, &name, &task, fuel).await?;
    tx.commit().await?;
    Ok(Json(json!({"workflow": name, "task": task, "fuel": fuel})))
}
