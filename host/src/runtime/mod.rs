//! The sandboxed Wasm runtime: one engine per node, modules compiled once, a fresh store per
//! task attempt under hard limits, and every guest failure turned into a precise `TaskFailure`.
//!
//! It never touches the database; the scheduler hands it attempts and records what comes back.

mod artifact;
mod bindings;
mod cache;
mod cpu;
mod engine;
mod failure;
mod imports;
mod inspect;
mod limits;
pub mod local;
mod logs;
mod module;
mod network;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

pub use artifact::ArtifactKey;
/// Implement `TaskHost` with this attribute.
pub use async_trait::async_trait;
pub use cache::Digest;
pub use cpu::CpuShare;
pub use engine::{EngineConfig, PoolShare};
pub use failure::{TaskFailure, format_millis};
pub use imports::{HostCallError, NoServer, RunInfo, SpawnRequest, TaskHost};
pub use inspect::{ComponentShape, Footprint, inspect};
pub use limits::Limits;
pub use logs::{LogLevel, LogLine};
pub use module::{GRANTED_INTERFACES, LoadError, LoadedModule};
pub use network::EgressLimits;
pub use worker::Worker;

use crate::egress::EgressPolicy;
use crate::secrets::TaskSecrets;
use bindings::hatchery::task::types as wit;
use imports::{Interruption, TaskState};
use limits::MemoryLimiter;
use logs::AttemptLog;

/// How a node's runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The engine and its instance pool.
    pub engine: EngineConfig,
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Limits of the `describe` call made at load.
    pub describe_limits: Limits,
    /// Seals compiled artifacts shared between nodes through the database; `None`: nothing is
    /// shared, every node compiles.
    pub artifact_key: Option<ArtifactKey>,
    /// Limits of each attempt's outgoing HTTP.
    pub egress_limits: EgressLimits,
    /// Threads that execute guests, apart from the API, dispatcher and database work. One
    /// per core by default: more only time-slices the same cores. 0: guests execute on the
    /// caller's threads (about 10 % more no-op tasks per second on two cores, measured, and
    /// no isolation of the API from busy guests).
    pub guest_threads: usize,
    /// Modules compiled at once (uploads, and modules a node loads to run). A compile takes
    /// seconds of CPU for an interpreter; it runs at the lowest priority and this many at a
    /// time, so uploads in a loop never starve the tasks.
    pub compile_concurrency: usize,
}

/// Half the cores, at least one: the default of `RuntimeConfig::compile_concurrency`.
pub fn default_compile_concurrency() -> usize {
    (default_guest_threads() / 2).max(1)
}

/// One guest thread per core.
pub fn default_guest_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            cache_dir: None,
            describe_limits: Limits {
                timeout: Duration::from_secs(10),
                fuel: Some(5_000_000_000),
                max_output_bytes: 4 << 20,
                ..Limits::default()
            },
            artifact_key: None,
            egress_limits: EgressLimits::default(),
            guest_threads: default_guest_threads(),
            compile_concurrency: default_compile_concurrency(),
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the configuration.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The epoch ticker thread did not start.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(#[from] std::io::Error),
    /// The guest threads did not start.
    #[error("cannot start the guest threads: {0}")]
    GuestThreads(std::io::Error),
}

/// One attempt of one task, as handed to the runtime.
#[derive(Clone)]
pub struct Attempt {
    /// Who is running.
    pub run: RunInfo,
    /// The task's JSON input.
    pub input: String,
    /// Its limits.
    pub limits: Limits,
    /// Cancels the attempt pre-emptively.
    pub cancel: CancellationToken,
    /// Serves `spawn`, `wait` and `push-event`.
    pub host: Arc<dyn TaskHost>,
    /// Where the attempt may send HTTP requests (nowhere by default).
    pub egress: Arc<EgressPolicy>,
    /// The secrets its workflow may read: environment variables and header placeholders.
    pub secrets: Arc<TaskSecrets>,
    /// Whose CPU time it is (tenant, weight, workflow), for the fair share of guest threads.
    pub share: CpuShare,
}

