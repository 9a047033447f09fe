//! The declarations a module makes about itself: [`Module`], [`Workflow`], [`Task`] and their
//! flow control. Builders only record what the author wrote; the host validates the manifest
//! (names, cycles, ranges, expressions) at upload, so nothing here panics or rejects.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wit::hatchery::task::types as wit;
use crate::{Context, TaskError};

/// A task's body with its types erased: JSON input text in, JSON output text out.
type Handler = Box<dyn Fn(&str, &Context) -> Result<String, TaskError>>;

/// Everything a task module provides: its workflows and how many task runs a node may run at
/// once. Build it in a function and hand that function to [`export!`](crate::export).
///
/// ```
/// use hatchery_sdk::{Context, Module, Task, TaskError, Workflow};
///
/// fn ping(_input: serde_json::Value, _ctx: &Context) -> Result<&'static str, TaskError> {
///     Ok("pong")
/// }
///
/// fn module() -> Module {
///     Module::new()
///         .slots(8)
///         .workflow(Workflow::new("ping").task(Task::new("ping", ping)))
/// }
/// # let _ = module();
/// ```
#[derive(Debug, Default)]
pub struct Module {
    slots: Option<u32>,
    workflows: Vec<Workflow>,
}

impl Module {
    /// An empty module.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many task runs of this module one node runs at once (default: the host's).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Adds a workflow.
    pub fn workflow(mut self, workflow: Workflow) -> Self {
        self.workflows.push(workflow);
        self
    }

    /// The workflow named `name`, if any.
    pub(crate) fn find_workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|workflow| workflow.name == name)
    }

    /// The manifest the host reads through `describe`.
    pub(crate) fn to_manifest(&self) -> wit::Manifest {
        wit::Manifest {
            workflows: self.workflows.iter().map(Workflow::to_def).collect(),
            slots: self.slots,
        }
    }
}

/// A named DAG of tasks, its triggers and its flow control.
///
/// Every task of a run receives the workflow run's input; a task reads its parents' outputs
/// with [`Context::parent_output`].
///
/// ```
/// use std::time::Duration;
/// use hatchery_sdk::prelude::*;
///
/// fn step(input: serde_json::Value, _ctx: &Context) -> Result<serde_json::Value, TaskError> {
///     Ok(input)
/// }
///
/// let workflow = Workflow::new("nightly-report")
///     .description("Builds the report every night and on demand")
///     .on_cron("0 3 * * *")
///     .on_event("report:requested")
///     .default_priority(2)
///     .concurrency(Concurrency::new("input.customer", 1, ConcurrencyStrategy::CancelInProgress))
///     .task(Task::new("collect", step).execution_timeout(Duration::from_secs(120)))
///     .task(Task::new("render", step).parent("collect").retries(3))
///     .on_failure(Task::new("alert", step));
/// # let _ = workflow;
/// ```
#[derive(Debug)]
pub struct Workflow {
    name: String,
    description: String,
    on_events: Vec<String>,
    on_crons: Vec<String>,
    default_priority: Option<u8>,
    concurrency: Vec<Concurrency>,
    tasks: Vec<Task>,
    on_failure: Option<Task>,
}

impl Workflow {
    /// A workflow named `name` (unique within the module) with no tasks yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            on_events: Vec::new(),
            on_crons: Vec::new(),
            default_priority: None,
            concurrency: Vec::new(),
            tasks: Vec::new(),
            on_failure: None,
        }
    }

    /// A human description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Starts a run whenever an event with a matching key is pushed; `*` matches any run of
    /// characters, e.g. `user:*`. May be called several times.
    pub fn on_event(mut self, key: impl Into<String>) -> Self {
        self.on_events.push(key.into());
        self
    }

    /// Starts a run on a cron schedule: 5 fields (minute first) or 6 (seconds first).
    /// May be called several times.
    pub fn on_cron(mut self, expression: impl Into<String>) -> Self {
        self.on_crons.push(expression.into());
        self
    }

    /// Priority of runs that do not ask for one: 1 (low) to 3 (high). Default 1.
    pub fn default_priority(mut self, priority: u8) -> Self {
        self.default_priority = Some(priority);
        self
    }

    /// Limits how many runs of this workflow with the same key run at once.
    pub fn concurrency(mut self, rule: Concurrency) -> Self {
        self.concurrency.push(rule);
        self
    }

    /// Adds a task; tasks without parents start first.
    pub fn task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }

    /// A task run when a run of this workflow fails; its input describes the failure.
    pub fn on_failure(mut self, task: Task) -> Self {
        self.on_failure = Some(task);
        self
    }

    /// The task named `name`, the on-failure task included.
    pub(crate) fn find_task(&self, name: &str) -> Option<&Task> {
        self.tasks
            .iter()
            .chain(self.on_failure.as_ref())
            .find(|task| task.name == name)
    }

    fn to_def(&self) -> wit::WorkflowDef {
        wit::WorkflowDef {
            name: self.name.clone(),
            description: self.description.clone(),
            on_events: self.on_events.clone(),
            on_crons: self.on_crons.clone(),
            default_priority: self.default_priority,
            concurrency: self.concurrency.iter().map(Concurrency::to_rule).collect(),
            tasks: self.tasks.iter().map(Task::to_def).collect(),
            on_failure: self.on_failure.as_ref().map(Task::to_def),
        }
    }
}

