//! A worker: one module's instance pool on this node, with a fixed number of slots.
//!
//! The slots bound how many attempts of the module run at once; the runtime's instance
//! semaphore bounds all modules together, below the pooling allocator's capacity.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Attempt, AttemptReport, LoadedModule, Runtime, TaskFailure};

/// The instance pool of one module on this node.
#[derive(Clone)]
pub struct Worker {
    runtime: Runtime,
    module: Arc<LoadedModule>,
    slots: Arc<Semaphore>,
    total_slots: u32,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("module", &self.module.digest)
            .field("slots", &self.total_slots)
            .field("in_use", &self.slots_in_use())
            .finish()
    }
}

impl Worker {
    /// A worker running at most `slots` attempts of `module` at once.
    pub fn new(runtime: Runtime, module: Arc<LoadedModule>, slots: u32) -> Self {
        let total_slots = slots.max(1);
        Self {
            runtime,
            module,
            slots: Arc::new(Semaphore::new(total_slots as usize)),
            total_slots,
        }
    }

    /// The module this worker runs.
    pub fn module(&self) -> &Arc<LoadedModule> {
        &self.module
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Slots in all.
    pub fn total_slots(&self) -> u32 {
        self.total_slots
    }

    /// Slots running an attempt now.
    pub fn slots_in_use(&self) -> u32 {
        self.total_slots - self.slots.available_permits() as u32
    }

    /// Takes up to `wanted` free slots without waiting (for a dispatcher claiming work).
    pub fn try_acquire_slots(&self, wanted: u32) -> Vec<OwnedSemaphorePermit> {
        (0..wanted)
            .map_while(|_| self.slots.clone().try_acquire_owned().ok())
            .collect()
    }

    /// Waits for a free slot.
    pub async fn acquire_slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring cannot fail.
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("worker slot semaphores are never closed"),
        }
    }

    /// Whether no slot is free right now.
    pub fn is_full(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// Runs `attempt` in a slot it already holds; the slot frees when the attempt ends.
    pub async fn execute_in(&self, _slot: OwnedSemaphorePermit, attempt: Attempt) -> AttemptReport {
        self.runtime.execute(&self.module, attempt).await
    }

    /// Waits for a free slot (or cancellation), then runs `attempt`.
    pub async fn run(&self, attempt: Attempt) -> AttemptReport {
        let slot = tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot,
            () = attempt.cancel.cancelled() => return cancelled_before_start(),
        };
        match slot {
            Ok(slot) => self.execute_in(slot, attempt).await,
            Err(_) => cancelled_before_start(),
        }
    }
}

fn cancelled_before_start() -> AttemptReport {
    AttemptReport {
        outcome: Err(TaskFailure::Cancelled),
        logs: vec![],
        fuel_used: None,
        memory_bytes: 0,
        egress_requests: 0,
        elapsed: std::time::Duration::ZERO,
    }
}
