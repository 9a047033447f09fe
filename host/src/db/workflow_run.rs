//! `workflow_runs` (and the task runs created with them): start, read, cancel, replay,
//! schedule.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::module::WorkflowVersion;
use crate::flow::{Gate, RunGates};
use crate::manifest::TaskDef;
use crate::status::{RunStatus, TaskStatus};

/// Defaults of the host for what a task does not declare.
pub const DEFAULT_EXECUTION_TIMEOUT_MS: i64 = 60_000;
/// Default schedule timeout: 5 minutes.
pub const DEFAULT_SCHEDULE_TIMEOUT_MS: i64 = 300_000;

/// A workflow run to create.
#[derive(Debug, Clone)]
pub struct NewWorkflowRun<'a> {
    /// Its id, when the caller chose it (spawned children are answered before they are
    /// written); `None`: a new UUIDv7.
    pub id: Option<Uuid>,
    /// The workflow version it runs.
    pub workflow: &'a WorkflowVersion,
    /// JSON input.
    pub input: &'a str,
    /// JSON object of additional metadata.
    pub additional_metadata: &'a str,
    /// Priority 1..=3.
    pub priority: i16,
    /// A second start with the same key returns the first run.
    pub idempotency_key: Option<&'a str>,
    /// The task run that spawned it, with the spawn's key.
    pub parent: Option<(Uuid, &'a str)>,
    /// Its flow-control gates (`crate::flow::run_gates`), if its workflow has rules.
    pub gates: Option<&'a RunGates>,
    /// When it is due, for a run scheduled for later (`scheduled` until then).
    pub run_at: Option<DateTime<Utc>>,
    /// How it started, when not over the API or by a spawn: "cron" or "event", with its id.
    pub trigger: Option<(&'static str, Uuid)>,
}

impl NewWorkflowRun<'_> {
    /// How the run started: `(kind, id)` as stored.
    fn triggered_by(&self) -> (&'static str, Option<Uuid>) {
        match (self.trigger, self.parent, self.run_at) {
            (Some((kind, id)), _, _) => (kind, Some(id)),
            (None, Some(_), _) => ("spawn", None),
            (None, None, Some(_)) => ("schedule", None),
            (None, None, None) => ("api", None),
        }
    }
}

