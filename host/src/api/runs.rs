//! Workflow runs: start one (optionally waiting for it), start many at once, list, read,
//! cancel, replay, and read a run's logs and children.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, ErrorBody};
use super::extract::{self, Path, Query};
use super::page::{self, PageQuery};
use crate::db::task_run::{LogPosition, task_run_logs_of_run};
use crate::db::workflow_run::{
    RunListParams, WorkflowRunRow, workflow_run_get, workflow_runs_list,
};
use crate::scheduler::{
    Rescheduled, RunRequest, RunView, cancel_run, get_run, replay_run, reschedule_run, start_runs,
    wait_for_run,
};
use crate::status::{RunStatus, TaskStatus};

/// How a run may have started, for `?triggered_by=`.
const TRIGGERS: [&str; 6] = ["api", "cron", "schedule", "event", "spawn", "replay"];

/// The longest `delay_seconds`: a year.
const MAX_DELAY_SECONDS: f64 = 366.0 * 86_400.0;

/// One run to start: `{input, additional_metadata?, priority?, key?, run_at? | delay_seconds?}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The run's input.
    #[serde(default)]
    pub input: Value,
    /// A JSON object stored with the run (filter lists by it; keys of concurrency rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<Value>,
    /// 1–3, higher first; default: the workflow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// An idempotency key: a second start with it returns the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Run then (RFC 3339), not now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Run this many seconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the run to finish (at most the node's `max_wait`).
    wait: Option<f64>,
}

/// `{runs: [...]}` of a bulk start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    runs: Vec<RunBody>,
}

/// `GET /api/v1/runs` filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs whose metadata has `key:value`.
    metadata: Option<String>,
    /// Only runs started this way (`api`, `cron`, `schedule`, `event`, `spawn`, `replay`).
    triggered_by: Option<String>,
    /// `true`: only runs no task spawned (a fan-out's parent, not its children).
    top_level: Option<bool>,
    /// Runs per page (1–1000, default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// How a run started: `kind` (`api`, `cron`, `schedule`, `event`, `spawn`) and the cron,
/// event or parent run it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trigger {
    /// `api`, `cron`, `schedule`, `event` or `spawn`.
    pub kind: String,
    /// The cron, event or parent run.
    pub id: Option<Uuid>,
}

/// A workflow run, without its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// Run id.
    pub id: Uuid,
    /// Its workflow.
    pub workflow: String,
    /// The workflow version it runs.
    pub version: i32,
    /// Where the run is.
    pub status: RunStatus,
    /// Its input.
    pub input: Value,
    /// Its output once succeeded (the leaf task's, or the leaves' keyed by name).
    pub output: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Metadata given at its start.
    pub additional_metadata: Value,
    /// Priority (1–3; higher first).
    pub priority: i16,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its first task started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The run whose task spawned it.
    pub parent_run_id: Option<Uuid>,
    /// The task run that spawned it.
    pub parent_task_run_id: Option<Uuid>,
    /// When a scheduled run is due.
    pub run_at: Option<DateTime<Utc>>,
    /// How it started.
    pub triggered_by: Trigger,
}

impl From<&WorkflowRunRow> for Run {
    fn from(run: &WorkflowRunRow) -> Self {
        Self {
            id: run.id,
            workflow: run.workflow.clone(),
            version: run.version,
            status: run.status,
            input: run.input.clone(),
            output: run.output.clone(),
            error: run.error.clone(),
            additional_metadata: run.additional_metadata.clone(),
            priority: run.priority,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            parent_run_id: run.parent_run_id,
            parent_task_run_id: run.parent_task_run_id,
            run_at: run.run_at,
            triggered_by: Trigger {
                kind: run.triggered_by.clone(),
                id: run.trigger_id.or(run.parent_run_id),
            },
        }
    }
}

/// What a queued task run waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Waiting {
    /// `concurrency`, `rate_limit`, `slots`, `parents` or `schedule`.
    pub kind: String,
    /// The key, for concurrency and rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskRun {
    /// Task run id.
    pub id: Uuid,
    /// Task name.
    pub name: String,
    /// Where the task run is.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempt: i32,
    /// Attempts that failed (and consumed retries).
    pub failures: i32,
    /// Leases lost to dead nodes.
    pub lost_leases: i32,
    /// The tasks whose outputs it takes.
    pub parents: Vec<String>,
    /// Its output once succeeded.
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<String>,
    /// The code of its last error.
    pub error_code: Option<String>,
    /// Whether it is the workflow's on-failure task.
    pub is_on_failure: bool,
    /// When it first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it waits for, while queued or pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<Waiting>,
}

