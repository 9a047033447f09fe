//! Workflow runs: start one (optionally waiting for it), start many at once, list, read,
//! cancel, replay, and read a run's logs and children.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{self, Query};
use super::page::{self, PageQuery};
use crate::db::workflow_run::{
    LogPosition, RunListParams, WorkflowRunRow, task_run_logs_of_run, workflow_run_get,
    workflow_runs_list,
};
use crate::scheduler::{
    Rescheduled, RunRequest, RunView, cancel_run, get_run, replay_run, reschedule_run, start_runs,
    wait_for_run,
};

/// Statuses a workflow run can be in.
const RUN_STATUSES: [&str; 6] = [
    "scheduled",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
];

/// How a run may have started, for `?triggered_by=`.
const TRIGGERS: [&str; 6] = ["api", "cron", "schedule", "event", "spawn", "replay"];

/// The longest `delay_seconds`: a year.
const MAX_DELAY_SECONDS: f64 = 366.0 * 86_400.0;

/// One run to start: `{input, additional_metadata?, priority?, key?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    additional_metadata: Option<Value>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    key: Option<String>,
    /// Run then (RFC 3339), not now.
    #[serde(default)]
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Run this many seconds from now.
    #[serde(default)]
    delay_seconds: Option<f64>,
}

impl RunBody {
    fn into_request(self, workflow: &str, max_payload: usize) -> Result<RunRequest, ApiError> {
        let metadata = self
            .additional_metadata
            .unwrap_or_else(|| Value::Object(Default::default()));
        let size = self.input.to_string().len() + metadata.to_string().len();
        if size > max_payload {
            return Err(ApiError::too_large(format!(
                "the run's input and metadata are {size} bytes of JSON; the limit is {max_payload}"
            )));
        }
        let run_at = match (self.run_at, self.delay_seconds) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_run_at",
                    "give `run_at` or `delay_seconds`, not both",
                ));
            }
            (Some(run_at), None) => Some(run_at),
            (None, Some(delay)) if delay > 0.0 && delay <= MAX_DELAY_SECONDS => {
                let delay = chrono::Duration::milliseconds((delay * 1_000.0) as i64);
                Some(chrono::Utc::now() + delay)
            }
            (None, Some(delay)) => {
                return Err(ApiError::bad_request(
                    "invalid_run_at",
                    format!(
                        "delay_seconds must be above 0 and at most {MAX_DELAY_SECONDS}, got {delay}"
                    ),
                ));
            }
            (None, None) => None,
        };
        Ok(RunRequest {
            workflow: workflow.to_owned(),
            input: self.input,
            additional_metadata: metadata,
            priority: self.priority,
            key: self.key,
            run_at,
        })
    }
}

/// `?wait=<seconds>` of a run start.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<f64>,
}

/// `{runs: [...]}` of a bulk start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    runs: Vec<RunBody>,
}

/// `GET /api/v1/runs` filters and page.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    metadata: Option<String>,
    triggered_by: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The JSON of a run, without its tasks.
pub fn run_json(run: &WorkflowRunRow) -> Value {
    json!({
        "id": run.id,
        "workflow": run.workflow,
        "version": run.version,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "additional_metadata": run.additional_metadata,
        "priority": run.priority,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "parent_run_id": run.parent_run_id,
        "parent_task_run_id": run.parent_task_run_id,
        "run_at": run.run_at,
        "triggered_by": {
            "kind": run.triggered_by,
            "id": run.trigger_id.or(run.parent_run_id),
        },
    })
}

/// The JSON of a run with its tasks.
pub fn run_view_json(view: &RunView) -> Value {
    let mut body = run_json(&view.run);
    body["tasks"] = view
        .tasks
        .iter()
        .map(|task| {
            let mut body = json!({
                "id": task.id,
                "name": task.task,
                "status": task.status,
                "attempt": task.attempt,
                "output": task.output,
                "error": task.error,
                "error_code": task.error_code,
                "is_on_failure": task.is_on_failure,
                "started_at": task.started_at,
                "finished_at": task.finished_at,
            });
            if let Some(waiting) = view.waiting_for.get(&task.id) {
                body["waiting_for"] = json!(waiting);
            }
            body
        })
        .collect();
    body
}