/// Creates workflow runs and their task runs; returns the run ids in order. A run whose
/// idempotency (or spawn) key already exists is not created again: its existing id is returned.
pub async fn workflow_runs_create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    runs: &[NewWorkflowRun<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = runs
        .iter()
        .map(|run| run.id.unwrap_or_else(Uuid::now_v7))
        .collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(sql!(
        "INSERT INTO workflow_runs (tenant_id, id, workflow, version, module_digest, status, input,
                                    additional_metadata, priority, idempotency_key,
                                    parent_task_run_id, spawn_key, gated, run_at, triggered_by,
                                    trigger_id)
         SELECT $1, r.id, r.workflow, r.version, r.digest,
                CASE WHEN r.run_at IS NULL THEN 'queued' ELSE 'scheduled' END, r.input::jsonb,
                r.metadata::jsonb, r.priority, r.key, r.parent, r.spawn_key, r.gated, r.run_at,
                r.kind, r.trigger_id
         FROM unnest($2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
                     $8::smallint[], $9::text[], $10::uuid[], $11::text[], $12::bool[],
                     $13::timestamptz[], $14::text[], $15::uuid[])
              AS r(id, workflow, version, digest, input, metadata, priority, key, parent, spawn_key,
                   gated, run_at, kind, trigger_id)
         ON CONFLICT DO NOTHING
         RETURNING id"
    ))
    .bind(tenant_id)
    .bind(&ids)
    .bind(
        runs.iter()
            .map(|r| r.workflow.name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(runs.iter().map(|r| r.workflow.version).collect::<Vec<_>>())
    .bind(
        runs.iter()
            .map(|r| r.workflow.module_digest.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(runs.iter().map(|r| r.input).collect::<Vec<_>>())
    .bind(
        runs.iter()
            .map(|r| r.additional_metadata)
            .collect::<Vec<_>>(),
    )
    .bind(runs.iter().map(|r| r.priority).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.idempotency_key).collect::<Vec<_>>())
    .bind(
        runs.iter()
            .map(|r| r.parent.map(|p| p.0))
            .collect::<Vec<_>>(),
    )
    .bind(
        runs.iter()
            .map(|r| r.parent.map(|p| p.1))
            .collect::<Vec<_>>(),
    )
    .bind(
        runs.iter()
            .map(|r| r.gates.is_some_and(RunGates::is_run_gated))
            .collect::<Vec<_>>(),
    )
    .bind(runs.iter().map(|r| r.run_at).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.triggered_by().0).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.triggered_by().1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();

    let mut tasks = TaskRows::default();
    let mut result = Vec::with_capacity(runs.len());
    for (run, id) in runs.iter().zip(&ids) {
        if inserted.contains(id) {
            tasks.add_run(tenant_id, *id, run);
            result.push(*id);
        } else {
            result.push(existing_run_id(conn, tenant_id, run).await?);
        }
    }
    if runs.iter().any(|r| r.run_at.is_some()) {
        sqlx::query(sql!("SELECT pg_notify($1, '')"))
            .bind(super::CHANNEL_SCHEDULED)
            .execute(&mut *conn)
            .await?;
    }
    if tasks.gated {
        super::flow::flow_keys_ensure(conn, &tasks.concurrency_keys, &tasks.dynamic_limits).await?;
        super::flow::notify_gated(conn).await?;
    }
    tasks.insert(conn, tenant_id).await?;
    let mut created: std::collections::BTreeMap<&str, i64> = Default::default();
    for (run, id) in runs.iter().zip(&ids) {
        if inserted.contains(id) {
            *created.entry(run.workflow.name.as_str()).or_default() += 1;
        }
    }
    let created: Vec<(&str, i64)> = created.into_iter().collect();
    super::usage::usage_runs_add(conn, tenant_id, &created).await?;
    Ok(result)
}

async fn existing_run_id(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run: &NewWorkflowRun<'_>,
) -> Result<Uuid, sqlx::Error> {
    match (run.parent, run.idempotency_key) {
        (Some((parent, key)), _) => {
            sqlx::query_scalar(sql!(
                "SELECT id FROM workflow_runs
                 WHERE tenant_id = $1 AND parent_task_run_id = $2 AND spawn_key = $3"
            ))
            .bind(tenant_id)
            .bind(parent)
            .bind(key)
            .fetch_one(conn)
            .await
        }
        (None, Some(key)) => {
            sqlx::query_scalar(sql!(
                "SELECT id FROM workflow_runs
                 WHERE tenant_id = $1 AND workflow = $2 AND idempotency_key = $3"
            ))
            .bind(tenant_id)
            .bind(&run.workflow.name)
            .bind(key)
            .fetch_one(conn)
            .await
        }
        (None, None) => Err(sqlx::Error::RowNotFound),
    }
}

/// Column arrays of task runs to insert in one statement.
#[derive(Default)]
struct TaskRows {
    ids: Vec<Uuid>,
    run_ids: Vec<Uuid>,
    workflows: Vec<String>,
    tasks: Vec<String>,
    digests: Vec<String>,
    parents: Vec<String>,
    pending_parents: Vec<i32>,
    on_failure: Vec<bool>,
    leaves: Vec<bool>,
    statuses: Vec<&'static str>,
    priorities: Vec<i16>,
    retries: Vec<i32>,
    backoff_factors: Vec<Option<f64>>,
    backoff_max: Vec<Option<i32>>,
    execution_timeouts: Vec<i64>,
    schedule_timeouts: Vec<i64>,
    fuel: Vec<Option<i64>>,
    gates: Vec<Option<String>>,
    gate: Vec<Option<String>>,
    /// Whether any task run has gates.
    gated: bool,
    /// Keys the gated task runs use, for the rows admission locks.
    concurrency_keys: Vec<(Uuid, String)>,
    dynamic_limits: Vec<(Uuid, String, u32, u64)>,
}

impl TaskRows {
    fn add_run(&mut self, tenant_id: Uuid, run_id: Uuid, run: &NewWorkflowRun<'_>) {
        if let Some(gates) = run.gates {
            self.add_keys(tenant_id, gates);
        }
        let definition = &run.workflow.definition;
        let leaves: Vec<&str> = definition
            .leaves()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for task in &definition.tasks {
            self.add(
                run_id,
                run,
                task,
                false,
                leaves.contains(&task.name.as_str()),
            );
        }
        if let Some(task) = &definition.on_failure {
            self.add(run_id, run, task, true, false);
        }
    }

    fn add(
        &mut self,
        run_id: Uuid,
        run: &NewWorkflowRun<'_>,
        task: &TaskDef,
        on_failure: bool,
        leaf: bool,
    ) {
        self.ids.push(Uuid::now_v7());
        self.run_ids.push(run_id);
        self.workflows.push(run.workflow.name.clone());
        self.tasks.push(task.name.clone());
        self.digests.push(run.workflow.module_digest.clone());
        self.parents
            .push(serde_json::to_string(&task.parents).unwrap_or_else(|_| "[]".into()));
        self.pending_parents.push(task.parents.len() as i32);
        self.on_failure.push(on_failure);
        self.leaves.push(leaf);
        // A scheduled run's first tasks wait, `pending`, until it is due.
        self.statuses.push(
            if task.parents.is_empty() && !on_failure && run.run_at.is_none() {
                TaskStatus::Queued.as_str()
            } else {
                TaskStatus::Pending.as_str()
            },
        );
        self.priorities.push(run.priority);
        self.retries.push(task.retries as i32);
        self.backoff_factors.push(task.backoff.map(|b| b.factor));
        self.backoff_max
            .push(task.backoff.map(|b| b.max_seconds as i32));
        self.execution_timeouts.push(
            task.execution_timeout_ms
                .map_or(DEFAULT_EXECUTION_TIMEOUT_MS, |ms| ms as i64),
        );
        self.schedule_timeouts.push(
            task.schedule_timeout_ms
                .map_or(DEFAULT_SCHEDULE_TIMEOUT_MS, |ms| ms as i64),
        );
        self.fuel
            .push(run.workflow.task_fuel.get(&task.name).copied());
        // The on-failure task runs once its run has failed and freed its place: no gates.
        let gates = run
            .gates
            .filter(|_| !on_failure)
            .and_then(|gates| gates.of_task(task, task.parents.is_empty()));
        self.gated |= gates.is_some();
        let (gates, gate) = gates.unzip();
        self.gates.push(gates);
        self.gate.push(gate);
    }

    fn add_keys(&mut self, tenant_id: Uuid, gates: &RunGates) {
        for gate in gates.run.iter().chain(gates.tasks.values().flatten()) {
            match gate {
                Gate::Concurrency { key, .. } => {
                    self.concurrency_keys.push((tenant_id, key.clone()));
                }
                Gate::RateLimit {
                    key,
                    dynamic: Some((limit, window_ms)),
                    ..
                } => {
                    self.dynamic_limits
                        .push((tenant_id, key.clone(), *limit, *window_ms));
                }
                Gate::RateLimit { .. } => {}
            }
        }
    }

    async fn insert(self, conn: &mut PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(sql!(
            "INSERT INTO task_runs (tenant_id, id, workflow_run_id, workflow, task, module_digest,
                                    parents, pending_parents, is_on_failure, status, priority,
                                    retries, backoff_factor, backoff_max_seconds,
                                    execution_timeout_ms, schedule_timeout_ms, schedule_deadline,
                                    is_leaf, gates, gate, fuel)
             SELECT $1, t.id, t.run_id, t.workflow, t.task, t.digest,
                    ARRAY(SELECT jsonb_array_elements_text(t.parents::jsonb)), t.pending,
                    t.on_failure, t.status, t.priority, t.retries, t.factor, t.max_seconds,
                    t.execution_timeout, t.schedule_timeout,
                    CASE WHEN t.status = 'queued'
                         THEN now() + t.schedule_timeout * interval '1 millisecond' END,
                    t.leaf, t.gates::jsonb, t.gate, t.fuel
             FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::int[], $9::bool[], $10::text[], $11::smallint[], $12::int[],
                         $13::float8[], $14::int[], $15::bigint[], $16::bigint[], $17::bool[],
                         $18::text[], $19::text[], $20::bigint[])
                  AS t(id, run_id, workflow, task, digest, parents, pending, on_failure, status,
                       priority, retries, factor, max_seconds, execution_timeout, schedule_timeout,
                       leaf, gates, gate, fuel)"
        ))
        .bind(tenant_id)
        .bind(&self.ids)
        .bind(&self.run_ids)
        .bind(&self.workflows)
        .bind(&self.tasks)
        .bind(&self.digests)
        .bind(&self.parents)
        .bind(&self.pending_parents)
        .bind(&self.on_failure)
        .bind(&self.statuses)
        .bind(&self.priorities)
        .bind(&self.retries)
        .bind(&self.backoff_factors)
        .bind(&self.backoff_max)
        .bind(&self.execution_timeouts)
        .bind(&self.schedule_timeouts)
        .bind(&self.leaves)
        .bind(&self.gates)
        .bind(&self.gate)
        .bind(&self.fuel)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A workflow run as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkflowRunRow {
    /// Run id.
    pub id: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// Workflow version.
    pub version: i32,
    /// Where the run is (`running` once a task started, though SQL stores `queued` until a
    /// task finishes: see `select_runs!`).
    pub status: RunStatus,
    /// Input.
    pub input: Value,
    /// Output once succeeded.
    pub output: Option<Value>,
    /// Error once failed or cancelled.
    pub error: Option<String>,
    /// Additional metadata.
    pub additional_metadata: Value,
    /// Priority.
    pub priority: i16,
    /// The task run that spawned it.
    pub parent_task_run_id: Option<Uuid>,
    /// The workflow run of that task run.
    pub parent_run_id: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// First task started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When a scheduled run is (or was) due.
    pub run_at: Option<DateTime<Utc>>,
    /// How it started: api, cron, schedule, event, spawn or replay.
    pub triggered_by: String,
    /// The cron or event that started it.
    pub trigger_id: Option<Uuid>,
}

/// `SELECT` of `WorkflowRunRow`s `FROM workflow_runs r`, with the task run that spawned each (for
/// its workflow run id) and, for a queued run, when its first task started: a stored `queued`
/// run whose first task has started is shown `running` (claims do not touch the run row).
macro_rules! select_runs {
    () => {
        "SELECT r.id, r.workflow, r.version,
                CASE WHEN r.status = 'queued' AND s.first_start IS NOT NULL THEN 'running'
                     ELSE r.status END AS status,
                r.input, r.output, r.error, r.additional_metadata, r.priority,
                r.parent_task_run_id, p.workflow_run_id AS parent_run_id, r.created_at,
                coalesce(r.started_at, s.first_start) AS started_at, r.finished_at, r.run_at,
                r.triggered_by, r.trigger_id
         FROM workflow_runs r
         LEFT JOIN task_runs p
           ON p.tenant_id = r.tenant_id AND p.id = r.parent_task_run_id
         LEFT JOIN LATERAL (SELECT min(t.started_at) AS first_start FROM task_runs t
                            WHERE t.tenant_id = r.tenant_id AND t.workflow_run_id = r.id) s
           ON r.status = 'queued'"
    };
}

/// One workflow run.
pub async fn workflow_run_get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<WorkflowRunRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        select_runs!(),
        " WHERE r.tenant_id = $1 AND r.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq)]
pub struct RunListParams<'a> {
    /// Only runs of this workflow.
    pub workflow: Option<&'a str>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs whose metadata contains this JSON object.
    pub metadata: Option<&'a Value>,
    /// Only runs spawned by the tasks of this run.
    pub parent_run_id: Option<Uuid>,
    /// Only runs started this way (api, cron, schedule, event, spawn, replay).
    pub triggered_by: Option<&'a str>,
    /// Only runs no task spawned.
    pub top_level: bool,
    /// Which page.
    pub page: super::PageParams<Uuid>,
}

impl RunListParams<'_> {
    /// Every run of the tenant, newest first: no filter, this `page`.
    pub fn unfiltered(page: super::PageParams<Uuid>) -> Self {
        Self {
            workflow: None,
            status: None,
            metadata: None,
            parent_run_id: None,
            triggered_by: None,
            top_level: false,
            page,
        }
    }
}

