//! `GET /api/v1/workflows` and `GET /api/v1/workflows/{name}`: the tenant's deployed
//! workflows (newest version of each) and one workflow with its versions; `PUT
//! /api/v1/workflows/{name}/tasks/{task}/fuel` sets a task's fuel budget.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::page::{self, PageQuery};
use crate::db::module::{WorkflowVersion, workflow_versions, workflows_list};
use crate::manifest::{ConcurrencyRule, TaskDef};

/// A deployed version of a workflow, as its module's manifest declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Its version, from 1.
    pub version: i32,
    /// The digest of the module that runs it.
    pub module: String,
    /// What it does.
    pub description: String,
    /// Its tasks: `{name, parents, retries, backoff, execution_timeout_ms,
    /// schedule_timeout_ms, rate_limits, concurrency}`.
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<TaskDef>,
    /// The task run when a run fails.
    #[schema(value_type = Option<Object>)]
    pub on_failure: Option<TaskDef>,
    /// Event keys that start a run.
    pub on_events: Vec<String>,
    /// Cron expressions that start a run.
    pub on_crons: Vec<String>,
    /// Priority of runs that do not ask for one.
    pub default_priority: Option<u8>,
    /// Concurrency rules over whole runs.
    #[schema(value_type = Vec<Object>)]
    pub concurrency: Vec<ConcurrencyRule>,
    /// When this version was deployed.
    pub created_at: DateTime<Utc>,
}

impl From<&WorkflowVersion> for Workflow {
    fn from(workflow: &WorkflowVersion) -> Self {
        let definition = &workflow.definition;
        Self {
            name: workflow.name.clone(),
            version: workflow.version,
            module: workflow.module_digest.clone(),
            description: definition.description.clone(),
            tasks: definition.tasks.clone(),
            on_failure: definition.on_failure.clone(),
            on_events: definition.on_events.clone(),
            on_crons: definition.on_crons.clone(),
            default_priority: definition.default_priority,
            concurrency: definition.concurrency.clone(),
            created_at: workflow.created_at,
        }
    }
}

/// A page of workflows, most recently deployed first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowPage {
    /// The newest version of each.
    pub workflows: Vec<Workflow>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersionSummary {
    /// The version.
    pub version: i32,
    /// Its module.
    pub module: String,
    /// When it was deployed.
    pub created_at: DateTime<Utc>,
}

/// A workflow's newest version, with its tasks' fuel budgets and every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    /// The newest version.
    #[serde(flatten)]
    pub workflow: Workflow,
    /// Fuel budgets set through the API, by task.
    pub task_fuel: BTreeMap<String, i64>,
    /// Every version, newest first.
    pub versions: Vec<WorkflowVersionSummary>,
}

/// A task's fuel budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskFuel {
    /// The workflow.
    pub workflow: String,
    /// The task.
    pub task: String,
    /// Instructions per attempt; `null`: the node's budget.
    pub fuel: Option<i64>,
}

/// `GET /api/v1/workflows?limit=&cursor=` → `{workflows, next_cursor}`, most recently
/// deployed first.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(PageQuery),
    responses((status = 200, description = "The newest version of each workflow", body = WorkflowPage)),
    security(("tenant_token" = [])))]
pub async fn list_workflows(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<WorkflowPage>, ApiError> {
    let params = query.params()?;
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = workflows_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |w| {
        (w.created_at, w.name.clone())
    });
    Ok(Json(WorkflowPage {
        workflows: rows.iter().map(Workflow::from).collect(),
        next_cursor: next,
    }))
}

/// `GET /api/v1/workflows/{name}` → the newest version, with `versions` (newest first).
#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow")),
    responses((status = 200, description = "Its newest version and every version", body = WorkflowDetail)),
    security(("tenant_token" = [])))]
pub async fn get_workflow(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<WorkflowDetail>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let versions = workflow_versions(&mut conn, tenant, &name).await?;
    let Some(latest) = versions.first() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_workflow",
            format!("unknown workflow `{name}`"),
        ));
    };
    let task_fuel = crate::db::task_fuel::task_fuel_of_workflow(&mut conn, tenant, &name)
        .await?
        .into_iter()
        .collect();
    Ok(Json(WorkflowDetail {
        workflow: Workflow::from(latest),
        task_fuel,
        versions: versions
            .iter()
            .map(|v| WorkflowVersionSummary {
                version: v.version,
                module: v.module_digest.clone(),
                created_at: v.created_at,
            })
            .collect(),
    }))
}

/// Body of `PUT /api/v1/workflows/{name}/tasks/{task}/fuel`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFuel {
    /// Instructions one attempt may execute; `null` returns the task to the node's budget.
    pub fuel: Option<u64>,
}

/// `PUT /api/v1/workflows/{name}/tasks/{task}/fuel` `{fuel}`: the fuel budget of every attempt
/// of `task` in runs started from now on (runs in flight keep theirs); `{"fuel": null}` removes
/// it. → `{workflow, task, fuel}`.
#[utoipa::path(put, path = "/api/v1/workflows/{name}/tasks/{task}/fuel", tag = "workflows",
    params(("name" = String, Path, description = "The workflow"), ("task" = String, Path, description = "The task")),
    request_body = SetFuel,
    responses((status = 200, description = "The budget set", body = TaskFuel)),
    security(("tenant_token" = [])))]
pub async fn set_task_fuel(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((name, task)): Path<(String, String)>,
    super::extract::Json(body): super::extract::Json<SetFuel>,
) -> Result<Json<TaskFuel>, ApiError> {
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
    Ok(Json(TaskFuel {
        workflow: name,
        task,
        fuel,
    }))
}
