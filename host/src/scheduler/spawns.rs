//! Child runs of one attempt: spawns buffered and committed together, and the children's
//! results read together.
//!
//! A `spawn` is validated at once (unknown workflow, bad input or metadata fail the call) and
//! answered with the child's id, but the child is written with the others: when the attempt
//! waits for a child, after `SPAWN_LINGER`, once `SPAWN_BATCH` are buffered, and before the
//! attempt's own result is sent. A fan-out of thousands of children then costs a few commits
//! instead of one each.
//!
//! Idempotency across the parent's retries: the first attempt of a task run has no earlier
//! children, so its ids are new; a later attempt first reads the children its predecessors
//! committed (by spawn key) and answers with their ids. Should a stale attempt of a lost lease
//! commit a key in between, the insert keeps the stored child and this attempt's id becomes an
//! alias of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::runs::{RunRequest, prepare};
use crate::db::module::{WorkflowVersion, workflow_latest};
use crate::db::workflow_run::{
    NewWorkflowRun, workflow_run_children_by_key, workflow_runs_create, workflow_runs_results,
};
use crate::db::{self, Db};
use crate::flow::RunGates;
use crate::runtime::{HostCallError, SpawnRequest};

/// How long a spawn may wait in the buffer for others before it is committed.
const SPAWN_LINGER: Duration = Duration::from_millis(2);
/// Most children committed in one transaction.
const SPAWN_BATCH: usize = 1_000;

/// A validated child, not yet committed.
struct Pending {
    id: Uuid,
    workflow: String,
    input: String,
    metadata: String,
    priority: i16,
    key: String,
    gates: Option<RunGates>,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    versions: HashMap<String, WorkflowVersion>,
    /// Children committed by earlier attempts, by spawn key (loaded on a retry's first spawn).
    earlier: Option<HashMap<String, Uuid>>,
    /// Ids answered to the guest that turned out to name a child committed under another id.
    aliases: HashMap<Uuid, Uuid>,
    /// Children of this attempt whose results are not known yet.
    open: Vec<Uuid>,
    /// Results of finished children.
    results: HashMap<Uuid, Result<Value, String>>,
    linger_armed: bool,
}

/// The spawned children of one attempt.
pub(crate) struct SpawnBuffer {
    db: Db,
    tenant_id: Uuid,
    parent: Uuid,
    attempt: u32,
    state: Mutex<State>,
    /// Held for a whole flush, so a flush that returns has committed everything before it.
    flushing: tokio::sync::Mutex<()>,
}

impl SpawnBuffer {
    pub(crate) fn new(db: Db, tenant_id: Uuid, parent: Uuid, attempt: u32) -> Arc<Self> {
        Arc::new(Self {
            db,
            tenant_id,
            parent,
            attempt,
            state: Mutex::new(State::default()),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates a child and buffers it; returns its id.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        request: SpawnRequest,
        metadata: String,
    ) -> Result<Uuid, HostCallError> {
        let child = RunRequest {
            workflow: request.workflow.clone(),
            input: serde_json::from_str(&request.input).map_err(|e| {
                HostCallError::Refused(format!("the child's input is not JSON: {e}"))
            })?,
            additional_metadata: serde_json::from_str::<Value>(&metadata)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    HostCallError::refused("the child's additional metadata must be a JSON object")
                })?,
            priority: request.priority,
            key: None,
            run_at: None,
        };
        self.load_context(&request.workflow).await?;
        let (id, full, arm) = {
            let mut state = self.state();
            let Some(workflow) = state.versions.get(&request.workflow) else {
                return Err(HostCallError::Refused(format!(
                    "unknown workflow `{}`",
                    request.workflow
                )));
            };
            let prepared =
                prepare(&child, workflow).map_err(|e| HostCallError::Refused(e.to_string()))?;
            if let Some(id) = state.earlier.as_ref().and_then(|e| e.get(&request.key)) {
                // Committed by an earlier attempt: the same child again.
                return Ok(*id);
            }
            if let Some(pending) = state.pending.iter().find(|p| p.key == request.key) {
                return Ok(pending.id);
            }
            let id = Uuid::now_v7();
            state.pending.push(Pending {
                id,
                workflow: request.workflow,
                input: prepared.input,
                metadata: prepared.metadata,
                priority: prepared.priority,
                key: request.key,
                gates: prepared.gates,
            });
            state.open.push(id);
            let arm = !state.linger_armed;
            state.linger_armed = true;
            (id, state.pending.len() >= SPAWN_BATCH, arm)
        };
        if full {
            self.flush().await?;
        } else if arm {
            let buffer: Weak<Self> = Arc::downgrade(self);
            // Bounded: one sleep and one flush; it does nothing once the attempt is over.
            tokio::spawn(async move {
                tokio::time::sleep(SPAWN_LINGER).await;
                if let Some(buffer) = buffer.upgrade()
                    && let Err(e) = buffer.flush().await
                {
                    tracing::warn!("committing spawned children failed, will retry: {e}");
                }
            });
        }
        Ok(id)
    }