/// One task: a typed function run by name, with its place in the DAG, retries, timeouts and
/// flow control.
///
/// The function takes any `I: DeserializeOwned` (decoded from the JSON input) and returns any
/// `O: Serialize` (encoded as the JSON output). Input that does not decode is a
/// [`TaskError::Fatal`] naming the task.
///
/// ```
/// use std::time::Duration;
/// use hatchery_sdk::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Charge { customer: String, cents: u64 }
///
/// #[derive(Serialize)]
/// struct Receipt { id: String }
///
/// fn charge(input: Charge, ctx: &Context) -> Result<Receipt, TaskError> {
///     ctx.log(format!("charging {} cents to {}", input.cents, input.customer));
///     Ok(Receipt { id: format!("{}-{}", ctx.task_run_id(), ctx.attempt()) })
/// }
///
/// let task = Task::new("charge", charge)
///     .parent("validate")
///     .retries(5)
///     .backoff(2.0, 60)
///     .execution_timeout(Duration::from_secs(30))
///     .schedule_timeout(Duration::from_secs(600))
///     .rate_limit(RateLimit::static_key("payments-api", 1).limit(100, RateLimitDuration::Minute))
///     .concurrency(Concurrency::new("input.customer", 1, ConcurrencyStrategy::GroupRoundRobin));
/// # let _ = task;
/// ```
pub struct Task {
    name: String,
    parents: Vec<String>,
    retries: u32,
    backoff: Option<(f64, u32)>,
    execution_timeout: Option<Duration>,
    schedule_timeout: Option<Duration>,
    rate_limits: Vec<RateLimit>,
    concurrency: Vec<Concurrency>,
    handler: Handler,
}

impl Task {
    /// A task named `name` (unique within its workflow) that runs `f`.
    pub fn new<I, O, F>(name: impl Into<String>, f: F) -> Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(I, &Context) -> Result<O, TaskError> + 'static,
    {
        let handler = move |input: &str, ctx: &Context| {
            // An empty input is JSON `null`, so tasks taking `()` or `Option<_>` accept it.
            let input = if input.trim().is_empty() {
                "null"
            } else {
                input
            };
            let input: I = serde_json::from_str(input).map_err(|error| {
                TaskError::Fatal(format!(
                    "invalid input for task `{}` of workflow `{}`: {error}",
                    ctx.task(),
                    ctx.workflow()
                ))
            })?;
            let output = f(input, ctx)?;
            serde_json::to_string(&output).map_err(|error| {
                TaskError::Fatal(format!(
                    "cannot encode the output of task `{}` of workflow `{}` as JSON: {error}",
                    ctx.task(),
                    ctx.workflow()
                ))
            })
        };
        Self {
            name: name.into(),
            parents: Vec::new(),
            retries: 0,
            backoff: None,
            execution_timeout: None,
            schedule_timeout: None,
            rate_limits: Vec::new(),
            concurrency: Vec::new(),
            handler: Box::new(handler),
        }
    }

    /// Runs this task only after task `name` of the same workflow succeeded.
    pub fn parent(mut self, name: impl Into<String>) -> Self {
        self.parents.push(name.into());
        self
    }