fn is_finished(view: &RunView) -> bool {
    matches!(
        view.run.status.as_str(),
        "succeeded" | "failed" | "cancelled"
    )
}

fn no_run(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("no run `{id}`"))
}

/// `POST /api/v1/workflows/{name}/runs[?wait=<seconds>]`: 202 `{run_id}`, or 200 with the
/// finished run when it finished within the wait.
pub async fn start(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    Query(wait): Query<WaitQuery>,
    extract::Json(body): extract::Json<RunBody>,
) -> Result<Response, ApiError> {
    let max_wait = state.config.max_wait;
    let wait = match wait.wait {
        None => None,
        Some(seconds) if (0.0..=max_wait.as_secs_f64()).contains(&seconds) => {
            Some(Duration::from_secs_f64(seconds))
        }
        Some(seconds) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "wait must be between 0 and {} seconds, got {seconds}",
                    max_wait.as_secs()
                ),
            ));
        }
    };
    let request = body.into_request(&workflow, state.config.max_payload_bytes)?;
    let id = state.starter.start(tenant, request).await?;
    let accepted = || (StatusCode::ACCEPTED, Json(json!({"run_id": id}))).into_response();
    let Some(wait) = wait.filter(|wait| !wait.is_zero()) else {
        return Ok(accepted());
    };
    let view = match &state.node {
        Some(node) => node.wait_for_run(&state.db, tenant, id, wait).await?,
        None => wait_for_run(&state.db, tenant, id, wait).await?,
    };
    Ok(match view {
        Some(view) if is_finished(&view) => Json(run_view_json(&view)).into_response(),
        _ => accepted(),
    })
}

/// `POST /api/v1/workflows/{name}/runs/bulk`: 202 `{run_ids}`; all are started or none.
pub async fn start_bulk(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    extract::Json(body): extract::Json<BulkBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let max = state.config.max_bulk_runs;
    if body.runs.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`runs` is empty: give at least one run",
        ));
    }
    if body.runs.len() > max {
        return Err(ApiError::bad_request(
            "too_many_runs",
            format!(
                "{} runs in one request; the limit is {max}: split them into several requests",
                body.runs.len()
            ),
        ));
    }
    let requests = body
        .runs
        .into_iter()
        .map(|run| run.into_request(&workflow, state.config.max_payload_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = start_runs(&state.db, tenant, &requests).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"run_ids": ids}))))
}