/// A page of the tenant's workflow runs matching `params`, newest first.
///
/// The statement names only the filters given, so each combination is planned for itself: a
/// page costs an index range scan of `workflow_runs_newest` (or of the workflow's, the
/// trigger's, or for the rare statuses `workflow_runs_rare_status`), whatever the table holds.
pub async fn workflow_runs_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    params: &RunListParams<'_>,
) -> Result<Vec<WorkflowRunRow>, sqlx::Error> {
    runs_list_query("", tenant_id, params)
        .build_query_as()
        .fetch_all(conn)
        .await
}

/// The statement of `workflow_runs_list`, after `prefix` (`EXPLAIN …` for `plans`).
pub(crate) fn runs_list_query<'a>(
    prefix: &str,
    tenant_id: Uuid,
    params: &RunListParams<'a>,
) -> sqlx::QueryBuilder<'a, sqlx::Postgres> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(prefix);
    query.push(concat!(select_runs!(), " WHERE r.tenant_id = "));
    query.push_bind(tenant_id);
    if let Some(workflow) = params.workflow {
        query.push(" AND r.workflow = ").push_bind(workflow);
    }
    match params.status {
        None => {}
        // Shown statuses the stored one does not say alone (see `select_runs!`).
        Some(RunStatus::Running) => {
            query.push(" AND r.status = 'queued' AND s.first_start IS NOT NULL");
        }
        Some(RunStatus::Queued) => {
            query.push(" AND r.status = 'queued' AND s.first_start IS NULL");
        }
        // Literals, so that the plan may use the partial index of these statuses.
        Some(RunStatus::Scheduled) => {
            query.push(" AND r.status = 'scheduled'");
        }
        Some(RunStatus::Succeeded) => {
            query.push(" AND r.status = 'succeeded'");
        }
        Some(RunStatus::Failed) => {
            query.push(" AND r.status = 'failed'");
        }
        Some(RunStatus::Cancelled) => {
            query.push(" AND r.status = 'cancelled'");
        }
    }
    if let Some(metadata) = params.metadata {
        query
            .push(" AND r.additional_metadata @> ")
            .push_bind(metadata);
    }
    if let Some(parent) = params.parent_run_id {
        query
            .push(" AND r.parent_task_run_id IN (SELECT c.id FROM task_runs c WHERE c.tenant_id = ")
            .push_bind(tenant_id)
            .push(" AND c.workflow_run_id = ")
            .push_bind(parent)
            .push(")");
    }
    if let Some((at, id)) = params.page.before {
        query
            .push(" AND (r.created_at, r.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    if let Some(trigger) = params.triggered_by {
        query.push(" AND r.triggered_by = ").push_bind(trigger);
    }
    if params.top_level {
        query.push(" AND r.parent_task_run_id IS NULL");
    }
    query
        .push(" ORDER BY r.created_at DESC, r.id DESC LIMIT ")
        .push_bind(params.page.limit);
    query
}