/// A workflow run with its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Its tasks, in creation order.
    pub tasks: Vec<TaskRun>,
}

impl From<&RunView> for RunDetail {
    fn from(view: &RunView) -> Self {
        let tasks = view
            .tasks
            .iter()
            .map(|task| TaskRun {
                id: task.id,
                name: task.task.clone(),
                status: task.status,
                attempt: task.attempt,
                failures: task.failures,
                lost_leases: task.lost_leases,
                parents: task.parents.clone(),
                output: task.output.clone(),
                error: task.error.clone(),
                error_code: task.error_code.clone(),
                is_on_failure: task.is_on_failure,
                started_at: task.started_at,
                finished_at: task.finished_at,
                waiting_for: view.waiting_for.get(&task.id).map(|w| Waiting {
                    kind: w.kind.to_owned(),
                    key: w.key.clone(),
                }),
            })
            .collect();
        Self {
            run: Run::from(&view.run),
            tasks,
        }
    }
}

/// A run was accepted: `{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunAccepted {
    /// The run's id.
    pub run_id: Uuid,
}

/// Runs were accepted: `{run_ids}`, in the order asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunsAccepted {
    /// The runs' ids.
    pub run_ids: Vec<Uuid>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<Run>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One line a task attempt logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// When it was written.
    pub time: DateTime<Utc>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The text.
    pub message: String,
    /// The task.
    pub task: String,
    /// The task run.
    pub task_run_id: Uuid,
    /// The attempt.
    pub attempt: i32,
}

/// A page of log lines, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// The lines.
    pub lines: Vec<LogLine>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

fn is_finished(view: &RunView) -> bool {
    view.run.status.is_finished()
}

fn no_run(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("no run `{id}`"))
}

/// `POST /api/v1/workflows/{name}/runs[?wait=<seconds>]`: 202 `{run_id}`, or 200 with the
/// finished run when it finished within the wait.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "The workflow"), WaitQuery),
    request_body = RunBody,
    responses(
        (status = 202, description = "Started (or, with `wait`, not finished within it)", body = RunAccepted),
        (status = 200, description = "Finished within `wait`", body = RunDetail),
    ),
    security(("tenant_token" = [])))]
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
    let accepted = || (StatusCode::ACCEPTED, Json(RunAccepted { run_id: id })).into_response();
    let Some(wait) = wait.filter(|wait| !wait.is_zero()) else {
        return Ok(accepted());
    };
    let view = match &state.node {
        Some(node) => node.wait_for_run(&state.db, tenant, id, wait).await?,
        None => wait_for_run(&state.db, tenant, id, wait).await?,
    };
    Ok(match view {
        Some(view) if is_finished(&view) => Json(RunDetail::from(&view)).into_response(),
        _ => accepted(),
    })
}

/// `POST /api/v1/workflows/{name}/runs/bulk`: 202 `{run_ids}`; all are started or none.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs/bulk", tag = "runs",
    params(("name" = String, Path, description = "The workflow")),
    request_body = BulkBody,
    responses((status = 202, description = "All started", body = RunsAccepted)),
    security(("tenant_token" = [])))]
pub async fn start_bulk(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    extract::Json(body): extract::Json<BulkBody>,
) -> Result<(StatusCode, Json<RunsAccepted>), ApiError> {
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
    Ok((StatusCode::ACCEPTED, Json(RunsAccepted { run_ids: ids })))
}

/// `GET /api/v1/runs?workflow=&status=&metadata=k:v&limit=&cursor=` → `{runs, next_cursor}`,
/// newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Runs, newest first", body = RunPage)),
    security(("tenant_token" = [])))]
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
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
        status,
        metadata: metadata.as_ref(),
        parent_run_id: None,
        triggered_by: query.triggered_by.as_deref(),
        top_level: query.top_level.unwrap_or(false),
        page: page_query.params()?,
    };
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = workflow_runs_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, page_query.limit()?, |r| {
        (r.created_at, r.id.to_string())
    });
    Ok(Json(RunPage {
        runs: rows.iter().map(Run::from).collect(),
        next_cursor: next,
    }))
}