/// `GET /api/v1/runs?workflow=&status=&metadata=k:v&limit=&cursor=` → `{runs, next_cursor}`,
/// newest first.
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = query.status.as_deref()
        && !RUN_STATUSES.contains(&status)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown status `{status}`: use one of {}",
                RUN_STATUSES.join(", ")
            ),
        ));
    }
    if let Some(trigger) = query.triggered_by.as_deref()
        && !TRIGGERS.contains(&trigger)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown trigger `{trigger}`: use one of {}",
                TRIGGERS.join(", ")
            ),
        ));
    }
    let metadata = match query.metadata.as_deref() {
        None => None,
        Some(filter) => {
            let (key, value) = filter.split_once(':').ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("metadata filter `{filter}` is not `key:value`"),
                )
            })?;
            Some(json!({ key: value }))
        }
    };
    let page_query = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let params = RunListParams {
        workflow: query.workflow.as_deref(),
        status: query.status.as_deref(),
        metadata: metadata.as_ref(),
        parent_run_id: None,
        triggered_by: query.triggered_by.as_deref(),
        page: page_query.params()?,
    };
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = workflow_runs_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, page_query.limit()?, |r| {
        (r.created_at, r.id.to_string())
    });
    Ok(Json(json!({
        "runs": rows.iter().map(run_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /api/v1/runs/{id}` → the run with its tasks.
pub async fn get(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Ok(Json(run_view_json(&view)))
}

/// `POST /api/v1/runs/{id}/cancel` → the run after the cancellation (a finished run is left
/// as it is). Runs it spawned are cancelled too.
pub async fn cancel(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    if !cancel_run(&state.db, tenant, id).await? {
        return Err(no_run(id));
    }
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Ok(Json(run_view_json(&view)))
}

/// `POST /api/v1/runs/{id}/replay`: 202 `{run_id}`; only failed or cancelled runs (else 409).
pub async fn replay(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = extract::parse_id("run", &id)?;
    if replay_run(&state.db, tenant, id).await? {
        return Ok((StatusCode::ACCEPTED, Json(json!({"run_id": id}))));
    }
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "not_replayable",
        format!(
            "run `{id}` is {}; only failed or cancelled runs can be replayed",
            view.run.status
        ),
    ))
}

/// Body of `POST /api/v1/runs/{id}/reschedule`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    run_at: chrono::DateTime<chrono::Utc>,
}

/// `POST /api/v1/runs/{id}/reschedule` `{run_at}` → the run, moved; 409 if it is no longer
/// scheduled.
pub async fn reschedule(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    extract::Json(body): extract::Json<RescheduleBody>,
) -> Result<Json<Value>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    match reschedule_run(&state.db, tenant, id, body.run_at).await? {
        Rescheduled::Moved => {}
        Rescheduled::NotFound => return Err(no_run(id)),
        Rescheduled::NotScheduled(status) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_scheduled",
                format!("run `{id}` is {status}; only scheduled runs can be rescheduled"),
            ));
        }
    }
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Ok(Json(run_view_json(&view)))
}

fn log_position(query: &PageQuery) -> Result<Option<LogPosition>, ApiError> {
    let params = query.params::<String>()?;
    let Some((at, key)) = params.before else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_cursor",
            "invalid cursor: pass the `next_cursor` of the previous page unchanged",
        )
    };
    let mut parts = key.split(':');
    let (Some(task_run_id), Some(attempt), Some(seq), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok(Some(LogPosition {
        at,
        task_run_id: task_run_id.parse().map_err(|_| invalid())?,
        attempt: attempt.parse().map_err(|_| invalid())?,
        seq: seq.parse().map_err(|_| invalid())?,
    }))
}

/// `GET /api/v1/runs/{id}/logs?limit=&cursor=` → `{lines: [{time, level, message, task,
/// attempt}], next_cursor}`, oldest first.
pub async fn logs(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    let limit = query.limit()?;
    let after = log_position(&query)?;
    let mut conn = state.db.pool.acquire().await?;
    if workflow_run_get(&mut conn, tenant, id).await?.is_none() {
        return Err(no_run(id));
    }
    let mut lines = task_run_logs_of_run(&mut conn, tenant, id, after, limit + 1).await?;
    let next = page::finish(&mut lines, limit, |l| {
        (l.at, format!("{}:{}:{}", l.task_run_id, l.attempt, l.seq))
    });
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "time": l.at,
                "level": l.level,
                "message": l.message,
                "task": l.task,
                "task_run_id": l.task_run_id,
                "attempt": l.attempt,
            })
        })
        .collect();
    Ok(Json(json!({"lines": lines, "next_cursor": next})))
}

/// `GET /api/v1/runs/{id}/children?limit=&cursor=` → `{runs, next_cursor}`: the runs its
/// tasks spawned, newest first.
pub async fn children(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let id: Uuid = extract::parse_id("run", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    if workflow_run_get(&mut conn, tenant, id).await?.is_none() {
        return Err(no_run(id));
    }
    let params = RunListParams {
        workflow: None,
        status: None,
        metadata: None,
        parent_run_id: Some(id),
        triggered_by: None,
        page: query.params()?,
    };
    let mut rows = workflow_runs_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |r| {
        (r.created_at, r.id.to_string())
    });
    Ok(Json(json!({
        "runs": rows.iter().map(run_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}
