//! What a task's `spawn`, `wait` and `push-event` do on a node: child runs in Postgres.
//!
//! A parent waiting on children gives its slot back while it waits (within the instance
//! pool's headroom), so a full pool of waiting parents cannot starve their own children:
//! with slots = 1, the child runs in the slot its parent lent.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::slots::{Slot, SlotLender};
use super::spawns::SpawnBuffer;
use super::waiters::{RunWaiters, WAIT_POLL};
use crate::db::Db;
use crate::runtime::{HostCallError, RunInfo, SpawnRequest, TaskHost, Worker};

/// The permits an attempt holds: a node slot and its worker's slot (held, never read).
struct Permits {
    _capacity: Slot,
    _slot: OwnedSemaphorePermit,
}

/// What the hosts of a node's attempts share: the database, the run waiters, the node's slot
/// lender and the instance pool's headroom that waiting parents borrow. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HostServices {
    db: Db,
    waiters: RunWaiters,
    slots: Arc<SlotLender>,
    /// One permit per instance the pool holds beyond the node's slots: a parent waiting on
    /// children holds one of these instead of its slot.
    headroom: Arc<Semaphore>,
}

impl HostServices {
    pub(crate) fn new(
        db: Db,
        waiters: RunWaiters,
        slots: Arc<SlotLender>,
        headroom: usize,
    ) -> Self {
        Self {
            db,
            waiters,
            slots,
            headroom: Arc::new(Semaphore::new(headroom)),
        }
    }
}

/// The `TaskHost` of one attempt on a node.
pub(crate) struct DurableHost {
    services: HostServices,
    tenant_id: Uuid,
    /// The tenant's weight, to take a node slot again after a wait.
    weight: u32,
    worker: Worker,
    permits: Mutex<Option<Permits>>,
    children: Arc<SpawnBuffer>,
}

impl DurableHost {
    pub(crate) fn new(
        services: HostServices,
        run: &RunInfo,
        tenant_id: Uuid,
        weight: u32,
        worker: Worker,
        capacity: Slot,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let parent = run.task_run_id.parse().unwrap_or_default();
        let children = SpawnBuffer::new(services.db.clone(), tenant_id, parent, run.attempt);
        Self {
            services,
            tenant_id,
            weight,
            worker,
            permits: Mutex::new(Some(Permits {
                _capacity: capacity,
                _slot: slot,
            })),
            children,
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

    /// Commits the children spawned and not yet written; the attempt's result is sent only
    /// after this succeeds.
    pub(crate) async fn flush_spawns(&self) -> Result<(), HostCallError> {
        self.children.flush().await
    }
}

#[async_trait::async_trait]
impl TaskHost for DurableHost {
    async fn spawn(
        &self,
        parent: &RunInfo,
        request: SpawnRequest,
    ) -> Result<String, HostCallError> {
        let metadata = request
            .additional_metadata
            .clone()
            .unwrap_or_else(|| parent.metadata.clone());
        if parent.task_run_id.parse::<Uuid>().is_err() {
            return Err(HostCallError::refused("the parent has no task run id"));
        }
        self.children
            .spawn(request, metadata)
            .await
            .map(|id| id.to_string())
    }

    async fn wait(&self, _parent: &RunInfo, run_id: &str) -> Result<String, HostCallError> {
        let id: Uuid = run_id
            .parse()
            .map_err(|_| HostCallError::Refused(format!("`{run_id}` is not a run id")))?;
        // The child must be committed before anyone can run it.
        self.children.flush().await?;
        let id = self.children.resolve(id);
        let waiter = self.services.waiters.register(id);
        // While lent, this attempt holds one unit of the pool's headroom instead of a slot.
        let mut lent: Option<OwnedSemaphorePermit> = None;
        let result = loop {
            // Created before the check, so a notification in between is not lost.
            let notified = waiter.notified();
            match self.children.result(id).await {
                Err(e) => break Err(e),
                Ok(Some(result)) => {
                    break result
                        .map(|output| output.to_string())
                        .map_err(HostCallError::ChildFailed);
                }
                Ok(None) => {}
            }
            if lent.is_none()
                && let Ok(headroom) = self.services.headroom.clone().try_acquire_owned()
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
        drop(waiter);
        if let Some(headroom) = lent {
            // Take a slot again before the guest resumes.
            let capacity = self
                .services
                .slots
                .acquire(self.tenant_id, self.weight)
                .await;
            let slot = self.worker.acquire_slot().await;
            self.put_permits(Permits {
                _capacity: capacity,
                _slot: slot,
            });
            drop(headroom);
        }
        result
    }

    async fn push_event(
        &self,
        _parent: &RunInfo,
        key: &str,
        payload: &str,
    ) -> Result<(), HostCallError> {
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| HostCallError::Refused(format!("the event payload is not JSON: {e}")))?;
        super::events::push_event(&self.services.db, self.tenant_id, key, &payload)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                super::RunError::Db(e) => HostCallError::unavailable("push-event", e),
                refused => HostCallError::Refused(refused.to_string()),
            })
    }
}
