//! The worker registry: the module instance pools (workers) this node has loaded, one per
//! tenant and module digest, each loaded from the database on first use or ahead of its runs
//! when the module is deployed.
//!
//! Two tenants that deploy the same component share its compiled code but not its slots. A
//! module that is still loading, or whose slots are all taken, is "unclaimable": the dispatcher
//! leaves its runs to nodes that can start them sooner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use crate::db::{Db, module};
use crate::runtime::{Runtime, Worker};

/// A worker once loaded, or why it could not be (kept: loading again would fail again).
type WorkerCell = Arc<OnceCell<Result<Worker, String>>>;

/// Slots of one worker on a node, for `GET /workers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// The tenant whose runs it executes.
    pub tenant_id: Uuid,
    /// Module digest.
    pub module: String,
    /// Slots in all.
    pub slots: u32,
    /// Slots in use.
    pub in_use: u32,
}

/// The workers of one node.
pub(crate) struct WorkerRegistry {
    db: Db,
    runtime: Runtime,
    /// Slots of a module whose manifest names none.
    default_slots: u32,
    /// Woken when a worker has loaded: its runs were left unclaimed meanwhile.
    loaded: Arc<Notify>,
    workers: Mutex<HashMap<(Uuid, String), WorkerCell>>,
}

impl WorkerRegistry {
    /// An empty registry loading modules from `db` into `runtime`; `loaded` is notified each
    /// time a module has loaded.
    pub(crate) fn new(db: Db, runtime: Runtime, default_slots: u32, loaded: Arc<Notify>) -> Self {
        Self {
            db,
            runtime,
            default_slots,
            loaded,
            workers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Uuid, String), WorkerCell>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker of module `digest` of `tenant_id`, loading it from the database on first
    /// use; callers asking meanwhile wait for the same load.
    pub(crate) async fn worker(&self, tenant_id: Uuid, digest: &str) -> Result<Worker, String> {
        let cell = self
            .lock()
            .entry((tenant_id, digest.to_owned()))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let mut conn = self.db.pool.acquire().await.map_err(|e| e.to_string())?;
            let bytes = module::module_bytes(&mut conn, tenant_id, digest)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("module {digest} is not stored"))?;
            let engine = self.runtime.engine_fingerprint();
            let sealed = module::module_artifact(&mut conn, tenant_id, digest, &engine)
                .await
                .map_err(|e| e.to_string())?;
            drop(conn);
            let loaded = self
                .runtime
                .load_shared(&bytes, sealed)
                .await
                .map_err(|e| e.to_string())?;
            let slots = loaded.manifest.slots.unwrap_or(self.default_slots);
            self.loaded.notify_one();
            Ok(Worker::new(self.runtime.clone(), loaded, slots))
        })
        .await
        .clone()
    }

    /// The loaded workers with their slots.
    pub(crate) fn stats(&self) -> Vec<WorkerStats> {
        self.lock()
            .iter()
            .filter_map(|((tenant_id, module), cell)| match cell.get() {
                Some(Ok(worker)) => Some(WorkerStats {
                    tenant_id: *tenant_id,
                    module: module.clone(),
                    slots: worker.total_slots(),
                    in_use: worker.slots_in_use(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Modules this node should not claim runs of now, as `tenant_id:digest`: those whose
    /// slots are all taken, and those still loading (compiling), whose runs another node that
    /// has them can start sooner.
    pub(crate) fn unclaimable(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, cell)| match cell.get() {
                Some(Ok(worker)) => worker.is_full(),
                Some(Err(_)) => false,
                None => true,
            })
            .map(|((tenant, digest), _)| format!("{tenant}:{digest}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use sqlx::PgPool;

    use super::*;
    use crate::runtime::RuntimeConfig;

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn a_module_that_cannot_load_says_why_and_blocks_nothing(pool: PgPool) {
        let runtime = Runtime::new(RuntimeConfig::default()).expect("a runtime");
        let loaded = Arc::new(Notify::new());
        let registry = WorkerRegistry::new(Db::new(pool), runtime, 4, loaded.clone());
        let tenant = Uuid::now_v7();
        let error = registry
            .worker(tenant, "feedbeef")
            .await
            .expect_err("nothing is stored under that digest");
        assert_eq!(error, "module feedbeef is not stored");
        // The failure is kept: asking again answers the same without loading again.
        assert_eq!(registry.worker(tenant, "feedbeef").await.err(), Some(error));
        assert!(registry.stats().is_empty(), "no worker was loaded");
        assert!(
            registry.unclaimable().is_empty(),
            "a module that failed to load does not hold its runs back (they fail, and say why)"
        );
    }
}
