//! Guest CPU: the threads guests execute on, apart from the API, dispatcher and database work,
//! and the fair gate that shares them between tenants (by weight) and between the workflows
//! of a tenant, one slice at a time.
//!
//! The gate holds one permit per guest thread. A guest holds a permit while it executes wasm;
//! it gives it back at every epoch tick and queues for it again, keeps it through a short call
//! into the host (a log line, the clock), and gives it back once such a call has lasted
//! `PARK_GRACE` (a wait for a child, an HTTP request, a sleep), queueing again on return. A free permit goes to the waiting tenant that has had
//! the least CPU time per unit of weight, and within that tenant to the workflow that has had
//! the least — start-time fair queuing over virtual times. A tenant that becomes active starts
//! at the smallest virtual time of the tenants already active, so idleness banks no credit.
//! A quiet tenant's short task therefore waits at most about one slice for a permit, however
//! many long tasks another tenant runs.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::imports::{HostCallError, RunInfo, SpawnRequest, TaskHost};

/// Whose CPU time an attempt is: its tenant, that tenant's weight, and its workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuShare {
    /// The tenant charged.
    pub tenant: Uuid,
    /// The tenant's weight (≥ 1): its share of the guest threads when every tenant is busy.
    pub weight: u32,
    /// The workflow charged within the tenant.
    pub workflow: Arc<str>,
}

impl Default for CpuShare {
    fn default() -> Self {
        Self {
            tenant: Uuid::nil(),
            weight: 1,
            workflow: Arc::from(""),
        }
    }
}

/// The slice a permit is charged in advance when it is granted (the epoch tick), refunded
/// as used when it is given back: while guests hold permits their tenants already count the
/// slices they are using, so a guest back from a short host call competes against the time
/// others are spending now, not against what they had spent when they last gave one back.
const SLICE_NS: u64 = 5_000_000;

/// The nice value of guest threads (0 is the process's own; 19 the lowest priority).
const GUEST_NICE: i32 = 10;

/// The nice value of compiles: the lowest priority, so a compile takes only the CPU that
/// guests and the node leave idle.
const COMPILE_NICE: i32 = 19;

/// Sets the calling thread's nice value (Linux keeps one per thread). Where that does not
/// apply the thread keeps the normal priority: still correct, only less polite.
fn lower_this_thread(nice: i32) {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
}

/// Builds the process's rayon pool, on which wasmtime compiles a module's functions in
/// parallel, with its threads at the compile priority (once; a pool already built is kept).
pub(crate) fn lower_compile_priority() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("hatchery-compile-{i}"))
            .start_handler(|_| lower_this_thread(COMPILE_NICE))
            .build_global();
    });
}

/// Runs `compile` on a thread of its own at the compile priority and awaits its result.
pub(crate) async fn run_compile<T: Send + 'static>(
    compile: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hatchery-compile".into())
        .spawn(move || {
            lower_this_thread(COMPILE_NICE);
            let _ = sender.send(compile());
        })?;
    receiver
        .await
        .map_err(|_| std::io::Error::other("the compile thread panicked"))
}

/// The threads guests execute on. Dropping it stops them without waiting.
pub(crate) struct GuestThreads {
    runtime: Option<tokio::runtime::Runtime>,
}

impl GuestThreads {
    /// `threads` worker threads named `hatchery-guest`, each at a lower scheduling priority
    /// (nice 10) than the rest of the process: when guests keep every core busy, the
    /// operating system still runs the API, the dispatcher and the completer first, so they
    /// answer in a moment instead of waiting for a guest's time slice to end.
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("hatchery-guest")
            .on_thread_start(|| lower_this_thread(GUEST_NICE))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on a guest thread. Dropping the returned future aborts it.
    pub(crate) fn spawn<F>(&self, future: F) -> impl Future<Output = Option<F::Output>> + use<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.runtime.as_ref().map(|runtime| runtime.spawn(future));
        async move {
            let handle = AbortOnDrop(handle?);
            (&mut { handle }.0).await.ok()
        }
    }
}