impl Attempt {
    /// An attempt of `workflow`/`task` with default limits and no server behind it.
    pub fn new(workflow: &str, task: &str, input: impl Into<String>) -> Self {
        Self {
            run: RunInfo {
                workflow: workflow.into(),
                task: task.into(),
                attempt: 1,
                metadata: "{}".into(),
                ..RunInfo::default()
            },
            input: input.into(),
            limits: Limits::default(),
            cancel: CancellationToken::new(),
            host: Arc::new(NoServer),
            egress: Arc::new(EgressPolicy::default()),
            secrets: Arc::new(TaskSecrets::default()),
            share: CpuShare {
                workflow: Arc::from(workflow),
                ..CpuShare::default()
            },
        }
    }
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// The JSON output, or why there is none.
    pub outcome: Result<String, TaskFailure>,
    /// Its log lines.
    pub logs: Vec<LogLine>,
    /// Instructions executed, when fuel is metered.
    pub fuel_used: Option<u64>,
    /// Linear memory the instance held at its end (memories only grow: its peak), in bytes.
    pub memory_bytes: u64,
    /// Outgoing HTTP requests it made (refused ones included).
    pub egress_requests: u32,
    /// Wall-clock time from instantiation to the end.
    pub elapsed: Duration,
}

/// What one call consumed.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    fuel: Option<u64>,
    memory_bytes: u64,
    egress_requests: u32,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<TaskState>,
    cache: cache::CompileCache,
    /// Admission in front of the instance pool, which fails rather than waits when exhausted.
    pool: PoolAdmission,
    modules: Mutex<HashMap<Digest, Arc<LoadedModule>>>,
    /// Where attempts execute (`None`: on the caller's threads), and the fair gate in front
    /// of those threads.
    guests: Option<cpu::GuestThreads>,
    cpu: Arc<cpu::CpuGate>,
    /// Compiles in progress, at most `config.compile_concurrency`.
    compiles: Semaphore,
    config: RuntimeConfig,
}

/// The node's Wasm runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeInner>);

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

/// How often fuel metering yields to the executor (epoch ticks also yield).
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

impl Runtime {
    /// Builds the engine, the linker with only the granted interfaces, and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build_engine(&config.engine)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let linker = build_linker(&engine).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        engine::start_epoch_ticker(&engine, config.engine.epoch_tick)?;
        cpu::lower_compile_priority();
        let cache = cache::CompileCache::new(&engine, config.cache_dir.clone());
        let pool = PoolAdmission::new(&config.engine);
        let guests = match config.guest_threads {
            0 => None,
            threads => Some(cpu::GuestThreads::start(threads).map_err(RuntimeError::GuestThreads)?),
        };
        // One permit per thread that executes guests: the guest threads, or the caller's.
        let permits = match config.guest_threads {
            0 => default_guest_threads(),
            threads => threads,
        };
        Ok(Self(Arc::new(RuntimeInner {
            engine,
            linker,
            cache,
            pool,
            modules: Mutex::new(HashMap::new()),
            guests,
            cpu: cpu::CpuGate::new(permits),
            compiles: Semaphore::new(config.compile_concurrency.max(1)),
            config,
        })))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// How many components this runtime compiled rather than loaded from its cache.
    pub fn compile_count(&self) -> u64 {
        self.0.cache.compiles()
    }

    /// Instances that can start right now without waiting.
    pub fn free_instances(&self) -> usize {
        self.0.pool.components.available_permits()
    }