    /// Runs this task only after all the tasks `names` succeeded.
    pub fn parents<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.parents.extend(names.into_iter().map(Into::into));
        self
    }

    /// How many times a failed attempt is retried (default 0).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Waits `min(max_seconds, factor ^ (attempt - 1))` seconds between retries (default: retry
    /// at once).
    pub fn backoff(mut self, factor: f64, max_seconds: u32) -> Self {
        self.backoff = Some((factor, max_seconds));
        self
    }

    /// Wall-clock limit of one attempt (default: the host's, 60 s). Millisecond precision.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.execution_timeout = Some(timeout);
        self
    }

    /// How long a run may wait in the queue before it is cancelled (default: the host's, 5 min).
    /// Millisecond precision.
    pub fn schedule_timeout(mut self, timeout: Duration) -> Self {
        self.schedule_timeout = Some(timeout);
        self
    }

    /// Consumes units of a rate limit before each run starts. May be called several times.
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limits.push(rate_limit);
        self
    }

    /// Limits how many runs of this task with the same key run at once (on top of the
    /// workflow's rules). May be called several times.
    pub fn concurrency(mut self, rule: Concurrency) -> Self {
        self.concurrency.push(rule);
        self
    }

    /// Runs the task body on JSON `input`.
    pub(crate) fn call(&self, input: &str, ctx: &Context) -> Result<String, TaskError> {
        (self.handler)(input, ctx)
    }

    fn to_def(&self) -> wit::TaskDef {
        wit::TaskDef {
            name: self.name.clone(),
            parents: self.parents.clone(),
            retries: self.retries,
            backoff: self.backoff.map(|(factor, max_seconds)| wit::Backoff {
                factor,
                max_seconds,
            }),
            execution_timeout_ms: self.execution_timeout.map(millis),
            schedule_timeout_ms: self.schedule_timeout.map(millis),
            rate_limits: self.rate_limits.iter().map(RateLimit::to_def).collect(),
            concurrency: self.concurrency.iter().map(Concurrency::to_rule).collect(),
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("parents", &self.parents)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("execution_timeout", &self.execution_timeout)
            .field("schedule_timeout", &self.schedule_timeout)
            .field("rate_limits", &self.rate_limits)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What to do when a concurrency key already has `max_runs` runs in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConcurrencyStrategy {
    /// Queue new runs; admit them round-robin across keys as room frees up.
    GroupRoundRobin,
    /// Cancel the oldest runs in progress for the key to make room for the new one.
    CancelInProgress,
    /// Cancel the new run.
    CancelNewest,
}

/// Limits how many runs that share a key may be in progress at once.
///
/// ```
/// use hatchery_sdk::{Concurrency, ConcurrencyStrategy};
///
/// // At most two runs per user at a time; further runs wait their turn.
/// let rule = Concurrency::new("input.user_id", 2, ConcurrencyStrategy::GroupRoundRobin);
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    expression: String,
    max_runs: u32,
    strategy: ConcurrencyStrategy,
}

impl Concurrency {
    /// Runs whose CEL `expression` (over `input` and `additional_metadata`) evaluates to the
    /// same key may have at most `max_runs` (at least 1) in progress; `strategy` says what
    /// happens to the others.
    pub fn new(
        expression: impl Into<String>,
        max_runs: u32,
        strategy: ConcurrencyStrategy,
    ) -> Self {
        Self {
            expression: expression.into(),
            max_runs,
            strategy,
        }
    }

    fn to_rule(&self) -> wit::ConcurrencyRule {
        wit::ConcurrencyRule {
            expression: self.expression.clone(),
            max_runs: self.max_runs,
            strategy: match self.strategy {
                ConcurrencyStrategy::GroupRoundRobin => wit::ConcurrencyStrategy::GroupRoundRobin,
                ConcurrencyStrategy::CancelInProgress => wit::ConcurrencyStrategy::CancelInProgress,
                ConcurrencyStrategy::CancelNewest => wit::ConcurrencyStrategy::CancelNewest,
            },
        }
    }
}

/// The window of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitDuration {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl RateLimitDuration {
    fn to_wit(self) -> wit::RateLimitDuration {
        match self {
            Self::Second => wit::RateLimitDuration::Second,
            Self::Minute => wit::RateLimitDuration::Minute,
            Self::Hour => wit::RateLimitDuration::Hour,
            Self::Day => wit::RateLimitDuration::Day,
        }
    }
}

/// A rate limit a task consumes units from before it may start.
///
/// ```
/// use hatchery_sdk::{RateLimit, RateLimitDuration};
///
/// // A shared, named limit whose size is declared here…
/// let shared = RateLimit::static_key("openai", 1).limit(60, RateLimitDuration::Minute);
/// // …or set later through the API.
/// let managed = RateLimit::static_key("smtp", 1);
/// // One window per tenant customer, 10 runs a second each.
/// let per_user = RateLimit::dynamic("input.user_id", 1, 10, RateLimitDuration::Second);
/// # let _ = (shared, managed, per_user);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    key: RateLimitKey,
    units: u32,
    limit: Option<(u32, RateLimitDuration)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RateLimitKey {
    Static(String),
    Dynamic(String),
}

impl RateLimit {
    /// Consumes `units` (at least 1) of the named limit `key`, shared by every task that names
    /// it. Its size is set by [`RateLimit::limit`] or through the API.
    pub fn static_key(key: impl Into<String>, units: u32) -> Self {
        Self {
            key: RateLimitKey::Static(key.into()),
            units,
            limit: None,
        }
    }

    /// Consumes `units` from a window of `limit` units per `duration`, one window per distinct
    /// value of the CEL `expression` (over `input` and `additional_metadata`).
    pub fn dynamic(
        expression: impl Into<String>,
        units: u32,
        limit: u32,
        duration: RateLimitDuration,
    ) -> Self {
        Self {
            key: RateLimitKey::Dynamic(expression.into()),
            units,
            limit: Some((limit, duration)),
        }
    }

    /// Allows `limit` units per `duration`.
    pub fn limit(mut self, limit: u32, duration: RateLimitDuration) -> Self {
        self.limit = Some((limit, duration));
        self
    }

    fn to_def(&self) -> wit::RateLimit {
        wit::RateLimit {
            key: match &self.key {
                RateLimitKey::Static(key) => wit::RateLimitKey::StaticKey(key.clone()),
                RateLimitKey::Dynamic(expression) => {
                    wit::RateLimitKey::DynamicKey(expression.clone())
                }
            },
            units: self.units,
            limit: self.limit.map(|(limit, _)| limit),
            duration: self.limit.map(|(_, duration)| duration.to_wit()),
        }
    }
}
