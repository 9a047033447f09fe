//! Starting, reading, cancelling, replaying and awaiting workflow runs: the library API that
//! the HTTP API, the triggers and the `spawn` import all go through.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::waiters::RunWaiters;
use crate::db::module::{WorkflowVersion, workflow_latest};
use crate::db::task_run::{self, TaskRunRow};
use crate::db::workflow_run::{self, NewWorkflowRun, WorkflowRunRow, workflow_runs_create};
use crate::db::{self, Db};
use crate::flow::{KeyError, RunGates, WaitingFor, run_gates};
use crate::quota::{QuotaExceeded, Quotas};
use crate::status::{RunStatus, TaskStatus};

/// Why a run could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No workflow of that name is deployed.
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    /// Priority outside 1..=3.
    #[error("priority must be 1, 2 or 3, got {0}")]
    InvalidPriority(u8),
    /// Metadata that is not a JSON object.
    #[error("additional metadata must be a JSON object")]
    InvalidMetadata,
    /// An event that cannot be pushed.
    #[error("{0}")]
    InvalidEvent(String),
    /// A run scheduled for a time already past.
    #[error("run_at {0} is in the past: give a time to come (RFC 3339), or none to run now")]
    PastRunAt(DateTime<Utc>),
    /// A concurrency or rate limit key expression fails for this run's input.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Input or metadata holding a NUL character, which PostgreSQL's `jsonb` cannot store.
    #[error("the {0} contains a NUL character (\\u0000), which cannot be stored")]
    NulCharacter(&'static str),
    /// A quota of the tenant refuses it.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// This process is shutting down and starts no more runs.
    #[error(
        "this node is shutting down and starts no more runs; retry (another node will take it)"
    )]
    ShuttingDown,
    /// The transaction this start shared with others (`RunStarter`) failed: nothing of it was
    /// stored.
    #[error("nothing was stored: {0}")]
    NotStored(String),
}

/// A request to start one workflow run.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct RunRequest {
    /// The workflow to run (its newest version).
    pub workflow: String,
    /// Its input.
    #[serde(default)]
    pub input: Value,
    /// Additional metadata (a JSON object) for filtering and concurrency keys.
    #[serde(default = "empty_object")]
    pub additional_metadata: Value,
    /// Priority 1..=3; default: the workflow's default priority, else 1.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Idempotency key: a second start with the same key returns the first run.
    #[serde(default)]
    pub key: Option<String>,
    /// Run it then, not now: the run is `scheduled` until it is due.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
}

/// Whether any string or key in `value` holds a NUL character.
fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, item)| key.contains('\0') || contains_nul(item)),
        _ => false,
    }
}