    /// Loads `bytes` as a task module: validates, compiles (or reuses the cache), checks the
    /// world and reads the manifest. A module already loaded by this runtime is returned as is.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, LoadError> {
        self.load_shared(bytes, None).await
    }

    /// `load`, taking the compiled artifact from `sealed` (made by `sealed_artifact` on a node
    /// with the same key and engine) when its seal holds, instead of compiling.
    pub async fn load_shared(
        &self,
        bytes: &[u8],
        sealed: Option<Vec<u8>>,
    ) -> Result<Arc<LoadedModule>, LoadError> {
        module::check_header(bytes)?;
        let digest = Digest::of(bytes);
        if let Some(loaded) = self.loaded(digest) {
            return Ok(loaded);
        }
        // Everything the binary alone can tell is checked before the compile, which takes
        // seconds for an interpreter.
        let shape = inspect::inspect(bytes).map_err(LoadError::Invalid)?;
        let forbidden = module::forbidden_imports(&shape.imports);
        if !forbidden.is_empty() {
            return Err(LoadError::ForbiddenImport(forbidden));
        }
        self.check_fits_pool(shape.footprint)?;
        let component = {
            let _compiling = self
                .0
                .compiles
                .acquire()
                .await
                .map_err(|e| LoadError::Invalid(format!("compiler closed: {e}")))?;
            let runtime = self.clone();
            let bytes = bytes.to_vec();
            // Compilation is CPU-bound for up to seconds: off the async workers, on a thread
            // at the lowest priority.
            cpu::run_compile(move || {
                let key = runtime.0.config.artifact_key.as_ref();
                let shared = key.zip(sealed.as_deref());
                runtime
                    .0
                    .cache
                    .load_or_compile(&runtime.0.engine, digest, &bytes, shared)
            })
            .await
            .map_err(|e| LoadError::Invalid(format!("compiler task failed: {e}")))?
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?
        };
        let instance_pre = self
            .0
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = bindings::TaskModulePre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let mut module = LoadedModule {
            digest,
            size: bytes.len(),
            manifest: crate::manifest::Manifest {
                workflows: vec![],
                slots: None,
            },
            footprint: shape.footprint,
            pre,
        };
        let manifest = self.describe(&module).await.map_err(LoadError::Describe)?;
        manifest.validate()?;
        module.manifest = manifest;
        let module = Arc::new(module);
        self.lock_modules().insert(digest, module.clone());
        Ok(module)
    }

    /// Refuses a component one instance of which needs more than the pool gives an instance.
    fn check_fits_pool(&self, footprint: Footprint) -> Result<(), LoadError> {
        let allowed = self.0.config.engine.effective_per_instance();
        let checks = [
            (
                "core instances",
                footprint.core_instances,
                allowed.core_instances,
                "--max-core-instances-per-module",
            ),
            (
                "memories",
                footprint.memories,
                allowed.memories,
                "--max-memories-per-module",
            ),
            (
                "tables",
                footprint.tables,
                allowed.tables,
                "--max-tables-per-module",
            ),
        ];
        for (what, needs, limit, flag) in checks {
            if needs > limit {
                return Err(LoadError::TooLargeForPool {
                    what,
                    needs,
                    limit,
                    flag,
                });
            }
        }
        Ok(())
    }

    /// The engine fingerprint shared artifacts are keyed by, as text.
    pub fn engine_fingerprint(&self) -> String {
        format!("{:016x}", self.0.cache.engine_fingerprint())
    }

    /// `module`'s compiled artifact sealed with this runtime's key, for other nodes to load
    /// without compiling; `None` without a key. Serializing takes a while for an interpreter:
    /// call it off the async workers (`spawn_blocking`).
    pub fn sealed_artifact(&self, module: &LoadedModule) -> Option<Vec<u8>> {
        let key = self.0.config.artifact_key.as_ref()?;
        let artifact = module
            .pre
            .instance_pre()
            .component()
            .serialize()
            .inspect_err(|e| tracing::warn!("cannot serialize a compiled module: {e:#}"))
            .ok()?;
        Some(key.seal(module.digest, self.0.cache.engine_fingerprint(), &artifact))
    }

    /// A module this runtime already loaded.
    pub fn loaded(&self, digest: Digest) -> Option<Arc<LoadedModule>> {
        self.lock_modules().get(&digest).cloned()
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<LoadedModule>>> {
        self.0
            .modules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn describe(
        &self,
        module: &LoadedModule,
    ) -> Result<crate::manifest::Manifest, TaskFailure> {
        let attempt = Attempt {
            limits: self.0.config.describe_limits,
            ..Attempt::new("", "", "")
        };
        let manifest = self
            .call(module, attempt, |bindings, store, _| {
                Box::pin(async move { bindings.call_describe(store).await.map(Ok) })
            })
            .await
            .0?;
        Ok(module::manifest_from_wit(manifest))
    }

    /// Runs one attempt in a fresh store, on the guest threads, and reports its outcome and
    /// logs. Never panics on guest behaviour; waits for an instance slot if the pool is busy.
    pub async fn execute(&self, module: &Arc<LoadedModule>, attempt: Attempt) -> AttemptReport {
        let attempt = match &self.0.guests {
            Some(_) => Attempt {
                host: cpu::HostOnCallerRuntime::wrap(attempt.host),
                ..attempt
            },
            None => attempt,
        };
        let runtime = self.clone();
        let module = module.clone();
        let started = Instant::now();
        let on_guest_thread = async move { runtime.execute_here(&module, attempt).await };
        let report = match &self.0.guests {
            Some(guests) => guests.spawn(on_guest_thread).await,
            None => Some(on_guest_thread.await),
        };
        match report {
            Some(report) => report,
            None => AttemptReport {
                outcome: Err(TaskFailure::Host("the guest threads stopped".into())),
                logs: vec![],
                fuel_used: None,
                memory_bytes: 0,
                egress_requests: 0,
                elapsed: started.elapsed(),
            },
        }
    }

    async fn execute_here(&self, module: &LoadedModule, attempt: Attempt) -> AttemptReport {
        let max_output = attempt.limits.max_output_bytes;
        let secrets = attempt.secrets.clone();
        let started = Instant::now();
        let (outcome, logs, usage) = self
            .call(module, attempt, |bindings, store, (ctx, input)| {
                Box::pin(async move {
                    bindings.call_run(store, &ctx, &input).await.map(|result| {
                        result.map_err(|e| match e {
                            wit::TaskError::Failed(message) => TaskFailure::Failed(message),
                            wit::TaskError::Fatal(message) => TaskFailure::Fatal(message),
                        })
                    })
                })
            })
            .await;
        let outcome = outcome.and_then(|output| check_output(output, max_output));
        // Secret values never leave the attempt: not in its output, error or log lines.
        let (outcome, logs) = if secrets.0.is_empty() {
            (outcome, logs)
        } else {
            (
                outcome
                    .map(|output| secrets.redact(&output))
                    .map_err(|failure| failure.redacted(&secrets)),
                logs.into_iter()
                    .map(|line| LogLine {
                        message: secrets.redact(&line.message),
                        ..line
                    })
                    .collect(),
            )
        };
        AttemptReport {
            outcome,
            logs,
            fuel_used: usage.fuel,
            memory_bytes: usage.memory_bytes,
            egress_requests: usage.egress_requests,
            elapsed: started.elapsed(),
        }
    }

    /// Instantiates `module` in a fresh store under `attempt`'s limits and makes one call.
    async fn call<R, F>(
        &self,
        module: &LoadedModule,
        attempt: Attempt,
        call: F,
    ) -> (Result<R, TaskFailure>, Vec<LogLine>, Usage)
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
            &'a bindings::TaskModule,
            &'a mut Store<TaskState>,
            (wit::RunContext, String),
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<Result<R, TaskFailure>>> + Send + 'a>,
        >,
    {
        let Attempt {
            run,
            input,
            limits,
            cancel,
            host,
            egress,
            secrets,
            share,
        } = attempt;
        let log = AttemptLog::new(limits.max_log_bytes);
        let _permits = tokio::select! {
            permits = self.0.pool.acquire(module.footprint) => match permits {
                Ok(permits) => permits,
                Err(_) => return (Err(TaskFailure::Host("runtime is shutting down".into())), vec![], Usage::default()),
            },
            () = cancel.cancelled() => return (Err(TaskFailure::Cancelled), vec![], Usage::default()),
        };
        let deadline = Instant::now() + limits.timeout;
        let per_instance = self.0.config.engine.effective_per_instance();
        let ctx = wit::RunContext {
            workflow_run_id: run.workflow_run_id.clone(),
            task_run_id: run.task_run_id.clone(),
            workflow: run.workflow.clone(),
            task: run.task.clone(),
            attempt: run.attempt,
            metadata: run.metadata.clone(),
            parents: run.parents.clone(),
        };
        let mut store = self.new_store(
            TaskState {
                // No preopened directory, no socket, no name lookup: `wasi:filesystem` and
                // `wasi:sockets` are linked for interpreters but hold nothing.
                wasi: WasiCtxBuilder::new()
                    .envs(&secrets.0)
                    .stdout(log.stdout())
                    .stderr(log.stderr())
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .build(),
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                http_hooks: network::OutgoingHttp::new(
                    log.clone(),
                    egress,
                    secrets,
                    self.0.config.egress_limits,
                ),
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(limits.memory_bytes).with_counts(
                    per_instance.core_instances,
                    per_instance.memories,
                    per_instance.tables,
                ),
                log: log.clone(),
                host,
                run: Arc::new(run),
                cancel: cancel.clone(),
                deadline,
                interruption: None,
                spawns: 0,
                cpu: cpu::GuestCpu::new(self.0.cpu.clone(), share),
            },
            &limits,
        );

        let result = {
            let body = async {
                let bindings = module.pre.instantiate_async(&mut store).await?;
                call(&bindings, &mut store, (ctx, input)).await
            };
            // The epoch callback interrupts a running guest; this outer race also covers a
            // guest parked in an import or a WASI poll, which no epoch check reaches.
            tokio::select! {
                result = tokio::time::timeout_at(deadline.into(), body) => {
                    result.map_err(|_| Interruption::TimedOut)
                }
                () = cancel.cancelled() => Err(Interruption::Cancelled),
            }
        };
        let fuel_used = limits
            .fuel
            .map(|budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)));
        let outcome = match result {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Err(classify(&error, store.data_mut(), &limits, &log)),
            // Stopped from outside while parked (the epoch check may have stopped it first).
            Err(stopped) => Err(interruption_failure(
                *store.data_mut().interruption.get_or_insert(stopped),
                &limits,
            )),
        };
        let usage = Usage {
            fuel: fuel_used,
            memory_bytes: store.data().limiter.used() as u64,
            egress_requests: store.data().http_hooks.requests(),
        };
        (outcome, log.finish(), usage)
    }

    fn new_store(&self, state: TaskState, limits: &Limits) -> Store<TaskState> {
        let mut store = Store::new(&self.0.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.0.config.engine.fuel {
            // Both calls fail only when fuel is disabled in the engine, checked just above.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
            let _ = store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL));
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            Ok(match state.check_interrupt() {
                Some(_) => UpdateDeadline::Interrupt,
                // At every tick the guest gives its slice of the guest threads back and queues
                // for the next, so the fair gate decides who runs next. It yields through
                // tokio's `yield_now`, which wakes the task only after the runtime has polled
                // its I/O driver: a plain wake-and-return keeps a busy task always ready, and
                // tokio then polls I/O only every 61 task polls (≈ 300 ms of guest time).
                None => UpdateDeadline::YieldCustom(1, Box::pin(state.cpu.next_slice())),
            })
        });
        // Wasm executes only with a slice of the guest threads: kept through a short call into
        // the host, given back when the call lasts (an import may wait for long), and taken
        // again on the way back.
        store.call_hook_async(SliceOnCalls);
        store
    }
}