/// A `TaskHost` whose calls run on the runtime that started the attempt rather than on the
/// guest threads: its database connections and timers then belong to the node's runtime, and
/// a connection opened for a guest's `spawn` never depends on a guest thread to be polled.
pub(crate) struct HostOnCallerRuntime {
    host: Arc<dyn TaskHost>,
    runtime: tokio::runtime::Handle,
}

impl HostOnCallerRuntime {
    /// Wraps `host` to run on the current runtime (call it there).
    pub(crate) fn wrap(host: Arc<dyn TaskHost>) -> Arc<dyn TaskHost> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Arc::new(Self { host, runtime }),
            Err(_) => host,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        name: &'static str,
        call: impl Future<Output = Result<T, HostCallError>> + Send + 'static,
    ) -> Result<T, HostCallError> {
        let handle = AbortOnDrop(self.runtime.spawn(call));
        (&mut { handle }.0)
            .await
            .unwrap_or_else(|e| Err(HostCallError::unavailable(name, e)))
    }
}

#[async_trait::async_trait]
impl TaskHost for HostOnCallerRuntime {
    async fn spawn(
        &self,
        parent: &RunInfo,
        request: SpawnRequest,
    ) -> Result<String, HostCallError> {
        let (host, parent) = (self.host.clone(), parent.clone());
        self.run("spawn", async move { host.spawn(&parent, request).await })
            .await
    }

    async fn wait(&self, parent: &RunInfo, run_id: &str) -> Result<String, HostCallError> {
        let (host, parent, run_id) = (self.host.clone(), parent.clone(), run_id.to_owned());
        self.run("wait", async move { host.wait(&parent, &run_id).await })
            .await
    }

    async fn push_event(
        &self,
        parent: &RunInfo,
        key: &str,
        payload: &str,
    ) -> Result<(), HostCallError> {
        let (host, parent) = (self.host.clone(), parent.clone());
        let (key, payload) = (key.to_owned(), payload.to_owned());
        self.run("push-event", async move {
            host.push_event(&parent, &key, &payload).await
        })
        .await
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime (and the last
        // reference may well go on a guest thread itself).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The fair gate in front of the guest threads.
pub(crate) struct CpuGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    free: usize,
    /// Waiters over all tenants.
    waiting: usize,
    tenants: HashMap<Uuid, TenantQueue>,
}

/// Virtual times are nanoseconds of CPU; a tenant's is divided by its weight.
struct TenantQueue {
    vtime: u64,
    weight: u32,
    holders: usize,
    waiting: usize,
    workflows: HashMap<Arc<str>, WorkflowQueue>,
}

struct WorkflowQueue {
    vtime: u64,
    holders: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
}

impl TenantQueue {
    /// The queue of `workflow`, made on first use at the smallest virtual time among the
    /// tenant's workflows, their slices in progress not counted.
    fn workflow(&mut self, workflow: &Arc<str>) -> &mut WorkflowQueue {
        let floor = self
            .workflows
            .values()
            .map(|w| w.vtime.saturating_sub(w.holders as u64 * SLICE_NS))
            .min()
            .unwrap_or(0);
        self.workflows
            .entry(workflow.clone())
            .or_insert_with(|| WorkflowQueue {
                vtime: floor,
                holders: 0,
                waiters: VecDeque::new(),
            })
    }

    /// A permit granted: one more holder, a slice (by weight) charged in advance.
    fn start_slice(&mut self) {
        self.holders += 1;
        self.vtime = self.vtime.saturating_add(SLICE_NS / self.weight());
    }

    /// A permit given back after `held_ns`: the advance replaced by what was used.
    fn end_slice(&mut self, held_ns: u64) {
        self.holders = self.holders.saturating_sub(1);
        self.vtime = self
            .vtime
            .saturating_add(held_ns / self.weight())
            .saturating_sub(SLICE_NS / self.weight());
    }

    fn weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }
}

impl WorkflowQueue {
    /// As `TenantQueue::start_slice`, unweighted (workflows of a tenant share it equally).
    fn start_slice(&mut self) {
        self.holders += 1;
        self.vtime = self.vtime.saturating_add(SLICE_NS);
    }