/// Checks what the database would refuse, so a bad request fails alone, before any batch.
pub(crate) fn check_storable(input: &Value, additional_metadata: &Value) -> Result<(), RunError> {
    if !additional_metadata.is_object() {
        return Err(RunError::InvalidMetadata);
    }
    if contains_nul(input) {
        return Err(RunError::NulCharacter("input"));
    }
    if contains_nul(additional_metadata) {
        return Err(RunError::NulCharacter("additional metadata"));
    }
    Ok(())
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl RunRequest {
    /// A run of `workflow` with `input`, default everything else.
    pub fn new(workflow: impl Into<String>, input: Value) -> Self {
        Self {
            workflow: workflow.into(),
            input,
            additional_metadata: empty_object(),
            priority: None,
            key: None,
            run_at: None,
        }
    }
}

/// The priority a run gets: asked for, else the workflow's default, else 1.
pub fn effective_priority(asked: Option<u8>, workflow: &WorkflowVersion) -> Result<i16, RunError> {
    let priority = asked.or(workflow.definition.default_priority).unwrap_or(1);
    if (1..=3).contains(&priority) {
        Ok(i16::from(priority))
    } else {
        Err(RunError::InvalidPriority(priority))
    }
}

/// A request checked against its workflow and serialised, ready to insert.
pub(crate) struct Prepared {
    pub(crate) priority: i16,
    pub(crate) input: String,
    pub(crate) metadata: String,
    pub(crate) gates: Option<RunGates>,
}

/// Checks what the database would refuse and settles the priority, so a bad request fails
/// alone and before any transaction. Every start goes through here: a transaction of runs
/// (API bulk, events, crons), the group commit of single API runs and a task's `spawn`.
pub(crate) fn prepare(
    request: &RunRequest,
    workflow: &WorkflowVersion,
) -> Result<Prepared, RunError> {
    check_storable(&request.input, &request.additional_metadata)?;
    if let Some(run_at) = request.run_at
        && run_at < Utc::now()
    {
        return Err(RunError::PastRunAt(run_at));
    }
    Ok(Prepared {
        priority: effective_priority(request.priority, workflow)?,
        gates: run_gates(
            &workflow.definition,
            &request.input,
            &request.additional_metadata,
        )?,
        input: request.input.to_string(),
        metadata: request.additional_metadata.to_string(),
    })
}

/// Starts the runs in one transaction (all or nothing) and wakes the dispatchers; returns
/// their ids in order. Durable when this returns.
pub async fn start_runs(
    db: &Db,
    tenant_id: Uuid,
    requests: &[RunRequest],
) -> Result<Vec<Uuid>, RunError> {
    let mut tx = db.pool.begin().await?;
    let ids = start_runs_in(&mut tx, &db.quotas, tenant_id, requests, None).await?;
    tx.commit().await?;
    Ok(ids)
}

/// How many runs the tenant may still start now (`None`: no limit), under `defaults` unless it
/// has its own quota. With `lock`, holds the tenant's quota lock until the transaction ends, so
/// no other start can take the same room; without, the figure may be overtaken (for callers
/// that write several tenants in an order of their own, where the lock could deadlock).
pub(crate) async fn queued_room(
    tx: &mut sqlx::PgConnection,
    defaults: &Quotas,
    tenant_id: Uuid,
    lock: bool,
) -> Result<Option<(u64, u64)>, RunError> {
    let own = db::quota::tenant_quotas(&mut *tx, tenant_id)
        .await?
        .unwrap_or_default();
    let Some(max) = defaults.over(&own).max_queued_runs else {
        return Ok(None);
    };
    if lock {
        db::quota::tenant_quota_lock(&mut *tx, tenant_id).await?;
    }
    let unfinished = db::quota::tenant_unfinished_runs(&mut *tx, tenant_id).await?;
    Ok(Some((max, u64::try_from(unfinished).unwrap_or(0))))
}

/// Refuses `requests` unless every one of them fits the tenant's `max_queued_runs` (runs for
/// later count once due, so they are not counted here).
async fn check_queued_quota(
    tx: &mut sqlx::PgConnection,
    defaults: &Quotas,
    tenant_id: Uuid,
    requests: &[RunRequest],
    lock: bool,
) -> Result<(), RunError> {
    let asked = requests.iter().filter(|r| r.run_at.is_none()).count() as u64;
    if asked == 0 {
        return Ok(());
    }
    if let Some((max, unfinished)) = queued_room(tx, defaults, tenant_id, lock).await?
        && unfinished + asked > max
    {
        return Err(QuotaExceeded::QueuedRuns {
            max,
            unfinished,
            asked,
        }
        .into());
    }
    Ok(())
}

/// Starts the runs inside the caller's transaction, started by `trigger` (a cron or an event,
/// with its id) when given; wakes the dispatchers at commit. The tenant's `max_queued_runs`
/// (its own, else `quotas`) refuses them all or none; a cron's runs are checked without the
/// tenant's quota lock (the cron service writes tenants in its own order).
pub(crate) async fn start_runs_in(
    tx: &mut sqlx::PgConnection,
    quotas: &Quotas,
    tenant_id: Uuid,
    requests: &[RunRequest],
    trigger: Option<(&'static str, Uuid)>,
) -> Result<Vec<Uuid>, RunError> {
    let mut versions: std::collections::HashMap<&str, WorkflowVersion> = Default::default();
    for request in requests {
        if !versions.contains_key(request.workflow.as_str()) {
            let version = workflow_latest(&mut *tx, tenant_id, &request.workflow)
                .await?
                .ok_or_else(|| RunError::UnknownWorkflow(request.workflow.clone()))?;
            versions.insert(&request.workflow, version);
        }
    }
    let prepared = requests
        .iter()
        .map(|request| prepare(request, &versions[request.workflow.as_str()]))
        .collect::<Result<Vec<_>, _>>()?;
    let lock = !matches!(trigger, Some(("cron", _)));
    check_queued_quota(&mut *tx, quotas, tenant_id, requests, lock).await?;
    let runs: Vec<NewWorkflowRun<'_>> = requests
        .iter()
        .zip(&prepared)
        .map(|(request, prepared)| NewWorkflowRun {
            id: None,
            workflow: &versions[request.workflow.as_str()],
            input: &prepared.input,
            additional_metadata: &prepared.metadata,
            priority: prepared.priority,
            idempotency_key: request.key.as_deref(),
            parent: None,
            gates: prepared.gates.as_ref(),
            run_at: request.run_at,
            trigger,
        })
        .collect();
    let ids = workflow_runs_create(&mut *tx, tenant_id, &runs).await?;
    db::notify_work(&mut *tx, &[tenant_id]).await?;
    crate::metrics::runs_started(trigger.map_or("api", |t| t.0), ids.len());
    Ok(ids)
}

/// Starts one run.
pub async fn start_run(db: &Db, tenant_id: Uuid, request: &RunRequest) -> Result<Uuid, RunError> {
    let ids = start_runs(db, tenant_id, std::slice::from_ref(request)).await?;
    ids.first()
        .copied()
        .ok_or_else(|| RunError::NotStored("no run was created".into()))
}

/// A workflow run with its task runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run.
    pub run: WorkflowRunRow,
    /// Its task runs.
    pub tasks: Vec<TaskRunRow>,
    /// What each pending or queued task run waits for, by task run id.
    pub waiting_for: std::collections::HashMap<Uuid, WaitingFor>,
}

impl RunView {
    /// The task run named `name`.
    pub fn task(&self, name: &str) -> Option<&TaskRunRow> {
        self.tasks.iter().find(|t| t.task == name)
    }
}

/// A run and its tasks; `None` if this tenant has no such run.
pub async fn get_run(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<RunView>, RunError> {
    let mut conn = db.pool.acquire().await?;
    let Some(run) = workflow_run::workflow_run_get(&mut conn, tenant_id, id).await? else {
        return Ok(None);
    };
    let tasks = task_run::task_runs_of_run(&mut conn, tenant_id, id).await?;
    let mut waiting_for = std::collections::HashMap::new();
    for task in &tasks {
        match task.status {
            TaskStatus::Pending if run.status == RunStatus::Scheduled => {
                waiting_for.insert(task.id, WaitingFor::schedule())
            }
            TaskStatus::Pending => waiting_for.insert(task.id, WaitingFor::parents()),
            TaskStatus::Queued => waiting_for.insert(task.id, WaitingFor::slots()),
            TaskStatus::Running
            | TaskStatus::Succeeded
            | TaskStatus::Failed
            | TaskStatus::Cancelled => None,
        };
    }
    if tasks.iter().any(|t| t.status == TaskStatus::Queued) {
        let gated = super::admission::waiting_for(&mut conn, tenant_id, id).await?;
        waiting_for.extend(gated);
    }
    Ok(Some(RunView {
        run,
        tasks,
        waiting_for,
    }))
}

/// How a reschedule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rescheduled {
    /// Moved.
    Moved,
    /// No such run.
    NotFound,
    /// The run is no longer scheduled: it has this status.
    NotScheduled(RunStatus),
}

/// Moves a scheduled run to `run_at` (a time to come).
pub async fn reschedule_run(
    db: &Db,
    tenant_id: Uuid,
    id: Uuid,
    run_at: DateTime<Utc>,
) -> Result<Rescheduled, RunError> {
    if run_at < Utc::now() {
        return Err(RunError::PastRunAt(run_at));
    }
    let mut tx = db.pool.begin().await?;
    let status = workflow_run::workflow_run_reschedule(&mut tx, tenant_id, id, run_at).await?;
    tx.commit().await?;
    Ok(match status {
        None => Rescheduled::NotFound,
        Some(RunStatus::Scheduled) => Rescheduled::Moved,
        Some(status) => Rescheduled::NotScheduled(status),
    })
}

/// Cancels a run and its descendants; `false` if there is no such run.
pub async fn cancel_run(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<bool, RunError> {
    let mut tx = db.pool.begin().await?;
    let cancelled = workflow_run::workflow_run_cancel(&mut tx, tenant_id, id, "cancelled").await?;
    tx.commit().await?;
    if let Some(cancelled) = &cancelled {
        crate::metrics::runs_finished(RunStatus::Cancelled, cancelled.runs.len());
    }
    Ok(cancelled.is_some())
}

/// Replays a failed or cancelled run from its unfinished tasks; `false` if there is no such
/// run or it is not failed or cancelled.
pub async fn replay_run(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<bool, RunError> {
    let mut tx = db.pool.begin().await?;
    let replayed = workflow_run::workflow_run_replay(&mut tx, tenant_id, id).await?;
    if replayed {
        tx.commit().await?;
    }
    Ok(replayed)
}

/// A run as it is now, and whether waiting for it is over (it finished, or does not exist).
pub(crate) async fn look_at_run(
    db: &Db,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<(Option<RunView>, bool), RunError> {
    let view = get_run(db, tenant_id, id).await?;
    let done = view
        .as_ref()
        .is_none_or(|view| view.run.status.is_finished());
    Ok((view, done))
}

/// Waits until the run finishes (or `timeout` passes) and returns it as it is then; `None` if
/// there is no such run. For a process without a node (tools, tests): it listens on a
/// connection of its own for the call, where a node's waits share the node's listener
/// (`NodeHandle::wait_for_run`).
pub async fn wait_for_run(
    db: &Db,
    tenant_id: Uuid,
    id: Uuid,
    timeout: Duration,
) -> Result<Option<RunView>, RunError> {
    let mut listener = PgListener::connect_with(&db.pool).await?;
    listener.listen(db::CHANNEL_RUN_FINISHED).await?;
    let waiters = RunWaiters::new();
    let hear = async {
        loop {
            match listener.recv().await {
                Ok(notification) => waiters.finished(&db::parse_ids(notification.payload())),
                Err(_) => {
                    // Reconnecting: what was sent meanwhile is lost, so look again.
                    waiters.wake_all();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    tokio::select! {
        result = waiters.wait(id, timeout, || look_at_run(db, tenant_id, id)) => result,
        () = hear => unreachable!("the listener loop does not end"),
    }
}

/// A single run request waiting to be committed with others.
struct PendingStart {
    tenant_id: Uuid,
    request: RunRequest,
    reply: tokio::sync::oneshot::Sender<Result<Uuid, RunError>>,
}

/// Most single-run requests committed together.
const GROUP_COMMIT_MAX: usize = 1_000;

/// Starts single runs for many concurrent callers with shared commits: requests that arrive
/// while a commit is in flight are validated one by one, then written together in the next
/// transaction. Each caller is answered only after its run is durably committed, and a bad
/// request fails alone. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RunStarter {
    sender: tokio::sync::mpsc::Sender<PendingStart>,
}

impl std::fmt::Debug for PendingStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStart")
            .field("workflow", &self.request.workflow)
            .finish()
    }
}

impl RunStarter {
    /// A starter committing to `db`; its writer task lives as long as a clone of it does.
    pub fn new(db: Db) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::channel(GROUP_COMMIT_MAX * 4);
        tokio::spawn(group_commit(db, receiver));
        Self { sender }
    }

    /// Starts one run; returns once it is durably committed.
    pub async fn start(&self, tenant_id: Uuid, request: RunRequest) -> Result<Uuid, RunError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed = || RunError::ShuttingDown;
        self.sender
            .send(PendingStart {
                tenant_id,
                request,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn group_commit(db: Db, mut receiver: tokio::sync::mpsc::Receiver<PendingStart>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        commit_batch(&db, batch).await;
    }
}

/// Validates each request (unknown workflow, metadata, priority fail alone), then creates the
/// valid runs in one transaction and answers everyone.
async fn commit_batch(db: &Db, batch: Vec<PendingStart>) {
    let mut tx = match db.pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, &e),
    };
    let mut versions: std::collections::HashMap<(Uuid, String), Option<Arc<WorkflowVersion>>> =
        Default::default();
    let mut valid: Vec<(PendingStart, Prepared, Arc<WorkflowVersion>)> =
        Vec::with_capacity(batch.len());
    for pending in batch {
        let key = (pending.tenant_id, pending.request.workflow.clone());
        if !versions.contains_key(&key) {
            match workflow_latest(&mut tx, pending.tenant_id, &pending.request.workflow).await {
                Ok(version) => {
                    versions.insert(key.clone(), version.map(Arc::new));
                }
                Err(e) => {
                    let _ = pending.reply.send(Err(RunError::Db(e)));
                    continue;
                }
            }
        }
        let Some(workflow) = versions.get(&key).cloned().flatten() else {
            let _ = pending.reply.send(Err(RunError::UnknownWorkflow(key.1)));
            continue;
        };
        match prepare(&pending.request, &workflow) {
            Ok(prepared) => valid.push((pending, prepared, workflow)),
            Err(e) => {
                let _ = pending.reply.send(Err(e));
            }
        }
    }
    if valid.is_empty() {
        return;
    }
    let mut tenants: Vec<Uuid> = valid.iter().map(|v| v.0.tenant_id).collect();
    tenants.sort();
    tenants.dedup();
    let mut ids: std::collections::HashMap<usize, Uuid> = Default::default();
    let mut result: Result<(), RunError> = Ok(());
    // Requests past their tenant's `max_queued_runs`, each refused alone.
    let mut refused: std::collections::HashMap<usize, QuotaExceeded> = Default::default();
    // Tenants in order: two batches lock their quota locks in one order, never crosswise.
    for &tenant_id in &tenants {
        let mut members: Vec<usize> = (0..valid.len())
            .filter(|&i| valid[i].0.tenant_id == tenant_id)
            .collect();
        match queued_room(&mut tx, &db.quotas, tenant_id, true).await {
            Ok(None) => {}
            Ok(Some((max, unfinished))) => {
                let mut left = max.saturating_sub(unfinished);
                members.retain(|&i| {
                    if valid[i].0.request.run_at.is_some() {
                        true
                    } else if left > 0 {
                        left -= 1;
                        true
                    } else {
                        let exceeded = QuotaExceeded::QueuedRuns {
                            max,
                            unfinished,
                            asked: 1,
                        };
                        refused.insert(i, exceeded);
                        false
                    }
                });
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if members.is_empty() {
            continue;
        }
        let runs: Vec<NewWorkflowRun<'_>> = members
            .iter()
            .map(|&i| {
                let (pending, prepared, workflow) = &valid[i];
                NewWorkflowRun {
                    id: None,
                    workflow: workflow.as_ref(),
                    input: &prepared.input,
                    additional_metadata: &prepared.metadata,
                    priority: prepared.priority,
                    idempotency_key: pending.request.key.as_deref(),
                    parent: None,
                    gates: prepared.gates.as_ref(),
                    run_at: pending.request.run_at,
                    trigger: None,
                }
            })
            .collect();
        match workflow_runs_create(&mut tx, tenant_id, &runs).await {
            Ok(created) => ids.extend(members.into_iter().zip(created)),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    let committed = match result {
        Ok(()) => match db::notify_work(&mut tx, &tenants).await {
            Ok(()) => tx.commit().await.map_err(RunError::from),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match committed {
        Ok(()) => {
            crate::metrics::runs_started("api", ids.len());
            for (i, (pending, ..)) in valid.into_iter().enumerate() {
                let answer = match refused.remove(&i) {
                    Some(exceeded) => Err(exceeded.into()),
                    None => ids
                        .get(&i)
                        .copied()
                        .ok_or_else(|| RunError::NotStored("its run was not created".into())),
                };
                let _ = pending.reply.send(answer);
            }
        }
        Err(e) => fail_all(valid.into_iter().map(|v| v.0).collect(), &e),
    }
}

fn fail_all(batch: Vec<PendingStart>, error: &(impl std::fmt::Display + ?Sized)) {
    tracing::warn!("a batch of {} run starts failed: {error}", batch.len());
    for pending in batch {
        let _ = pending.reply.send(Err(RunError::NotStored(format!(
            "the batch failed: {error}"
        ))));
    }
}