/// Takes and gives back a guest's CPU slice as execution crosses between wasm and the host.
struct SliceOnCalls;

#[async_trait]
impl wasmtime::CallHookHandler<TaskState> for SliceOnCalls {
    async fn handle_call_event(
        &self,
        mut store: wasmtime::StoreContextMut<'_, TaskState>,
        hook: wasmtime::CallHook,
    ) -> wasmtime::Result<()> {
        let cpu = &store.data_mut().cpu;
        // Into the host, the permit is kept for a moment: a call into the host returns within
        // microseconds, and so does the host between the wasm calls of one attempt (a task's
        // input is written through `cabi_realloc`, then its export is called, then
        // `cabi_post_return`). Given back at each of those, a quiet tenant's task queued behind
        // another tenant's slices again each time (measured: its round trip's p50 under
        // another tenant's CPU load 69 ms against 19). The attempt's end gives it back when it
        // drops.
        if hook.entering_host() {
            cpu.park();
        } else {
            cpu.clone().acquire().await;
        }
        Ok(())
    }
}

/// Admission in front of the pooling allocator, which fails instead of waiting when one of its
/// totals is reached: a semaphore per pooled resource, each module reserving its real
/// footprint. Permits are always taken in the same order (components, core instances, memories,
/// tables), so two attempts never wait on each other's permits.
struct PoolAdmission {
    components: Arc<Semaphore>,
    core_instances: Arc<Semaphore>,
    memories: Arc<Semaphore>,
    tables: Arc<Semaphore>,
}

