//! A node's scheduler: the dispatcher that claims work for free slots, the attempts it runs,
//! the completer that writes results in batches, and the heartbeat, reaper and listener loops.
//!
//! Postgres is the only coordination point. The node keeps in memory only what is in flight;
//! a node that dies loses nothing but its leases, which the reaper of any node requeues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use uuid::Uuid;

use super::completer::{AfterWrite, Completer, Results};
use super::host::{DurableHost, HostServices};
use super::leases::{LeaseSignals, LeaseTable};
use super::reaper::{self, ReaperConfig};
use super::slots::SlotLender;
use super::waiters::RunWaiters;
use super::workers::{WorkerRegistry, WorkerStats};
use crate::db::task_run::{
    AttemptOutcome, ClaimParams, ClaimedTask, Completion, CompletionEffects, task_run_claim,
};
use crate::db::usage::AttemptUsage;
use crate::db::{self, Db};
use crate::egress::EgressPolicy;
use crate::runtime::{Attempt, CpuShare, Limits, RunInfo, Runtime, TaskFailure};
use crate::secrets::{SecretBox, TaskSecrets};

/// How a node schedules.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (lease owner).
    pub node_id: Uuid,
    /// Task runs this node executes at once, over all modules.
    pub capacity: u32,
    /// Most of those one tenant may hold; `None`: all but an eighth (so with 8 or more, some
    /// stay free for the other tenants). See `scheduler::slots`.
    pub tenant_slots: Option<u32>,
    /// Slots of a module whose manifest does not ask for a number.
    pub default_slots: u32,
    /// Lease length; a node silent this long loses its runs.
    pub lease: Duration,
    /// Heartbeat period (well under `lease`).
    pub heartbeat: Duration,
    /// Reaper period: expired leases and schedule timeouts.
    pub reap_interval: Duration,
    /// Claim poll when no notification arrives (the fallback to LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Most task runs claimed per statement: the local queue of leased runs waiting for a
    /// slot (refilled when fewer than `capacity` wait).
    pub claim_batch: u32,
    /// Most completions written per transaction.
    pub completion_batch: usize,
    /// Most finished attempts whose results may wait for the database at once. The node
    /// holds at most `claim_batch + 2 × capacity + max_unwritten` leases; past that it stops
    /// claiming until results are written, so a slow database makes it claim less, never more.
    pub max_unwritten: usize,
    /// Most rows one maintenance statement (reaping, schedule timeouts) touches.
    pub maintenance_batch: i64,
    /// How often the vacuum service checks the hot tables' dead weight (`None`: never; leave
    /// it to autovacuum). See `scheduler::vacuum`.
    pub vacuum_check: Option<Duration>,
    /// How finished runs are deleted once past their tenant's retention (`None`: never).
    pub retention: Option<super::RetentionConfig>,
    /// Losses of a lease after which a task fails instead of being requeued.
    pub max_lost_leases: i32,
    /// How long a graceful shutdown lets attempts finish before handing them back.
    pub shutdown_grace: Duration,
    /// Limits of every attempt (the execution timeout comes from the task).
    pub limits: Limits,
    /// Opens tenants' secrets for their tasks; `None`: tasks get no secrets.
    pub secrets: Option<SecretBox>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: Uuid::new_v4(),
            capacity: 64,
            tenant_slots: None,
            default_slots: 32,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            reap_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            claim_batch: 100,
            completion_batch: 1_000,
            max_unwritten: 1_000,
            maintenance_batch: 5_000,
            vacuum_check: Some(Duration::from_secs(1)),
            retention: Some(super::RetentionConfig::default()),
            max_lost_leases: 5,
            shutdown_grace: Duration::from_secs(30),
            limits: Limits::default(),
            secrets: None,
        }
    }
}

impl NodeConfig {
    /// Claimed task runs the dispatcher keeps waiting for a slot (at most).
    fn claim_target(&self) -> usize {
        self.claim_batch.max(self.capacity).max(1) as usize
    }

    /// Claimed task runs waiting for a slot below which the dispatcher claims more. Refill at
    /// half the batch: a claim of 100 takes a few milliseconds, in which a busy node runs far
    /// more than `capacity` no-op tasks; waiting for the queue to drain idles it.
    fn low_water(&self) -> usize {
        (self.capacity as usize).max(self.claim_target() / 2).max(1)
    }

    /// Most slots one tenant may hold on this node.
    pub fn tenant_slot_max(&self) -> usize {
        let capacity = self.capacity.max(1);
        let reserved = capacity / 8;
        self.tenant_slots
            .unwrap_or(capacity - reserved)
            .clamp(1, capacity) as usize
    }