/// The child workflow runs spawned by the task runs of a run.
pub async fn workflow_run_children(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT c.id FROM task_runs t
         JOIN workflow_runs c ON c.tenant_id = t.tenant_id AND c.parent_task_run_id = t.id
         WHERE t.tenant_id = $1 AND t.workflow_run_id = $2 ORDER BY c.id"
    ))
    .bind(tenant_id)
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// The children that task run `parent` spawned, by spawn key.
pub async fn workflow_run_children_by_key(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    parent: Uuid,
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(sql!(
        "SELECT spawn_key, id FROM workflow_runs
         WHERE tenant_id = $1 AND parent_task_run_id = $2"
    ))
    .bind(tenant_id)
    .bind(parent)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Run result as `workflow_run_result` gives it: unfinished `None`, else output or error.
pub type RunResult = Option<Result<Value, String>>;

/// The state of each of the runs `ids` that exists (see `workflow_run_result`).
pub async fn workflow_runs_results(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, RunResult)>, sqlx::Error> {
    let rows: Vec<(Uuid, RunStatus, Option<Value>, Option<String>)> = sqlx::query_as(sql!(
        "SELECT id, status, output, error FROM workflow_runs
         WHERE tenant_id = $1 AND id = ANY($2)"
    ))
    .bind(tenant_id)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status, output, error)| (id, run_result(status, output, error)))
        .collect())
}