/// Held while an instance is alive.
type PoolPermits = [tokio::sync::OwnedSemaphorePermit; 4];

impl PoolAdmission {
    fn new(config: &EngineConfig) -> Self {
        let total = config.pool_total;
        let semaphore = |n: u32| Arc::new(Semaphore::new(n.max(1) as usize));
        Self {
            components: semaphore(config.max_instances),
            core_instances: semaphore(total.core_instances),
            memories: semaphore(total.memories),
            tables: semaphore(total.tables),
        }
    }

    async fn acquire(
        &self,
        footprint: Footprint,
    ) -> Result<PoolPermits, tokio::sync::AcquireError> {
        Ok([
            self.components.clone().acquire_owned().await?,
            self.core_instances
                .clone()
                .acquire_many_owned(footprint.core_instances)
                .await?,
            self.memories
                .clone()
                .acquire_many_owned(footprint.memories)
                .await?,
            self.tables
                .clone()
                .acquire_many_owned(footprint.tables)
                .await?,
        ])
    }
}

/// Turns the error of a failed call into the precise reason, from most to least specific.
fn interruption_failure(interruption: Interruption, limits: &Limits) -> TaskFailure {
    match interruption {
        Interruption::Cancelled => TaskFailure::Cancelled,
        Interruption::TimedOut => TaskFailure::timed_out(limits.timeout),
    }
}