/// `GET /api/v1/runs/{id}` → the run with its tasks.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run")),
    responses((status = 200, description = "The run and its tasks", body = RunDetail)),
    security(("tenant_token" = [])))]
pub async fn get(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Ok(Json(RunDetail::from(&view)))
}

/// `POST /api/v1/runs/{id}/cancel` → the run after the cancellation (a finished run is left
/// as it is). Runs it spawned are cancelled too.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run")),
    responses((status = 200, description = "The run after the cancellation", body = RunDetail)),
    security(("tenant_token" = [])))]
pub async fn cancel(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = extract::parse_id("run", &id)?;
    if !cancel_run(&state.db, tenant, id).await? {
        return Err(no_run(id));
    }
    let view = get_run(&state.db, tenant, id)
        .await?
        .ok_or_else(|| no_run(id))?;
    Ok(Json(RunDetail::from(&view)))
}

/// `POST /api/v1/runs/{id}/replay`: 202 `{run_id}`; only failed or cancelled runs (else 409).
#[utoipa::path(post, path = "/api/v1/runs/{id}/replay", tag = "runs",
    params(("id" = String, Path, description = "The run")),
    responses(
        (status = 202, description = "Replaying", body = RunAccepted),
        (status = 409, description = "Not failed or cancelled", body = ErrorBody),
    ),
    security(("tenant_token" = [])))]
pub async fn replay(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let id = extract::parse_id("run", &id)?;
    if replay_run(&state.db, tenant, id).await? {
        return Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id: id })));
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    /// When the run is due now.
    pub run_at: DateTime<Utc>,
}

/// `POST /api/v1/runs/{id}/reschedule` `{run_at}` → the run, moved; 409 if it is no longer
/// scheduled.
#[utoipa::path(post, path = "/api/v1/runs/{id}/reschedule", tag = "runs",
    params(("id" = String, Path, description = "The run")),
    request_body = RescheduleBody,
    responses(
        (status = 200, description = "The run, moved", body = RunDetail),
        (status = 409, description = "No longer scheduled", body = ErrorBody),
    ),
    security(("tenant_token" = [])))]
pub async fn reschedule(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    extract::Json(body): extract::Json<RescheduleBody>,
) -> Result<Json<RunDetail>, ApiError> {
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
    Ok(Json(RunDetail::from(&view)))
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
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs",
    params(("id" = String, Path, description = "The run"), PageQuery),
    responses((status = 200, description = "Log lines, oldest first", body = LogPage)),
    security(("tenant_token" = [])))]
pub async fn logs(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<LogPage>, ApiError> {
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
    let lines = lines
        .iter()
        .map(|l| LogLine {
            time: l.at,
            level: l.level.clone(),
            message: l.message.clone(),
            task: l.task.clone(),
            task_run_id: l.task_run_id,
            attempt: l.attempt,
        })
        .collect();
    Ok(Json(LogPage {
        lines,
        next_cursor: next,
    }))
}

/// `GET /api/v1/runs/{id}/children?limit=&cursor=` → `{runs, next_cursor}`: the runs its
/// tasks spawned, newest first.
#[utoipa::path(get, path = "/api/v1/runs/{id}/children", tag = "runs",
    params(("id" = String, Path, description = "The run"), PageQuery),
    responses((status = 200, description = "Runs its tasks spawned, newest first", body = RunPage)),
    security(("tenant_token" = [])))]
pub async fn children(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let id: Uuid = extract::parse_id("run", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    if workflow_run_get(&mut conn, tenant, id).await?.is_none() {
        return Err(no_run(id));
    }
    let params = RunListParams {
        parent_run_id: Some(id),
        ..RunListParams::unfiltered(query.params()?)
    };
    let mut rows = workflow_runs_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |r| {
        (r.created_at, r.id.to_string())
    });
    Ok(Json(RunPage {
        runs: rows.iter().map(Run::from).collect(),
        next_cursor: next,
    }))
}