    /// Most leases held at once: waiting for a slot, executing, or waiting to be written;
    /// the last `capacity` of them only by claims for quiet tenants (see `dispatch`).
    pub fn max_held(&self) -> usize {
        self.claim_target() + 2 * self.capacity.max(1) as usize + self.max_unwritten.max(1)
    }

    /// What the heartbeat and the reaper run by.
    fn reaper(&self) -> ReaperConfig {
        ReaperConfig {
            node_id: self.node_id,
            lease: self.lease,
            heartbeat: self.heartbeat,
            reap_interval: self.reap_interval,
            max_lost_leases: self.max_lost_leases,
            batch: self.maintenance_batch,
        }
    }
}

/// What a node keeps of a tenant's settings.
#[derive(Debug)]
struct TenantSettings {
    /// Where its tasks may send HTTP requests.
    egress: Arc<EgressPolicy>,
    /// Its share of slots and guest CPU when the node is saturated (≥ 1).
    weight: u32,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            egress: Arc::default(),
            weight: 1,
        }
    }
}

/// A secret opened for a tenant's tasks.
struct OpenedSecret {
    name: String,
    value: String,
    /// `None`: every workflow may read it.
    workflows: Option<Vec<String>>,
}

struct NodeInner {
    db: Db,
    config: NodeConfig,
    /// Node-wide execution slots, lent fairly between tenants.
    slots: Arc<SlotLender>,
    /// What every attempt's `DurableHost` shares.
    hosts: HostServices,
    /// The modules loaded here, one instance pool each.
    workers: WorkerRegistry,
    /// Each tenant's settings (egress policy, weight), dropped when they change
    /// (`CHANNEL_TENANT`).
    tenants: Mutex<HashMap<Uuid, Arc<TenantSettings>>>,
    /// Each tenant's opened secrets, dropped when they change (`CHANNEL_SECRETS`).
    secrets: Mutex<HashMap<Uuid, Arc<Vec<OpenedSecret>>>>,
    /// The tenants with their own cap on executing task runs, claimed apart
    /// (`claim_capped`); `None` until read, and again when a tenant's settings change.
    capped: Mutex<Option<Arc<Vec<Uuid>>>>,
    leases: Arc<LeaseTable>,
    /// Who waits for which run, woken by this node's listener.
    waiters: RunWaiters,
    work: Arc<Notify>,
    /// Wakes the quiet-tenant claimer: work was announced for a tenant with few leases here
    /// (or for tenants unknown).
    urgent: Notify,
    /// Set when admission may have something to do (a gated run waits, a place was freed).
    gated: AtomicBool,
    /// Wakes the schedule service: a run was scheduled or rescheduled.
    scheduled: Arc<Notify>,
    /// Results for the completer; bounded by `max_held` (every result is a held lease).
    results: Results,
    /// Stops claiming.
    stopping: CancellationToken,
    attempts: TaskTracker,
    /// Modules loading ahead of their runs (`warm`).
    warming: TaskTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running node: dispatcher, workers and background loops.
pub struct Node {
    inner: Arc<NodeInner>,
    background: JoinSet<()>,
    completer: Completer,
    stop_loops: CancellationToken,
}

impl Node {
    /// Starts a node on `db` with `runtime`.
    pub async fn start(db: Db, runtime: Runtime, config: NodeConfig) -> Result<Self, sqlx::Error> {
        let leases = Arc::new(LeaseTable::default());
        let (results, inbox) = Completer::channel(config.max_held());
        let headroom = (runtime.free_instances() as u32).saturating_sub(config.capacity);
        let slots = SlotLender::new(config.capacity.max(1) as usize, config.tenant_slot_max());
        let waiters = RunWaiters::new();
        let work = Arc::new(Notify::new());
        let inner = Arc::new(NodeInner {
            // Its runs were left unclaimed while a module loaded: look for them then.
            workers: WorkerRegistry::new(
                db.clone(),
                runtime.clone(),
                config.default_slots,
                work.clone(),
            ),
            hosts: HostServices::new(
                db.clone(),
                waiters.clone(),
                slots.clone(),
                headroom as usize,
            ),
            slots,
            db,
            config,
            tenants: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            capped: Mutex::new(None),
            leases: leases.clone(),
            waiters,
            work,
            urgent: Notify::new(),
            // Look once at start: gated runs may be waiting already.
            gated: AtomicBool::new(true),
            scheduled: Arc::new(Notify::new()),
            results,
            stopping: CancellationToken::new(),
            attempts: TaskTracker::new(),
            warming: TaskTracker::new(),
        });
        let completer = Completer::start(
            inner.db.clone(),
            leases.clone(),
            Arc::new(AfterWriteOnNode(Arc::downgrade(&inner))),
            inbox,
            inner.config.completion_batch,
        );
        let mut listener = PgListener::connect_with(&inner.db.pool).await?;
        listener
            .listen_all([
                db::CHANNEL_WORK,
                db::CHANNEL_CANCEL,
                db::CHANNEL_RUN_FINISHED,
                db::CHANNEL_GATED,
                db::CHANNEL_SCHEDULED,
                db::CHANNEL_MODULE_DEPLOYED,
                db::CHANNEL_TENANT,
                db::CHANNEL_SECRETS,
            ])
            .await?;
        let stop_loops = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(listen(inner.clone(), listener, stop_loops.clone()));
        background.spawn(dispatch(inner.clone()));
        background.spawn(claim_for_quiet_tenants(inner.clone()));
        let reaper = inner.config.reaper();
        background.spawn(reaper::heartbeat(
            inner.db.clone(),
            inner.leases.clone(),
            reaper,
            stop_loops.clone(),
        ));
        background.spawn(reaper::reap(
            inner.db.clone(),
            inner.work.clone(),
            reaper,
            stop_loops.clone(),
        ));
        background.spawn(super::schedule::run(
            inner.db.clone(),
            inner.scheduled.clone(),
            inner.config.poll_interval,
            stop_loops.clone(),
        ));
        if let Some(interval) = inner.config.vacuum_check {
            background.spawn(super::vacuum::run(
                inner.db.clone(),
                interval,
                stop_loops.clone(),
            ));
        }
        if let Some(retention) = inner.config.retention {
            background.spawn(super::retention::run(
                inner.db.clone(),
                retention,
                stop_loops.clone(),
            ));
        }
        Ok(Self {
            inner,
            background,
            completer,
            stop_loops,
        })
    }