fn run_result(status: RunStatus, output: Option<Value>, error: Option<String>) -> RunResult {
    match status {
        RunStatus::Succeeded => Some(Ok(output.unwrap_or(Value::Null))),
        RunStatus::Failed | RunStatus::Cancelled => {
            Some(Err(error.unwrap_or_else(|| status.as_str().to_owned())))
        }
        RunStatus::Scheduled | RunStatus::Queued | RunStatus::Running => None,
    }
}

/// The state of a run: `None` if it does not exist, `Some(None)` while it is unfinished, and
/// `Some(Some(Ok(output)))` or `Some(Some(Err(error)))` once it finished.
#[allow(
    clippy::type_complexity,
    reason = "three layers, each documented above"
)]
pub async fn workflow_run_result(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Option<Result<Value, String>>>, sqlx::Error> {
    let row: Option<(RunStatus, Option<Value>, Option<String>)> = sqlx::query_as(sql!(
        "SELECT status, output, error FROM workflow_runs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(status, output, error)| run_result(status, output, error)))
}

/// What a cancellation touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancellation {
    /// Runs (the run and its descendants) that were cancelled.
    pub runs: Vec<Uuid>,
    /// Task runs that were running somewhere and must be interrupted.
    pub interrupted: Vec<Uuid>,
}

/// Cancels a run and every run spawned beneath it: queued and pending tasks at once, running
/// ones marked (their nodes interrupt them on notice), with `reason` as their error (the run
/// keeps an error it already had). `None` if the run does not exist.
pub async fn workflow_run_cancel(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    reason: &str,
) -> Result<Option<Cancellation>, sqlx::Error> {
    let exists: Option<Uuid> = sqlx::query_scalar(sql!(
        "SELECT id FROM workflow_runs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(None);
    }
    // A scheduled run has no task that ever ran: the run row is locked first, as the schedule
    // service does when it promotes it (which then finds it cancelled, or has promoted it
    // already and this finds it no longer scheduled and goes the usual way).
    let scheduled: Option<Uuid> = sqlx::query_scalar(sql!(
        "UPDATE workflow_runs SET status = 'cancelled', finished_at = now(), error = $3
         WHERE tenant_id = $1 AND id = $2 AND status = 'scheduled'
         RETURNING id"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    if scheduled.is_some() {
        sqlx::query(sql!(
            "UPDATE task_runs SET status = 'cancelled', finished_at = now(), error = $3,
                                  error_code = 'cancelled'
             WHERE tenant_id = $1 AND workflow_run_id = $2 AND status = 'pending'"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
        super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &[id]).await?;
        return Ok(Some(Cancellation {
            runs: vec![id],
            interrupted: Vec::new(),
        }));
    }
    // Lock order everywhere: task_runs before workflow_runs (completions, claims and the
    // reaper update them in that order), so a cancel cannot deadlock with a completion.
    let tree: Vec<Uuid> = sqlx::query_scalar(sql!(
        "WITH RECURSIVE tree(id) AS (
             SELECT $2::uuid
             UNION
             SELECT c.id FROM tree
             JOIN task_runs t ON t.tenant_id = $1 AND t.workflow_run_id = tree.id
             JOIN workflow_runs c ON c.tenant_id = $1 AND c.parent_task_run_id = t.id
         )
         SELECT id FROM tree"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let interrupted: Vec<Option<Uuid>> = sqlx::query_scalar(sql!(
        "WITH targets AS (
             SELECT id, status FROM task_runs
             WHERE tenant_id = $1 AND workflow_run_id = ANY($2)
               AND status IN ('pending', 'queued', 'running')
             ORDER BY id
             FOR UPDATE
         )
         UPDATE task_runs t SET status = 'cancelled', finished_at = now(), error = $3,
                                error_code = 'cancelled', lease_owner = NULL,
                                lease_expires_at = NULL
         FROM targets WHERE t.tenant_id = $1 AND t.id = targets.id
         RETURNING CASE WHEN targets.status = 'running' THEN t.id END"
    ))
    .bind(tenant_id)
    .bind(&tree)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    let interrupted: Vec<Uuid> = interrupted.into_iter().flatten().collect();
    let runs: Vec<Uuid> = sqlx::query_scalar(sql!(
        "UPDATE workflow_runs w SET status = 'cancelled', finished_at = now(),
                                    error = coalesce(w.error, $3),
                                    started_at = coalesce(w.started_at, (
                                        SELECT min(s.started_at) FROM task_runs s
                                        WHERE s.tenant_id = w.tenant_id
                                          AND s.workflow_run_id = w.id))
         WHERE w.tenant_id = $1 AND w.id = ANY($2) AND w.status IN ('queued', 'running')
         RETURNING w.id"
    ))
    .bind(tenant_id)
    .bind(&tree)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    // A cancelled run or attempt may free a place under a concurrency key.
    super::flow::notify_gated(conn).await?;
    super::notify_ids(conn, super::CHANNEL_CANCEL, &interrupted).await?;
    super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &runs).await?;
    Ok(Some(Cancellation { runs, interrupted }))
}

/// Re-runs a failed or cancelled run from its unfinished tasks, keeping succeeded outputs.
/// `Ok(false)` if the run does not exist or is not failed or cancelled.
pub async fn workflow_run_replay(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    // task_runs before workflow_runs, the lock order of every other writer.
    let replayable: Option<Uuid> = sqlx::query_scalar(sql!(
        "SELECT id FROM workflow_runs
         WHERE tenant_id = $1 AND id = $2 AND status IN ('failed', 'cancelled')"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if replayable.is_none() {
        return Ok(false);
    }
    sqlx::query(sql!(
        "UPDATE task_runs t SET
             status = 'pending', failures = 0, lost_leases = 0, error = NULL, error_code = NULL,
             output = NULL, finished_at = NULL, lease_owner = NULL, lease_token = NULL,
             lease_expires_at = NULL, input = NULL,
             pending_parents = (SELECT count(*) FROM task_runs p
                                WHERE p.tenant_id = t.tenant_id
                                  AND p.workflow_run_id = t.workflow_run_id
                                  AND p.task = ANY(t.parents) AND p.status <> 'succeeded')
         WHERE t.tenant_id = $1 AND t.workflow_run_id = $2 AND t.status <> 'succeeded'"
    ))
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let reset = sqlx::query(
        sql!("UPDATE workflow_runs SET status = 'queued', error = NULL, output = NULL, finished_at = NULL
         WHERE tenant_id = $1 AND id = $2 AND status IN ('failed', 'cancelled')"),
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if reset.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        sql!("UPDATE task_runs SET status = 'queued', available_at = now(),
                              schedule_deadline = now() + schedule_timeout_ms * interval '1 millisecond'
         WHERE tenant_id = $1 AND workflow_run_id = $2 AND status = 'pending'
           AND pending_parents = 0 AND NOT is_on_failure"),
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    super::notify_work(conn, &[tenant_id]).await?;
    super::flow::notify_gated(conn).await?;
    Ok(true)
}

/// Blocks every write to `workflow_runs` (reads go on) until the transaction `tx` ends: no run
/// can start or finish meanwhile. For the tests that play a slow database, and for operators
/// who need a quiet moment.
pub async fn workflow_runs_block_writes(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("LOCK TABLE workflow_runs IN SHARE ROW EXCLUSIVE MODE"))
        .execute(tx)
        .await?;
    Ok(())
}

/// What one pass of the schedule service did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Promoted {
    /// Scheduled runs that became queued.
    pub runs: usize,
    /// Whether any of their first tasks has flow-control gates.
    pub gated: bool,
}

/// Queues up to `batch` scheduled runs due at `now`, with their first tasks, in one statement.
/// The run rows are locked first (`SKIP LOCKED`: another node promoting or a cancel in progress
/// is left alone, and a reschedule committed meanwhile is seen); nothing else locks the tasks
/// of a run that never started.
pub async fn workflow_runs_promote_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<Promoted, sqlx::Error> {
    let (runs, gated): (i64, bool) = sqlx::query_as(sql!(
        "WITH due AS (
             SELECT tenant_id, id FROM workflow_runs
             WHERE status = 'scheduled' AND run_at <= $1
             ORDER BY run_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ),
         runs AS (
             UPDATE workflow_runs w SET status = 'queued'
             FROM due WHERE w.tenant_id = due.tenant_id AND w.id = due.id
             RETURNING w.tenant_id, w.id
         ),
         tasks AS (
             UPDATE task_runs t SET status = 'queued', available_at = now(),
                 schedule_deadline = now() + t.schedule_timeout_ms * interval '1 millisecond'
             FROM runs r
             WHERE t.tenant_id = r.tenant_id AND t.workflow_run_id = r.id
               AND t.status = 'pending' AND t.pending_parents = 0 AND NOT t.is_on_failure
             RETURNING t.gate IS NOT NULL AS gated
         )
         SELECT (SELECT count(*) FROM runs), coalesce((SELECT bool_or(gated) FROM tasks), false)"
    ))
    .bind(now)
    .bind(batch.max(1))
    .fetch_one(&mut *conn)
    .await?;
    if runs > 0 {
        super::notify_work(conn, &[]).await?;
    }
    if gated {
        super::flow::notify_gated(conn).await?;
    }
    Ok(Promoted {
        runs: runs as usize,
        gated,
    })
}

/// When the next scheduled run is due, if any.
pub async fn workflow_runs_next_due(
    conn: &mut PgConnection,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT min(run_at) FROM workflow_runs WHERE status = 'scheduled'"
    ))
    .fetch_one(conn)
    .await
}

/// Moves a scheduled run to `run_at`. `None` if there is no such run; `Some(status)` with the
/// run's status otherwise (it was moved only if that is `scheduled`).
pub async fn workflow_run_reschedule(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    run_at: DateTime<Utc>,
) -> Result<Option<RunStatus>, sqlx::Error> {
    let moved: Option<RunStatus> = sqlx::query_scalar(sql!(
        "UPDATE workflow_runs SET run_at = $3
         WHERE tenant_id = $1 AND id = $2 AND status = 'scheduled'
         RETURNING status"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(run_at)
    .fetch_optional(&mut *conn)
    .await?;
    if moved.is_some() {
        sqlx::query(sql!("SELECT pg_notify($1, '')"))
            .bind(super::CHANNEL_SCHEDULED)
            .execute(&mut *conn)
            .await?;
        return Ok(moved);
    }
    sqlx::query_scalar(sql!(
        "SELECT status FROM workflow_runs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Workflow runs waiting for their time, by tenant (the metrics scrape).
pub async fn workflow_runs_scheduled_by_tenant(
    conn: &mut PgConnection,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        sql!("SELECT tenant_id, count(*) FROM workflow_runs WHERE status = 'scheduled' GROUP BY tenant_id"),
    )
    .fetch_all(conn)
    .await
}
