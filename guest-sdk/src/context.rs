//! What a running task sees and may do: its identity, metadata and parents' outputs, and the
//! host calls (log, spawn and wait for child runs, push events, check cancellation).
//! Every host call goes through the `hatchery:task/runtime` import; nothing else leaves the
//! sandbox.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TaskError;
use crate::wit::hatchery::task::runtime;

/// What a running task knows about itself, and its handle on the host.
///
/// ```no_run
/// use hatchery_sdk::prelude::*;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Summary { words: u64 }
///
/// fn publish(_input: serde_json::Value, ctx: &Context) -> Result<u64, TaskError> {
///     let summary: Summary = ctx.parent_output("summarise")?;
///     if ctx.attempt() > 1 {
///         ctx.log_at(LogLevel::Warn, format!("retry number {}", ctx.attempt() - 1));
///     }
///     ctx.push_event("report:published", &serde_json::json!({ "words": summary.words }))?;
///     Ok(summary.words)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    workflow_run_id: String,
    task_run_id: String,
    workflow: String,
    task: String,
    attempt: u32,
    metadata: serde_json::Value,
    parents: Vec<(String, String)>,
}

impl Context {
    /// The context the host passed to `run`. Metadata that is empty or not JSON reads as an
    /// empty object.
    pub(crate) fn from_wit(ctx: crate::wit::RunContext) -> Self {
        let metadata = serde_json::from_str(&ctx.metadata)
            .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()));
        Self {
            workflow_run_id: ctx.workflow_run_id,
            task_run_id: ctx.task_run_id,
            workflow: ctx.workflow,
            task: ctx.task,
            attempt: ctx.attempt,
            metadata,
            parents: ctx.parents,
        }
    }

    /// Id of the workflow run this task run belongs to.
    pub fn workflow_run_id(&self) -> &str {
        &self.workflow_run_id
    }

    /// Id of this task run, stable across its attempts.
    pub fn task_run_id(&self) -> &str {
        &self.task_run_id
    }

    /// Name of the workflow being run.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// Name of the task being run.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The workflow run's additional metadata, a JSON object.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.metadata
    }

    /// The output of parent task `name`, decoded as `T`.
    ///
    /// A task that is not a declared parent, or an output that does not decode as `T`, is a
    /// [`TaskError::Fatal`]: retrying cannot fix either.
    pub fn parent_output<T: DeserializeOwned>(&self, name: &str) -> Result<T, TaskError> {
        let Some((_, output)) = self.parents.iter().find(|(parent, _)| parent == name) else {
            return Err(TaskError::Fatal(format!(
                "task `{}` has no output of a parent named `{name}` (declare it with `.parent(\"{name}\")`)",
                self.task
            )));
        };
        serde_json::from_str(output).map_err(|error| {
            TaskError::Fatal(format!(
                "the output of parent task `{name}` does not decode as expected: {error}"
            ))
        })
    }

    /// Adds an info line to this attempt's log.
    pub fn log(&self, message: impl AsRef<str>) {
        self.log_at(LogLevel::Info, message);
    }

    /// Adds a line at `level` to this attempt's log.
    pub fn log_at(&self, level: LogLevel, message: impl AsRef<str>) {
        runtime::log(level.to_wit(), message.as_ref());
    }

    /// Starts a child run of `workflow` with `input`. Spawning is idempotent per task run: the
    /// n-th spawn of a retried attempt returns the same child as the n-th spawn of the first.
    pub fn spawn<I: Serialize + ?Sized>(
        &self,
        workflow: &str,
        input: &I,
    ) -> Result<ChildRun, TaskError> {
        self.spawn_with(workflow, input, SpawnOptions::default())
    }

    /// Starts a child run of `workflow` with `input` and `options`.
    pub fn spawn_with<I: Serialize + ?Sized>(
        &self,
        workflow: &str,
        input: &I,
        options: SpawnOptions,
    ) -> Result<ChildRun, TaskError> {
        let input = serde_json::to_string(input).map_err(|error| {
            TaskError::Fatal(format!(
                "cannot encode the input of a `{workflow}` child run as JSON: {error}"
            ))
        })?;
        let options = runtime::SpawnOptions {
            key: options.key,
            additional_metadata: options
                .additional_metadata
                .map(|metadata| metadata.to_string()),
            priority: options.priority,
        };
        runtime::spawn(workflow, &input, &options)
            .map(|id| ChildRun { id })
            .map_err(|error| {
                TaskError::Failed(format!("cannot spawn a `{workflow}` child run: {error}"))
            })
    }

    /// Spawns a child run of `workflow` and waits for its output.
    ///
    /// ```no_run
    /// # use hatchery_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> Result<(), TaskError> {
    /// let out: serde_json::Value = ctx.run_child("square", &serde_json::json!({ "n": 7 }))?;
    /// # Ok(()) }
    /// ```
    pub fn run_child<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        workflow: &str,
        input: &I,
    ) -> Result<O, TaskError> {
        self.spawn(workflow, input)?.wait()
    }

    /// Publishes an event in this tenant; workflows subscribed to `key` are triggered.
    pub fn push_event<P: Serialize + ?Sized>(
        &self,
        key: &str,
        payload: &P,
    ) -> Result<(), TaskError> {
        let payload = serde_json::to_string(payload).map_err(|error| {
            TaskError::Fatal(format!(
                "cannot encode the payload of event `{key}` as JSON: {error}"
            ))
        })?;
        runtime::push_event(key, &payload)
            .map_err(|error| TaskError::Failed(format!("cannot push event `{key}`: {error}")))
    }

    /// Whether this run has been asked to stop (cancellation or shutdown). The host stops tasks
    /// pre-emptively anyway; this lets a long task stop cleanly at a point of its choosing.
    pub fn is_cancelled(&self) -> bool {
        runtime::cancelled()
    }
}