    /// This node's id.
    pub fn id(&self) -> Uuid {
        self.inner.config.node_id
    }

    /// Attempts executing now (claimed task runs still waiting for a slot excluded).
    pub fn running(&self) -> usize {
        self.inner.leases.counts().executing
    }

    /// Leases this node holds: claimed, executing, or finished with the result not yet written.
    pub fn leases_held(&self) -> usize {
        self.inner.leases.counts().held()
    }

    /// The workers this node has loaded, with their slots.
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.inner.workers.stats()
    }

    /// A handle for the HTTP API: worker stats and run waits, without keeping the node alive.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            id: self.inner.config.node_id,
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Graceful shutdown: stop claiming, let attempts finish within the grace period, then
    /// interrupt the rest and hand them back (no retry consumed), write every completion, and
    /// only then stop the heartbeat (leases stay renewed until their results are written).
    pub async fn shutdown(mut self) {
        self.inner.stopping.cancel();
        self.inner.attempts.close();
        let grace = self.inner.config.shutdown_grace;
        if tokio::time::timeout(grace, self.inner.attempts.wait())
            .await
            .is_err()
        {
            self.inner.leases.hand_back_all();
            self.inner.attempts.wait().await;
        }
        // Every attempt has sent its result: the completer drains the channel and ends.
        self.completer.stop().await;
        self.stop_loops.cancel();
        while self.background.join_next().await.is_some() {}
        // Modules being loaded ahead of their runs stop at `stopping`.
        self.inner.warming.close();
        self.inner.warming.wait().await;
    }

    /// Stops dead, as a crash would: attempts are dropped mid-run and nothing more is written.
    /// Their leases expire and another node runs them again.
    pub fn kill(mut self) {
        self.stop_loops.cancel();
        self.inner.stopping.cancel();
        self.background.abort_all();
        self.completer.abort();
        // Attempts find their leases gone and write nothing.
        self.inner.leases.abandon_all();
    }
}

/// What the HTTP API needs of a running node. Cheap to clone; it does not keep the node alive
/// (a graceful shutdown waits for the last reference of the node's internals to go).
#[derive(Clone)]
pub struct NodeHandle {
    id: Uuid,
    inner: Weak<NodeInner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The workers the node has loaded, with their slots; empty once it stopped.
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.inner
            .upgrade()
            .map(|inner| inner.workers.stats())
            .unwrap_or_default()
    }

    /// Waits until run `id` finishes or `timeout` passes, woken by the node's own listener
    /// (no connection of its own); returns the run as it is then, `None` if there is no such run.
    pub async fn wait_for_run(
        &self,
        db: &Db,
        tenant_id: Uuid,
        id: Uuid,
        timeout: Duration,
    ) -> Result<Option<super::RunView>, super::RunError> {
        let Some(waiters) = self.inner.upgrade().map(|inner| inner.waiters.clone()) else {
            return super::wait_for_run(db, tenant_id, id, timeout).await;
        };
        waiters
            .wait(id, timeout, || super::runs::look_at_run(db, tenant_id, id))
            .await
    }
}

