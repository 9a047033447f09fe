//! The store's data and the host side of the `hatchery:task/runtime` interface.
//!
//! Child runs and events need a durable backend; the runtime reaches it only through the
//! `TaskHost` trait, so the same worker code runs under `hatchery exec` (in-process children)
//! and under a server (children in Postgres). Nothing here may block a thread: every import is
//! async and races the attempt's cancellation.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::hatchery::task::{runtime, types};
use super::limits::MemoryLimiter;
use super::logs::{AttemptLog, LogLevel};
use super::network::OutgoingHttp;

/// The identity and inputs of one task attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// The workflow run.
    pub workflow_run_id: String,
    /// The task run (stable across attempts).
    pub task_run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Task name.
    pub task: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Additional metadata of the workflow run, a JSON object.
    pub metadata: String,
    /// Parents' outputs: (task name, JSON output).
    pub parents: Vec<(String, String)>,
}

/// A child run asked for by a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// Workflow to run.
    pub workflow: String,
    /// Its JSON input.
    pub input: String,
    /// Idempotency key within the parent task run: the caller's key, or `#n` for the n-th
    /// spawn of this attempt, so a retried parent gets the same children back.
    pub key: String,
    /// Additional metadata (JSON object); `None` inherits the parent's.
    pub additional_metadata: Option<String>,
    /// Priority 1..=3; `None` = the workflow's default.
    pub priority: Option<u8>,
}

/// Why a host call (`spawn`, `wait`, `push-event`) failed. The guest reads its message as the
/// call's error; the variant says whose fault it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    /// The runtime has no server behind it (`NoServer`).
    #[error(
        "this call needs a Hatchery server: run the workflow on `hatchery serve` \
         (or with `hatchery exec`, which runs children in-process)"
    )]
    NeedsServer,
    /// The task asked for something that cannot be: an unknown workflow or run, input that is
    /// not JSON or fails validation, a limit reached.
    #[error("{0}")]
    Refused(String),
    /// The awaited child run did not succeed: its error.
    #[error("{0}")]
    ChildFailed(String),
    /// The host could not reach its database; the same call may succeed later.
    #[error("{call} failed: {message}")]
    Unavailable {
        /// The call: `spawn`, `wait` or `push-event`.
        call: &'static str,
        /// The database's error.
        message: String,
    },
}

impl HostCallError {
    /// `Refused` with this message.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::Refused(message.into())
    }

    /// `Unavailable` for `call`, from the database's error.
    pub fn unavailable(call: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            call,
            message: error.to_string(),
        }
    }
}

/// What a task's `spawn`, `wait` and `push-event` calls are served by.
#[async_trait::async_trait]
pub trait TaskHost: Send + Sync + 'static {
    /// Starts a child workflow run of `parent`; returns its id.
    async fn spawn(&self, parent: &RunInfo, request: SpawnRequest)
    -> Result<String, HostCallError>;
    /// Waits for the run `run_id` to finish; returns its output (`ChildFailed`: its error).
    async fn wait(&self, parent: &RunInfo, run_id: &str) -> Result<String, HostCallError>;
    /// Publishes an event in the parent's tenant.
    async fn push_event(
        &self,
        parent: &RunInfo,
        key: &str,
        payload: &str,
    ) -> Result<(), HostCallError>;
}

/// The `TaskHost` of a runtime with no server behind it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServer;

#[async_trait::async_trait]
impl TaskHost for NoServer {
    async fn spawn(&self, _: &RunInfo, _: SpawnRequest) -> Result<String, HostCallError> {
        Err(HostCallError::NeedsServer)
    }
    async fn wait(&self, _: &RunInfo, _: &str) -> Result<String, HostCallError> {
        Err(HostCallError::NeedsServer)
    }
    async fn push_event(&self, _: &RunInfo, _: &str, _: &str) -> Result<(), HostCallError> {
        Err(HostCallError::NeedsServer)
    }
}

/// Why the host interrupted a running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interruption {
    Cancelled,
    TimedOut,
}

/// Everything one attempt's `Store` holds. Created fresh per attempt, dropped after it.
pub(crate) struct TaskState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_hooks: OutgoingHttp,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: AttemptLog,
    pub(crate) host: Arc<dyn TaskHost>,
    pub(crate) run: Arc<RunInfo>,
    pub(crate) cancel: CancellationToken,
    pub(crate) deadline: Instant,
    pub(crate) interruption: Option<Interruption>,
    pub(crate) spawns: u32,
    /// Its place at the fair gate in front of the guest threads.
    pub(crate) cpu: Arc<super::cpu::GuestCpu>,
}

impl TaskState {
    /// Decides, at each epoch tick, whether the guest must stop now.
    pub(crate) fn check_interrupt(&mut self) -> Option<Interruption> {
        if self.interruption.is_none() {
            if self.cancel.is_cancelled() {
                self.interruption = Some(Interruption::Cancelled);
            } else if Instant::now() >= self.deadline {
                self.interruption = Some(Interruption::TimedOut);
            }
        }
        self.interruption
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl types::Host for TaskState {}

/// The error that traps a guest whose run was cancelled while it waited in an import.
fn cancelled_trap(state: &mut TaskState) -> wasmtime::Error {
    state.interruption = Some(Interruption::Cancelled);
    wasmtime::format_err!("cancelled")
}

impl runtime::Host for TaskState {
    async fn spawn(
        &mut self,
        workflow: String,
        input: String,
        options: runtime::SpawnOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        self.spawns += 1;
        let request = SpawnRequest {
            workflow,
            input,
            key: options.key.unwrap_or_else(|| format!("#{}", self.spawns)),
            additional_metadata: options.additional_metadata,
            priority: options.priority,
        };
        let (host, run, cancel) = (self.host.clone(), self.run.clone(), self.cancel.clone());
        tokio::select! {
            result = host.spawn(&run, request) => Ok(result.map_err(|e| e.to_string())),
            () = cancel.cancelled() => Err(cancelled_trap(self)),
        }
    }

    async fn wait(&mut self, run_id: String) -> wasmtime::Result<Result<String, String>> {
        let (host, run, cancel) = (self.host.clone(), self.run.clone(), self.cancel.clone());
        tokio::select! {
            result = host.wait(&run, &run_id) => Ok(result.map_err(|e| e.to_string())),
            () = cancel.cancelled() => Err(cancelled_trap(self)),
        }
    }

    async fn log(&mut self, level: runtime::LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            runtime::LogLevel::Trace => LogLevel::Trace,
            runtime::LogLevel::Debug => LogLevel::Debug,
            runtime::LogLevel::Info => LogLevel::Info,
            runtime::LogLevel::Warn => LogLevel::Warn,
            runtime::LogLevel::Error => LogLevel::Error,
        };
        self.log.push(level, message);
        Ok(())
    }

    async fn push_event(
        &mut self,
        key: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let (host, run, cancel) = (self.host.clone(), self.run.clone(), self.cancel.clone());
        tokio::select! {
            result = host.push_event(&run, &key, &payload) => Ok(result.map_err(|e| e.to_string())),
            () = cancel.cancelled() => Err(cancelled_trap(self)),
        }
    }

    async fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.cancel.is_cancelled())
    }
}
