//! What a task's `spawn`, `wait` and `push-event` do on a node: child runs in Postgres.
//!
//! A parent waiting on children gives its slot back while it waits (within the instance
//! pool's headroom), so a full pool of waiting parents cannot starve their own children:
//! with slots = 1, the child runs in the slot its parent lent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::node::NodeInner;
use super::runs::effective_priority;
use crate::db::module::workflow_latest;
use crate::db::workflow_run::{NewWorkflowRun, workflow_run_result, workflow_runs_create};
use crate::db::{self};
use crate::runtime::{RunInfo, SpawnRequest, TaskHost, Worker};

/// How often a waiting parent re-reads its child's state if no notification arrives.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// The permits an attempt holds: node capacity and its worker's slot (held, never read).
struct Permits {
    _capacity: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

/// The `TaskHost` of one attempt on a node.
pub(crate) struct DurableHost {
    node: Arc<NodeInner>,
    tenant_id: Uuid,
    worker: Worker,
    permits: Mutex<Option<Permits>>,
}

impl DurableHost {
    pub(crate) fn new(
        node: Arc<NodeInner>,
        tenant_id: Uuid,
        worker: Worker,
        capacity: OwnedSemaphorePermit,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            node,
            tenant_id,
            worker,
            permits: Mutex::new(Some(Permits {
                _capacity: capacity,
                _slot: slot,
            })),
        }
    }

    fn take_permits(&self) -> Option<Permits> {
        self.permits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn put_permits(&self, permits: Permits) {
        *self.permits.lock().unwrap_or_else(|p| p.into_inner()) = Some(permits);
    }

    async fn run_result(
        &self,
        id: Uuid,
    ) -> Result<Option<Result<serde_json::Value, String>>, String> {
        let mut conn = self
            .node
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        workflow_run_result(&mut conn, self.tenant_id, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("unknown run `{id}`"))
    }
}

fn task_run_id(parent: &RunInfo) -> Result<Uuid, String> {
    parent
        .task_run_id
        .parse()
        .map_err(|_| "the parent has no task run id".to_owned())
}

#[async_trait::async_trait]
impl TaskHost for DurableHost {
    async fn spawn(&self, parent: &RunInfo, request: SpawnRequest) -> Result<String, String> {
        serde_json::from_str::<serde::de::IgnoredAny>(&request.input)
            .map_err(|e| format!("the child's input is not JSON: {e}"))?;
        let metadata = request
            .additional_metadata
            .unwrap_or_else(|| parent.metadata.clone());
        if !serde_json::from_str::<serde_json::Value>(&metadata).is_ok_and(|m| m.is_object()) {
            return Err("the child's additional metadata must be a JSON object".into());
        }
        let parent_id = task_run_id(parent)?;
        let created = async {
            let mut tx = self.node.db.pool.begin().await?;
            let Some(workflow) =
                workflow_latest(&mut tx, self.tenant_id, &request.workflow).await?
            else {
                return Ok(Err(format!("unknown workflow `{}`", request.workflow)));
            };
            let priority = match effective_priority(request.priority, &workflow) {
                Ok(priority) => priority,
                Err(e) => return Ok(Err(e.to_string())),
            };
            let run = NewWorkflowRun {
                workflow: &workflow,
                input: &request.input,
                additional_metadata: &metadata,
                priority,
                idempotency_key: None,
                parent: Some((parent_id, &request.key)),
            };
            let ids = workflow_runs_create(&mut tx, self.tenant_id, &[run]).await?;
            db::notify_work(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(ids[0].to_string()))
        };
        created.await.map_err(|e| format!("spawn failed: {e}"))?
    }

    async fn wait(&self, _parent: &RunInfo, run_id: &str) -> Result<String, String> {
        let id: Uuid = run_id
            .parse()
            .map_err(|_| format!("`{run_id}` is not a run id"))?;
        let notify = self.node.run_waiter(id);
        // While lent, this attempt holds one unit of the pool's headroom instead of a slot.
        let mut lent: Option<OwnedSemaphorePermit> = None;
        let result = loop {
            // Created before the check, so a notification in between is not lost.
            let notified = notify.notified();
            match self.run_result(id).await {
                Err(e) => break Err(e),
                Ok(Some(result)) => break result.map(|output| output.to_string()),
                Ok(None) => {}
            }
            if lent.is_none()
                && let Ok(headroom) = self.node.wait_releases.clone().try_acquire_owned()
            {
                match self.take_permits() {
                    Some(permits) => {
                        drop(permits);
                        lent = Some(headroom);
                    }
                    None => drop(headroom),
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(WAIT_POLL) => {}
            }
        };
        self.node.forget_waiter(id);
        if let Some(headroom) = lent {
            // Take a slot again before the guest resumes.
            let capacity = self
                .node
                .capacity
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let slot = self.worker.acquire_slot().await;
            self.put_permits(Permits {
                _capacity: capacity,
                _slot: slot,
            });
            drop(headroom);
        }
        result
    }

    async fn push_event(&self, _parent: &RunInfo, key: &str, payload: &str) -> Result<(), String> {
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| format!("the event payload is not JSON: {e}"))?;
        super::events::push_event(&self.node.db, self.tenant_id, key, &payload)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