impl NodeInner {
    /// The tenants with their own cap on executing task runs, from the cache or the database.
    async fn capped_tenants(&self) -> Result<Arc<Vec<Uuid>>, sqlx::Error> {
        if let Some(capped) = lock(&self.capped).clone() {
            return Ok(capped);
        }
        let mut conn = self.db.lossy.acquire().await?;
        let capped = Arc::new(db::quota::tenants_capped(&mut conn).await?);
        *lock(&self.capped) = Some(capped.clone());
        Ok(capped)
    }

    /// Those of `tenants` capped on executing task runs, as far as this node knows (all of
    /// them under a default cap).
    fn capped_among(&self, tenants: &[Uuid]) -> Vec<Uuid> {
        let mut capped: Vec<Uuid> = if self.db.quotas.max_executing.is_some() {
            tenants.to_vec()
        } else {
            match lock(&self.capped).as_ref() {
                Some(own) if !own.is_empty() => tenants
                    .iter()
                    .copied()
                    .filter(|t| own.binary_search(t).is_ok())
                    .collect(),
                _ => return Vec::new(),
            }
        };
        capped.sort_unstable();
        capped.dedup();
        capped
    }

    /// Tenant `tenant`'s settings, from the cache or the database. Settings that cannot be
    /// read (or are malformed) allow no egress and weigh 1.
    async fn tenant_settings(&self, tenant: Uuid) -> Arc<TenantSettings> {
        if let Some(settings) = lock(&self.tenants).get(&tenant) {
            return settings.clone();
        }
        let read = async {
            let mut conn = self.db.pool.acquire().await?;
            crate::db::tenant::tenant_settings(&mut conn, tenant).await
        };
        let settings = match read.await {
            Ok(Some(row)) => TenantSettings {
                egress: Arc::new(EgressPolicy {
                    allow: serde_json::from_value(row.egress_allow).unwrap_or_default(),
                    ceiling: serde_json::from_value(row.egress_ceiling).unwrap_or_default(),
                }),
                weight: u32::try_from(row.weight).unwrap_or(1).max(1),
            },
            Ok(None) => TenantSettings::default(),
            Err(e) => {
                tracing::warn!(%tenant, "cannot read the tenant's settings, allowing no egress: {e}");
                return Arc::new(TenantSettings::default());
            }
        };
        let settings = Arc::new(settings);
        lock(&self.tenants).insert(tenant, settings.clone());
        settings
    }

    /// The secrets workflow `workflow` of `tenant` may read, opened. Without a key, or when
    /// they cannot be read, none (a task that needs one fails saying it is missing).
    async fn task_secrets(&self, tenant: Uuid, workflow: &str) -> Arc<TaskSecrets> {
        let Some(keys) = &self.config.secrets else {
            return Arc::default();
        };
        let cached = lock(&self.secrets).get(&tenant).cloned();
        let opened = match cached {
            Some(opened) => opened,
            None => {
                let read = async {
                    let mut conn = self.db.pool.acquire().await?;
                    crate::db::secret::secrets_sealed(&mut conn, tenant).await
                };
                let rows = match read.await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(%tenant, "cannot read secrets: {e}");
                        return Arc::default();
                    }
                };
                let opened: Vec<OpenedSecret> = rows
                    .iter()
                    .filter_map(|row| {
                        let value = keys.open(tenant, &row.name, &row.sealed());
                        if value.is_none() {
                            tracing::warn!(%tenant, secret = %row.name, "a secret does not open with this node's key");
                        }
                        Some(OpenedSecret {
                            name: row.name.clone(),
                            value: value?,
                            workflows: row.workflows.clone(),
                        })
                    })
                    .collect();
                let opened = Arc::new(opened);
                lock(&self.secrets).insert(tenant, opened.clone());
                opened
            }
        };
        Arc::new(TaskSecrets(
            opened
                .iter()
                .filter(|s| {
                    s.workflows
                        .as_ref()
                        .is_none_or(|workflows| workflows.iter().any(|w| w == workflow))
                })
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
        ))
    }
}