    /// Reads what a spawn needs from the database once per attempt: the workflow's newest
    /// version, and on a retry the children earlier attempts committed.
    async fn load_context(&self, workflow: &str) -> Result<(), HostCallError> {
        let (need_version, need_earlier) = {
            let state = self.state();
            (
                !state.versions.contains_key(workflow),
                self.attempt > 1 && state.earlier.is_none(),
            )
        };
        if !need_version && !need_earlier {
            return Ok(());
        }
        let mut conn = self
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| HostCallError::unavailable("spawn", e))?;
        if need_version {
            let version = workflow_latest(&mut conn, self.tenant_id, workflow)
                .await
                .map_err(|e| HostCallError::unavailable("spawn", e))?
                .ok_or_else(|| HostCallError::Refused(format!("unknown workflow `{workflow}`")))?;
            self.state().versions.insert(workflow.to_owned(), version);
        }
        if need_earlier {
            let earlier = workflow_run_children_by_key(&mut conn, self.tenant_id, self.parent)
                .await
                .map_err(|e| HostCallError::unavailable("spawn", e))?;
            let mut state = self.state();
            state.open.extend(earlier.values().copied());
            state.earlier = Some(earlier);
        }
        Ok(())
    }

    /// Commits every buffered child. On failure they stay buffered for the next flush.
    pub(crate) async fn flush(&self) -> Result<(), HostCallError> {
        let _flushing = self.flushing.lock().await;
        let (pending, versions) = {
            let mut state = self.state();
            state.linger_armed = false;
            if state.pending.is_empty() {
                return Ok(());
            }
            (std::mem::take(&mut state.pending), state.versions.clone())
        };
        match self.write(&pending, &versions).await {
            Ok(stored) => {
                let mut state = self.state();
                for (child, stored) in pending.iter().zip(stored) {
                    if stored != child.id {
                        state.aliases.insert(child.id, stored);
                        state.open.push(stored);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let mut state = self.state();
                let newer = std::mem::take(&mut state.pending);
                state.pending = pending;
                state.pending.extend(newer);
                Err(HostCallError::unavailable("spawn", e))
            }
        }
    }

    async fn write(
        &self,
        pending: &[Pending],
        versions: &HashMap<String, WorkflowVersion>,
    ) -> Result<Vec<Uuid>, String> {
        // Every buffered child's workflow was looked up when it was spawned; one missing here
        // would shift the ids returned below, so it is a hard error, never a silent skip.
        let runs: Vec<NewWorkflowRun<'_>> = pending
            .iter()
            .map(|child| {
                Ok(NewWorkflowRun {
                    id: Some(child.id),
                    workflow: versions.get(&child.workflow).ok_or_else(|| {
                        format!("workflow `{}` was not looked up", child.workflow)
                    })?,
                    input: &child.input,
                    additional_metadata: &child.metadata,
                    priority: child.priority,
                    idempotency_key: None,
                    parent: Some((self.parent, &child.key)),
                    gates: child.gates.as_ref(),
                    run_at: None,
                    trigger: None,
                })
            })
            .collect::<Result<_, String>>()?;
        let written = async {
            let mut tx = self.db.pool.begin().await?;
            let ids = workflow_runs_create(&mut tx, self.tenant_id, &runs).await?;
            db::notify_work(&mut tx, &[self.tenant_id]).await?;
            tx.commit().await?;
            crate::metrics::runs_started("spawn", ids.len());
            Ok::<_, sqlx::Error>(ids)
        };
        written.await.map_err(|e| e.to_string())
    }

    /// The stored id of child `id` (an alias resolved).
    pub(crate) fn resolve(&self, id: Uuid) -> Uuid {
        self.state().aliases.get(&id).copied().unwrap_or(id)
    }

    /// The result of run `id` if it finished, read together with every other open child of
    /// this attempt, so a parent waiting for thousands of children reads them in a few
    /// statements. `Ok(None)` while it runs; an error if there is no such run.
    pub(crate) async fn result(
        &self,
        id: Uuid,
    ) -> Result<Option<Result<Value, String>>, HostCallError> {
        let open: Vec<Uuid> = {
            let state = self.state();
            if let Some(result) = state.results.get(&id) {
                return Ok(Some(result.clone()));
            }
            let mut open: Vec<Uuid> = state
                .open
                .iter()
                .copied()
                .filter(|child| !state.results.contains_key(child))
                .take(SPAWN_BATCH)
                .collect();
            if !open.contains(&id) {
                open.push(id);
            }
            open
        };
        let read = async {
            let mut conn = self.db.pool.acquire().await?;
            workflow_runs_results(&mut conn, self.tenant_id, &open).await
        };
        let found = read
            .await
            .map_err(|e| HostCallError::unavailable("wait", e))?;
        if !found.iter().any(|(run, _)| *run == id) {
            return Err(HostCallError::Refused(format!("unknown run `{id}`")));
        }
        let mut state = self.state();
        for (run, result) in found {
            if let Some(result) = result {
                state.results.insert(run, result);
            }
        }
        let done: std::collections::HashSet<Uuid> = state.results.keys().copied().collect();
        state.open.retain(|child| !done.contains(child));
        Ok(state.results.get(&id).cloned())
    }
}