    /// As `TenantQueue::end_slice`, unweighted.
    fn end_slice(&mut self, held_ns: u64) {
        self.holders = self.holders.saturating_sub(1);
        self.vtime = self.vtime.saturating_add(held_ns).saturating_sub(SLICE_NS);
    }
}

impl GateState {
    /// The queue of `share`'s tenant, made on first use at the smallest virtual time among the
    /// active ones, their slices in progress not counted (no credit for having been idle, no
    /// debt for what the others are running now). `TenantQueue::workflow` does the same for
    /// the tenant's workflows.
    fn queues(&mut self, share: &CpuShare) -> &mut TenantQueue {
        let floor = self
            .tenants
            .values()
            .map(|t| {
                let prepaid = t.holders as u64 * (SLICE_NS / u64::from(t.weight.max(1)));
                t.vtime.saturating_sub(prepaid)
            })
            .min()
            .unwrap_or(0);
        let tenant = self
            .tenants
            .entry(share.tenant)
            .or_insert_with(|| TenantQueue {
                vtime: floor,
                weight: share.weight.max(1),
                holders: 0,
                waiting: 0,
                workflows: HashMap::new(),
            });
        tenant.weight = share.weight.max(1);
        tenant
    }

    /// Charges `share` a permit held `held_ns` that is given back: what it used, less the
    /// slice it was charged in advance when it got the permit.
    fn charge(&mut self, share: &CpuShare, held_ns: u64) {
        if let Some(tenant) = self.tenants.get_mut(&share.tenant) {
            tenant.end_slice(held_ns);
            if let Some(workflow) = tenant.workflows.get_mut(&share.workflow) {
                workflow.end_slice(held_ns);
            }
        }
    }

    /// Hands free permits to waiters, fairest first.
    fn grant(&mut self) {
        while self.free > 0 && self.waiting > 0 {
            let Some((&tenant_id, _)) = self
                .tenants
                .iter()
                .filter(|(_, t)| t.waiting > 0)
                .min_by_key(|(_, t)| (t.vtime, t.holders))
            else {
                return;
            };
            let Some(tenant) = self.tenants.get_mut(&tenant_id) else {
                return;
            };
            let Some(workflow) = tenant
                .workflows
                .values_mut()
                .filter(|w| !w.waiters.is_empty())
                .min_by_key(|w| (w.vtime, w.holders))
            else {
                return;
            };
            let Some(waiter) = workflow.waiters.pop_front() else {
                return;
            };
            tenant.waiting -= 1;
            self.waiting -= 1;
            // A waiter that gave up (its attempt ended) is skipped.
            if waiter.send(()).is_ok() {
                workflow.start_slice();
                tenant.start_slice();
                self.free -= 1;
            }
        }
        self.forget_idle();
    }