/// Loads a freshly deployed module into this node's workers before any run needs it: an
/// interpreter takes seconds to compile. Until it is loaded the dispatcher leaves its runs to
/// nodes that have it (`WorkerRegistry::unclaimable`).
async fn warm(inner: Arc<NodeInner>, tenant: Uuid, digest: String) {
    let started = std::time::Instant::now();
    tokio::select! {
        loaded = inner.workers.worker(tenant, &digest) => match loaded {
            Ok(_) => tracing::debug!(%digest, elapsed = ?started.elapsed(), "module loaded ahead of its runs"),
            Err(e) => tracing::debug!(%digest, "loading a deployed module failed: {e}"),
        },
        () = inner.stopping.cancelled() => {}
    }
}

async fn listen(inner: Arc<NodeInner>, mut listener: PgListener, stop: CancellationToken) {
    loop {
        let notification = tokio::select! {
            notification = listener.recv() => notification,
            () = stop.cancelled() => return,
        };
        match notification {
            Ok(notification) => match notification.channel() {
                db::CHANNEL_WORK => {
                    let tenants = db::parse_ids(notification.payload());
                    let low_water = inner.config.low_water();
                    // Work of a tenant with little waiting here is claimed now, not when the
                    // local queue (perhaps all another tenant's) drains to its low-water mark.
                    if tenants.is_empty()
                        || tenants
                            .iter()
                            .any(|tenant| inner.leases.held_of(*tenant) < low_water)
                    {
                        inner.urgent.notify_one();
                    }
                    inner.work.notify_one();
                }
                db::CHANNEL_SCHEDULED => inner.scheduled.notify_one(),
                db::CHANNEL_GATED => {
                    inner.gated.store(true, Ordering::Release);
                    inner.work.notify_one();
                }
                db::CHANNEL_MODULE_DEPLOYED => {
                    if let Some((tenant, digest)) =
                        db::parse_module_deployed(notification.payload())
                    {
                        // Compile now, in the background, rather than on the first run.
                        inner.warming.spawn(warm(inner.clone(), tenant, digest));
                    }
                }
                db::CHANNEL_TENANT => {
                    let mut tenants = lock(&inner.tenants);
                    for tenant in db::parse_ids(notification.payload()) {
                        tenants.remove(&tenant);
                    }
                    *lock(&inner.capped) = None;
                    // A cap raised or lifted may let waiting runs start.
                    inner.work.notify_one();
                }
                db::CHANNEL_SECRETS => {
                    let mut secrets = lock(&inner.secrets);
                    for tenant in db::parse_ids(notification.payload()) {
                        secrets.remove(&tenant);
                    }
                }
                db::CHANNEL_CANCEL => {
                    let ids = db::parse_ids(notification.payload());
                    inner.leases.cancel_task_runs(&ids);
                }
                db::CHANNEL_RUN_FINISHED => {
                    inner
                        .waiters
                        .finished(&db::parse_ids(notification.payload()));
                }
                _ => {}
            },
            Err(e) => {
                // PgListener reconnects on the next recv; notifications sent meanwhile are
                // lost, so poll once to catch up, and forget what they may have changed.
                tracing::warn!("listener error, reconnecting: {e}");
                lock(&inner.tenants).clear();
                lock(&inner.secrets).clear();
                *lock(&inner.capped) = None;
                inner.gated.store(true, Ordering::Release);
                inner.work.notify_one();
                inner.waiters.wake_all();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Claims work ahead of the free slots, like a local queue: up to `claim_batch` task runs are
/// claimed (leased) at once and wait here for a slot, and the next claim is made once fewer
/// than half of that are waiting. One claim then serves many tasks, so claims cost a small
/// fraction of a commit per task.
///
/// Backpressure: results not yet written hold their leases, and the node never holds more than
/// `max_held` leases, so when the completer falls behind (a slow database) claims shrink and
/// then stop until results are committed.
async fn dispatch(inner: Arc<NodeInner>) {
    let target = inner.config.claim_target();
    let low_water = inner.config.low_water();
    let max_held = inner.config.max_held();
    let mut cursor = super::admission::Cursor::default();
    // When admission looks again without being woken: soon while a rate limit window is the
    // only thing in the way, else at the poll interval (the fallback to notifications).
    let mut admission_due = tokio::time::Instant::now();
    loop {
        if inner.stopping.is_cancelled() {
            return;
        }
        let counts = inner.leases.counts();
        let reserve = inner.config.capacity.max(1) as usize;
        let room = max_held.saturating_sub(reserve + counts.held());
        let wanted = target.saturating_sub(counts.waiting).min(room);
        // Tiny claims on a backed-up node would cost a statement each for a few rows.
        if counts.waiting >= low_water || wanted * 4 < target {
            tokio::select! {
                () = inner.leases.changed() => continue,
                () = inner.stopping.cancelled() => return,
            }
        }
        let full = inner.workers.unclaimable();
        let params = ClaimParams {
            node: inner.config.node_id,
            limit: wanted as i64,
            full_modules: &full,
            skip_tenants: &[],
            lease: inner.config.lease,
        };
        let mut admitted = Vec::new();
        let mut wait = inner.config.poll_interval;
        let now = tokio::time::Instant::now();
        if inner.gated.swap(false, Ordering::AcqRel) || now >= admission_due {
            match super::admission::admit(&inner.db, &mut cursor, &params).await {
                Ok(admission) => {
                    admitted = admission.claimed;
                    if admission.more {
                        inner.gated.store(true, Ordering::Release);
                    }
                    let next = admission.retry_in.unwrap_or(inner.config.poll_interval);
                    admission_due = now + next;
                }
                Err(e) => {
                    tracing::warn!("admission failed: {e}");
                    inner.gated.store(true, Ordering::Release);
                    admission_due = now + inner.config.poll_interval;
                }
            }
        }
        wait = wait.min(admission_due.saturating_duration_since(now));
        let params = ClaimParams {
            limit: params.limit - admitted.len() as i64,
            ..params
        };
        let claimed = if params.limit <= 0 {
            Ok(Vec::new())
        } else {
            claim(&inner, &params).await
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!("claim failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(inner.config.poll_interval) => continue,
                    () = inner.stopping.cancelled() => return,
                }
            }
        };
        let got = (claimed.len() + admitted.len()) as i64;
        let limit = params.limit + admitted.len() as i64;
        start_attempts(&inner, admitted.into_iter().chain(claimed));
        if got < limit && !inner.gated.load(Ordering::Acquire) {
            tokio::select! {
                () = inner.work.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = inner.stopping.cancelled() => return,
            }
        }
    }
}

/// Claims task runs as `params` says, recording the claim's size and time. Tenants capped on
/// executing task runs (by their own quota, or all of them by the node's default) are claimed
/// apart (`claim_capped`); the others by the one-statement claim, which passes over them.
async fn claim(
    inner: &NodeInner,
    params: &ClaimParams<'_>,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let span = tracing::info_span!(
        "claim",
        limit = params.limit,
        claimed = tracing::field::Empty
    );
    let claimed = claim_batch(inner, params).instrument(span.clone()).await?;
    span.record("claimed", claimed.len());
    Ok(claimed)
}

async fn claim_batch(
    inner: &NodeInner,
    params: &ClaimParams<'_>,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let started = std::time::Instant::now();
    let default_cap = inner.db.quotas.max_executing;
    let capped = inner.capped_tenants().await?;
    let mut claimed = Vec::new();
    if default_cap.is_some() || !capped.is_empty() {
        claimed = claim_capped(inner, params, default_cap, &capped).await?;
    }
    let left = params.limit - claimed.len() as i64;
    if default_cap.is_none() && left > 0 {
        let mut skip = params.skip_tenants.to_vec();
        skip.extend(capped.iter().copied());
        let mut conn = inner.db.lossy.acquire().await?;
        let params = ClaimParams {
            limit: left,
            skip_tenants: &skip,
            ..*params
        };
        claimed.extend(task_run_claim(&mut conn, &params).await?);
    }
    metrics::histogram!(crate::metrics::CLAIM_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::metrics::CLAIM_BATCH).record(claimed.len() as f64);
    Ok(claimed)
}

/// Claims for tenants capped on executing task runs: one transaction locks those with queued
/// work (passing over any another node is claiming for), then, in a statement of its own that
/// sees every claim committed before the locks, gives each at most its cap less its task runs
/// leased anywhere in the fleet.
async fn claim_capped(
    inner: &NodeInner,
    params: &ClaimParams<'_>,
    default_cap: Option<u32>,
    capped: &[Uuid],
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let mut tx = inner.db.lossy.begin().await?;
    let scope = db::quota::CappedScope {
        default_cap: default_cap.map(|cap| i32::try_from(cap).unwrap_or(i32::MAX)),
        only: default_cap.is_none().then_some(capped),
        skip: params.skip_tenants,
    };
    let locked = db::quota::capped_tenants_lock(&mut tx, scope).await?;
    if locked.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let claimed = db::task_run::task_run_claim_capped(&mut tx, params, &locked).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Wakes every node's dispatcher and admission for `tenants`, whose places under their caps
/// were freed.
async fn notify_freed(db: &Db, tenants: &[Uuid]) -> Result<(), sqlx::Error> {
    let mut conn = db.lossy.acquire().await?;
    db::notify_work(&mut conn, tenants).await?;
    db::flow::notify_gated(&mut conn).await
}

/// Records the leases of claimed task runs and starts their attempts.
fn start_attempts(inner: &Arc<NodeInner>, tasks: impl IntoIterator<Item = ClaimedTask>) {
    for task in tasks {
        crate::metrics::claimed(task.queue_wait_seconds);
        let signals = inner
            .leases
            .claimed(task.lease_token, task.tenant_id, task.id);
        let span = tracing::info_span!(
            "attempt",
            run_id = %task.workflow_run_id,
            task_run_id = %task.id,
            workflow = %task.workflow,
            task = %task.task,
            attempt = task.attempt,
            tenant_id = %task.tenant_id,
        );
        inner
            .attempts
            .spawn(run_attempt(inner.clone(), task, signals).instrument(span));
    }
}

/// Claims, beside the dispatcher, the work announced for tenants that hold few leases here,
/// passing over the tenants that hold many: the dispatcher refills the local queue only when
/// it runs low, so without this a quiet tenant's run would wait in the database while another
/// tenant's backlog fills the node (waiting for slots, or for its results to be written).
/// These claims are small (at most `capacity` runs) and may use the last `capacity` leases of
/// `max_held`, which the dispatcher leaves free: backpressure holds the flooding tenants back,
/// not the quiet ones.
async fn claim_for_quiet_tenants(inner: Arc<NodeInner>) {
    let max_held = inner.config.max_held();
    let low_water = inner.config.low_water();
    let most = inner.config.capacity.max(1) as usize;
    loop {
        tokio::select! {
            () = inner.urgent.notified() => {}
            () = inner.stopping.cancelled() => return,
        }
        let room = max_held
            .saturating_sub(inner.leases.counts().held())
            .min(most);
        if room == 0 {
            continue;
        }
        // Passed over: tenants holding many leases here already, and those holding every slot
        // they may (their runs could only wait here).
        let mut skipped = inner.leases.tenants_holding(low_water);
        skipped.extend(inner.slots.tenants_at_max());
        skipped.sort_unstable();
        skipped.dedup();
        let full = inner.workers.unclaimable();
        let params = ClaimParams {
            node: inner.config.node_id,
            limit: room as i64,
            full_modules: &full,
            skip_tenants: &skipped,
            lease: inner.config.lease,
        };
        match claim(&inner, &params).await {
            Ok(claimed) => {
                if claimed.len() == room {
                    // More may be waiting: look again.
                    inner.urgent.notify_one();
                }
                start_attempts(&inner, claimed);
            }
            Err(e) => tracing::warn!("claim for quiet tenants failed: {e}"),
        }
    }
}

/// Runs one claimed attempt once a slot is free, and sends its completion. A task still
/// waiting for a slot when the node stops is handed back.
async fn run_attempt(inner: Arc<NodeInner>, task: ClaimedTask, signals: LeaseSignals) {
    let LeaseSignals {
        cancel,
        handed_back,
    } = signals;
    let token = task.lease_token;
    let completion = |outcome, logs, usage| Completion {
        tenant_id: task.tenant_id,
        task_run_id: task.id,
        attempt: task.attempt,
        lease_token: token,
        outcome,
        logs,
        usage,
    };
    let settings = inner.tenant_settings(task.tenant_id).await;
    let capacity = tokio::select! {
        slot = inner.slots.acquire(task.tenant_id, settings.weight) => Some(slot),
        () = inner.stopping.cancelled() => None,
        () = cancel.cancelled() => None,
    };
    let Some(capacity) = capacity else {
        // Stopping (hand it back) or cancelled (the database already says so).
        if inner.stopping.is_cancelled() && !cancel.is_cancelled() {
            if inner.leases.finished(token) {
                inner
                    .send(completion(AttemptOutcome::Released, vec![], None))
                    .await;
            }
        } else {
            inner.leases.give_up(token);
        }
        return;
    };
    if !inner.leases.executing(token) {
        // Killed while waiting.
        return;
    }
    let worker = match inner
        .workers
        .worker(task.tenant_id, &task.module_digest)
        .await
    {
        Ok(worker) => worker,
        Err(e) => {
            if inner.leases.finished(token) {
                let outcome = AttemptOutcome::Failed {
                    error: format!("its module cannot be loaded: {e}"),
                    code: "host".into(),
                    retry_after: task.retry_after_failure(true),
                };
                inner.send(completion(outcome, vec![], None)).await;
            }
            return;
        }
    };
    let slot = worker.acquire_slot().await;
    let parents: Vec<(String, String)> =
        serde_json::from_str::<Vec<(String, serde_json::Value)>>(&task.parent_outputs)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, output)| (name, output.to_string()))
            .collect();
    let run = RunInfo {
        workflow_run_id: task.workflow_run_id.to_string(),
        task_run_id: task.id.to_string(),
        workflow: task.workflow.clone(),
        task: task.task.clone(),
        attempt: task.attempt as u32,
        metadata: task.metadata.clone(),
        parents,
    };
    let host = Arc::new(DurableHost::new(
        inner.hosts.clone(),
        &run,
        task.tenant_id,
        settings.weight,
        worker.clone(),
        capacity,
        slot,
    ));
    let attempt = Attempt {
        run,
        input: task.input.clone(),
        limits: Limits {
            timeout: Duration::from_millis(task.execution_timeout_ms.max(1) as u64),
            fuel: task
                .fuel
                .map(|fuel| fuel.max(1) as u64)
                .or(inner.config.limits.fuel),
            ..inner.config.limits
        },
        cancel,
        host: host.clone(),
        egress: settings.egress.clone(),
        secrets: inner.task_secrets(task.tenant_id, &task.workflow).await,
        share: CpuShare {
            tenant: task.tenant_id,
            weight: settings.weight,
            workflow: Arc::from(task.workflow.as_str()),
        },
    };
    let report = worker.runtime().execute(worker.module(), attempt).await;
    crate::metrics::attempt_finished(
        report
            .outcome
            .as_ref()
            .err()
            .map_or("succeeded", |e| e.code()),
        report.elapsed,
        report.fuel_used,
    );
    // Children spawned but not yet committed are written before the parent's result; a
    // cancelled or handed-back attempt leaves them unwritten (a retry spawns them again).
    let flushed = match &report.outcome {
        Err(TaskFailure::Cancelled) => Ok(()),
        _ => host.flush_spawns().await,
    };
    drop(host);
    if !inner.leases.finished(token) {
        // Killed: a crashed node writes nothing.
        return;
    }
    let outcome = match (report.outcome, flushed) {
        (_, Err(error)) => AttemptOutcome::Failed {
            error: error.to_string(),
            code: "host".into(),
            retry_after: task.retry_after_failure(true),
        },
        (Ok(output), Ok(())) => AttemptOutcome::Succeeded(output),
        (Err(TaskFailure::Cancelled), Ok(())) if handed_back.load(Ordering::SeqCst) => {
            AttemptOutcome::Released
        }
        (Err(failure), Ok(())) => AttemptOutcome::Failed {
            error: failure.to_string(),
            code: failure.code().into(),
            retry_after: task.retry_after_failure(failure.is_retryable()),
        },
    };
    let usage = AttemptUsage {
        workflow: task.workflow.clone(),
        wall_ms: i64::try_from(report.elapsed.as_millis()).unwrap_or(i64::MAX),
        fuel: report
            .fuel_used
            .map_or(0, |fuel| i64::try_from(fuel).unwrap_or(i64::MAX)),
        memory_bytes: i64::try_from(report.memory_bytes).unwrap_or(i64::MAX),
        egress_requests: i64::from(report.egress_requests),
    };
    inner
        .send(completion(outcome, report.logs, Some(usage)))
        .await;
}

impl NodeInner {
    /// Hands a result to the completer. The channel holds at most `max_held` results, one per
    /// held lease, so this never waits long; it fails only once the completer is gone (a kill).
    async fn send(&self, completion: Completion) {
        self.results.send(completion).await;
    }
}

/// The node's part after the completer committed a batch.
struct AfterWriteOnNode(Weak<NodeInner>);

impl AfterWrite for AfterWriteOnNode {
    async fn written(&self, tenants: Vec<Uuid>, effects: &CompletionEffects) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // A capped tenant's finished attempts free places under its cap, on every node: say
        // so, or its next runs would wait for a node's poll.
        let freed = inner.capped_among(&tenants);
        if effects.queued || !freed.is_empty() {
            inner.work.notify_one();
        }
        if !freed.is_empty()
            && let Err(e) = notify_freed(&inner.db, &freed).await
        {
            tracing::warn!("cannot announce freed places of capped tenants: {e}");
        }
    }
}