fn classify(
    error: &wasmtime::Error,
    state: &mut TaskState,
    limits: &Limits,
    log: &AttemptLog,
) -> TaskFailure {
    if let Some(interruption) = state.interruption {
        return interruption_failure(interruption, limits);
    }
    if state.limiter.refused().is_some() {
        return TaskFailure::MemoryLimit {
            limit: state.limiter.limit() as u64,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TaskFailure::OutOfFuel {
            budget: limits.fuel.unwrap_or(u64::MAX),
        },
        Some(Trap::UnreachableCodeReached) => match log.panic_message() {
            Some(panic) => TaskFailure::Panicked(panic),
            None => trap_failure(Trap::UnreachableCodeReached, log),
        },
        Some(trap) => trap_failure(*trap, log),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => TaskFailure::Trap(format!("the guest called exit({})", exit.0)),
            None => TaskFailure::Host(format!("{error:#}")),
        },
    }
}

/// Lines of stderr a trap's message carries: enough for a Python traceback's last frames and
/// its exception, or a JS exception and its first stack line.
const TRAP_STDERR_LINES: usize = 6;

/// A trap, with what the guest last wrote to stderr: an interpreter reports its uncaught
/// exception there and then traps, and the trap alone ("unreachable") says nothing.
fn trap_failure(trap: Trap, log: &AttemptLog) -> TaskFailure {
    // wasmtime's message starts with "wasm trap: ", which `TaskFailure::Trap` adds itself.
    let text = trap.to_string();
    let text = text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned();
    match log.stderr_tail(TRAP_STDERR_LINES) {
        Some(stderr) => {
            TaskFailure::Trap(format!("{text}; the guest's last stderr lines:\n{stderr}"))
        }
        None => TaskFailure::Trap(text),
    }
}

fn check_output(output: String, limit: usize) -> Result<String, TaskFailure> {
    if output.len() > limit {
        return Err(TaskFailure::OutputTooLarge {
            size: output.len() as u64,
            limit: limit as u64,
        });
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&output)
        .map_err(|e| TaskFailure::InvalidOutput(e.to_string()))?;
    Ok(output)
}

/// The linker with exactly the granted interfaces: WASI I/O, clocks, random, stdio with empty
/// stdin, environment and arguments, exit; the filesystem and sockets interfaces interpreters
/// import (holding nothing); outgoing HTTP (behind the egress policy, see `network`); and
/// `hatchery:task/runtime`.
fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    use wasmtime::component::HasSelf;
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
    use wasmtime_wasi::{cli::WasiCliView as _, clocks::WasiClocksView as _};

    struct HasIo;
    impl wasmtime::component::HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }

    let mut linker = Linker::<TaskState>::new(engine);
    let l = &mut linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<TaskState, HasIo>(l, |t| {
        &mut t.table
    })?;
    wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<TaskState, HasIo>(l, |t| {
        &mut t.table
    })?;
    wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<TaskState, HasIo>(l, |t| {
        &mut t.table
    })?;
    clocks::wall_clock::add_to_linker::<TaskState, WasiClocks>(l, TaskState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<TaskState, WasiClocks>(l, TaskState::clocks)?;
    random::random::add_to_linker::<TaskState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<TaskState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<TaskState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::environment::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::stdin::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::stdout::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::stderr::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::terminal_input::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::terminal_output::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::terminal_stdin::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::terminal_stdout::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    cli::terminal_stderr::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)?;
    filesystem::types::add_to_linker::<TaskState, WasiFilesystem>(l, TaskState::filesystem)?;
    filesystem::preopens::add_to_linker::<TaskState, WasiFilesystem>(l, TaskState::filesystem)?;
    let network_options = sockets::network::LinkOptions::default();
    sockets::network::add_to_linker::<TaskState, WasiSockets>(
        l,
        &network_options,
        TaskState::sockets,
    )?;
    sockets::instance_network::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    sockets::tcp::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    sockets::udp::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    sockets::udp_create_socket::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;
    bindings::TaskModule::add_to_linker::<TaskState, HasSelf<TaskState>>(l, |state| state)?;
    Ok(linker)
}