    fn forget_idle(&mut self) {
        self.tenants.retain(|_, tenant| {
            tenant
                .workflows
                .retain(|_, w| w.holders > 0 || !w.waiters.is_empty());
            !tenant.workflows.is_empty()
        });
    }
}

impl CpuGate {
    /// A gate with one permit per guest thread.
    pub(crate) fn new(threads: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GateState {
                free: threads.max(1),
                ..GateState::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a permit back, charging `share` the time it was held.
    fn release(&self, share: &CpuShare, held_ns: u64) {
        let mut state = self.lock();
        state.free += 1;
        state.charge(share, held_ns);
        state.grant();
    }

    /// Takes a permit at once if one is free and nobody waits; else queues for one.
    fn try_take(&self, share: &CpuShare) -> Result<(), oneshot::Receiver<()>> {
        self.take_or_queue(share, None)
    }

    /// Gives back a permit held `held_ns` and queues for one in the same step, so the permit
    /// goes to whoever is fairest with this holder among the candidates — perhaps itself.
    /// (Giving back first and queueing after would hand every such permit to another waiter
    /// while this one is between the two, whatever its share.)
    fn requeue(&self, share: &CpuShare, held_ns: u64) -> Result<(), oneshot::Receiver<()>> {
        self.take_or_queue(share, Some(held_ns))
    }

    fn take_or_queue(
        &self,
        share: &CpuShare,
        given_back: Option<u64>,
    ) -> Result<(), oneshot::Receiver<()>> {
        let mut state = self.lock();
        if let Some(held_ns) = given_back {
            state.free += 1;
            state.charge(share, held_ns);
        }
        let immediate = state.free > 0 && state.waiting == 0;
        let tenant = state.queues(share);
        let workflow = tenant.workflow(&share.workflow);
        if immediate {
            workflow.start_slice();
            tenant.start_slice();
            state.free -= 1;
            return Ok(());
        }
        let (sender, receiver) = oneshot::channel();
        workflow.waiters.push_back(sender);
        tenant.waiting += 1;
        state.waiting += 1;
        // Permits may be free with others waiting (a waiter that gave up): hand them out.
        state.grant();
        Err(receiver)
    }

    /// Permits free now (for tests and metrics).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.lock().free
    }
}

/// How long a guest in a host call keeps its permit: most host calls (a log line, the clock,
/// reading its input) take microseconds, and giving the permit back at each would make the
/// guest queue for it again behind every other tenant's slice. A call that lasts longer (an
/// HTTP request, a wait for a child, a sleep) gives it back after this.
const PARK_GRACE: std::time::Duration = std::time::Duration::from_millis(1);

/// One attempt's place at the gate: whether it holds a permit, and since when.
pub(crate) struct GuestCpu {
    gate: Arc<CpuGate>,
    share: CpuShare,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// When the permit held now was granted.
    since: Option<Instant>,
    /// In a host call with the permit, since the call numbered `calls`.
    parked: bool,
    calls: u64,
}

impl GuestCpu {
    pub(crate) fn new(gate: Arc<CpuGate>, share: CpuShare) -> Arc<Self> {
        Arc::new(Self {
            gate,
            share,
            held: Mutex::new(Held::default()),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the permit back, if held.
    pub(crate) fn release(&self) {
        let since = {
            let mut held = self.held();
            held.parked = false;
            held.since.take()
        };
        if let Some(since) = since {
            let held = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.gate.release(&self.share, held);
        }
    }

    /// The guest calls into the host: it keeps its permit for `PARK_GRACE`, then gives it back
    /// if the call has not returned. Without a tokio runtime to time that, at once.
    pub(crate) fn park(self: &Arc<Self>) {
        let call = {
            let mut held = self.held();
            if held.since.is_none() {
                return;
            }
            held.calls += 1;
            held.parked = true;
            held.calls
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.release();
        };
        // Weak: an attempt that ends meanwhile gives its permit back as it drops.
        let this = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep(PARK_GRACE).await;
            if let Some(this) = this.upgrade() {
                let still_parked = {
                    let held = this.held();
                    held.parked && held.calls == call
                };
                if still_parked {
                    this.release();
                }
            }
        });
    }

    /// Waits for a permit, unless one is held already (as after a short host call).
    pub(crate) async fn acquire(self: Arc<Self>) {
        {
            let mut held = self.held();
            held.parked = false;
            if held.since.is_some() {
                return;
            }
        }
        let ticket = self.gate.try_take(&self.share);
        self.hold(ticket).await;
    }

    /// At the end of a slice: gives the permit back and queues for the next in one step,
    /// then lets the executor run its other work (`yield_now` wakes the task only after the
    /// runtime polled its I/O driver) before waiting for the permit.
    pub(crate) fn next_slice(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let since = {
            let mut held = self.held();
            held.parked = false;
            held.since.take()
        };
        let ticket = match since {
            Some(since) => {
                let held = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.gate.requeue(&self.share, held)
            }
            None => self.gate.try_take(&self.share),
        };
        let this = self.clone();
        async move {
            tokio::task::yield_now().await;
            this.hold(ticket).await;
        }
    }

    /// Holds the permit `ticket` gives: at once, or once the gate grants it.
    async fn hold(&self, ticket: Result<(), oneshot::Receiver<()>>) {
        if let Err(receiver) = ticket {
            let mut pending = PendingPermit {
                gate: &self.gate,
                share: &self.share,
                receiver: Some(receiver),
            };
            let granted = match pending.receiver.as_mut() {
                Some(receiver) => receiver.await.is_ok(),
                None => false,
            };
            pending.receiver = None;
            if !granted {
                // The gate never drops a live waiter; nothing to hold.
                return;
            }
        }
        self.held().since = Some(Instant::now());
    }
}

impl Drop for GuestCpu {
    fn drop(&mut self) {
        self.release();
    }
}

/// A queued request for a permit; dropped before it is received (the attempt stopped while
/// waiting), a permit granted meanwhile goes back to the gate.
struct PendingPermit<'a> {
    gate: &'a CpuGate,
    share: &'a CpuShare,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for PendingPermit<'_> {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.gate.release(self.share, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn share(tenant: u128, weight: u32, workflow: &str) -> CpuShare {
        CpuShare {
            tenant: Uuid::from_u128(tenant),
            weight,
            workflow: Arc::from(workflow),
        }
    }

    #[tokio::test]
    async fn a_free_permit_is_taken_at_once_and_given_back() {
        let gate = CpuGate::new(2);
        let a = GuestCpu::new(gate.clone(), share(1, 1, "w"));
        a.clone().acquire().await;
        assert_eq!(gate.free(), 1);
        a.clone().acquire().await; // held already: no second permit
        assert_eq!(gate.free(), 1);
        a.release();
        assert_eq!(gate.free(), 2);
        drop(a);
        assert_eq!(gate.free(), 2);
        assert!(gate.lock().tenants.is_empty(), "idle tenants are forgotten");
    }

    #[test]
    fn the_tenant_with_less_cpu_time_goes_first() {
        let gate = CpuGate::new(1);
        let busy = share(1, 1, "w");
        let quiet = share(2, 1, "w");
        assert!(gate.try_take(&busy).is_ok());
        let mut busy_next = gate.try_take(&busy).expect_err("the permit is held");
        let mut quiet_next = gate.try_take(&quiet).expect_err("the permit is held");
        // The busy tenant gives its permit back after 1 ms of CPU; the quiet one, which
        // queued after it, had none and goes first.
        gate.release(&busy, 1_000_000);
        assert!(quiet_next.try_recv().is_ok());
        assert!(busy_next.try_recv().is_err());
        gate.release(&quiet, 10);
        assert!(busy_next.try_recv().is_ok());
    }

    #[test]
    fn weight_divides_the_charge() {
        let gate = CpuGate::new(2);
        let heavy = share(1, 4, "w");
        let light = share(2, 1, "w");
        let vtime = |s: &CpuShare| gate.lock().tenants[&s.tenant].vtime;
        // Both start at 0 (the second at the first's clock, its slice in progress not counted).
        assert!(gate.try_take(&heavy).is_ok());
        assert!(gate.try_take(&light).is_ok());
        // Four slices of CPU for the heavy tenant, one for the light one.
        gate.lock().charge(&heavy, 4 * SLICE_NS);
        gate.lock().charge(&light, SLICE_NS);
        // Four times the CPU costs a tenant of weight 4 what once costs a tenant of weight 1.
        assert_eq!(vtime(&heavy), SLICE_NS);
        assert_eq!(vtime(&light), SLICE_NS);
    }

    #[test]
    fn a_newly_active_tenant_starts_at_the_active_minimum() {
        let gate = CpuGate::new(1);
        let a = share(1, 1, "w");
        assert!(gate.try_take(&a).is_ok());
        let _a_next = gate.try_take(&a).expect_err("the permits are taken");
        gate.release(&a, 5_000);
        // `a` holds again (its queued request was granted) with 5,000 used, and a slice paid
        // in advance that a newcomer is not charged for.
        let b = share(2, 1, "w");
        let _b_next = gate.try_take(&b).expect_err("the permits are taken");
        assert_eq!(gate.lock().tenants[&b.tenant].vtime, 5_000);
    }

    #[test]
    fn at_equal_clocks_the_tenant_holding_fewer_permits_goes_first() {
        let gate = CpuGate::new(2);
        let busy = share(1, 1, "w");
        let quiet = share(2, 1, "w");
        assert!(gate.try_take(&busy).is_ok());
        assert!(gate.try_take(&busy).is_ok());
        let mut busy_next = gate.try_take(&busy).expect_err("the permits are taken");
        let mut quiet_next = gate.try_take(&quiet).expect_err("the permits are taken");
        // Make the clocks equal once a busy permit is given back unused; the quiet tenant then
        // holds nothing, the busy one still a permit.
        {
            let mut state = gate.lock();
            let clock = state.tenants[&busy.tenant].vtime - SLICE_NS;
            state.tenants.get_mut(&quiet.tenant).expect("active").vtime = clock;
        }
        // One permit is given back after no time at all (a host call).
        gate.release(&busy, 0);
        assert!(quiet_next.try_recv().is_ok());
        assert!(busy_next.try_recv().is_err());
    }

    #[test]
    fn workflows_of_one_tenant_share_its_time() {
        let gate = CpuGate::new(1);
        let long = share(1, 1, "long");
        let short = share(1, 1, "short");
        assert!(gate.try_take(&long).is_ok());
        let mut long_next = gate.try_take(&long).expect_err("the permits are taken");
        let mut short_next = gate.try_take(&short).expect_err("the permits are taken");
        gate.release(&long, 1_000_000);
        assert!(short_next.try_recv().is_ok());
        assert!(long_next.try_recv().is_err());
    }

    #[test]
    fn a_holder_that_requeues_competes_with_the_waiters_at_once() {
        // Two permits: one held by the busy tenant, one by the quiet one; another of the busy
        // tenant's guests waits.
        let gate = CpuGate::new(2);
        let busy = share(1, 1, "w");
        let quiet = share(2, 1, "w");
        assert!(gate.try_take(&busy).is_ok());
        assert!(gate.try_take(&quiet).is_ok());
        let mut busy_waiter = gate.try_take(&busy).expect_err("the permits are taken");
        // The busy holder's slice ends after 20 ms: its waiting guest gets the permit, and
        // the holder queues behind it.
        let mut busy_holder = gate
            .requeue(&busy, 20_000_000)
            .expect_err("the permits are taken");
        assert!(busy_waiter.try_recv().is_ok());
        // The quiet holder's slice ends after 5 ms. Having had less CPU, it keeps its permit
        // (given back and queued in one step, it competes at once). Given back first and
        // queued after, the permit would go to the busy tenant's waiting guest.
        let mut quiet_holder = gate
            .requeue(&quiet, 5_000_000)
            .expect_err("the permits are taken");
        assert!(
            quiet_holder.try_recv().is_ok(),
            "the quiet tenant keeps its turn"
        );
        assert!(busy_holder.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_short_host_call_keeps_the_permit_and_a_long_one_gives_it_back() {
        let gate = CpuGate::new(1);
        let guest = GuestCpu::new(gate.clone(), share(1, 1, "w"));
        guest.clone().acquire().await;
        // In and out of the host at once: the permit never left.
        guest.park();
        guest.clone().acquire().await;
        assert_eq!(gate.free(), 0);
        // A waiter, and a call that lasts: the permit goes to the waiter after the grace.
        let other = GuestCpu::new(gate.clone(), share(2, 1, "w"));
        let waiting = tokio::spawn(other.clone().acquire());
        guest.park();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the parked permit is given to the waiter")
            .expect("joined");
        // Back from the host, the guest queues for a permit like anyone.
        let back = tokio::spawn(guest.clone().acquire());
        tokio::task::yield_now().await;
        assert!(!back.is_finished(), "the other guest holds the only permit");
        other.release();
        tokio::time::timeout(Duration::from_secs(5), back)
            .await
            .expect("granted once given back")
            .expect("joined");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_returns_a_granted_permit() {
        let gate = CpuGate::new(1);
        let holder = GuestCpu::new(gate.clone(), share(1, 1, "w"));
        holder.clone().acquire().await;
        let waiter = GuestCpu::new(gate.clone(), share(2, 1, "w"));
        let waiting = tokio::spawn(waiter.clone().acquire());
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        holder.release();
        assert_eq!(gate.free(), 1, "no permit lost to the waiter that left");
        let again = GuestCpu::new(gate.clone(), share(3, 1, "w"));
        tokio::time::timeout(Duration::from_secs(5), again.clone().acquire())
            .await
            .expect("the permit is free again");
    }
}