/// Options of a child run started with [`Context::spawn_with`].
///
/// ```no_run
/// # use hatchery_sdk::prelude::*;
/// # fn f(ctx: &Context) -> Result<(), TaskError> {
/// let child = ctx.spawn_with(
///     "send-email",
///     &serde_json::json!({ "to": "ada@example.com" }),
///     SpawnOptions { key: Some("welcome-ada".into()), priority: Some(3), ..Default::default() },
/// )?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpawnOptions {
    /// Makes the spawn idempotent: the same key from the same parent task run returns the same
    /// child. Without one, the n-th spawn of a task run is the key.
    pub key: Option<String>,
    /// Additional metadata of the child run, a JSON object; `None` inherits the parent's.
    pub additional_metadata: Option<serde_json::Value>,
    /// Priority of the child run, 1 (low) to 3 (high); `None` = the workflow's default.
    pub priority: Option<u8>,
}

/// A child workflow run started by [`Context::spawn`].
///
/// ```no_run
/// # use hatchery_sdk::prelude::*;
/// # fn f(ctx: &Context) -> Result<(), TaskError> {
/// let children = (1..=3u64)
///     .map(|n| ctx.spawn("square", &serde_json::json!({ "n": n })))
///     .collect::<Result<Vec<_>, _>>()?;
/// for child in &children {
///     let output: serde_json::Value = child.wait()?;
///     ctx.log(format!("{} -> {output}", child.id()));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRun {
    id: String,
}

impl ChildRun {
    /// The child's workflow run id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until the child run finishes and decodes its output as `O`. A failed child is a
    /// [`TaskError::Failed`] carrying its error; an output that does not decode as `O` is a
    /// [`TaskError::Fatal`].
    pub fn wait<O: DeserializeOwned>(&self) -> Result<O, TaskError> {
        let output = runtime::wait(&self.id)
            .map_err(|error| TaskError::Failed(format!("child run {} failed: {error}", self.id)))?;
        serde_json::from_str(&output).map_err(|error| {
            TaskError::Fatal(format!(
                "the output of child run {} does not decode as expected: {error}",
                self.id
            ))
        })
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the task recovered from.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    fn to_wit(self) -> runtime::LogLevel {
        match self {
            Self::Trace => runtime::LogLevel::Trace,
            Self::Debug => runtime::LogLevel::Debug,
            Self::Info => runtime::LogLevel::Info,
            Self::Warn => runtime::LogLevel::Warn,
            Self::Error => runtime::LogLevel::Error,
        }
    }
}
